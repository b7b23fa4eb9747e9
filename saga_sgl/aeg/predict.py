"""Predictions from an AEG: P_reuse (Eq. 4-5), time to next use, remaining work (Eq. 9).

* ``reuse_probability``: Eq. 4, P_reuse(s) = sum_u P(v_s -> u) * overlap(s, u), with Eq. 5's
  overlap: n / (n + obs_est) for chain and retry edges (the next prompt is the context plus the tool
  observation), shared / n for a branch. Terminal step or empty cache -> 0; clamped to [0, 1] [R].
* ``NextUsePredictor``: the absolute time the workflow's KV is next read. Not in the paper [I]:
  tool start + a quantile of the tool latency (conditioned on the time already elapsed) + the
  expected queueing delay on the worker. This is what lets the reuse_time eviction policy
  approach Belady (farthest next use first).
* ``ReusePredictor``: the input of the ``reuse_density`` eviction key [I]: from the *distribution*
  of the time to next use (``aeg.gaps.GapModel``: per agent type, tool and step, the workflow's own
  history with the population as its prior), P(next use within the horizon | idle for ``age``) and
  the expected time to that use. The horizon is the cache's recent residence time
  (``policy.pressure.ResidenceTracker``): the time an entry would survive unprotected.
* ``remaining_work_s``: Eq. 9, the sum over pending steps of T_prefill + T_decode through a
  ``CostModel``. Prefill counts the new tokens of each step (the prefix is assumed cached) and
  decode the output tokens [R]. Pending steps follow the most likely path [R] or, in ``expected``
  mode, every path weighted by its probability [I]; both stop at ``max_depth`` (64) [R].

Pure functions and small models; no I/O, no clock reads (``now_s`` is an argument).
``ObservationLengthModel`` (n_obs of Eq. 5) lives in ``aeg.observations`` and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from saga_sgl.aeg.gaps import GapModel
from saga_sgl.aeg.graph import AEG, EdgeKind, Step
from saga_sgl.aeg.observations import (
    ObservationEstimate,
    ObservationLengthModel,
    ObservationSettings,
    step_estimate,
)
from saga_sgl.aeg.tool_latency import ToolLatencyModel
from saga_sgl.policy.interfaces import CostModel
from saga_sgl.policy.settings import require, require_frac, require_non_negative, require_positive
from saga_sgl.policy.views import AgentType, StepId, ToolType

__all__ = [
    "NextUsePredictor",
    "NextUseSettings",
    "ObservationEstimate",
    "ObservationLengthModel",
    "ObservationSettings",
    "ReusePrediction",
    "ReusePredictor",
    "ReusePredictorSettings",
    "WorkMode",
    "WorkSettings",
    "expected_completion_s",
    "expected_queue_delay_s",
    "overlap",
    "remaining_work_s",
    "reuse_probability",
]

# -- Eq. 4-5 -------------------------------------------------------------------------------------


def overlap(context_tokens: int, observation_tokens: float) -> float:
    """Eq. 5 on a chain: n / (n + n_obs); 0 for an empty context."""
    if context_tokens <= 0:
        return 0.0
    return context_tokens / (context_tokens + max(observation_tokens, 0.0))


def reuse_probability(
    aeg: AEG,
    step_id: StepId,
    context_tokens: int,
    observation_estimate: ObservationEstimate | None = None,
) -> float:
    """P_reuse (Eq. 4) of a workflow whose last step is ``step_id`` with ``context_tokens`` cached."""
    step = aeg.step(step_id)
    if step.is_terminal or context_tokens <= 0:
        return 0.0
    obs = (observation_estimate or step_estimate)(step)
    total = 0.0
    for e in aeg.successors(step_id):
        if e.kind is EdgeKind.BRANCH:
            assert e.shared_prefix_tokens is not None  # AEG.build enforces it for branches
            ov = min(e.shared_prefix_tokens, context_tokens) / context_tokens
        else:
            ov = overlap(context_tokens, obs)
        total += e.prob * ov
    return min(1.0, max(0.0, total))


# -- time to next use ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NextUseSettings:
    """Settings of ``NextUsePredictor``."""

    gap_quantile: float = 0.5
    """Quantile of the (conditional) tool latency used as the predicted gap; the median [I]."""

    def __post_init__(self) -> None:
        require(0 < self.gap_quantile < 1, "NextUseSettings", "gap_quantile", "in (0, 1)", self.gap_quantile)


def expected_queue_delay_s(num_waiting_reqs: int, num_running_reqs: int, mean_call_s: float) -> float:
    """Expected wait before a new call starts on a worker [I].

    The waiting requests ahead drain as running ones finish: about num_waiting / num_running
    call durations (one call duration per waiting request if nothing runs).
    """
    require_non_negative("expected_queue_delay_s", "mean_call_s", mean_call_s)
    if num_waiting_reqs <= 0:
        return 0.0
    return num_waiting_reqs / max(num_running_reqs, 1) * mean_call_s


class NextUsePredictor:
    """Predicts the absolute time a workflow in a tool gap next reads its KV."""

    def __init__(self, latency: ToolLatencyModel, settings: NextUseSettings | None = None) -> None:
        self.latency = latency
        self.settings = settings or NextUseSettings()

    def next_use_at_s(
        self, tool: ToolType, tool_started_at_s: float, now_s: float, queue_delay_s: float = 0.0
    ) -> float:
        """tool start + quantile of the tool latency given the time elapsed + queueing delay."""
        elapsed = max(0.0, now_s - tool_started_at_s)
        total = self.latency.conditional_quantile_s(tool, self.settings.gap_quantile, elapsed)
        return tool_started_at_s + total + max(queue_delay_s, 0.0)


# -- reuse within the horizon (the reuse_density eviction key's inputs) ------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReusePredictorSettings:
    """Settings of ``ReusePredictor``."""

    min_horizon_s: float = 1.0
    """Shortest horizon used, seconds (a residence time below it is noise) [I]."""
    max_horizon_s: float = 3600.0
    """Longest horizon, and the horizon while the cache has not evicted yet, seconds [I]."""
    horizon_factor: float = 4.0
    """Horizon = this x the cache's residence time: entries a policy chooses to keep live longer
    than the average token (Little's law), so a hit after one residence time is still a hit [I]."""

    def __post_init__(self) -> None:
        owner = "ReusePredictorSettings"
        require_positive(owner, "min_horizon_s", self.min_horizon_s)
        require(
            self.max_horizon_s >= self.min_horizon_s,
            owner,
            "max_horizon_s",
            ">= min_horizon_s",
            self.max_horizon_s,
        )
        require_positive(owner, "horizon_factor", self.horizon_factor)


MIN_REUSE_PROB = 1e-3
"""Floor of P in the effective next use: "hopeless" entries still order by when they were judged."""


@dataclass(frozen=True, slots=True)
class ReusePrediction:
    """The two view fields the ``reuse_density`` key reads."""

    reuse_prob: float
    """P(next use within the horizon | idle so far) -> ``CacheEntryView.reuse_prob``."""
    next_use_at_s: float
    """now + expected wait given a use within the horizon -> ``CacheEntryView.next_use_at_s``."""
    horizon_s: float
    """The horizon used."""
    now_s: float
    """When the prediction was made."""
    source: str
    """Which distribution answered (workflow history, class or tool prior)."""

    @property
    def effective_next_use_s(self) -> float:
        """now + expected cache occupancy per expected hit: E[min(wait, horizon)] / P.

        The reciprocal of LHD's hit density on a time axis: a sure next use at t gives t (Belady's
        key), P -> 0 gives infinity (evict first). Absolute, so a key built from it does not drift.
        """
        prob = max(self.reuse_prob, MIN_REUSE_PROB)
        wait = self.next_use_at_s - self.now_s
        occupancy = prob * wait + (1.0 - prob) * self.horizon_s
        return self.now_s + occupancy / prob


class ReusePredictor:
    """P(reuse before eviction | age, tool, step, workflow history) and the expected time to it."""

    def __init__(self, gaps: GapModel, settings: ReusePredictorSettings | None = None) -> None:
        self.gaps = gaps
        self.settings = settings or ReusePredictorSettings()

    def horizon_s(self, residence_s: float) -> float:
        """horizon_factor x the cache's residence time, clamped to [min_horizon_s, max_horizon_s]."""
        s = self.settings
        if not math.isfinite(residence_s):
            return s.max_horizon_s
        return min(max(s.horizon_factor * residence_s, s.min_horizon_s), s.max_horizon_s)

    def predict(
        self,
        *,
        idle_since_s: float,
        now_s: float,
        residence_s: float = math.inf,
        agent_type: AgentType | str = "",
        tool: ToolType | str = "",
        step: int = 0,
        workflow_id: str | None = None,
    ) -> ReusePrediction:
        """Prediction for a workflow idle (its KV unused) since ``idle_since_s``, at ``now_s``."""
        horizon = self.horizon_s(residence_s)
        out = self.gaps.outlook(
            now_s - idle_since_s,
            horizon,
            agent_type=agent_type,
            tool=tool,
            step=step,
            workflow_id=workflow_id,
        )
        return ReusePrediction(out.prob, now_s + out.expected_wait_s, horizon, now_s, out.source)


# -- Eq. 9 ---------------------------------------------------------------------------------------


class WorkMode(StrEnum):
    """How ``remaining_work_s`` chooses the pending steps."""

    MOST_LIKELY = "most_likely"
    """The most likely path only (reference repo [R])."""
    EXPECTED = "expected"
    """Every path, weighted by its probability (an expectation over the AEG) [I]."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkSettings:
    """Settings of ``remaining_work_s``."""

    max_depth: int = 64
    """Pending steps considered at most (reference repo [R])."""
    mode: WorkMode = WorkMode.MOST_LIKELY
    """Which pending steps count."""
    min_path_prob: float = 1e-3
    """EXPECTED mode: stop once the probability of still running falls below this [I]."""

    def __post_init__(self) -> None:
        require(self.max_depth >= 1, "WorkSettings", "max_depth", ">= 1", self.max_depth)
        require_frac("WorkSettings", "min_path_prob", self.min_path_prob)
        modes = [m.value for m in WorkMode]
        require(self.mode in modes, "WorkSettings", "mode", f"one of {modes}", self.mode)
        object.__setattr__(self, "mode", WorkMode(self.mode))


def _step_cost(step: Step, new_tokens: float, context: float, cost: CostModel) -> float:
    return cost.prefill_time_s(round(new_tokens), round(context)) + cost.decode_time_s(
        step.output_tokens_est, round(context + new_tokens)
    )


def remaining_work_s(
    aeg: AEG,
    last_completed: StepId | None,
    context_tokens: int,
    cost: CostModel,
    *,
    settings: WorkSettings | None = None,
    observation_estimate: ObservationEstimate | None = None,
    tool_time_s: Callable[[ToolType], float] | None = None,
) -> float:
    """work_remain (Eq. 9) in GPU-seconds for a workflow whose last finished step is ``last_completed``.

    ``last_completed=None``: nothing ran yet; the root is pending with its full prompt.
    ``tool_time_s``: if given, each pending tool call adds its expected latency (for expected
    completion time rather than GPU work).
    """
    s = settings or WorkSettings()
    obs_of = observation_estimate or step_estimate
    tool_cost = tool_time_s or (lambda _tool: 0.0)
    # frontier: (probability, step id, new tokens of its first call) at this depth.
    if last_completed is None:
        root = aeg.step(aeg.root)
        frontier = [(1.0, aeg.root, float(root.prompt_tokens_est))]
    else:
        done = aeg.step(last_completed)
        if done.is_terminal:
            return 0.0
        pre = tool_cost(done.tool) if done.tool is not None else 0.0
        new = obs_of(done)
        edges = aeg.successors(last_completed)
        if s.mode is WorkMode.MOST_LIKELY:
            edges = edges[:1]
            if not edges:
                return 0.0
            frontier = [(1.0, edges[0].dst, new)]
        else:
            frontier = [(e.prob, e.dst, new) for e in edges]
        if not frontier:
            return 0.0
        total = pre * sum(p for p, _, _ in frontier)
        return total + _walk(aeg, frontier, float(context_tokens), cost, s, obs_of, tool_cost)
    return _walk(aeg, frontier, float(context_tokens), cost, s, obs_of, tool_cost)


def _walk(
    aeg: AEG,
    frontier: list[tuple[float, StepId, float]],
    context: float,
    cost: CostModel,
    s: WorkSettings,
    obs_of: ObservationEstimate,
    tool_cost: Callable[[ToolType], float],
) -> float:
    total = 0.0
    for _ in range(s.max_depth):
        if not frontier:
            break
        mass = sum(p for p, _, _ in frontier)
        if mass < s.min_path_prob and s.mode is WorkMode.EXPECTED:
            break
        nxt: dict[StepId, list[float]] = {}
        grown = 0.0
        for p, sid, new in frontier:
            step = aeg.step(sid)
            total += p * _step_cost(step, new, context, cost)
            grown += p * (new + step.output_tokens_est)
            if step.is_terminal:
                continue
            if step.tool is not None:
                total += p * tool_cost(step.tool)
            edges = aeg.successors(sid)
            if s.mode is WorkMode.MOST_LIKELY:
                edges = edges[:1]
            obs = obs_of(step)
            for e in edges:
                q = p if s.mode is WorkMode.MOST_LIKELY else p * e.prob
                acc = nxt.setdefault(e.dst, [0.0, 0.0])
                acc[0] += q
                acc[1] += q * obs
        # The context grows by the expected new and output tokens of this depth.
        context += grown / mass if mass > 0 else 0.0
        frontier = [(v[0], sid, v[1] / v[0] if v[0] > 0 else 0.0) for sid, v in sorted(nxt.items())]
    return total


def expected_completion_s(
    aeg: AEG,
    last_completed: StepId | None,
    context_tokens: int,
    cost: CostModel,
    latency: ToolLatencyModel,
    *,
    settings: WorkSettings | None = None,
    observation_estimate: ObservationEstimate | None = None,
) -> float:
    """Expected time to finish: remaining GPU work plus the mean latency of every pending tool call.

    The SLO deadline is ``slo_factor`` (1.5) x this, measured from admission [P].
    """
    t = remaining_work_s(
        aeg,
        last_completed,
        context_tokens,
        cost,
        settings=settings,
        observation_estimate=observation_estimate,
        tool_time_s=latency.mean_s,
    )
    return t if math.isfinite(t) else math.inf
