"""GapModel: the distribution of the time from a KV entry's last use to its next use, learned online.

What eviction needs is not a point estimate of the next use but its distribution: with heavy-tailed
gaps an idle workflow becomes *less* likely to come back the longer it has been idle, and many never
come back. The model is a piecewise-constant hazard on log-spaced age bins, estimated from events
and exposure (the survival-analysis estimator that handles censoring): ``observe_idle(lo, hi,
returned)`` credits the time an idle period spent at ages [lo, hi) and, if it ended by a new call at
``hi``, one event there. Idle periods that are still open are credited as they age (the driver does
it at its re-key times), so workflows that never come back lower the hazard at long ages without
waiting for a "finished" that a trace may never send [I].

* Classes: (agent type, tool, step bucket), with fallback to (agent type, tool), then (agent type),
  then the whole population, whichever is the most specific class with ``min_class_samples``
  idle periods [I]. Step buckets are 0, 1, 2-3, 4-7, 8-15, ... (powers of two): a workflow's chance to
  continue depends on how far it got.
* Per-workflow history: a workflow's own events and exposure are added to its class's, the class
  scaled to ``prior_weight`` idle periods (population as the prior) [I].
* Cold start: with no class, the tool-latency model's distribution of the tool (its prior is paper
  Table 1; tools return, so no "never" mass).

``outlook(age, horizon)``: P(next use in (age, age + horizon] | none by age) and the expected wait
given that. O(bins) per call (about 56 bins); ``observe_idle`` is O(bins). No I/O, no clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from saga_sgl.aeg.tool_latency import ToolLatencyModel
from saga_sgl.policy.settings import require, require_non_negative, require_positive
from saga_sgl.policy.views import AgentType, ToolType

ClassKey = tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GapSettings:
    """Settings of ``GapModel``."""

    min_gap_s: float = 0.01
    """Lower edge of the first bin (shorter gaps fall into it), seconds [I]."""
    max_gap_s: float = 86400.0
    """Upper edge of the last bin; longer finite gaps fall into it, seconds [I]."""
    bins_per_decade: int = 8
    """Resolution of the log-spaced histogram [I]."""
    min_class_samples: int = 20
    """Idle periods a class needs before it is used instead of its coarser parent class [I]."""
    prior_weight: float = 4.0
    """Pseudo-samples of the class distribution behind a workflow's own gaps (shrinkage) [I]."""
    never_after_s: float = 1800.0
    """Exposure credited by ``observe(None)`` (an idle period known to have ended without a call) [I]."""
    decay: float = 1.0
    """Multiplier of old events and exposure per new idle period in a class (1 = no forgetting;
    0.999 = about a 1000-period memory) [I]."""
    max_workflows: int = 65536
    """Workflows whose own history is kept (least recently updated forgotten first)."""

    def __post_init__(self) -> None:
        owner = "GapSettings"
        require_positive(owner, "min_gap_s", self.min_gap_s)
        require(self.max_gap_s > self.min_gap_s, owner, "max_gap_s", "> min_gap_s", self.max_gap_s)
        require(self.bins_per_decade >= 1, owner, "bins_per_decade", ">= 1", self.bins_per_decade)
        require(self.min_class_samples >= 1, owner, "min_class_samples", ">= 1", self.min_class_samples)
        require_non_negative(owner, "prior_weight", self.prior_weight)
        require_positive(owner, "never_after_s", self.never_after_s)
        require(0.0 < self.decay <= 1.0, owner, "decay", "in (0, 1]", self.decay)
        require(self.max_workflows >= 1, owner, "max_workflows", ">= 1", self.max_workflows)


@dataclass(frozen=True, slots=True)
class ReuseOutlook:
    """What the gap distribution says about one idle entry at one age."""

    prob: float
    """P(next use within the horizon | no use so far)."""
    expected_wait_s: float
    """E[time from now to the next use | it comes within the horizon] (the horizon if prob is 0)."""
    source: str
    """Which distribution answered: ``workflow``, ``class:<key>`` or ``prior:<tool>``."""


def step_bucket(step: int) -> int:
    """0, 1, 2 (steps 2-3), 3 (4-7), 4 (8-15), ...: floor(log2(step)) + 1 for step >= 1."""
    return 0 if step <= 0 else step.bit_length()


class _Hist:
    __slots__ = ("events", "exposure", "periods", "returns")

    def __init__(self, num_bins: int) -> None:
        self.events = [0.0] * num_bins
        self.exposure = [0.0] * num_bins
        self.periods = 0.0
        """Idle periods seen (started)."""
        self.returns = 0.0
        """Idle periods that ended with a new call."""


class GapModel:
    """Per-class and per-workflow hazards of the next use; answers P(reuse within h | age a)."""

    def __init__(self, latency: ToolLatencyModel | None = None, settings: GapSettings | None = None) -> None:
        self.settings = s = settings or GapSettings()
        self.latency = latency or ToolLatencyModel()
        self._log_lo = math.log10(s.min_gap_s)
        self._num_bins = max(1, math.ceil((math.log10(s.max_gap_s) - self._log_lo) * s.bins_per_decade))
        # Bin b covers ages [edge(b), edge(b + 1)); the last bin is open-ended.
        self._edges = [10 ** (self._log_lo + b / s.bins_per_decade) for b in range(self._num_bins + 1)]
        self._edges[0] = 0.0
        self._edges[-1] = math.inf
        self._classes: dict[ClassKey, _Hist] = {}
        self._workflows: OrderedDict[str, _Hist] = OrderedDict()

    # -- observe ---------------------------------------------------------------------------------

    def _bin(self, age_s: float) -> int:
        if age_s <= self.settings.min_gap_s:
            return 0
        b = int((math.log10(age_s) - self._log_lo) * self.settings.bins_per_decade)
        return min(max(b, 0), self._num_bins - 1)

    def _classes_of(self, agent_type: AgentType | str, tool: ToolType | str, step: int) -> list[ClassKey]:
        """Most specific first."""
        return [(agent_type, tool, str(step_bucket(step))), (agent_type, tool), (agent_type,), ()]

    def _credit(self, hist: _Hist, lo: float, hi: float, returned: bool, new_period: bool) -> None:
        d = self.settings.decay
        if d < 1.0 and new_period:
            hist.events = [x * d for x in hist.events]
            hist.exposure = [x * d for x in hist.exposure]
            hist.periods *= d
            hist.returns *= d
        edges = self._edges
        b = self._bin(lo)
        while b < self._num_bins and edges[b] < hi:
            overlap = min(hi, edges[b + 1]) - max(lo, edges[b])
            if overlap > 0:
                hist.exposure[b] += overlap
            b += 1
        if new_period:
            hist.periods += 1.0
        if returned:
            hist.events[self._bin(hi)] += 1.0
            hist.returns += 1.0

    def observe_idle(
        self,
        lo_s: float,
        hi_s: float,
        returned: bool,
        *,
        agent_type: AgentType | str = "",
        tool: ToolType | str = "",
        step: int = 0,
        workflow_id: str | None = None,
    ) -> None:
        """An idle period spent ages [lo_s, hi_s); ``returned``: it ended by a call at ``hi_s``.

        Credit an open period in pieces (lo_s = the age credited last time); the piece with
        lo_s == 0 counts as a new period.
        """
        for name, v in (("lo_s", lo_s), ("hi_s", hi_s)):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
        if hi_s < lo_s:
            raise ValueError(f"hi_s ({hi_s}) < lo_s ({lo_s})")
        new_period = lo_s == 0.0
        for key in self._classes_of(agent_type, tool, step):
            hist = self._classes.get(key)
            if hist is None:
                hist = self._classes[key] = _Hist(self._num_bins)
            self._credit(hist, lo_s, hi_s, returned, new_period)
        if workflow_id is not None:
            own = self._workflows.get(workflow_id)
            if own is None:
                own = self._workflows[workflow_id] = _Hist(self._num_bins)
                while len(self._workflows) > self.settings.max_workflows:
                    self._workflows.popitem(last=False)
            else:
                self._workflows.move_to_end(workflow_id)
            self._credit(own, lo_s, hi_s, returned, new_period)

    def observe(
        self,
        gap_s: float | None,
        *,
        agent_type: AgentType | str = "",
        tool: ToolType | str = "",
        step: int = 0,
        workflow_id: str | None = None,
    ) -> None:
        """One whole idle period: the next call came after ``gap_s``; None = it never came (counted as
        idle for ``never_after_s``)."""
        if gap_s is None:
            self.observe_idle(
                0.0,
                self.settings.never_after_s,
                False,
                agent_type=agent_type,
                tool=tool,
                step=step,
                workflow_id=workflow_id,
            )
        else:
            self.observe_idle(
                0.0, gap_s, True, agent_type=agent_type, tool=tool, step=step, workflow_id=workflow_id
            )

    def forget_workflow(self, workflow_id: str) -> None:
        """Drop a finished workflow's own history."""
        self._workflows.pop(workflow_id, None)

    def samples(self, agent_type: AgentType | str = "", tool: ToolType | str = "", step: int = 0) -> float:
        """Returns observed in the most specific class of (agent type, tool, step)."""
        hist = self._classes.get(self._classes_of(agent_type, tool, step)[0])
        return 0.0 if hist is None else hist.returns

    # -- predict ---------------------------------------------------------------------------------

    def outlook(
        self,
        age_s: float,
        horizon_s: float,
        *,
        agent_type: AgentType | str = "",
        tool: ToolType | str = "",
        step: int = 0,
        workflow_id: str | None = None,
    ) -> ReuseOutlook:
        """P(next use in (age, age + horizon] | none by age) and the expected wait given that."""
        require_positive("GapModel.outlook", "horizon_s", horizon_s)
        age_s = max(0.0, age_s)
        cls_hist, cls_key = self._class_hist(agent_type, tool, step)
        if cls_hist is None:
            return self._prior_outlook(ToolType(tool), age_s, horizon_s)
        own = self._workflows.get(workflow_id) if workflow_id is not None else None
        if own is not None and own.returns > 0:
            w = self.settings.prior_weight / max(cls_hist.periods, 1.0)
            events = [o + w * c for o, c in zip(own.events, cls_hist.events, strict=True)]
            exposure = [o + w * c for o, c in zip(own.exposure, cls_hist.exposure, strict=True)]
            source = "workflow"
        else:
            events, exposure = cls_hist.events, cls_hist.exposure
            source = "class:" + "/".join(cls_key)
        return self._hazard_outlook(events, exposure, age_s, horizon_s, source)

    def _class_hist(self, agent_type: str, tool: str, step: int) -> tuple[_Hist | None, ClassKey]:
        need = self.settings.min_class_samples
        for key in self._classes_of(agent_type, tool, step):
            hist = self._classes.get(key)
            if hist is not None and hist.periods >= need:
                return hist, key
        return None, ()

    def _hazard_outlook(
        self, events: list[float], exposure: list[float], age_s: float, horizon_s: float, source: str
    ) -> ReuseOutlook:
        lo, hi = age_s, age_s + horizon_s
        edges = self._edges
        cum = 0.0  # cumulative hazard from lo
        area = 0.0  # integral of S(t) / S(lo) over [lo, hi)
        b = self._bin(lo)
        while b < self._num_bins and edges[b] < hi:
            u, v = max(lo, edges[b]), min(hi, edges[b + 1])
            if v > u:
                h = events[b] / exposure[b] if exposure[b] > 0.0 else 0.0
                s_u = math.exp(-cum)
                area += s_u * (v - u) if h <= 0.0 else s_u * (1.0 - math.exp(-h * (v - u))) / h
                cum += h * (v - u)
            b += 1
        s_hi = math.exp(-cum)
        prob = 1.0 - s_hi
        if prob <= 1e-12:
            return ReuseOutlook(0.0, horizon_s, source)
        expected = (area - horizon_s * s_hi) / prob
        return ReuseOutlook(min(prob, 1.0), min(max(expected, 0.0), horizon_s), source)

    def _prior_outlook(self, tool: ToolType, age_s: float, horizon_s: float) -> ReuseOutlook:
        lat = self.latency
        f_a = lat.cdf(tool, age_s)
        f_h = lat.cdf(tool, age_s + horizon_s)
        alive = 1.0 - f_a
        if alive <= 1e-12:
            return ReuseOutlook(1.0, 0.0, f"prior:{tool}")
        prob = (f_h - f_a) / alive
        # Expected remaining wait given a return within the horizon: the conditional median is a
        # robust stand-in (the log-normal mean is dominated by its tail).
        median_total = lat.conditional_quantile_s(tool, 0.5 * prob, age_s) if prob > 0 else age_s + horizon_s
        return ReuseOutlook(prob, min(max(median_total - age_s, 0.0), horizon_s), f"prior:{tool}")
