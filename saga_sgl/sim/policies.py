"""Configuration rows: what a simulated cluster runs, by policy-registry name.

A ``RowSpec`` names the workers' eviction policy and the workflow scheduler's settings (placement,
fairness, stealing, TTL, predictions, admission control, preemption). ``build_row`` turns it into a
``RowPolicies``: the eviction policy the simulated workers key their victims with, and the
``SchedulerSettings`` the cluster's ``WorkflowScheduler`` runs. Every decision comes from the
scheduler and the policy core; the simulator only carries them out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saga_sgl.policy import registry
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.scheduler.settings import AdmissionControlSettings, SchedulerSettings

_SCHEDULER_KINDS = ("placement", "fairness", "stealing", "ttl", "inference")


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
    """Feed AEG predictions (reuse probability, next use, remaining work, footprint) into hints."""
    admission: AdmissionControlSettings = field(default_factory=AdmissionControlSettings)
    """Workflow-level admission control (ours; off unless ``enabled``)."""
    preemption: bool = False
    """Carry out AFS preemptions (the simulator retracts the running call)."""
    preempt_only_if_blocked: bool = False
    """Preempt only for a queued call its worker has no slot or KV for (``SchedulerSettings``)."""
    oracle_next_use: bool = False
    """Clairvoyant next-use times (the Belady row; an oracle, labelled as such)."""
    infinite_kv: bool = False
    page_size: int | None = None
    """Override the KV page size (vLLM uses 16-token blocks)."""
    max_running_requests: int | None = None
    """Override the running-batch cap (the depth-first row of the throughput trade-off)."""
    residence_horizon: bool = True
    """Reuse hints use the workflow's worker's residence time (``SchedulerSettings``)."""
    record_baseline_hints: bool = False
    """Benchmarks only: the scheduler also keeps its hints without the residence time
    (``SchedulerSettings.record_baseline_hints``)."""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per policy kind ("placement", "eviction", ...) settings overrides, loaded strictly."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class RowPolicies:
    """The objects and settings one row runs with."""

    spec: RowSpec
    eviction: EvictionPolicy
    scheduler: SchedulerSettings


def scheduler_settings(spec: RowSpec, seed: int) -> SchedulerSettings:
    """The workflow scheduler's settings for ``spec`` (names checked against the registry)."""
    for kind, name in (
        ("placement", spec.placement),
        ("fairness", spec.fairness),
        ("stealing", spec.stealing),
    ):
        if name is not None and str(registry.get(name).kind) != kind:
            raise ValueError(
                f"row {spec.label!r} asks for {kind} policy {name!r}, but it is a {registry.get(name).kind}"
            )
    unknown = sorted(set(spec.settings) - {*_SCHEDULER_KINDS, "eviction"})
    if unknown:
        raise ValueError(f"row {spec.label!r}: unknown settings kind(s) {unknown}")
    return SchedulerSettings(
        placement=spec.placement,
        fairness=spec.fairness,
        stealing=spec.stealing,
        policy_config={k: v for k, v in spec.settings.items() if k in _SCHEDULER_KINDS},
        predictions=spec.predictions,
        ttl=spec.ttl,
        admission=spec.admission,
        preemption=spec.preemption,
        preempt_only_if_blocked=spec.preempt_only_if_blocked,
        redirect_waiting_calls=True,  # the simulated worker can hand back a call still waiting
        residence_horizon=spec.residence_horizon,
        record_baseline_hints=spec.record_baseline_hints,
        seed=seed,
    )


def build_row(spec: RowSpec, seed: int) -> RowPolicies:
    """Fresh policy objects and settings for one run of ``spec`` (no shared state between runs)."""
    eviction = registry.create_eviction(spec.eviction, spec.settings.get("eviction"))
    return RowPolicies(spec=spec, eviction=eviction, scheduler=scheduler_settings(spec, seed))


def replace_row(spec: RowSpec, **changes: Any) -> RowSpec:
    return dataclasses.replace(spec, **changes)
