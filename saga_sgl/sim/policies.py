"""Configuration rows: which policy-core objects a simulated cluster runs, built by registry name.

A ``RowSpec`` names policies (``placement``, ``eviction``, ``fairness``, ``stealing``, ``ttl``) by
their key in ``saga_sgl.policy.registry`` plus optional settings; ``build_bundle`` asks the registry
for the objects. The simulator never builds a decision rule of its own: a row with no fairness
policy keeps SGLang's FCFS queue, the engine's default.

The host also feeds the policy core's *models* (tool-latency EMA, AEG from the workflow's tool
hints, next-use and reuse predictions, Eq. 9 remaining work) exactly as the router does; those
hooks are ``on_admit`` / ``on_tool_start`` / ``on_tool_end`` / ``on_task_finished`` below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saga_sgl.policy.interfaces import EvictionPolicy, FairnessPolicy, PlacementPolicy, StealPolicy
from saga_sgl.policy.views import ToolType
from saga_sgl.sim.rng import py_stream

if TYPE_CHECKING:
    from saga_sgl.sim.cluster import Cluster, SimTask
    from saga_sgl.sim.worker import SimWorker


@dataclass(frozen=True, slots=True, kw_only=True)
class RowSpec:
    """One benchmark row. ``label`` is the row's name in tables; the rest are registry names."""

    label: str
    placement: str
    eviction: str
    fairness: str | None = None
    stealing: str | None = None
    ttl: bool = False
    """Set tool-aware TTL deadlines (Algorithm 1) on the workflow's KV when its tool starts."""
    predictions: bool = False
    """Feed AEG predictions (reuse probability, next use, remaining work) into the views."""
    oracle_next_use: bool = False
    """Clairvoyant next-use times (the Belady row)."""
    infinite_kv: bool = False
    page_size: int | None = None
    """Override the KV page size (vLLM uses 16-token blocks)."""
    max_running_requests: int | None = None
    """Override the running-batch cap (the depth-first row of the throughput trade-off)."""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per policy kind ("placement", "eviction", ...) settings overrides, loaded strictly."""
    description: str = ""


@dataclass(slots=True)
class PolicyBundle:
    """The live objects of one row, plus the host-side models that feed them."""

    spec: RowSpec
    placement: PlacementPolicy
    eviction: EvictionPolicy
    fairness: FairnessPolicy | None = None
    stealing: StealPolicy | None = None
    ttl: Any = None
    latency: Any = None
    next_use: Any = None
    _aeg_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def predictions(self) -> bool:
        return self.spec.predictions

    @property
    def oracle_next_use(self) -> bool:
        return self.spec.oracle_next_use

    @property
    def infinite_kv(self) -> bool:
        return self.spec.infinite_kv

    @property
    def page_size(self) -> int | None:
        return self.spec.page_size

    @property
    def needs_epoch(self) -> bool:
        """FCFS keeps no per-epoch state, so a baseline row runs no epochs (they cost host time only)."""
        has_afs = self.fairness is not None and self.fairness.name != "fcfs"
        return has_afs or self.stealing is not None

    @property
    def wants_prefix_ids(self) -> bool:
        return getattr(self.placement, "uses_prefix", False) or self.placement.name == "cache_aware"

    @property
    def wants_prefix_matches(self) -> bool:
        return self.placement.name == "saga"

    # --- model feeding (host duties) ------------------------------------------------------------
    def predicted_kv_tokens(self, task: SimTask) -> int:
        """Predicted peak KV of the workflow: what its AEG hints announce (final context size)."""
        if not self.spec.predictions:
            return 0
        last = task.spec.calls[-1]
        return last.prompt_tokens + last.output_tokens

    def on_admit(self, cluster: Cluster, task: SimTask, now_s: float) -> None:
        if not self.spec.predictions:
            return
        from saga_sgl.aeg.build import from_tool_hints

        tools = [c.tool or "finish" for c in task.spec.calls]
        task.aeg = from_tool_hints(tools)
        if self.fairness is not None:
            task.remaining_work_s = self._remaining_work(cluster, task, None, 0)

    def on_tool_start(self, cluster: Cluster, task: SimTask, worker: SimWorker, now_s: float) -> None:
        if not self.spec.predictions or task.aeg is None:
            return
        from saga_sgl.aeg.build import step_id_of
        from saga_sgl.aeg.predict import expected_queue_delay_s, reuse_probability

        spec = task.spec.calls[task.next_step - 1]
        tool = ToolType(spec.tool or "finish")
        context = task.last_seq_tokens
        step = step_id_of(task.next_step - 1)
        task.reuse_prob = reuse_probability(task.aeg, step, context)
        if self.next_use is not None:
            mean_call_s = cluster.cost.decode_time_s(200, context)
            delay = expected_queue_delay_s(len(worker.waiting), worker.num_running, mean_call_s)
            task.next_use_s = self.next_use.next_use_at_s(tool, now_s, now_s, delay)
            task.next_use_refreshes = 0
        if self.ttl is not None:
            task.ttl_deadline_s = self.ttl.deadline_s(tool, now_s, worker.pressure)
        if self.fairness is not None:
            task.remaining_work_s = self._remaining_work(cluster, task, step, context)
        task.view = None

    def refresh_next_use(self, cluster: Cluster, task: SimTask, now_s: float) -> bool:
        """The predicted next use has passed and the tool is still running: predict again from the
        tool latency *conditional on the time already elapsed* (heavy tails: the longer a tool has
        run, the longer it is expected to keep running). Returns True if the prediction moved."""
        if self.next_use is None or task.tool_started_s is None or task.next_step == 0:
            return False
        spec = task.spec.calls[task.next_step - 1]
        worker = cluster.by_id[task.worker_id] if task.worker_id is not None else None
        delay = 0.0
        if worker is not None:
            from saga_sgl.aeg.predict import expected_queue_delay_s

            mean_call_s = cluster.cost.decode_time_s(200, task.last_seq_tokens)
            delay = expected_queue_delay_s(len(worker.waiting), worker.num_running, mean_call_s)
        tool = ToolType(spec.tool or "finish")
        new = self.next_use.next_use_at_s(tool, task.tool_started_s, now_s, delay)
        if task.next_use_s is not None and new <= task.next_use_s:
            return False
        task.next_use_s = new
        task.next_use_refreshes += 1
        task.view = None
        return True

    def on_tool_end(self, cluster: Cluster, task: SimTask, now_s: float) -> None:
        if self.latency is None or task.tool_started_s is None or task.next_step == 0:
            return
        spec = task.spec.calls[task.next_step - 1]
        if spec.tool is not None:
            self.latency.observe(ToolType(spec.tool), now_s - task.tool_started_s)

    def on_task_finished(self, cluster: Cluster, task: SimTask, now_s: float) -> None:
        task.aeg = None  # free the graph; the views read is_finished from now on

    def _remaining_work(self, cluster: Cluster, task: SimTask, step: Any, context: int) -> float:
        from saga_sgl.aeg.predict import WorkSettings, remaining_work_s

        return remaining_work_s(task.aeg, step, context, cluster.cost, settings=WorkSettings(max_depth=16))


def build_bundle(spec: RowSpec, seed: int) -> PolicyBundle:
    """Instantiate ``spec``'s policies by name (fresh objects per run: no shared state)."""
    from saga_sgl.aeg.predict import NextUsePredictor
    from saga_sgl.aeg.tool_latency import ToolLatencyModel

    latency = ToolLatencyModel()
    rng = py_stream(seed, f"policy/{spec.label}")

    def make(kind: str, name: str) -> Any:
        return create_policy(kind, name, dict(spec.settings.get(kind, {})), latency=latency, rng=rng)

    bundle = PolicyBundle(
        spec=spec,
        placement=make("placement", spec.placement),
        eviction=make("eviction", spec.eviction),
        fairness=make("fairness", spec.fairness) if spec.fairness else None,
        stealing=make("stealing", spec.stealing) if spec.stealing else None,
        latency=latency if spec.predictions else None,
        next_use=NextUsePredictor(latency) if spec.predictions else None,
    )
    if spec.ttl:
        bundle.ttl = make("ttl", "tool_aware_ttl")
    return bundle


def create_policy(kind: str, name: str, config: Mapping[str, Any], *, latency: Any, rng: Any) -> Any:
    """One policy object by name, settings loaded strictly (unknown keys fail).

    Every decision policy comes from ``saga_sgl.policy.registry``. The tool-aware TTL (Algorithm 1)
    is not a registry kind (it needs the live tool-latency model), so it is built from its class in
    ``policy.eviction.ttl`` with strictly loaded ``TtlSettings``.
    """
    if kind == "ttl":
        from saga_sgl.policy.eviction.ttl import ToolAwareTtl, TtlSettings
        from saga_sgl.policy.settings import load_settings

        return ToolAwareTtl(latency, load_settings(TtlSettings, config))
    from saga_sgl.policy import registry

    if kind == "eviction":
        name = registry.resolve_eviction(name)  # "saga" names the default eviction policy
    spec = registry.get(name)
    if str(spec.kind) != kind:
        raise ValueError(f"row asks for {kind} policy {name!r}, but the registry has it as {spec.kind}")
    return registry.create(name, config, rng=rng)


def replace_row(spec: RowSpec, **changes: Any) -> RowSpec:
    return dataclasses.replace(spec, **changes)
