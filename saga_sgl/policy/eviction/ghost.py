"""Ghost LRU guard: follow the predicted eviction key only while the cache is not missing more than
an LRU cache of the same size would, measured on the live read stream.

Why: the pairwise recency guard (``policy.eviction.guard``) settles single disagreements (victim vs
spared) and never measures what LRU itself would have recomputed; a key can win most pairs and
still lose tokens overall (SWE-agent 512-token blocks at 20%: 1.0005 of LRU behind the pairwise
guard, benchmarks/results/eviction_reading_s8.md). The ARC / LeCaR / Cacheus / set-dueling answer
is a *ghost*: metadata of the cache the other expert would have kept, fed the same reads [I].

Mechanism:

* **The ghost** is an LRU list of contents (no KV) holding at most ``capacity`` tokens, fed every
  read the host reports (``on_path``): a read moves the content to the most recent end; the oldest
  are dropped beyond capacity. So it holds exactly what an LRU cache of that size would hold, and
  its misses are LRU's recomputed tokens.
* **Prefix caches:** a request reads a whole path (root first). An LRU radix cache evicts only
  leaves, and an ancestor is read whenever a descendant is, so it is never older than them. The
  ghost therefore takes each path *leaf first*: the ancestor ends up more recent than its
  descendants and the ghost's oldest entry is always a leaf. That makes the ghost evict what the
  radix LRU evicts, prefix-closed, including a path longer than the pool (it keeps the root side,
  as a radix cache that stops caching at the first block that does not fit).
* **The real cache's misses** are known from the index's own evictions (``on_evict``, called by
  ``VictimIndex.pop``): a content read and not evicted since is resident. A read is then one of:
  hit in both, miss in both (no evidence), hit in the ghost and missed by the real cache (the key
  lost its tokens), or the reverse (the key won them). Only the last two are evidence.
* **Decision:** ``lead`` is the decayed sum of (real misses - ghost misses) in tokens, one term per
  read request with evidence (the blocks of one request are correlated: one term, not one per
  block). The index follows the predicted key iff ``lead <= z * sqrt(energy)``, energy the decayed
  sum of squared terms: under the null that the key and LRU are equally good each term is a fair
  coin of its size and ``lead`` has that spread, so a lead within z = 2 standard deviations is noise
  and the key keeps deciding; beyond it LRU's victim is taken. The lead decays by 1/``read_window``
  per *read request* and the energy by 1/``window`` per *term*: while LRU decides, the cache drifts
  towards the ghost and evidence dries up, so a test on terms alone would never let the key back
  (lead and spread would decay together); decaying the lead on reads gives the key another trial
  once its losses are a window old. The margin this allows: the guarded cache recomputes at most
  about LRU's tokens + z * sqrt(energy) per read window, plus what the switches cost (a cache
  shaped by the key and then evicted in LRU order is neither cache).

Memory: the ghost holds at most ``capacity`` tokens of contents; contents the ghost dropped while the
real cache still holds them are kept (``_real_only``, the only way to see the key's wins) up to
another ``capacity`` tokens, oldest forgotten first. So memory is bounded by twice the pool in tokens
(entries, not KV). Cost: O(1) amortised dict operations per read block and per eviction.

Capacity: hosts that know their pool pass it (``set_capacity``); otherwise the ghost learns it as
the largest resident token count seen at an eviction (the cache evicts when it is full), and holds
every read until the first eviction (then nothing has been evicted either).

Measured (benchmarks/results/eviction_reading_s9_ghost.md): the counts are exact (the ghost's
misses are the LRU replay's), but as a switch it is weaker than the pairwise guard, so it is not the
default: where evidence is plentiful (Mooncake) the cache and the ghost diverge both ways and the
lead stays inside the noise (the guard is the key alone in 22 of 23 replay cells); where the key only
loses (SWE 20%) the few terms come too late. Known bias: the ghost does not model pinned (running)
paths, so under pins it holds more than an LRU cache could and charges that to the key.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence

from saga_sgl.policy.eviction.guard import RecencyGuardSettings


class GhostLruGuard:
    """Whether to follow the predicted key, from the live misses of the cache vs an LRU ghost."""

    __slots__ = (
        "_capacity_fixed",
        "_decay",
        "_decay_energy",
        "_ghost",
        "_ghost_tokens",
        "_real_only",
        "_real_only_tokens",
        "_resident_tokens",
        "_z2",
        "capacity",
        "chose_lru",
        "chose_prediction",
        "energy",
        "follows",
        "ghost_miss_tokens",
        "lead",
        "lost_tokens",
        "read_tokens",
        "reads",
        "settings",
        "votes",
        "won_tokens",
    )

    def __init__(
        self, settings: RecencyGuardSettings | None = None, capacity_tokens: int | None = None
    ) -> None:
        self.settings = s = settings or RecencyGuardSettings(mode="ghost")
        self._decay = 1.0 - 1.0 / max(1.0, s.read_window)
        self._decay_energy = 1.0 - 1.0 / max(1.0, s.window)
        self._z2 = s.confidence * s.confidence
        self.capacity: float = math.inf
        """The ghost's size in tokens (the pool's; learned at evictions when the host gave none)."""
        self._capacity_fixed = False
        # content -> [tokens, evicted by the real cache since its last read]; oldest first.
        self._ghost: OrderedDict[Hashable, list[int]] = OrderedDict()
        self._ghost_tokens = 0
        self._real_only: OrderedDict[Hashable, int] = OrderedDict()
        """Contents the ghost dropped that the real cache still holds (a later read is a key win)."""
        self._real_only_tokens = 0
        self._resident_tokens = 0
        """Tokens of contents read and not evicted since: the real cache's reported contents."""
        self.lead = 0.0
        """Decayed sum of (real misses - ghost misses) in tokens; > 0: LRU has missed less lately."""
        self.energy = 0.0
        """Decayed sum of squared terms: the spread of ``lead`` if each term were a fair coin."""
        self.follows = True
        """Follow the predicted key at the next disagreement (kept current by each term)."""
        self.votes = 0
        """Read requests with evidence (one decayed term each)."""
        self.read_tokens = 0
        self.reads = 0
        """Counted read requests (the lead's clock)."""
        self.ghost_miss_tokens = 0
        """Tokens the ghost missed among counted reads: LRU's recomputed tokens on this stream."""
        self.lost_tokens = 0
        """Counted tokens the real cache missed and the ghost hit."""
        self.won_tokens = 0
        """Counted tokens the real cache hit and the ghost missed."""
        self.chose_prediction = 0
        self.chose_lru = 0
        """Disagreements decided for each expert."""
        if capacity_tokens is not None:
            self.set_capacity(capacity_tokens)

    @property
    def real_miss_tokens(self) -> int:
        """Tokens the real cache missed among counted reads (the ghost's misses + losses - wins)."""
        return self.ghost_miss_tokens + self.lost_tokens - self.won_tokens

    @property
    def ghost_tokens(self) -> int:
        return self._ghost_tokens

    def set_capacity(self, tokens: int) -> None:
        """The pool's size in tokens (the ghost's size from now on)."""
        if tokens < 0:
            raise ValueError(f"GhostLruGuard capacity must be >= 0 tokens, got {tokens}")
        self.capacity = float(tokens)
        self._capacity_fixed = True
        self._trim()

    def follows_prediction(self) -> bool:
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
        """Counts only: the ghost learns from misses, not from pairs."""
        if predicted_chose:
            self.chose_prediction += 1
        else:
            self.chose_lru += 1

    def on_use(self, content: Hashable, tokens: int | None = None) -> None:
        """One read of ``content`` outside any path (``tokens`` unknown: not fed to the ghost)."""
        if tokens is not None:
            self.on_path((content,), (tokens,))

    def on_path(self, contents: Sequence[Hashable], tokens: Sequence[int], *, count: bool = True) -> None:
        """A request read ``contents`` (a path, root first; ``tokens`` each). ``count=False``: the
        path was only touched or written (a request's end, its output): LRU order, no evidence."""
        ghost, real_only = self._ghost, self._real_only
        delta = 0
        added = 0
        resident = 0
        for i in range(len(contents) - 1, -1, -1):  # leaf first: ancestors end up more recent
            c, t = contents[i], tokens[i]
            item = ghost.pop(c, None)
            if item is not None:
                added += t - item[0]
                if item[1]:  # the real cache evicted it since its last read
                    resident += t
                    if count:
                        delta += t
                else:
                    resident += t - item[0]
            else:
                added += t
                if count:
                    self.ghost_miss_tokens += t
                rt = real_only.pop(c, None)
                if rt is not None:  # the real cache still holds what LRU dropped
                    self._real_only_tokens -= rt
                    if count:
                        delta -= t
                    resident += t - rt
                else:
                    resident += t
            ghost[c] = [t, 0]
        self._ghost_tokens += added
        self._resident_tokens += resident
        if count:
            self.read_tokens += sum(tokens)
            self.reads += 1
            if delta > 0:
                self.lost_tokens += delta
            elif delta < 0:
                self.won_tokens -= delta
            if delta:
                self._vote(float(delta))
            else:
                self.lead = lead = self.lead * self._decay  # forgetting runs on reads, evidence or not
                self.follows = lead <= 0.0 or lead * lead <= self._z2 * self.energy
        if self._ghost_tokens > self.capacity:
            self._trim()

    def on_evict(self, content: Hashable) -> None:
        """The real cache evicted ``content`` (``VictimIndex.pop``)."""
        if not self._capacity_fixed:
            resident = self._resident_tokens
            if self.capacity == math.inf or resident > self.capacity:
                self.capacity = float(resident)  # the cache evicts when full: the pool's size
                self._trim()
        item = self._ghost.get(content)
        if item is not None:
            if not item[1]:
                item[1] = 1
                self._resident_tokens -= item[0]
            return
        rt = self._real_only.pop(content, None)
        if rt is not None:
            self._real_only_tokens -= rt
            self._resident_tokens -= rt

    def _vote(self, tokens: float) -> None:
        self.votes += 1
        self.lead = lead = self.lead * self._decay + tokens
        # The spread decays per term of evidence, not per read: while LRU decides the cache equals
        # the ghost and no evidence comes; the lead is forgotten read by read while the noise scale
        # stays, so the key gets another trial once its losses are a window old (no absorbing state).
        decay = self._decay_energy
        self.energy = energy = self.energy * decay * decay + tokens * tokens
        self.follows = lead <= 0.0 or lead * lead <= self._z2 * energy

    def _trim(self) -> None:
        ghost, real_only, cap = self._ghost, self._real_only, self.capacity
        while self._ghost_tokens > cap and ghost:
            c, (t, evicted) = ghost.popitem(last=False)
            self._ghost_tokens -= t
            if not evicted:
                real_only[c] = t
                self._real_only_tokens += t
        while self._real_only_tokens > cap and real_only:  # the bound: forget the oldest
            _, t = real_only.popitem(last=False)
            self._real_only_tokens -= t
            self._resident_tokens -= t
