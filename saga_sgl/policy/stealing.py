"""Work stealing: triggers, victim choice, cost-aware session choice, per-epoch limits, guards.

Triggers [P]: a worker's queue has been empty for T_idle = 100 ms, or the most- to least-loaded
ratio exceeds R_max = 2.0. The paper's thrashing guard requires the thief to be idle *and* the
victim to carry excess load at the same time; ``guard="and"`` (default) enforces that,
``guard="or"`` lets either condition start a steal.

Per epoch (``plan`` is called once per 100 ms epoch):

* thieves: healthy workers, least loaded first, each steals at most once;
* victims: overloaded workers, load(v) > R_max x load(thief) (load floored at ``load_floor``) with
  at least one stealable workflow; chosen uniformly at random (paper) or the most loaded;
* session: only QUEUED or TOOL_GAP workflows bound to the victim and never stolen before (a stolen
  workflow's affinity sits at the thief; stealing it again is refused [P]). Cost-aware order [I]:
  (0) a tool gap long enough to hide the re-prefill of its prefix on the thief, (1) queued,
  (2) a tool gap too short to hide it; then fewer prefix tokens to rebuild; then oldest admitted
  (the paper's "oldest pending session"); then workflow id;
* at most ``max_steals_per_epoch`` (4, reference repo [R]) steals.

Guards [I] (a steal that cannot pay for itself is refused, not merely ranked last):

* **call at a worker**: a workflow whose current call has been sent to a worker
  (``WorkflowView.call_at_worker``) is never stolen. SGLang cannot take a request back, so the call
  runs on the victim while the binding would move to a thief that holds none of its context;
* **short gap**: a workflow in a tool gap is stolen only if the predicted rest of the gap covers
  ``gap_margin`` x the time to re-prefill its context on the thief (unknown gap end: no steal),
  so its next call does not wait for, or race, the pre-fill. The re-prefill rate is the slowest
  one the host measured (``WorkerView.prefill_tokens_per_s``), else ``rebuild_tokens_per_s``;
* **gain**: the expected queueing delay the workflow escapes (the victim's waiting queue against the
  thief's, in ``mean_call_s`` units) must be at least ``min_gain_ratio`` x that re-prefill time.
  A victim whose waiting queue is empty would start the workflow's next call at once: nothing to
  gain. The margin above 1 is the hysteresis: a borderline imbalance, which flips with every load
  sample, does not move workflows back and forth;
* **KV pressure** (issue 13): the gain must also pay for the tokens the move pushes past the
  thief's pool (or the cluster's) over the workflow's later calls, less what staying pushes past the
  victim's: placement's own price (``placement.completion_cost.kv_pressure_s``) of the workflow's
  predicted footprint against the KV the workflows bound to each worker will hold (placement's
  ``Residency``: a shared prompt head once per worker and agent type, and not again for a workflow
  whose head the worker already holds).
  Without it steals undid placement's grouping: live, three steals moved agents onto the worker of
  the other prompt head and cost saga 10% in that seed (``benchmarks/results/live_s5_analysis.md``).
  A move that would relieve the victim's pool earns no credit: the hysteresis above stays;
* **thief keeps it**: the thief's KV in use plus the context it pre-fills must stay within
  ``max_thief_kv_frac`` of its pool, so that the context is still there when the workflow comes
  back (above the tool-aware TTL's soft-pressure threshold TTLs shrink and the pre-fill can be
  evicted before the return: wasted work on both workers);
* **measured rate**: with ``require_measured_rate`` (the live router), no steal at all until some
  worker's pre-fill throughput has been measured; the GPU default would judge a CPU worker's
  re-prefill about 100x too cheap.

``revalidate`` implements the paper's guard (c): a steal that is stale when it is applied (victim no
longer overloaded, workflow moved on) is rejected. O(W log W + F) per epoch.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from saga_sgl.policy.decisions import Steal, StealTrigger
from saga_sgl.policy.placement.completion_cost import Residency, kv_pressure_s
from saga_sgl.policy.placement.load import LoadSettings, worker_load
from saga_sgl.policy.settings import require, require_frac, require_non_negative, require_positive
from saga_sgl.policy.views import CallView, WorkerId, WorkerView, WorkflowState, WorkflowView

if TYPE_CHECKING:
    from saga_sgl.policy.interfaces import StealPolicy

_STEALABLE = (WorkflowState.QUEUED, WorkflowState.TOOL_GAP)
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class StealSettings:
    """Settings of ``WorkStealing``."""

    idle_threshold_s: float = 0.1
    """T_idle: a thief's queue must have been empty this long (seconds) [P]."""
    max_load_ratio: float = 2.0
    """R_max: steal when victim load > R_max x thief load [P]."""
    guard: str = "and"
    """``and``: thief idle AND victim above R_max x thief load (the paper's thrashing guard) [P];
    ``or``: either trigger suffices."""
    max_steals_per_epoch: int = 4
    """Steals per epoch at most (reference repo [R])."""
    victim_choice: str = "random"
    """``random``: uniformly among overloaded workers [P]; ``most_loaded``: the heaviest."""
    load_floor: float = 0.05
    """Loads are floored here in the ratio test, so an empty thief does not make every worker with
    one request "overloaded" [I]."""
    rebuild_tokens_per_s: float = 45000.0
    """Prefill throughput on the thief (tokens/s) used to decide whether a tool gap hides the rebuild,
    where the host measured none (``WorkerView.prefill_tokens_per_s``: the slowest measured worker
    is used then); default 1 / 21.8 us per token (Llama-3-8B, H100, see ``policy.cost_model``) [I]."""
    gap_margin: float = 1.5
    """A tool-gap workflow is stolen only if the predicted rest of its gap is at least this many
    times its re-prefill time on the thief (>= 1; above 1 absorbs prediction error) [I]."""
    min_gain_ratio: float = 2.0
    """The expected wait escaped on the victim must be at least this many times the re-prefill
    time (>= 1; the hysteresis against steals that flip with each load sample) [I]."""
    max_thief_kv_frac: float = 0.7
    """The thief's KV in use plus the pre-filled context must stay within this fraction of its pool.
    Default: the soft-pressure threshold of the tool-aware TTL (Eq. 6's 0.7), below which a TTL
    protects a context for its whole predicted gap; above it TTLs shrink and the pre-fill may be
    evicted before the workflow returns. A snapshot of the thief now, not a forecast of its use
    until the return [I]."""
    require_measured_rate: bool = False
    """True: no steal while no worker's pre-fill throughput is measured (``WorkerView.
    prefill_tokens_per_s``), instead of falling back to ``rebuild_tokens_per_s``. The live router
    sets it (its workers may be CPUs, ~100x slower than the GPU default); the simulator's workers
    follow the cost model the default comes from [I]."""
    mean_call_s: float = 2.0
    """Duration of a typical LLM call (seconds): the victim's waiting queue drains about
    waiting / running of them before a new call starts (``aeg.predict.expected_queue_delay_s``).
    Used until the host reports the measured one (``WorkStealing.observe_call_s``). Default: ~200
    output tokens of Llama-3-8B on an H100 [I]."""
    request_weight: float = 0.5
    """load(w): weight of (running + waiting) / max_running_reqs (see ``placement.load``)."""
    token_weight: float = 0.5
    """load(w): weight of KV token usage (see ``placement.load``)."""

    def __post_init__(self) -> None:
        owner = "StealSettings"
        require_non_negative(owner, "idle_threshold_s", self.idle_threshold_s)
        require(self.max_load_ratio >= 1.0, owner, "max_load_ratio", ">= 1", self.max_load_ratio)
        require(self.guard in ("and", "or"), owner, "guard", "'and' or 'or'", self.guard)
        require(
            self.max_steals_per_epoch >= 0, owner, "max_steals_per_epoch", ">= 0", self.max_steals_per_epoch
        )
        require(
            self.victim_choice in ("random", "most_loaded"),
            owner,
            "victim_choice",
            "'random' or 'most_loaded'",
            self.victim_choice,
        )
        require_frac(owner, "load_floor", self.load_floor)
        require_positive(owner, "rebuild_tokens_per_s", self.rebuild_tokens_per_s)
        require(self.gap_margin >= 1.0, owner, "gap_margin", ">= 1", self.gap_margin)
        require(self.min_gain_ratio >= 1.0, owner, "min_gain_ratio", ">= 1", self.min_gain_ratio)
        require(0.0 < self.max_thief_kv_frac <= 1.0, owner, "max_thief_kv_frac", "in (0, 1]",
                self.max_thief_kv_frac)
        require_positive(owner, "mean_call_s", self.mean_call_s)
        self.load_settings()

    def load_settings(self) -> LoadSettings:
        """The load(w) part."""
        return LoadSettings(request_weight=self.request_weight, token_weight=self.token_weight)


class WorkStealing:
    """The paper's work stealing with cost-aware session choice."""

    name: ClassVar[str] = "saga_steal"

    def __init__(self, settings: StealSettings | None = None, rng: random.Random | None = None) -> None:
        self.settings = settings or StealSettings()
        self._rng = rng if rng is not None else random.Random(0)
        self._load = self.settings.load_settings()
        self.kv_refused: set[str] = set()
        """Workflows a steal of which the KV-pressure price alone refused (the old guards allowed it)."""
        self._call_s: float | None = None

    def observe_call_s(self, seconds: float | None) -> None:
        """The host's measured mean seconds of a call (None: none measured; ``mean_call_s`` stands).
        Live CPU calls took 1.6 s against the 2 s GPU default (issue 13)."""
        self._call_s = seconds if seconds is not None and seconds > 0.0 else None

    def mean_call_s(self) -> float:
        """Seconds of a typical call: the measured one, else the setting."""
        return self._call_s if self._call_s is not None else self.settings.mean_call_s

    def is_idle(self, w: WorkerView, now_s: float) -> bool:
        """The worker's queue has been empty for at least T_idle."""
        return w.idle_since_s is not None and now_s - w.idle_since_s >= self.settings.idle_threshold_s

    def rebuild_rate(self, workers: Sequence[WorkerView]) -> float | None:
        """Re-prefill throughput (tokens/s): the slowest measured worker's, else the setting (None
        with ``require_measured_rate``: no steal)."""
        measured = [w.prefill_tokens_per_s for w in workers if w.prefill_tokens_per_s]
        if measured:
            return min(measured)
        return None if self.settings.require_measured_rate else self.settings.rebuild_tokens_per_s

    def thief_refusal(self, wf: WorkflowView, thief: WorkerView) -> str | None:
        """Why ``thief`` cannot keep ``wf``'s context until it comes back; None: it can."""
        need = max(0, thief.kv_used_tokens) + wf.cached_prefix_tokens
        if need > self.settings.max_thief_kv_frac * thief.kv_capacity_tokens:
            return "thief_kv_full"
        return None

    def rebuild_s(self, wf: WorkflowView, rate: float | None = None) -> float:
        """Time to re-prefill the workflow's context on a thief (at ``rate`` tokens/s if given)."""
        return wf.cached_prefix_tokens / (rate or self.settings.rebuild_tokens_per_s)

    def queue_delay_s(self, w: WorkerView) -> float:
        """Expected wait before a new call starts on ``w`` (``aeg.predict.expected_queue_delay_s``)."""
        if w.num_waiting_reqs <= 0:
            return 0.0
        return w.num_waiting_reqs / max(w.num_running_reqs, 1) * self.mean_call_s()

    def refusal(
        self, wf: WorkflowView, gain_s: float, now_s: float, rate: float | None = None, kv_s: float = 0.0
    ) -> str | None:
        """Why the guards refuse to steal ``wf`` for an expected gain of ``gain_s`` (re-prefill at
        ``rate`` tokens/s, default the setting; ``kv_s``: the move's KV-pressure price, ``kv_price_s``);
        None: allowed."""
        if wf.state not in _STEALABLE or wf.times_stolen > 0:
            return "not_stealable"
        if wf.call_at_worker:
            return "call_at_worker"
        rebuild_s = self.rebuild_s(wf, rate)
        if wf.state is WorkflowState.TOOL_GAP:
            ends = wf.tool_gap_ends_at_s
            if ends is None or ends - now_s < self.settings.gap_margin * rebuild_s:
                return "gap_too_short"
        if gain_s <= 0.0 or gain_s < self.settings.min_gain_ratio * rebuild_s:
            return "no_gain"
        if gain_s < self.settings.min_gain_ratio * rebuild_s + kv_s:
            return "kv_overflow"
        return None

    def kv_price_s(
        self,
        wf: WorkflowView,
        thief: WorkerView,
        victim: WorkerView,
        cluster: Sequence[WorkerView],
        residency: Residency,
        rate: float,
    ) -> float:
        """Seconds of re-pre-fill that moving ``wf`` from ``victim`` to ``thief`` adds over its later
        calls: placement's KV-pressure price on the thief less the one of staying (>= 0)."""
        if wf.footprint_tokens <= 0 or wf.remaining_calls <= 1.0:
            return 0.0
        call = CallView(
            workflow_id=wf.workflow_id,
            prompt_tokens=wf.cached_prefix_tokens,
            predicted_kv_tokens=max(wf.footprint_tokens, wf.cached_prefix_tokens),
            prefix_match_tokens={
                w.worker_id: residency.head_match(wf, w.worker_id) for w in (thief, victim)
            },
            resident_kv_tokens=residency.without(wf),
            remaining_calls=wf.remaining_calls,
            reprefill_s_per_token=1.0 / rate,
        )
        return max(0.0, kv_pressure_s(call, thief, cluster) - kv_pressure_s(call, victim, cluster))

    def move_refusal(
        self,
        wf: WorkflowView,
        thief: WorkerView,
        victim: WorkerView,
        gain_s: float,
        now_s: float,
        rate: float,
        cluster: Sequence[WorkerView],
        residency: Residency,
    ) -> str | None:
        """Why moving ``wf`` from ``victim`` to ``thief`` for ``gain_s`` is refused; None: allowed."""
        why = self.thief_refusal(wf, thief) or self.refusal(wf, gain_s, now_s, rate)
        if why is not None:
            return why
        kv_s = self.kv_price_s(wf, thief, victim, cluster, residency, rate)
        why = self.refusal(wf, gain_s, now_s, rate, kv_s)
        if why is not None and wf.workflow_id not in self.kv_refused:
            # Once per workflow: the same refusal repeats every epoch while the loads last.
            self.kv_refused.add(wf.workflow_id)
            _log.info(
                "steal of %s from %s to %s refused for its KV pressure: wait saved %.2fs < %.1f x "
                "rebuild %.2fs + kv %.2fs",
                wf.workflow_id, victim.worker_id, thief.worker_id, gain_s,
                self.settings.min_gain_ratio, self.rebuild_s(wf, rate), kv_s,
            )
        return why

    def rank_session(self, wf: WorkflowView, now_s: float) -> tuple[int, int, float, str]:
        """Cost-aware order of stealable workflows (smaller = steal first)."""
        rebuild_s = self.rebuild_s(wf)
        if wf.state is WorkflowState.TOOL_GAP:
            hides = wf.tool_gap_ends_at_s is not None and wf.tool_gap_ends_at_s - now_s >= rebuild_s
            cls = 0 if hides else 2
        else:
            cls = 1
        return (cls, wf.cached_prefix_tokens, wf.admitted_at_s, wf.workflow_id)

    def plan(
        self, workers: Sequence[WorkerView], workflows: Sequence[WorkflowView], now_s: float
    ) -> list[Steal]:
        s = self.settings
        healthy = [w for w in workers if w.is_healthy]
        if len(healthy) < 2 or s.max_steals_per_epoch == 0:
            return []
        load = {w.worker_id: max(worker_load(w, self._load), s.load_floor) for w in healthy}
        rate = self.rebuild_rate(healthy)
        if rate is None:
            return []  # no measured re-prefill rate yet: a steal's cost is unknown
        # Candidates pass the guards that do not depend on the thief (call at a worker, short gap);
        # the gain guard is checked per (victim, thief) against the cheapest rebuild of the pool.
        candidates: dict[WorkerId, list[WorkflowView]] = {}
        for wf in workflows:
            if wf.worker_id in load and self.refusal(wf, math.inf, now_s, rate) is None:
                candidates.setdefault(wf.worker_id, []).append(wf)
        cheapest = {v: min(self.rebuild_s(f, rate) for f in pool) for v, pool in candidates.items()}
        residency = Residency.of(workflows)
        ratio_trigger = max(load.values()) > s.max_load_ratio * min(load.values())
        # Thieves from the lightest up, victims from the heaviest down: a thief's victims are a
        # prefix of ``with_work``.
        thieves = sorted(healthy, key=lambda w: (load[w.worker_id], w.worker_id))
        with_work = sorted(
            (v for v in healthy if v.worker_id in candidates), key=lambda v: (-load[v.worker_id], v.worker_id)
        )
        steals: list[Steal] = []
        for thief in thieves:
            if len(steals) >= s.max_steals_per_epoch:
                break
            idle = self.is_idle(thief, now_s)
            if s.guard == "and":
                if not idle:
                    continue
                trigger = StealTrigger.IDLE_AND_RATIO
            elif idle:
                trigger = StealTrigger.IDLE_AND_RATIO if ratio_trigger else StealTrigger.IDLE
            elif ratio_trigger:
                trigger = StealTrigger.LOAD_RATIO
            else:
                continue
            threshold = s.max_load_ratio * load[thief.worker_id]
            thief_delay = self.queue_delay_s(thief)
            victims: list[WorkerView] = []
            for v in with_work:
                if load[v.worker_id] <= threshold:
                    break
                vid = v.worker_id
                if vid == thief.worker_id or not candidates[vid]:
                    continue
                gain_s = self.queue_delay_s(v) - thief_delay
                if (
                    gain_s > 0.0
                    and gain_s >= s.min_gain_ratio * cheapest[vid]
                    and any(
                        self.move_refusal(f, thief, v, gain_s, now_s, rate, healthy, residency) is None
                        for f in candidates[vid]
                    )
                ):
                    victims.append(v)  # one of its workflows pays for the move and fits the thief
            if not victims:
                continue
            victim = self._choose_victim(victims, load)
            pool = candidates[victim.worker_id]
            gain_s = self.queue_delay_s(victim) - thief_delay
            allowed = [
                f for f in pool
                if self.move_refusal(f, thief, victim, gain_s, now_s, rate, healthy, residency) is None
            ]
            if not allowed:
                continue  # the workflows that pay for the move do not fit the thief, and vice versa
            wf = min(allowed, key=lambda f: self.rank_session(f, now_s))
            pool.remove(wf)  # each workflow is stolen at most once, in this epoch and (times_stolen) ever
            if pool:
                cheapest[victim.worker_id] = min(self.rebuild_s(f, rate) for f in pool)
            steals.append(
                Steal(
                    workflow_id=wf.workflow_id,
                    victim=victim.worker_id,
                    thief=thief.worker_id,
                    rebuild_tokens=wf.cached_prefix_tokens,
                    trigger=trigger,
                )
            )
        return steals

    def revalidate(
        self, steal: Steal, workers: Sequence[WorkerView], workflows: Sequence[WorkflowView], now_s: float
    ) -> bool:
        """Guard (c): the steal still makes sense when applied (else the host drops it)."""
        by_id = {w.worker_id: w for w in workers if w.is_healthy}
        thief, victim = by_id.get(steal.thief), by_id.get(steal.victim)
        if thief is None or victim is None:
            return False
        wf = next((f for f in workflows if f.workflow_id == steal.workflow_id), None)
        if wf is None or wf.worker_id != steal.victim:
            return False
        gain_s = self.queue_delay_s(victim) - self.queue_delay_s(thief)
        healthy = [w for w in workers if w.is_healthy]
        rate = self.rebuild_rate(healthy)
        if rate is None:
            return False
        if self.move_refusal(wf, thief, victim, gain_s, now_s, rate, healthy, Residency.of(workflows)):
            return False
        floor = self.settings.load_floor
        lt = max(worker_load(thief, self._load), floor)
        lv = max(worker_load(victim, self._load), floor)
        return lv > self.settings.max_load_ratio * lt

    def _choose_victim(self, victims: list[WorkerView], load: dict[WorkerId, float]) -> WorkerView:
        ordered = sorted(victims, key=lambda v: v.worker_id)
        if self.settings.victim_choice == "most_loaded":
            return max(ordered, key=lambda v: load[v.worker_id])
        return self._rng.choice(ordered)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoStealSettings:
    """no_steal has no constants."""


class NoStealing:
    """Baseline: never steal (SGLang and vLLM have no work stealing)."""

    name: ClassVar[str] = "no_steal"

    def __init__(self, settings: NoStealSettings | None = None) -> None:
        self.settings = settings or NoStealSettings()

    def plan(
        self, workers: Sequence[WorkerView], workflows: Sequence[WorkflowView], now_s: float
    ) -> list[Steal]:
        return []


if TYPE_CHECKING:
    _check: StealPolicy = WorkStealing()
    _check_none: StealPolicy = NoStealing()
