"""HintDriver: the router's hint path for a trace replay, built only from the policy core and the AEG.

The workflow scheduler (router) is built in parallel (issue 8); until it lands, this small module
does what it does for eviction, with the same classes: it learns per agent type, tool and step the
distribution of the time between a workflow's calls (``aeg.gaps.GapModel``, the gap treated as the
tool that ran in it; the tool-latency model is its prior), predicts for each idle workflow
P(reuse within the horizon) and the expected time to it (``aeg.predict.ReusePredictor``), sets the
tool-aware TTL (``ToolAwareTtl``, Algorithm 1, capped at the residence time) and reports the
pressure (``policy.pressure``). What a live router could not know is never used: sessions come
from the trace's ``task_id`` or, for a plain Mooncake trace, from prefix chains (a request that
continues at least half of a session's previous prompt belongs to that session); an idle period is
credited to the gap model as it ages (at the re-key times), so sessions that never come back teach
the model only as time passes. Per block, the session's P_reuse is scaled by the learned share of
blocks at that offset from the tail of its last prompt that its next call reads
(``aeg.prefix_reuse``: with 512-token block hashes the partial last block never is), and a block
the session's current prompt no longer holds gets P_reuse 0 and no TTL (``block_hints``).

Events, and when predictions are refreshed (the keys' re-key rule): a request arrives (the gap is
observed), a request ends (the workflow goes idle: prediction at age 0, TTL set), when a predicted
next use passes without the call (the prediction is overdue), and at the ages in ``rekey_ages`` x
horizon (bucketed time: the gap distribution replaces the policy's exponential decay between
events). No I/O, no clock: times come from the trace.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from saga_sgl.aeg.gaps import GapModel, GapSettings
from saga_sgl.aeg.predict import ReusePredictor, ReusePredictorSettings
from saga_sgl.aeg.prefix_reuse import PrefixReuse, PrefixReuseSettings, on_path
from saga_sgl.aeg.tool_latency import ToolLatencyModel
from saga_sgl.policy.eviction.ttl import ToolAwareTtl
from saga_sgl.policy.pressure import PressureSettings, ResidenceTracker, kv_pressure
from saga_sgl.policy.settings import require
from saga_sgl.policy.views import ToolType
from saga_sgl.replay.traces import TraceRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverSettings:
    """Settings of ``HintDriver``."""

    rekey_ages: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    """Ages (in horizons) at which an idle workflow's prediction is refreshed and its idle time so
    far credited to the gap model [I]."""
    min_session_share: float = 0.5
    """A request joins a session when it repeats at least this share of the session's last prompt
    blocks (plain Mooncake traces, no ``task_id``) [I]."""
    max_overdue_rekeys: int = 8
    """Re-predictions per idle period when a predicted next use passes without the call [I]."""
    anchor_rekeys: bool = True
    """A re-prediction of an idle session (a re-key timer, an overdue prediction) is conditional on
    its age then, so the key's wait runs from it (``Session.predicted_at_s`` ->
    ``CacheEntryView.predicted_at_s``), as the live plugin does with the scheduler's age re-keys
    (a ``ToolStarted`` anchors at its arrival). False: the wait runs from the last use (session 7) [I]."""
    ttl: bool = True
    """Set tool-aware TTLs (Algorithm 1) on idle workflows whose request names its tool."""
    prefix_reuse: bool = True
    """Scale a block's P_reuse by the learned share of blocks at its offset from the tail of the
    workflow's last prompt that the next call reads (``aeg.prefix_reuse``); blocks off the workflow's
    current prompt get P_reuse 0 and no TTL [I]."""
    ttl_min_share: float = 0.5
    """A TTL protects a block only if the next call reads at least this share of blocks at its
    offset: protection is for the context the tool's return will read [I]."""
    gaps: GapSettings = field(default_factory=GapSettings)
    prefix: PrefixReuseSettings = field(default_factory=PrefixReuseSettings)
    predictor: ReusePredictorSettings = field(default_factory=ReusePredictorSettings)
    pressure: PressureSettings = field(default_factory=PressureSettings)

    def __post_init__(self) -> None:
        require(all(a > 0 for a in self.rekey_ages), "DriverSettings", "rekey_ages", "> 0", self.rekey_ages)
        require(
            0 < self.min_session_share <= 1,
            "DriverSettings",
            "min_session_share",
            "in (0, 1]",
            self.min_session_share,
        )


@dataclass(slots=True)
class Session:
    """One workflow as the driver tracks it."""

    sid: str
    agent_type: str = ""
    step: int = 0
    tool: str = ""
    last_blocks: tuple[int, ...] = ()
    idle_since_s: float | None = None
    """End of its last request while it waits for the next one; None while a request runs."""
    version: int = 0
    """Bumped at each arrival: timers of an older idle period are stale."""
    reuse_prob: float | None = None
    next_use_at_s: float | None = None
    ttl_deadline_s: float | None = None
    overdue_rekeys: int = 0
    predicted_at_s: float | None = None
    """When the current prediction was made, if after the session went idle (a re-key)."""
    credited_s: float = 0.0
    """Age of the current idle period already credited to the gap model."""


class HintDriver:
    """Router-like hint path: sessions, gap learning, predictions, TTLs and pressure for a replay."""

    def __init__(self, settings: DriverSettings | None = None) -> None:
        self.settings = s = settings or DriverSettings()
        self.latency = ToolLatencyModel()
        self.gaps = GapModel(self.latency, s.gaps)
        self.predictor = ReusePredictor(self.gaps, s.predictor)
        self.ttl = ToolAwareTtl(self.latency)
        self.prefix_reuse = PrefixReuse(s.prefix)
        self.residence = ResidenceTracker(s.pressure)
        self.sessions: dict[str, Session] = {}
        self._block_owner: dict[int, tuple[str, int]] = {}
        self._timers: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self.pressure_level = 0.0
        self.residence_s = math.inf

    # -- sessions --------------------------------------------------------------------------------

    def session_of(self, req: TraceRequest) -> Session:
        """The request's session: named by the trace, or the prefix-chain continuation, or new."""
        sid = req.session
        if sid is None:
            sid = self._chain_session(req)
        sess = self.sessions.get(sid)
        if sess is None:
            sess = self.sessions[sid] = Session(sid, agent_type=req.agent_type)
        for j, block in enumerate(req.hash_ids):
            self._block_owner[block] = (sid, j)
        return sess

    def _chain_session(self, req: TraceRequest) -> str:
        best: tuple[str, int] | None = None
        for j in range(len(req.hash_ids) - 1, -1, -1):
            owner = self._block_owner.get(req.hash_ids[j])
            if owner is not None and owner[1] == j:
                best = (owner[0], j + 1)
                break
        if best is not None:
            sess = self.sessions[best[0]]
            need = max(1, math.ceil(self.settings.min_session_share * len(sess.last_blocks)))
            if best[1] >= need and best[1] < len(req.hash_ids) + 1:
                return best[0]
        return f"s{len(self.sessions)}"

    # -- events ----------------------------------------------------------------------------------

    def on_arrival(self, sess: Session, req: TraceRequest, now_s: float) -> None:
        """A request of ``sess`` arrives: the idle period ends (its gap is a sample)."""
        if sess.last_blocks:
            self.prefix_reuse.observe(sess.last_blocks, req.hash_ids, agent_type=sess.agent_type)
        if sess.idle_since_s is not None:
            gap = max(0.0, now_s - sess.idle_since_s)
            self._credit(sess, gap, returned=True)
            if sess.tool:
                self.latency.observe(ToolType(sess.tool), gap)
        sess.idle_since_s = None
        sess.version += 1
        sess.reuse_prob, sess.next_use_at_s, sess.ttl_deadline_s = 1.0, now_s, None
        sess.predicted_at_s = None

    def on_end(self, sess: Session, req: TraceRequest, now_s: float) -> None:
        """The request ended: the workflow goes idle (its tool runs); predict, set the TTL, schedule."""
        sess.step = req.step if req.step is not None else sess.step + (1 if sess.last_blocks else 0)
        sess.tool = req.tool
        sess.last_blocks = req.hash_ids
        sess.idle_since_s = now_s
        sess.credited_s = 0.0
        sess.overdue_rekeys = 0
        if self.settings.ttl and sess.tool:  # a TTL protects KV while a *known* tool runs
            sess.ttl_deadline_s = self.ttl.deadline_s(
                ToolType(sess.tool), now_s, self.pressure_level, self.residence_s
            )
        self.refresh(sess, now_s)
        horizon = self.predictor.horizon_s(self.residence_s)
        for age in self.settings.rekey_ages:
            self._push(now_s + age * horizon, sess)

    def block_hints(self, sess: Session, position: int, block: int) -> tuple[float | None, float | None]:
        """(reuse_prob, ttl_deadline_s) of the block ``block`` at ``position`` of a chain ``sess`` owns."""
        prob, ttl = sess.reuse_prob, sess.ttl_deadline_s
        if not self.settings.prefix_reuse or prob is None or sess.idle_since_s is None:
            return prob, ttl
        last = sess.last_blocks
        if not on_path(last, position, block):
            return 0.0, None  # a branch the workflow left: its own calls will not read it again
        share = self.prefix_reuse.share(len(last) - 1 - position, agent_type=sess.agent_type)
        return prob * share, ttl if share >= self.settings.ttl_min_share else None

    def refresh(self, sess: Session, now_s: float) -> None:
        """Re-predict an idle session at ``now_s``."""
        if sess.idle_since_s is None:
            return
        pred = self.predictor.predict(
            idle_since_s=sess.idle_since_s,
            now_s=now_s,
            residence_s=self.residence_s,
            agent_type=sess.agent_type,
            tool=sess.tool,
            step=sess.step,
            workflow_id=sess.sid,
        )
        sess.reuse_prob, sess.next_use_at_s = pred.reuse_prob, pred.next_use_at_s
        anchored = self.settings.anchor_rekeys and now_s > sess.idle_since_s
        sess.predicted_at_s = now_s if anchored else None
        if sess.overdue_rekeys < self.settings.max_overdue_rekeys and pred.next_use_at_s > now_s:
            # If the call has not come by the predicted time, the prediction is stale: re-key then.
            sess.overdue_rekeys += 1
            self._push(pred.next_use_at_s, sess)

    def due_timers(self, until_s: float) -> list[tuple[float, Session]]:
        """Fire timers up to ``until_s``; returns (time, session) of sessions whose prediction changed."""
        out = []
        while self._timers and self._timers[0][0] <= until_s:
            t, _, sid, version = heapq.heappop(self._timers)
            sess = self.sessions[sid]
            if sess.version != version or sess.idle_since_s is None:
                continue
            self._credit(sess, t - sess.idle_since_s, returned=False)
            self.refresh(sess, t)
            out.append((t, sess))
        return out

    def on_evict(self, now_s: float, num_tokens: int) -> None:
        self.residence.on_evict(now_s, num_tokens)

    def update_cache(self, cached_tokens: int, now_s: float) -> None:
        """The cache's size now: the residence time (horizon, TTL cap) follows."""
        self.residence_s = self.residence.residence_s(cached_tokens, now_s)

    def update_pressure(self, capacity_tokens: int, held_tokens: int, protected_tokens: int) -> float:
        self.pressure_level = kv_pressure(
            capacity_tokens,
            held_tokens,
            protected_tokens,
            max_protected_frac=self.settings.pressure.max_protected_frac,
        )
        return self.pressure_level

    def _credit(self, sess: Session, age_s: float, *, returned: bool) -> None:
        age_s = max(age_s, sess.credited_s)
        self.gaps.observe_idle(
            sess.credited_s,
            age_s,
            returned,
            agent_type=sess.agent_type,
            tool=sess.tool,
            step=sess.step,
            workflow_id=sess.sid,
        )
        sess.credited_s = age_s

    def _push(self, t: float, sess: Session) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (t, self._seq, sess.sid, sess.version))
