"""VictimIndex: victims in policy order under TTL expiry, pressure flips and updates (properties)."""

from __future__ import annotations

from collections import OrderedDict

from factories import make_entry
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_sgl.policy.decisions import Tier
from saga_sgl.policy.eviction.guard import RecencyGuard, RecencyGuardSettings
from saga_sgl.policy.eviction.lru import LruEviction
from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction
from saga_sgl.policy.eviction.vllm_prefix import VllmPrefixEviction
from saga_sgl.policy.eviction.wa_lru import WaLruEviction
from saga_sgl.policy.interfaces import EvictionPolicy
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView

POLICIES: list[EvictionPolicy] = [LruEviction(), VllmPrefixEviction(), WaLruEviction(), ReuseTimeEviction()]

entries_st = st.builds(
    lambda i, size, last, fin, term, reuse, nxt, ttl: make_entry(
        i,
        num_tokens=size,
        depth_tokens=size * (1 + i % 3),
        last_access_s=last,
        is_finished=fin,
        is_terminal=term,
        reuse_prob=reuse,
        next_use_at_s=nxt,
        ttl_deadline_s=ttl,
    ),
    st.integers(0, 40),
    st.integers(1, 4096),
    st.floats(0, 100),
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), st.floats(0, 1)),
    st.one_of(st.none(), st.floats(0, 500)),
    st.one_of(st.none(), st.floats(0, 200)),
)

ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("add"), entries_st),
        st.tuples(st.just("remove"), st.integers(0, 40)),
        st.tuples(st.just("tick"), st.floats(0, 30)),
        # A host whose clock steps back (a TTL that had passed is live again): the index must notice.
        st.tuples(st.just("tick"), st.floats(-30, 0)),
        # Usage straddling threshold_high (0.9), where TTL protection switches on and off.
        st.tuples(
            st.just("pressure"), st.one_of(st.sampled_from([0.2, 0.5, 0.89, 0.9, 0.95]), st.floats(0, 1))
        ),
        st.tuples(st.just("pop"), st.none()),
    ),
    max_size=80,
)


def _brute_min(policy: EvictionPolicy, live: dict[int, CacheEntryView], now: float, pressure: float) -> int:
    return min(live.values(), key=lambda e: policy.key(e, now, pressure)).entry_id


@settings(max_examples=400, deadline=None)
@given(policy_ix=st.integers(0, len(POLICIES) - 1), ops=ops_st)
def test_pops_match_brute_force_policy_order(policy_ix: int, ops: list[tuple[str, object]]) -> None:
    policy = POLICIES[policy_ix]
    index = VictimIndex(policy)
    live: dict[int, CacheEntryView] = {}
    now, pressure = 0.0, 0.5
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, CacheEntryView)
            index.add(arg, now, pressure)
            live[arg.entry_id] = arg
        elif op == "remove":
            assert isinstance(arg, int)
            assert index.remove(arg) == (arg in live)
            live.pop(arg, None)
        elif op == "tick":
            assert isinstance(arg, float)
            now += arg
        elif op == "pressure":
            assert isinstance(arg, float)
            pressure = arg
        else:
            expected = _brute_min(policy, live, now, pressure) if live else None
            got = index.pop(now, pressure)
            assert (got.entry_id if got else None) == expected
            if got is not None:
                del live[got.entry_id]
        assert len(index) == len(live)
    # Drain: victims come out in exactly the policy's key order at this moment.
    drained = []
    while (v := index.pop(now, pressure)) is not None:
        drained.append(v)
    assert [v.entry_id for v in drained] == [
        e.entry_id for e in sorted(live.values(), key=lambda e: policy.key(e, now, pressure))
    ]


@settings(max_examples=100, deadline=None)
@given(entries=st.lists(entries_st, min_size=1, max_size=30), now=st.floats(0, 300), pressure=st.floats(0, 1))
def test_protected_never_chosen_while_unprotected_exists(
    entries: list[CacheEntryView], now: float, pressure: float
) -> None:
    for policy in (WaLruEviction(), ReuseTimeEviction()):
        index = VictimIndex(policy)
        for e in entries:
            index.add(e, 0.0, 0.0)  # keyed at t=0, low usage: TTLs protect at insertion
        live = {e.entry_id: e for e in entries}
        while live:
            victim = index.pop(now, pressure)
            assert victim is not None
            if policy.key(victim, now, pressure).tier == Tier.PROTECTED:
                assert all(policy.key(e, now, pressure).tier == Tier.PROTECTED for e in live.values())
            del live[victim.entry_id]


def test_ttl_expiry_releases_protection_in_order() -> None:
    index = VictimIndex(ReuseTimeEviction())
    index.add(make_entry(1, next_use_at_s=1000.0, ttl_deadline_s=10.0), 0.0, 0.5)
    index.add(make_entry(2, next_use_at_s=20.0), 0.0, 0.5)
    peeked = index.peek(5.0, 0.5)
    assert peeked is not None and peeked.entry_id == 2  # 1 is protected until t=10
    popped = index.pop(11.0, 0.5)
    assert popped is not None and popped.entry_id == 1  # expired; its next use is farther
    assert index.key_of(2) is not None


def test_pressure_above_threshold_high_ignores_ttls_and_back() -> None:
    index = VictimIndex(WaLruEviction())
    index.add(make_entry(1, reuse_prob=0.0, ttl_deadline_s=100.0), 0.0, 0.5)
    index.add(make_entry(2, reuse_prob=1.0), 0.0, 0.5)
    top = index.peek(1.0, 0.95)
    assert top is not None and top.entry_id == 1  # TTL ignored at usage >= 0.9
    top = index.peek(1.0, 0.5)
    assert top is not None and top.entry_id == 2  # protection is back below 0.9


def test_update_replaces_view_and_pop_tokens() -> None:
    index = VictimIndex(LruEviction())
    index.add(make_entry(1, last_access_s=1.0, num_tokens=100), 0.0, 0.0)
    index.add(make_entry(2, last_access_s=2.0, num_tokens=100), 0.0, 0.0)
    index.add(make_entry(3, last_access_s=3.0, num_tokens=100), 0.0, 0.0)
    index.update(make_entry(1, last_access_s=9.0, num_tokens=100), 0.0, 0.0)  # touched again
    assert 1 in index and index.get(1) is not None
    assert [v.entry_id for v in index.pop_tokens(150, 10.0, 0.0)] == [2, 3]
    assert [v.entry_id for v in index] == [1]
    assert index.pop_tokens(1000, 10.0, 0.0)[0].entry_id == 1
    assert index.pop(10.0, 0.0) is None and index.peek(10.0, 0.0) is None
    assert not index.remove(1)


def test_heap_stays_bounded_under_churn() -> None:
    index = VictimIndex(LruEviction())
    for t in range(10_000):
        index.add(make_entry(t % 10, last_access_s=float(t)), float(t), 0.0)
    assert len(index) == 10
    assert len(index._heap) <= 2 * len(index) + 65


def test_entry_added_under_protection_is_released_when_usage_is_already_high() -> None:
    # Regression: the index saw high usage first, then an entry was keyed PROTECTED at low usage;
    # at high usage again that entry must compete on its unprotected key.
    index = VictimIndex(WaLruEviction())
    index.add(make_entry(2, reuse_prob=1.0), 0.0, 0.95)
    assert index.peek(0.0, 0.95) is not None
    index.add(make_entry(1, reuse_prob=0.0, ttl_deadline_s=100.0), 0.0, 0.5)
    top = index.peek(1.0, 0.95)
    assert top is not None and top.entry_id == 1


class _ReferenceGuard:
    """The recency guard's bookkeeping written plainly (an OrderedDict of pairs, a set per spared
    entry): ``RecencyGuard``'s faster structures must give the same votes, score and choices."""

    def __init__(self, settings: RecencyGuardSettings) -> None:
        self.max_pending = settings.max_pending
        self.decay = 1.0 - 1.0 / max(1.0, settings.window)
        self.z2 = settings.confidence * settings.confidence
        self.score = self.energy = 0.0
        self.votes = self.seq = 0
        self.pairs: OrderedDict[int, tuple[object, int, object, int, float]] = OrderedDict()
        self.by_victim: dict[object, int] = {}
        self.by_spared: dict[object, dict[int, None]] = {}

    def follows_prediction(self) -> bool:
        return self.score >= 0.0 or self.score * self.score <= self.z2 * self.energy

    def on_disagreement(
        self, victim: object, vt: int, spared: object, st_: int, predicted_chose: bool
    ) -> None:
        self.seq += 1
        if victim in self.by_victim:
            self.drop(self.by_victim[victim])
        self.pairs[self.seq] = (victim, vt, spared, st_, 1.0 if predicted_chose else -1.0)
        self.by_victim[victim] = self.seq
        self.by_spared.setdefault(spared, {})[self.seq] = None
        if len(self.pairs) > self.max_pending:
            self.drop(next(iter(self.pairs)))

    def on_use(self, content: object) -> None:
        if content in self.by_victim:
            pid = self.by_victim[content]
            self.vote(-self.pairs[pid][4] * self.pairs[pid][1])
            self.drop(pid)
        for pid in list(self.by_spared.get(content, {})):
            self.vote(self.pairs[pid][4] * self.pairs[pid][3])
            self.drop(pid)

    def vote(self, tokens: float) -> None:
        self.votes += 1
        self.score = self.score * self.decay + tokens
        self.energy = self.energy * self.decay * self.decay + tokens * tokens

    def drop(self, pid: int) -> None:
        pair = self.pairs.pop(pid, None)
        if pair is None:
            return
        if self.by_victim.get(pair[0]) == pid:
            del self.by_victim[pair[0]]
        del self.by_spared[pair[2]][pid]
        if not self.by_spared[pair[2]]:
            del self.by_spared[pair[2]]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.lists(
        st.one_of(
            st.tuples(
                st.just("dis"),
                st.integers(0, 9),
                st.integers(1, 500),
                st.integers(0, 9),
                st.integers(1, 500),
                st.booleans(),
            ),
            st.tuples(st.just("use"), st.integers(0, 9)),
        ),
        max_size=120,
    ),
)
def test_recency_guard_bookkeeping_matches_the_plain_reference(max_pending: int, ops: list[tuple]) -> None:
    settings_ = RecencyGuardSettings(window=4.0, max_pending=max_pending, confidence=0.5)
    fast, ref = RecencyGuard(settings_), _ReferenceGuard(settings_)
    for op in ops:
        assert fast.follows_prediction() == ref.follows_prediction()
        if op[0] == "dis":
            follow = fast.follows_prediction()
            fast.on_disagreement(op[1], op[2], op[3], op[4], predicted_chose=follow)
            ref.on_disagreement(op[1], op[2], op[3], op[4], follow)
        else:
            fast.on_use(op[1])
            ref.on_use(op[1])
        # Bit-identical: the same votes in the same order give the same floats.
        assert (fast.votes, fast.score, fast.energy) == (ref.votes, ref.score, ref.energy)
        assert len(fast._pairs) == len(ref.pairs) <= max_pending
