"""Settings of the workflow scheduler (frozen; loaded strictly like every policy's settings)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from saga_sgl.policy.settings import require, require_non_negative, require_positive


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionControlSettings:
    """Workflow-level admission control (ours; the paper's "Hybrid" strategy, Table 8, is the closest).

    A new workflow is admitted only to a worker where the predicted KV footprint of the live
    workflows bound to it, plus the newcomer's, stays within ``kv_threshold_frac`` of its pool (and,
    if set, where fewer than ``max_workflows_per_worker`` live workflows are bound). While no worker
    qualifies, the workflow's first call is held in the scheduler; held workflows are released in
    AFS order (most urgent tenant first, FCFS inside a tenant) as room appears. With
    ``park_after_steps`` the release order is fewest steps done first, and admitted workflows far
    ahead of a long-held one are parked at their next call (least attained service).
    """

    enabled: bool = False
    kv_threshold_frac: float = 1.0
    """Sum of predicted peak footprints per worker, as a fraction of its KV pool [I]."""
    max_workflows_per_worker: int = 0
    """Live workflows bound to one worker at most; 0 = no cap [I]."""
    bound_footprint_frac: float = 1.0
    """A bound live workflow counts max(its current context, this x its predicted peak): 1.0 counts
    every workflow at its peak; less admits more while contexts are still short [I]."""
    park_after_steps: int = 0
    """Least attained service between workflows (ours): while a held workflow fits nowhere, the next
    call of an admitted workflow that has done at least this many more steps than the least-served
    held one is held too (parked: its footprint no longer counts; its KV stays cached where it is,
    evictable), and held workflows are released fewest steps first. A live router can do this: it
    only delays forwarding that call. 0 = off (admitted workflows run to the end, FCFS release) [I]."""
    park_after_held_s: float = 0.0
    """Parking starts only once the least-served held workflow has waited this long: short holds
    (a cluster near its KV budget, not past it) do not rotate admitted workflows [I]."""
    shared_prefix_once: bool = False
    """Count a prompt head that other workflows share (the system prompt: what the first call found
    cached on some worker) once per worker, not once per workflow: the radix cache holds it once [I]."""
    default_footprint_tokens: int = 16384
    """Predicted peak footprint of a workflow of an agent type with no finished workflow yet [I]."""
    footprint_ema_alpha: float = 0.1
    """EMA weight of one finished workflow's peak context in the per-agent-type footprint [I]."""

    def __post_init__(self) -> None:
        owner = "AdmissionControlSettings"
        require_positive(owner, "kv_threshold_frac", self.kv_threshold_frac)
        require(
            0 <= self.bound_footprint_frac <= 1,
            owner,
            "bound_footprint_frac",
            "in [0, 1]",
            self.bound_footprint_frac,
        )
        require(
            self.max_workflows_per_worker >= 0,
            owner,
            "max_workflows_per_worker",
            ">= 0",
            self.max_workflows_per_worker,
        )
        require(self.park_after_steps >= 0, owner, "park_after_steps", ">= 0", self.park_after_steps)
        require_non_negative(owner, "park_after_held_s", self.park_after_held_s)
        require(
            self.default_footprint_tokens >= 1,
            owner,
            "default_footprint_tokens",
            ">= 1",
            self.default_footprint_tokens,
        )
        require(
            0 < self.footprint_ema_alpha <= 1,
            owner,
            "footprint_ema_alpha",
            "in (0, 1]",
            self.footprint_ema_alpha,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSettings:
    """What one scheduler runs: policies by registry name, and the scheduler's own constants."""

    placement: str = "saga"
    """Placement policy (``saga_sgl.policy.registry`` name)."""
    fairness: str | None = "afs"
    """Fairness policy name; None = SGLang's FCFS queue, no epochs for fairness."""
    stealing: str | None = "saga_steal"
    """Stealing policy name; None = no stealing."""
    policy_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per kind (``placement``, ``fairness``, ``stealing``, ``ttl``, ``inference``) settings,
    loaded strictly (an unknown key raises ``InvalidSettings``)."""
    predictions: bool = True
    """Build AEGs and feed predictions (reuse, next use, remaining work, footprint) into hints and
    views; False = a request-level baseline (plain requests, no hints)."""
    ttl: bool = True
    """Tool-aware TTL (Algorithm 1) on a workflow's KV when its tool starts (needs predictions)."""
    admission: AdmissionControlSettings = field(default_factory=AdmissionControlSettings)
    preemption: bool = True
    """Carry out AFS preemptions (needs ``CallAdmitted`` events to know who runs)."""
    redirect_waiting_calls: bool = False
    """The host can take a dispatched call back out of its worker's waiting queue (``Redirect``):
    then a workflow whose call still waits there may be stolen. The simulator can; the router
    cannot (SGLang 0.5.23 has no way to move a forwarded request), so a workflow with a call out
    is never stolen there."""
    preempt_only_if_blocked: bool = False
    """A queued call counts as blocked by its worker's running calls only while the worker has no
    room for it: the running-request cap is reached, or the free KV (pool less the tokens the worker
    reports as not evictable) is smaller than the call's prompt. A call that waits only for the
    chunked pre-fill of the calls ahead of it gains nothing from a retract, which adds a pre-fill
    (ours; the SAGA simulator row sets it, the live router keeps the paper's rule) [I]."""
    max_preemptions_per_epoch: int = 2
    """Preemptions per epoch at most, so a loaded worker does not thrash [I]."""
    max_preemptions_per_call: int | None = None
    """Times one call may be preempted at most; None: no bound. The live router sets 1: an abort
    loses the call's decode so far, and a call preempted again and again would never finish. The
    simulator's retract keeps a call's progress, as SGLang's does; there a bound of 1 made SAGA's
    mean TCT 14% worse on oversubscribed web-history (cluster.py --quick, seed 1) [I]."""
    epoch_s: float = 0.1
    """Period the host calls ``epoch()`` at (paper: 100 ms)."""
    slo_factor: float = 1.5
    """SLO deadline = admission + slo_factor x expected completion time (paper: 1.5)."""
    tool_latency: Mapping[str, Any] = field(default_factory=dict)
    """``aeg.tool_latency.ToolLatencySettings`` fields (strict), e.g. ``{"prior_scale": 0.1}``."""
    max_next_use_refreshes: int = 8
    """Re-predictions of one tool gap's end after the previous prediction passed."""
    gap_rekey_ages_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
    """Ages of a tool gap (seconds since its call ended) at which the workflow's reuse is
    re-predicted from the gap distribution given that age (its hazard) and the worker's hint is
    re-keyed, the wait anchored at the re-key (``CacheHints.predicted_at_s``: LHD ranks by the
    remaining lifetime). Log-spaced: one update per doubling of the age, so a gap sends at most
    ``len(gap_rekey_ages_s) + max_next_use_refreshes`` updates after its tool start, and most gaps
    (median 0.3-0.9 s in the simulator's workloads) one or two. () = off. Measured in
    benchmarks/results/eviction_reading_s8.md [I]."""
    residence_horizon: bool = True
    """The reuse hints of a workflow in a tool gap use the residence time of the worker that holds
    its context (``WorkerView.residence_s``: the plugin's ``/v1/loads`` field, the simulator's
    worker): P(return within horizon_factor x residence | idle this long) and the TTL capped at the
    residence time. Off (or a worker that does not publish it): the horizon is the predictor's
    maximum, 3,600 s, and P hardly moves with the age (session 8). Measured in
    benchmarks/results/eviction_reading_s9_residence.md [I]."""
    record_baseline_hints: bool = False
    """Benchmarks only: also keep the hints ``residence_horizon=False`` would give, at the same
    instants (``CacheHints.baseline``), for a paired ablation on one recorded schedule."""
    seed: int = 0
    """Seed of the policies' tie-breaking RNG."""

    def __post_init__(self) -> None:
        owner = "SchedulerSettings"
        require_positive(owner, "epoch_s", self.epoch_s)
        require_positive(owner, "slo_factor", self.slo_factor)
        require_non_negative(owner, "max_next_use_refreshes", self.max_next_use_refreshes)
        raw = self.gap_rekey_ages_s
        numeric = isinstance(raw, list | tuple) and all(
            isinstance(a, int | float) and not isinstance(a, bool) for a in raw
        )
        ages = tuple(float(a) for a in raw) if numeric else ()
        require(
            numeric
            and all(math.isfinite(a) and a > 0 for a in ages)
            and all(a < b for a, b in pairwise(ages)),
            owner,
            "gap_rekey_ages_s",
            "finite, > 0 and strictly increasing",
            self.gap_rekey_ages_s,
        )
        object.__setattr__(self, "gap_rekey_ages_s", ages)
        require_non_negative(owner, "max_preemptions_per_epoch", self.max_preemptions_per_epoch)
        if self.max_preemptions_per_call is not None:
            require_non_negative(owner, "max_preemptions_per_call", self.max_preemptions_per_call)
        unknown = sorted(set(self.policy_config) - {"placement", "fairness", "stealing", "ttl", "inference"})
        require(
            not unknown, owner, "policy_config", "keys in placement/fairness/stealing/ttl/inference", unknown
        )
