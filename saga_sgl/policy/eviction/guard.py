"""Recency guard: learn online whether the predicted eviction key beats LRU, and follow the better one.

Why: a predicted key (``reuse_density``) wins where its predictions are right and loses to LRU
where they are not (a session predicted dead that comes back). Tuning the key per trace does not
make it safe; a mechanism that measures, on the live stream, which of the two orders chooses
better does (the ARC / LeCaR / Cacheus family: experts, ghosts of recent victims, regret) [I].

Mechanism (one comparison per *disagreement*): when the index must evict, the predicted key's
victim p and LRU's victim r (the least recently used entry) are both known. If p == r there is
nothing to learn. Otherwise the index evicts the victim of the expert it currently follows and
records the pair (victim v, spared s): the other expert would have evicted s and kept v. The first
later read of either settles the pair by Belady's pairwise rule (of two entries, evict the one read
later):

* v is read first: the choice was wrong; a vote of v's tokens against the expert that chose;
* s is read first: the choice was right; a vote of s's tokens for the expert that chose (also when
  s has been evicted since: at the decision, keeping s was still the better of the two).

An earlier version settled a read of an already-evicted s without a vote; that biased the score
against whichever expert spares the oldest entries (LRU's victim is soon evicted anyway, so the
prediction's right calls rarely counted) and cost up to 2 points of recomputation on the SWE-agent
trace at 1% (benchmarks/results/eviction_reading.md).

``score`` is the exponentially decayed sum of the votes (tokens, + for the predicted key), decayed
by 1/``window`` per vote. The index follows the predicted key iff ``score >= 0``: the prediction is
trusted until settled disagreements show it choosing worse than LRU, and from then on LRU decides
until recent disagreements favour the prediction again. With ``confidence`` z > 0, "worse" must be
beyond noise: LRU takes over only when score < -z * sqrt(energy), energy being the decayed sum of
squared votes (the spread of ``score`` if each vote were a coin flip). Why: on the SWE-agent trace
at 10% only 133 of 3,547 disagreements ever settled, votes split 33.8K / 32.3K tokens, and the
bare sign of the score handed 407 choices to LRU on noise (recomputed 0.983 of LRU guarded, 0.970
without the guard); with z = 2 the guarded key keeps 0.973 there and still equals LRU where LRU
is better (SWE 20%) (benchmarks/results/eviction_reading_s5.md). Starting on the prediction keeps every host
that cannot report reads (SGLang's stock per-call heap, the legacy tree, the simulator) on the same
order as the key alone; starting on LRU was measured too (benchmarks/results/eviction_replay.md:
equal or worse on every SWE-agent capacity). Without information the predicted key *is* LRU's (no
disagreement ever), so the guarded index is LRU to the victim. Pairs never settled are dropped oldest first
beyond ``max_pending`` (a pair's memory is bounded, like a ghost list of cache size).

Costs: O(1) dict operations per disagreement, per read (``on_use``) and per eviction. The guard
never looks at keys; ``VictimIndex`` asks it which expert to follow and tells it what happened.
Hosts must report every read of a cached or evicted entry (``VictimIndex.note_use``), by a content
identity that survives eviction (a block hash, a radix path), or the guard learns nothing.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from saga_sgl.policy.settings import require, require_positive

GUARD_MODES = ("pairwise", "ghost")
"""How the guard measures the key against LRU (``RecencyGuardSettings.mode``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecencyGuardSettings:
    """Settings of ``RecencyGuard``."""

    window: float = 256.0
    """Votes over which a vote's weight decays by a factor e: the guard's memory, in settled
    disagreements (not seconds, so it adapts at the pace of the eviction stream) [I]."""
    max_pending: int = 65_536
    """Unsettled pairs kept (oldest dropped): a bounded ghost memory [I]."""
    confidence: float = 0.0
    """z: LRU takes over only when its lead exceeds z standard deviations of the recent votes
    (score < -z * sqrt(decayed sum of squared votes)): a lead a fair coin would give is noise [I]."""

    read_window: float = 4096.0
    """Ghost mode: read requests over which the ghost's lead decays by e (its memory of losses in
    time; ``window`` is then the memory of the evidence's spread, in terms of evidence) [I]."""
    mode: str = "pairwise"
    """``pairwise``: this module's settled disagreements; ``ghost``: ``policy.eviction.ghost``, the
    cache's misses against an LRU ghost of the pool's size on the same reads [I]."""

    def __post_init__(self) -> None:
        owner = "RecencyGuardSettings"
        require(self.mode in GUARD_MODES, owner, "mode", f"one of {GUARD_MODES}", self.mode)
        require_positive(owner, "window", self.window)
        require_positive(owner, "read_window", self.read_window)
        require(self.max_pending >= 1, owner, "max_pending", ">= 1", self.max_pending)
        require(self.confidence >= 0.0, owner, "confidence", ">= 0", self.confidence)


_Pair = tuple[Hashable, int, Hashable, int, float]
"""(victim, victim tokens, spared, spared tokens, sign): sign +1 when the predicted key chose the
victim, -1 when LRU did. A plain tuple: one is built per disagreement, on the eviction hot path."""


class RecencyGuard:
    """Which expert (predicted key or LRU) to follow, learned from settled disagreements."""

    __slots__ = (
        "_by_spared",
        "_by_victim",
        "_decay",
        "_max_pending",
        "_oldest",
        "_pairs",
        "_seq",
        "_z2",
        "chose_lru",
        "chose_prediction",
        "energy",
        "follows",
        "score",
        "settings",
        "votes",
    )

    def __init__(self, settings: RecencyGuardSettings | None = None) -> None:
        self.settings = s = settings or RecencyGuardSettings()
        self._decay = 1.0 - 1.0 / max(1.0, s.window)
        self._z2 = s.confidence * s.confidence
        self._max_pending = s.max_pending
        self.score = 0.0
        """Decayed sum of settled votes in tokens; < 0: LRU has chosen better lately."""
        self.energy = 0.0
        """Decayed sum of squared votes: the variance of ``score`` if the votes were coin flips."""
        self.follows = True
        """``follows_prediction()``, kept current by each vote (the index reads it once per disagreement)."""
        self._pairs: dict[int, _Pair] = {}
        """Unsettled pairs by id; ids grow, so the oldest live one is the smallest (``_oldest``)."""
        self._oldest = 1
        """No live pair id is below this (advanced lazily past settled ids: amortised O(1))."""
        self._by_victim: dict[Hashable, int] = {}
        self._by_spared: dict[Hashable, int | dict[int, None]] = {}
        """Pairs by their spared entry: one pair id, or an ordered set of them (oldest first)."""
        self._seq = 0
        self.votes = 0
        """Settled disagreements (for logs and tests)."""
        self.chose_prediction = 0
        self.chose_lru = 0
        """Disagreements decided for each expert."""

    def follows_prediction(self) -> bool:
        """Follow the predicted key's victim at the next disagreement (else LRU's)."""
        return self.follows

    def on_disagreement(
        self,
        victim: Hashable,
        victim_tokens: int,
        spared: Hashable,
        spared_tokens: int,
        *,
        predicted_chose: bool,
    ) -> None:
        """The index evicted ``victim`` where the other expert would have evicted ``spared``."""
        if predicted_chose:
            self.chose_prediction += 1
            sign = 1.0
        else:
            self.chose_lru += 1
            sign = -1.0
        self._seq = pid = self._seq + 1
        by_victim, pairs = self._by_victim, self._pairs
        old = by_victim.get(victim)
        if old is not None:
            self._drop(old)
        pairs[pid] = (victim, victim_tokens, spared, spared_tokens, sign)
        by_victim[victim] = pid
        by_spared = self._by_spared
        pids = by_spared.get(spared)
        if pids is None:
            by_spared[spared] = pid  # the common case: no set built
        elif type(pids) is int:
            by_spared[spared] = {pids: None, pid: None}
        else:
            pids[pid] = None  # type: ignore[index]  # an ordered set (the int case is above)
        if len(pairs) > self._max_pending:
            oldest = self._oldest
            while oldest not in pairs:
                oldest += 1
            self._oldest = oldest
            self._drop(oldest)

    def on_use(self, content: Hashable) -> None:
        """``content`` was read (a hit or a miss): settle the pairs it belongs to."""
        pid = self._by_victim.get(content)
        if pid is not None:
            pair = self._pairs[pid]
            self._vote(-pair[4] * pair[1])
            self._drop(pid)
        spared = self._by_spared.get(content)
        if spared is not None:  # most reads settle nothing: no list is built for them
            for pid in (spared,) if type(spared) is int else list(spared):  # type: ignore[arg-type]
                pair = self._pairs[pid]
                self._vote(pair[4] * pair[3])
                self._drop(pid)

    def _vote(self, tokens: float) -> None:
        self.votes += 1
        decay = self._decay
        self.score = score = self.score * decay + tokens
        self.energy = energy = self.energy * decay * decay + tokens * tokens
        self.follows = score >= 0.0 or score * score <= self._z2 * energy

    def _drop(self, pid: int) -> None:
        pair = self._pairs.pop(pid, None)
        if pair is None:
            return
        victim, spared = pair[0], pair[2]
        by_victim, by_spared = self._by_victim, self._by_spared
        if by_victim.get(victim) == pid:
            del by_victim[victim]
        pids = by_spared[spared]
        if type(pids) is int:
            del by_spared[spared]  # its one pair (a set never shrinks back to an int)
        else:
            del pids[pid]  # type: ignore[union-attr]  # an ordered set (the int case is above)
            if not pids:
                del by_spared[spared]
