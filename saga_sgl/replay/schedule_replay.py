"""Replay one worker's fixed schedule (``replay.sim_schedule``) through a prefix cache and a policy.

Access model (``policy.eviction.belady``'s, with durations): at its admission an access reads its
prompt's segments (the longest cached prefix hits; every other prompt segment is recomputed) and
writes its output segment; all of them are inserted and pinned until the access finishes. Only
unpinned leaves are evictable, so the cache stays prefix-closed. A segment that does not fit even
after evicting every candidate is recomputed and not cached (``bypassed_tokens``), and so is the
rest of that chain. Capacity counts every cached token, pinned or not (the running requests' KV is
in the same pool). The schedule does not depend on the policy, so every row reads the same sequence.

Rows (``ViewMode``):

* ``plain``: views carry only the last access (what SGLang's LRU sees);
* ``hints``: views carry the scheduler's recorded hint record of the owning workflow at that time
  (``HintChange``), as the simulator's ``ViewBuilder.entry`` builds them; a workflow's evictable
  leaves are re-keyed at each of its hint changes, including the scheduler's age re-keys of a tool
  gap (``SchedulerSettings.gap_rekey_ages_s``: the wait runs from ``CacheHints.predicted_at_s``). A
  segment read by more than one workflow (a system prompt) has no single owner and gets a plain
  view;
* ``hints_at_tool_start``: ``hints`` without the re-predictions during a tool gap (the hint
  changes the scheduler made after the tool start are ignored, and the wait runs from the last
  use): the ablation of the age re-keys on the same schedule;
* ``oracle``: each segment's true next read on this worker (Belady; labelled oracle);
* ``hints_by_age``: session 7's benchmark-side emulation of age re-keys, kept to compare with the
  scheduler's own: ``hints``, and while a workflow is in a tool gap its entries are re-keyed at
  log-spaced ages (``AGE_REKEYS_S``) with P(return within the horizon | idle that long, tool,
  workflow history) from a ``GapModel`` this replay learns online from the schedule's own past
  gaps, the horizon 4x this cache's residence time: the recorded P is scaled by how that
  probability moved since the tool started, the next use is the conditional expected return, and
  the wait runs from the re-key;
* ``known_gap``: ``hints`` with the wait of each gap prediction (the tool start and every re-key the
  scheduler made) replaced by the mean remaining tool latency given the gap's age under the
  workload's TRUE per-tool distribution (``KnownGaps``; an oracle, labelled as such), P the
  tool-start hint's (the true P of a return within the horizon is 1 at every age below the
  distribution's cap), the wait from the re-key: what a perfect gap-distribution model, and no
  knowledge of the individual draw, gives the key at the same re-key instants;
* ``true_return``: ``hints`` with the workflow's true next admission on this worker as its next use
  (P = 1, or "never") instead of the scheduler's prediction, the wait measured from the moment the
  view is built (``CacheEntryView.predicted_at_s``): an oracle that isolates what the prediction of
  tool return times costs a policy (the rest is the key's rule and granularity).

``belady`` is prefix-closed MIN: evict the leaf read farthest in the future (never = infinity),
deepest first on ties. A child is read only with its parent, so next(parent) <= next(child) and the
rule never needs a non-leaf. It is optimal for unit-size segments (tests check it against brute
force); with token-weighted segments optimal caching is NP-hard and this is the standard bound, not
a proven optimum (a policy can in principle score below 1.00).

Eviction cost = recomputed tokens of segments this worker had computed before (the simulator's
``recomputed_evicted``), except bypassed ones (no evictable leaf was left: no policy could have
kept them); first reads (``compulsory_tokens``) are the same for every policy.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from saga_sgl.aeg.gaps import GapModel
from saga_sgl.aeg.predict import ReusePredictor
from saga_sgl.aeg.tool_latency import tool_type_of
from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction, ReuseTimeSettings
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.pressure import ProtectedTokens, ResidenceTracker, kv_pressure
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, WorkflowId, WorkflowState
from saga_sgl.replay.sim_schedule import Access, Finish, HintChange, Schedule
from saga_sgl.scheduler import CacheHints


class ViewMode(StrEnum):
    PLAIN = "plain"
    HINTS = "hints"
    HINTS_AT_TOOL_START = "hints_at_tool_start"
    HINTS_BY_AGE = "hints_by_age"
    KNOWN_GAP = "known_gap"
    ORACLE = "oracle"
    TRUE_RETURN = "true_return"


@dataclass(frozen=True, slots=True)
class ScheduleStats:
    """Outcome of replaying one worker's schedule."""

    read_tokens: int
    hit_tokens: int
    recomputed_tokens: int
    evicted_recompute_tokens: int
    """Recomputed tokens of segments this worker had computed before and evicted since (the eviction
    cost; bypassed ones excluded: the pool was all pinned, no policy could have kept them)."""
    compulsory_tokens: int
    """Recomputed tokens of segments read here for the first time (the same for every policy)."""
    bypassed_tokens: int
    evictions: int

    def __add__(self, other: ScheduleStats) -> ScheduleStats:
        return ScheduleStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.read_tokens if self.read_tokens else 0.0


EMPTY = ScheduleStats(0, 0, 0, 0, 0, 0, 0)


class _Seg:
    __slots__ = (
        "cached",
        "depth",
        "eid",
        "kids",
        "last_s",
        "owner",
        "parent",
        "pins",
        "seen",
        "shared",
        "tokens",
    )

    def __init__(self, eid: int, tokens: int, depth: int, parent: _Seg | None) -> None:
        self.eid = eid
        self.tokens = tokens
        self.depth = depth
        self.parent = parent
        self.cached = False
        self.seen = False
        self.kids = 0
        self.pins = 0
        self.last_s = 0.0
        self.owner: WorkflowId | None = None
        self.shared = False


AGE_REKEYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
"""Ages of a tool gap (seconds) at which ``hints_by_age`` re-predicts and re-keys the workflow."""


class _AgeModel:
    """``hints_by_age``: tool gaps' hazard learned online, and each idle workflow's current outlook."""

    def __init__(self) -> None:
        self.gaps = GapModel()
        self.predictor = ReusePredictor(self.gaps)
        self.residence = ResidenceTracker()
        self.residence_s = math.inf
        # workflow -> [gap start, tool, agent type, version, age credited, P at the start]
        self.idle: dict[WorkflowId, list[Any]] = {}
        self.outlook: dict[WorkflowId, tuple[float, float, float]] = {}
        """workflow -> (P scale since the tool started, expected next use, re-key time) of its last
        re-key: the prediction is conditional on the age at the re-key, so its wait runs from then."""
        self.timers: list[tuple[float, int, WorkflowId, int]] = []
        self._seq = 0

    def _predict(self, wid: WorkflowId, gap: list[Any], now_s: float) -> tuple[float, float]:
        pred = self.predictor.predict(
            idle_since_s=gap[0],
            now_s=now_s,
            residence_s=self.residence_s,
            agent_type=gap[2],
            tool=gap[1],
            workflow_id=str(wid),
        )
        return pred.reuse_prob, pred.next_use_at_s

    def on_hints(self, change: HintChange) -> None:
        wid, hints, now = change.workflow, change.hints, change.at_s
        in_gap = hints is not None and hints.state is WorkflowState.TOOL_GAP
        gap = self.idle.get(wid)
        if gap is not None and not in_gap:
            returned = hints is not None and not hints.is_finished
            self.gaps.observe_idle(
                gap[4],
                max(gap[4], now - gap[0]),
                returned,
                agent_type=gap[2],
                tool=gap[1],
                workflow_id=str(wid),
            )
            del self.idle[wid]
            self.outlook.pop(wid, None)
        if in_gap and gap is None:
            self._seq += 1
            gap = [now, change.tool, change.agent_type, self._seq, 0.0, 0.0]
            gap[5] = self._predict(wid, gap, now)[0]
            self.idle[wid] = gap
            for age in AGE_REKEYS_S:
                heapq.heappush(self.timers, (now + age, self._seq, wid, self._seq))

    def due(self, until_s: float) -> list[tuple[float, WorkflowId]]:
        """Fire re-key timers up to ``until_s``: (time, workflow) whose outlook changed."""
        out = []
        while self.timers and self.timers[0][0] <= until_s:
            t, _, wid, version = heapq.heappop(self.timers)
            gap = self.idle.get(wid)
            if gap is None or gap[3] != version:
                continue
            age = t - gap[0]
            self.gaps.observe_idle(
                gap[4], max(gap[4], age), False, agent_type=gap[2], tool=gap[1], workflow_id=str(wid)
            )
            gap[4] = max(gap[4], age)
            prob, nxt = self._predict(wid, gap, t)
            scale = prob / gap[5] if gap[5] > 0 else 1.0
            self.outlook[wid] = (min(scale, 1.0), nxt, t)
            out.append((t, wid))
        return out


class KnownGaps:
    """The workload's true tool-latency distributions (an oracle input): the mean remaining latency
    of a tool call given its age, E[T - a | T > a], from each tool's quantile function."""

    GRID = 200_000
    """Quantile-grid points per tool (midpoint rule on u; the spliced tails are capped, so finite)."""

    def __init__(self, quantiles: Mapping[str, Callable[[np.ndarray], np.ndarray]]) -> None:
        u = (np.arange(self.GRID) + 0.5) / self.GRID
        self._sorted: dict[str, np.ndarray] = {}
        self._tail_sums: dict[str, np.ndarray] = {}
        for tool, q in quantiles.items():
            t = np.sort(np.asarray(q(u), dtype=float))
            self._sorted[tool] = t
            self._tail_sums[tool] = np.concatenate([np.cumsum(t[::-1])[::-1], [0.0]])

    def __contains__(self, tool: str) -> bool:
        return tool in self._sorted

    def mean_remaining_s(self, tool: str, age_s: float) -> float:
        """E[T - age | T > age] (0 when no draw is that long)."""
        t = self._sorted[tool]
        k = int(np.searchsorted(t, age_s, side="right"))
        n = len(t) - k
        if n <= 0:
            return 0.0
        return float(self._tail_sums[tool][k]) / n - age_s


def belady_policy() -> EvictionPolicy:
    """The oracle's key: farthest next read first, deepest first on ties (no TTL tier)."""
    return ReuseTimeEviction(ReuseTimeSettings(ttl_protection=False))


def replay_worker(
    schedule: Schedule,
    worker: int,
    capacity_tokens: int,
    policy: EvictionPolicy,
    mode: ViewMode,
    *,
    blame: dict[str, int] | None = None,
    known_gaps: KnownGaps | None = None,
) -> ScheduleStats:
    """Replay worker ``worker``'s accesses in ``schedule`` through a cache of ``capacity_tokens``.

    ``blame``, if given, adds up the eviction recompute by what the victim was when it was evicted
    (``victim_kind``: its workflow's recorded state), to say where a policy loses. ``known_gaps``:
    the true tool-latency distributions ``known_gap`` needs (required in that mode)."""
    if mode is ViewMode.KNOWN_GAP and known_gaps is None:
        raise ValueError("ViewMode.KNOWN_GAP needs known_gaps (the workload's true tool latencies)")
    if capacity_tokens < 0:
        raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
    if not 0 <= worker < schedule.num_workers:
        raise ValueError(f"worker {worker} not in the schedule's {schedule.num_workers} workers")
    segs: dict[int, _Seg] = {}
    reads: dict[int, list[float]] = {}
    for e in schedule.events:
        if isinstance(e, Access) and e.worker == worker:
            for pid, _ in e.prompt:
                lst = reads.setdefault(pid, [])
                if not lst or lst[-1] != e.admit_s:
                    lst.append(e.admit_s)

    returns: dict[WorkflowId, list[float]] = {}
    if mode is ViewMode.TRUE_RETURN:
        for e in schedule.events:
            if isinstance(e, Access) and e.worker == worker and e.workflow is not None:
                returns.setdefault(e.workflow, []).append(e.admit_s)

    def next_read(pid: int, now_s: float) -> float:
        lst = reads.get(pid)
        if not lst:
            return math.inf
        k = bisect.bisect_right(lst, now_s)
        return lst[k] if k < len(lst) else math.inf

    hints_of: dict[WorkflowId, CacheHints | None] = {}
    ages = _AgeModel() if mode is ViewMode.HINTS_BY_AGE else None
    gap_start: dict[WorkflowId, tuple[float, float | None]] = {}
    """workflow in a tool gap -> (the gap's first hint time, its P then)."""
    known: dict[WorkflowId, tuple[float, float]] = {}
    """``known_gap``: workflow -> (true expected next use, when predicted) of its last re-key."""

    def on_hint_change(change: HintChange) -> bool:
        """Record a hint change; False when this mode ignores it (no re-key)."""
        wid, hints = change.workflow, change.hints
        in_gap = hints is not None and hints.state is WorkflowState.TOOL_GAP
        if not in_gap:
            gap_start.pop(wid, None)
            known.pop(wid, None)
        elif wid not in gap_start:
            gap_start[wid] = (change.at_s, hints.reuse_prob if hints is not None else None)
        elif mode is ViewMode.HINTS_AT_TOOL_START and hints is not None and hints.predicted_at_s is not None:
            return False  # a re-prediction during the gap: the ablation keeps the tool start's
        hints_of[wid] = hints
        if mode is ViewMode.KNOWN_GAP and in_gap:
            assert known_gaps is not None
            tool = tool_type_of(change.tool) if change.tool else ""
            if tool in known_gaps:
                age = change.at_s - gap_start[wid][0]
                known[wid] = (change.at_s + known_gaps.mean_remaining_s(tool, age), change.at_s)
        return True

    def view(pid: int, seg: _Seg, now_s: float) -> CacheEntryView:
        if mode is ViewMode.ORACLE:
            return CacheEntryView(
                entry_id=seg.eid,
                num_tokens=seg.tokens,
                depth_tokens=seg.depth,
                last_access_s=seg.last_s,
                next_use_at_s=next_read(pid, now_s),
            )
        owner = seg.owner
        if mode is ViewMode.PLAIN or owner is None or seg.shared:
            return CacheEntryView(
                entry_id=seg.eid, num_tokens=seg.tokens, depth_tokens=seg.depth, last_access_s=seg.last_s
            )
        hints = hints_of.get(owner)
        if hints is None:
            return CacheEntryView(
                entry_id=seg.eid,
                num_tokens=seg.tokens,
                depth_tokens=seg.depth,
                last_access_s=seg.last_s,
                workflow_id=owner,
            )
        prob, nxt = hints.reuse_prob, hints.next_use_at_s
        # When the prediction was made (None: at the entry's last use, the tool start's).
        at = None if mode is ViewMode.HINTS_AT_TOOL_START else hints.predicted_at_s
        if mode is ViewMode.KNOWN_GAP and owner in known:
            nxt, at = known[owner]
            prob = gap_start[owner][1]
        if ages is not None and owner in ages.outlook and prob is not None:
            scale, nxt, at = ages.outlook[owner]
            prob = prob * scale
        if mode is ViewMode.TRUE_RETURN:
            lst = returns.get(owner, [])
            k = bisect.bisect_right(lst, now_s)
            nxt = lst[k] if k < len(lst) else math.inf
            prob = 1.0 if nxt < math.inf else 0.0
            at = now_s  # known, not predicted: the wait runs from the moment the view is built
        return CacheEntryView(
            entry_id=seg.eid,
            num_tokens=seg.tokens,
            depth_tokens=seg.depth,
            last_access_s=seg.last_s,
            workflow_id=owner,
            is_finished=hints.is_finished,
            is_terminal=hints.is_finished,
            reuse_prob=prob,
            next_use_at_s=nxt,
            ttl_deadline_s=hints.ttl_deadline_s,
            predicted_at_s=at,
        )

    by_eid: dict[int, int] = {}
    index = VictimIndex(policy, content_of=lambda v: by_eid[v.entry_id], capacity_tokens=capacity_tokens)
    protected = ProtectedTokens()
    leaves_of: dict[WorkflowId, set[int]] = {}
    used = pinned_tokens = 0
    read = hit = recomputed = evicted_rc = compulsory = bypassed = evictions = 0
    pressure = 0.0

    def add_leaf(pid: int, seg: _Seg, now_s: float) -> None:
        v = view(pid, seg, now_s)
        protected.track(seg.eid, seg.depth, v.ttl_deadline_s, now_s)
        index.add(v, now_s, pressure)
        if seg.owner is not None and not seg.shared:
            leaves_of.setdefault(seg.owner, set()).add(pid)

    def drop_leaf(pid: int, seg: _Seg) -> None:
        index.remove(seg.eid)
        protected.untrack(seg.eid)
        if seg.owner is not None:
            s = leaves_of.get(seg.owner)
            if s is not None:
                s.discard(pid)

    def is_leaf(seg: _Seg) -> bool:
        return seg.cached and seg.kids == 0 and seg.pins == 0

    evicted_as: dict[int, str] = {}
    pinned_by: dict[int, list[int]] = {}
    """Index of an open access -> path ids it pinned."""

    def rekey(wid: WorkflowId, now_s: float) -> None:
        for pid in list(leaves_of.get(wid, ())):
            seg = segs[pid]
            if is_leaf(seg) and seg.owner == wid and not seg.shared:
                v = view(pid, seg, now_s)
                protected.track(seg.eid, seg.depth, v.ttl_deadline_s, now_s)
                index.update(v, now_s, pressure)

    for i, e in enumerate(schedule.events):
        if ages is not None:
            ages.residence_s = ages.residence.residence_s(used, _event_time(e))
            for t, wid in ages.due(_event_time(e)):
                rekey(wid, t)
        if isinstance(e, HintChange):
            if not on_hint_change(e):
                continue
            if ages is not None:
                ages.on_hints(e)
            if mode is not ViewMode.PLAIN and mode is not ViewMode.ORACLE:
                rekey(e.workflow, e.at_s)
            continue
        if isinstance(e, Finish):
            pins = pinned_by.pop(e.access, None)
            if pins is None:
                continue
            now = e.at_s
            index.note_path(pins, [segs[pid].tokens for pid in pins], count=False)  # last use: LRU order
            for pid in pins:
                seg = segs[pid]
                seg.pins -= 1
                seg.last_s = now
                if seg.pins == 0:
                    pinned_tokens -= seg.tokens
            for pid in pins:
                seg = segs[pid]
                if is_leaf(seg) and seg.eid not in index:
                    add_leaf(pid, seg, now)
            continue
        if e.worker != worker:
            continue
        now = e.admit_s
        chain = [*e.prompt, *e.output]
        n_prompt = len(e.prompt)
        parent: _Seg | None = None
        path: list[_Seg] = []
        for pid, tokens in chain:
            found = segs.get(pid)
            if found is None:
                found = segs[pid] = _Seg(
                    len(by_eid), tokens, (parent.depth if parent else 0) + tokens, parent
                )
                by_eid[found.eid] = pid
            path.append(found)
            parent = found
        # The guard's evidence: the prompt's reads (root first); the output is written (LRU order only).
        index.note_path([pid for pid, _ in chain[:n_prompt]], [seg.tokens for seg in path[:n_prompt]])
        if n_prompt < len(chain):
            index.note_path([pid for pid, _ in chain], [seg.tokens for seg in path], count=False)
        for j, (pid, _) in enumerate(chain):
            seg = path[j]
            if j < n_prompt:
                read += seg.tokens
            if seg.cached:
                if is_leaf(seg):
                    drop_leaf(pid, seg)
                if seg.pins == 0:
                    pinned_tokens += seg.tokens
                seg.pins += 1
        pins = [pid for (pid, _), seg in zip(chain, path, strict=True) if seg.cached]
        k = 0
        while k < n_prompt and path[k].cached:
            hit += path[k].tokens
            k += 1
        protected_now = protected.tokens(now)
        pressure = kv_pressure(capacity_tokens, pinned_tokens, protected_now)
        caching = True
        for j in range(k, len(chain)):
            pid = chain[j][0]
            seg = path[j]
            if seg.cached:
                continue  # (a prompt that reads past a gap; cannot happen in a prefix-closed cache)
            if j < n_prompt:
                recomputed += seg.tokens
                if not seg.seen:
                    compulsory += seg.tokens
            if caching:
                while capacity_tokens - used < seg.tokens:
                    victim = index.pop(now, pressure)
                    if victim is None:
                        break
                    vpid = by_eid[victim.entry_id]
                    vseg = segs[vpid]
                    protected.untrack(vseg.eid)
                    if vseg.owner is not None:
                        s = leaves_of.get(vseg.owner)
                        if s is not None:
                            s.discard(vpid)
                    vseg.cached = False
                    if ages is not None:
                        ages.residence.on_evict(now, vseg.tokens)
                    if blame is not None:
                        evicted_as[vpid] = victim_kind(vseg, hints_of, now)
                    used -= vseg.tokens
                    evictions += 1
                    p = vseg.parent
                    if p is not None:
                        p.kids -= 1
                        if is_leaf(p):
                            add_leaf(by_eid[p.eid], p, now)
                caching = capacity_tokens - used >= seg.tokens
            if caching:
                seg.cached = True
                used += seg.tokens
                seg.pins += 1
                pinned_tokens += seg.tokens
                pins.append(pid)
                if seg.parent is not None:
                    seg.parent.kids += 1
            else:
                index.note_uncached(pid)
                if j < n_prompt:
                    bypassed += seg.tokens
            if j < n_prompt and seg.seen and seg.cached:
                # Computed here before, evicted since, and cached again: an eviction's cost. (A
                # bypassed segment is not: every evictable leaf was already gone.)
                evicted_rc += seg.tokens
                if blame is not None:
                    kind = evicted_as.pop(pid, "bypassed earlier")
                    blame[kind] = blame.get(kind, 0) + seg.tokens
        for seg in path:
            seg.seen = True
            seg.last_s = now
            if e.workflow is not None:
                if seg.owner is not None and seg.owner != e.workflow:
                    seg.shared = True
                seg.owner = e.workflow
        pinned_by[i] = pins
    return ScheduleStats(read, hit, recomputed, evicted_rc, compulsory, bypassed, evictions)


def _event_time(e: Access | Finish | HintChange) -> float:
    return e.admit_s if isinstance(e, Access) else e.at_s


def victim_kind(seg: _Seg, hints_of: dict[WorkflowId, CacheHints | None], now_s: float) -> str:
    """What an evicted segment was: shared, unowned, or its workflow's recorded state (tool gaps split
    by whether the tool-aware TTL was still live)."""
    if seg.owner is None:
        return "no workflow"
    if seg.shared:
        return "shared by workflows"
    hints = hints_of.get(seg.owner)
    if hints is None:
        return "no hints"
    if hints.is_finished:
        return "workflow finished"
    if hints.state is WorkflowState.TOOL_GAP:
        live = hints.ttl_deadline_s is not None and hints.ttl_deadline_s > now_s
        return "tool gap, TTL live" if live else "tool gap, no live TTL"
    return f"workflow {hints.state.value}"


def replay_schedule(
    schedule: Schedule,
    policy_factory: Callable[[], EvictionPolicy],
    mode: ViewMode,
    capacity_scale: float = 1.0,
    *,
    blame: dict[str, int] | None = None,
    known_gaps: KnownGaps | None = None,
) -> ScheduleStats:
    """Every worker of ``schedule`` replayed with a fresh policy from ``policy_factory()``, summed.

    Each worker's cache gets ``capacity_scale`` x its recorded KV pool."""
    if capacity_scale <= 0:
        raise ValueError(f"capacity_scale must be > 0, got {capacity_scale}")
    total = EMPTY
    for w in range(schedule.num_workers):
        policy = policy_factory()
        cap = int(schedule.capacity_tokens[w] * capacity_scale)
        total = total + replay_worker(schedule, w, cap, policy, mode, blame=blame, known_gaps=known_gaps)
    return total
