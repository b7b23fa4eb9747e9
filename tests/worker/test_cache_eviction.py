"""The plugin's eviction on SGLang's real radix caches (UnifiedRadixCache with the Python tree core,
and the legacy RadixCache), on CPU pools, driven through the hooked checkpoint/evict methods.

Each scenario runs the same request script against our strategy and, where the point is a
comparison, against SGLang's own LRUStrategy on an identical cache.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from control_push import push_control

from saga_sgl.protocol import ReuseHint, ToolStarted, TtlChanged, WorkflowFinished, encode_control

pytestmark = pytest.mark.sglang

KINDS = ["unified", "legacy"]


def ctx(base: int, n: int) -> list[int]:
    """A private context of ``n`` distinct tokens (vocabulary ranges never overlap across bases)."""
    return list(range(base, base + n))


def hinted(workflow_id: str, **kw: Any) -> ReuseHint:
    return ReuseHint(workflow_id=workflow_id, **kw)


def resident(h: Any, contexts: dict[str, list[int]]) -> dict[str, int]:
    return {name: h.resident_tokens(tokens) for name, tokens in contexts.items()}


# --- hinted workflows survive the pressure that LRU evicts them under ----------------------------


def _workflows_then_fillers(h: Any, *, hint: bool) -> dict[str, int]:
    """3 workflow contexts (12 tokens), then 3 unhinted fillers (14 tokens) in a 64-token pool."""
    contexts = {f"wf{i}": ctx(100 + 20 * i, 12) for i in range(3)}
    for name, tokens in contexts.items():
        h.clock.advance(1.0)
        h.run(tokens, hint=hinted(name, next_use_in_s=5.0, reuse_prob=0.9) if hint else None)
    fillers = {f"filler{i}": ctx(300 + 20 * i, 14) for i in range(3)}
    for tokens in fillers.values():
        h.clock.advance(1.0)
        h.run(tokens)
    return resident(h, {**contexts, **fillers})


@pytest.mark.parametrize("kind", KINDS)
def test_hinted_workflows_survive_pressure_that_lru_evicts(make_harness: Any, kind: str) -> None:
    lru = _workflows_then_fillers(make_harness(kind, "sglang_lru"), hint=True)
    saga_h = make_harness(kind, "reuse_time")
    saga = _workflows_then_fillers(saga_h, hint=True)

    # 36 + 42 = 78 tokens into 64: 14 must go. LRU drops the oldest nodes: both first workflows.
    assert lru == {"wf0": 0, "wf1": 0, "wf2": 12, "filler0": 14, "filler1": 14, "filler2": 14}
    # Ours keeps every predicted-reuse context and evicts exactly one unhinted filler instead.
    assert {k: v for k, v in saga.items() if k.startswith("wf")} == {"wf0": 12, "wf1": 12, "wf2": 12}
    assert sorted(v for k, v in saga.items() if k.startswith("filler")) == [0, 14, 14]
    assert saga_h.runtime.metrics.value("evictions", tier="ordinary") == 1
    assert saga_h.runtime.metrics.value("evicted_tokens", tier="ordinary") == 14
    assert saga_h.runtime.metrics.value("hint_updates", source="kv_hints") == 3


@pytest.mark.parametrize("kind", KINDS)
def test_without_hints_the_order_is_sglangs_lru(make_harness: Any, kind: str) -> None:
    lru = _workflows_then_fillers(make_harness(kind, "sglang_lru"), hint=False)
    saga = _workflows_then_fillers(make_harness(kind, "reuse_time"), hint=False)
    assert saga == lru
    assert saga["wf0"] == 0


# --- TTL protection and expiry --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_live_ttl_protects_and_expired_ttl_does_not(make_harness: Any, kind: str) -> None:
    h = make_harness(kind, "reuse_time")
    tool_ctx = ctx(100, 20)
    # No next-use prediction: only its TTL protects this context.
    h.run(tool_ctx, hint=hinted("agent", tool="web", ttl_s=10.0))
    h.clock.advance(1.0)
    h.run(ctx(200, 20), hint=hinted("soon", next_use_in_s=1.0))
    h.clock.advance(1.0)
    # 40 used + 30 needed > 64: 6 tokens must go; the TTL-protected context is not a candidate.
    h.run(ctx(300, 30), hint=hinted("later", next_use_in_s=3.0))
    assert resident(h, {"tool": tool_ctx, "soon": ctx(200, 20), "later": ctx(300, 30)}) == {
        "tool": 20,
        "soon": 0,
        "later": 30,
    }
    assert h.runtime.metrics.value("ttl_expiries") == 0
    assert h.runtime.metrics.value("protected_tokens") == 20

    h.clock.advance(10.0)  # past the deadline (1000 + 10 s)
    h.run(ctx(400, 20), hint=hinted("next", next_use_in_s=1.0))
    # Expired, the tool context is an ordinary candidate with no prediction: farthest next use.
    assert resident(h, {"tool": tool_ctx, "later": ctx(300, 30)}) == {"tool": 0, "later": 30}
    assert h.runtime.metrics.value("ttl_expiries") == 1
    assert h.runtime.metrics.value("evictions", tier="ordinary") == 2


@pytest.mark.parametrize(("locked_tokens", "tool_survives"), [(30, True), (36, False)], ids=["0.75", "0.9"])
@pytest.mark.parametrize("kind", KINDS)
def test_ttl_is_ignored_at_threshold_high(
    make_harness: Any, kind: str, locked_tokens: int, tool_survives: bool
) -> None:
    """Pressure = KV held by running requests / capacity; at >= 0.9 a live TTL no longer protects."""
    h = make_harness(kind, "reuse_time", kv_size=40)
    tool_ctx = ctx(100, 2)
    h.run(tool_ctx, hint=hinted("agent", tool="web", ttl_s=60.0))
    h.clock.advance(1.0)
    h.run(ctx(200, 2), hint=hinted("soon", next_use_in_s=1.0))
    h.clock.advance(1.0)
    running = h.run(ctx(300, locked_tokens), hold=True)
    need = 40 - 4 - locked_tokens + 2  # two tokens more than what is free
    h.run(ctx(400, need))
    assert (h.resident_tokens(tool_ctx) == 2) is tool_survives
    assert (h.resident_tokens(ctx(200, 2)) == 2) is not tool_survives
    assert h.runtime.last_pressure == pytest.approx(locked_tokens / 40)
    h.release(running)


# --- control channel: a finished workflow is evicted first ----------------------------------------


def _wait_drained(runtime: Any, source_count: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runtime.drain()
        done = (
            runtime.metrics.value("hint_updates", source="control")
            + runtime.metrics.value("unknown_workflow_messages")
            + runtime.metrics.value("malformed_messages", channel="control")
        )
        if done >= source_count:
            return
        time.sleep(0.01)
    raise AssertionError(f"control messages not drained: {runtime.metrics.snapshot()}")


@pytest.mark.parametrize("kind", KINDS)
def test_finished_workflow_is_evicted_first(make_harness: Any, kind: str) -> None:
    from saga_sgl.worker.settings import WorkerSettings

    h = make_harness(kind, "reuse_time")
    h.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"))
    a, b = ctx(100, 20), ctx(200, 20)
    h.run(a, hint=hinted("A", next_use_in_s=9.0))
    h.clock.advance(1.0)
    h.run(b, hint=hinted("B", next_use_in_s=1.0))  # B is predicted back first...
    h.clock.advance(1.0)
    h.run(ctx(300, 20), hint=hinted("C", next_use_in_s=1.0))
    push_control(h.runtime.control.endpoint, encode_control(WorkflowFinished(workflow_id="B")))
    _wait_drained(h.runtime, 1)
    h.clock.advance(1.0)
    h.run(ctx(400, 20))  # needs 16 tokens: ...but finished, B goes before A (farthest next use)
    assert resident(h, {"A": a, "B": b, "C": ctx(300, 20)}) == {"A": 20, "B": 0, "C": 20}
    assert h.runtime.metrics.value("evictions", tier="dead") == 1
    assert h.runtime.metrics.value("evicted_tokens", tier="dead") == 20


@pytest.mark.parametrize("kind", KINDS)
def test_control_tool_started_ttl_and_ttl_change(make_harness: Any, kind: str) -> None:
    from saga_sgl.worker.settings import WorkerSettings

    h = make_harness(kind, "reuse_time")
    h.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"))
    a = ctx(100, 20)
    h.run(a, hint=hinted("A"))  # no prediction, no TTL yet: the farthest next use
    h.clock.advance(1.0)
    h.run(ctx(200, 20), hint=hinted("B", next_use_in_s=10.0))
    h.clock.advance(1.0)
    h.run(ctx(300, 20), hint=hinted("C", next_use_in_s=5.0))
    push_control(
        h.runtime.control.endpoint,
        encode_control(ToolStarted(workflow_id="A", tool="code", ttl_s=30.0)),
        encode_control(TtlChanged(workflow_id="A", ttl_s=20.0)),
        encode_control(WorkflowFinished(workflow_id="never-seen")),
        b"\x93not a control message",
    )
    _wait_drained(h.runtime, 4)
    assert h.runtime.metrics.value("hint_updates", source="control") == 2
    assert h.runtime.metrics.value("unknown_workflow_messages") == 1
    assert h.runtime.metrics.value("malformed_messages", channel="control") == 1
    assert h.runtime.table.get("A").ttl_deadline_s == pytest.approx(h.clock.now_s() + 20.0)
    h.run(ctx(400, 20))
    # A is protected by the TTL from the control channel; B has the farthest predicted next use.
    assert resident(h, {"A": a, "B": ctx(200, 20), "C": ctx(300, 20)}) == {"A": 20, "B": 0, "C": 20}


# --- locks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_locked_nodes_are_never_evicted(make_harness: Any, kind: str) -> None:
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams

    h = make_harness(kind, "reuse_time")
    running = h.run(ctx(100, 30), hint=hinted("run", terminal=True), hold=True)  # DEAD tier, but locked
    h.clock.advance(1.0)
    h.run(ctx(200, 20), hint=hinted("x", next_use_in_s=1.0))
    h.cache.evict(EvictParams(num_tokens=64))  # ask for everything
    assert h.resident_tokens(ctx(100, 30)) == 30
    assert h.resident_tokens(ctx(200, 20)) == 0
    assert h.runtime.metrics.value("evictions", tier="dead") == 0
    h.release(running)
    h.cache.evict(EvictParams(num_tokens=64))
    assert h.resident_tokens(ctx(100, 30)) == 0
    assert h.runtime.metrics.value("evictions", tier="dead") >= 1


# --- shared prefixes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_shared_prefix_keeps_the_most_protective_hint(make_harness: Any, kind: str) -> None:
    h = make_harness(kind, "reuse_time")
    system = ctx(100, 16)
    a, b = system + ctx(200, 10), system + ctx(300, 10)
    h.run(a, hint=hinted("A", terminal=True))  # A's last call: its KV is dead...
    h.clock.advance(1.0)
    h.run(b, hint=hinted("B", next_use_in_s=2.0))  # ...but B still needs the shared system prompt
    h.clock.advance(1.0)
    h.run(ctx(400, 20))
    h.clock.advance(1.0)
    h.run(ctx(500, 16))  # 36 + 20 + 16 = 72 > 64: 8 tokens must go
    assert h.resident_tokens(a) == 16  # A's private suffix went, the shared prefix stayed
    assert h.resident_tokens(b) == 26
    assert h.runtime.metrics.value("evictions", tier="dead") == 1


# --- malformed hints and failing hooks ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_hint_is_counted_and_treated_as_unhinted(make_harness: Any, kind: str) -> None:
    from sglang.srt.managers.kv_hints import decode_kv_hints_envelope

    h = make_harness(kind, "reuse_time")
    served = h.run(ctx(100, 10))
    bad = decode_kv_hints_envelope(
        {
            "protocol_version": "1",
            "message_id": "m",
            "actions": [
                {
                    "action_id": "a",
                    "action_type": "saga.reuse",
                    "action_version": "1",
                    "payload": {"workflow_id": "w", "reuse_prob": 2.0},
                }
            ],
        }
    )
    served.req.__dict__.pop("_saga_hint")
    served.req.kv_hints = bad
    assert h.runtime.hint_of(served.req) is None
    assert h.runtime.metrics.value("malformed_messages", channel="kv_hints") == 1
    assert len(h.runtime.table) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_failing_policy_falls_back_to_last_use_order(make_harness: Any, kind: str, caplog: Any) -> None:
    h = make_harness(kind, "reuse_time", allow_hook_failures=True)
    strategy = h.cache.tree_core.eviction_strategy if kind == "unified" else h.cache.eviction_strategy

    class Broken:
        name = "broken"

        def key(self, entry: Any, now_s: float, pressure: float) -> Any:
            raise RuntimeError("boom")

        def protects(self, pressure: float) -> bool:
            return False

    strategy.policy = Broken()
    _ = [h.run(ctx(100 + 20 * i, 20)) or h.clock.advance(1.0) for i in range(4)]
    assert h.resident_tokens(ctx(100, 20)) == 0  # oldest went first: stock-like order
    assert h.resident_tokens(ctx(160, 20)) == 20
    failures = h.runtime.metrics.value("hook_failures", hook="eviction_key")
    assert failures >= 3
    assert sum("eviction_key failed" in r.getMessage() for r in caplog.records) == 1


# --- wa_lru runs through the same adapter ---------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_wa_lru_prefers_likely_reused_workflows(make_harness: Any, kind: str) -> None:
    h = make_harness(kind, "wa_lru")
    likely, unlikely = ctx(100, 20), ctx(200, 20)
    h.run(likely, hint=hinted("likely", reuse_prob=0.95))
    h.clock.advance(1.0)
    h.run(unlikely, hint=hinted("unlikely", reuse_prob=0.05))
    h.clock.advance(1.0)
    h.run(ctx(300, 20), hint=hinted("recent", reuse_prob=0.95))
    h.clock.advance(1.0)
    h.run(ctx(400, 20), hint=hinted("new", reuse_prob=0.95))
    # Eq. 1: beta * (1 - P_reuse) dominates; the unlikely workflow goes though the other is older.
    assert h.resident_tokens(unlikely) == 0
    assert h.resident_tokens(likely) == 20


# --- every policy the plugin registers runs through the adapter -----------------------------------


def _plugin_policies() -> list[str]:
    from saga_sgl.worker.plugin import sglang_policy_names

    return sorted(set(sglang_policy_names({"lru": None}).values()))


@pytest.mark.parametrize("policy", _plugin_policies())
@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_policy_evicts_through_the_adapter(
    make_harness: Any, kind: str, policy: str
) -> None:
    h = make_harness(kind, policy)
    after = _workflows_then_fillers(h, hint=True)
    # 78 tokens into 64: at least 14 went, none of it locked, and every victim was ranked by the policy.
    assert sum(after.values()) <= 64
    evicted = h.runtime.metrics.value("evicted_tokens")
    assert evicted == 78 - sum(after.values())
    assert h.runtime.metrics.value("evicted_tokens", tier="unranked") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_failing_checkpoint_hook_keeps_sglangs_result(
    make_harness: Any, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    h = make_harness(kind, "reuse_time", allow_hook_failures=True)

    def broken(req: Any, leaf: Any) -> None:
        raise KeyError("no such node")

    monkeypatch.setattr(h.runtime, "on_checkpoint", broken)
    h.run(ctx(100, 10), hint=hinted("A"))
    h.run(ctx(200, 10), hint=hinted("B"))
    assert h.resident_tokens(ctx(100, 10)) == 10 and h.resident_tokens(ctx(200, 10)) == 10
    hook = "checkpoint_into_tree" if kind == "unified" else "legacy_checkpoint"
    assert h.runtime.metrics.value("hook_failures", hook=hook) == 2
    assert sum(f"hook {hook} failed" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_memoised_keys_always_equal_fresh_keys(make_harness: Any, kind: str) -> None:
    """The per-node key memo must never serve a key the policy would no longer give."""
    h = make_harness(kind, "reuse_time", kv_size=256)
    strategy = h.cache.tree_core.eviction_strategy if kind == "unified" else h.cache.eviction_strategy
    system = ctx(10, 8)

    def leaves() -> list[Any]:
        out, stack = [], [h.root]
        while stack:
            node = stack.pop()
            kids = list(node.children.values())
            stack.extend(kids)
            if not kids and node is not h.root:
                out.append(node)
        return out

    def check(pressure: float) -> None:
        h.runtime.last_pressure = pressure
        now = h.clock.now_s()
        for node in leaves():
            memo_key = strategy.get_priority(node)
            fresh = max(strategy.policy.key(v, now, pressure) for v in strategy.views(node))
            assert memo_key == fresh, node.id

    h.run(system + ctx(100, 6), hint=hinted("A", tool="web", ttl_s=5.0))
    h.run(system + ctx(200, 6), hint=hinted("B", next_use_in_s=3.0))
    h.run(ctx(300, 6))
    check(0.1)  # fills the memos
    check(0.1)  # memo hits
    h.runtime.table.apply_control(WorkflowFinished(workflow_id="B"), h.clock.now_s())
    check(0.1)
    check(0.95)  # protects() flips off
    check(0.1)
    h.clock.advance(6.0)  # A's TTL passes
    check(0.1)
    h.run(system + ctx(400, 6), hint=hinted("C", next_use_in_s=1.0))  # splits nothing, adds a leaf
    h.run(system[:4] + ctx(500, 6), hint=hinted("D", next_use_in_s=1.0))  # splits the shared prefix
    check(0.1)


# --- the persistent leaf index (unified tree) picks the same victims as SGLang's per-call heap -----


def _mixed_script(h: Any) -> dict[str, int]:
    """Shared prefixes, TTLs that expire, predictions, terminal and finished workflows, unhinted."""
    system = ctx(10, 8)
    names = {}
    for i in range(12):
        wf = f"wf{i % 5}"
        tokens = system + ctx(100 + 40 * (i % 5), 4 + 2 * (i // 5)) if i % 3 else ctx(400 + 20 * i, 10)
        kw: dict[str, Any] = {}
        if i % 4 == 1:
            kw["ttl_s"] = 3.0
        elif i % 4 == 2:
            kw["next_use_in_s"] = float(i % 7)
        elif i % 4 == 3:
            kw["terminal"] = True
        h.run(tokens, hint=hinted(wf, **kw) if i % 6 else None)
        names[f"r{i}"] = tokens
        if i == 7:
            h.runtime.table.apply_control(WorkflowFinished(workflow_id="wf2"), h.clock.now_s())
            h.runtime._workflow_changed("wf2")
        h.clock.advance(1.0)
        index = h.cache.tree_core.eviction_strategy.leaf_index
        if index is not None:
            assert index.node_ids() == {n.id for n in h.cache.tree_core.evictable_device_leaves}
    return resident(h, names)


def test_leaf_index_matches_sglangs_heap(make_harness: Any) -> None:
    with_index = make_harness("unified", "reuse_time", kv_size=48)
    stock = make_harness("unified", "reuse_time", kv_size=48)
    stock.cache.tree_core.eviction_strategy.use_leaf_index = False
    assert _mixed_script(with_index) == _mixed_script(stock)
    assert with_index.cache.tree_core.eviction_strategy.leaf_index is not None
    assert stock.cache.tree_core.eviction_strategy.leaf_index is None
    for name in ("evictions", "evicted_tokens"):
        for tier in ("dead", "ordinary", "protected"):
            assert with_index.runtime.metrics.value(name, tier=tier) == stock.runtime.metrics.value(
                name, tier=tier
            ), (name, tier)
    assert with_index.runtime.metrics.value("evictions") > 3


def test_failing_leaf_index_falls_back_to_sglangs_heap(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_sgl.worker.evictable import EvictableLeaves

    h = make_harness("unified", "reuse_time", allow_hook_failures=True)
    strategy = h.cache.tree_core.eviction_strategy
    for i in range(3):
        h.run(ctx(100 + 30 * i, 20), hint=hinted(f"w{i}", next_use_in_s=float(10 - i)))
        h.clock.advance(1.0)
    assert strategy.leaf_index is not None

    def broken(self: Any, now_s: float, pressure: float) -> Any:
        raise RuntimeError("index bug")

    monkeypatch.setattr(EvictableLeaves, "pop", broken)
    h.run(ctx(400, 20))  # must evict 16 tokens: falls back mid-walk to SGLang's own heap
    assert resident(h, {"w0": ctx(100, 20), "w1": ctx(130, 20), "w2": ctx(160, 20)}) == {
        "w0": 0,  # farthest predicted next use, as the policy orders it
        "w1": 20,
        "w2": 20,
    }
    assert strategy.leaf_index is None and not strategy.use_leaf_index
    assert h.runtime.metrics.value("hook_failures", hook="leaf_index") == 1


# --- forgetting is lazy; shared prefixes follow the core's one rule ---------------------------------


def test_forgetting_a_workflow_rekeys_only_its_own_nodes(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the table is full, each new workflow used to re-key every indexed leaf (1.8 s per hint
    with 20K leaves); now only the forgotten workflow's nodes are refreshed."""
    h = make_harness("unified", "reuse_time", kv_size=1024, max_tracked_workflows=40)
    for i in range(40):
        h.run(ctx(1000 + 10 * i, 6), hint=hinted(f"wf{i}", next_use_in_s=float(i)))
        h.clock.advance(0.1)
    index = h.cache.tree_core.eviction_strategy.leaf_index
    assert index is not None and len(index) >= 40
    policy_type = type(h.cache.tree_core.eviction_strategy.policy)
    original = policy_type.key
    calls = [0]

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(policy_type, "key", counting)
    h.run(ctx(2000, 6), hint=hinted("newcomer", next_use_in_s=1.0))  # the table forgets wf0
    assert h.runtime.table.get("wf0") is None and h.runtime.metrics.value("forgotten_workflows") == 1
    assert calls[0] <= 8, calls[0]


@pytest.mark.parametrize("kind", KINDS)
def test_a_prefix_shared_by_workflows_is_keyed_by_the_cores_rule(make_harness: Any, kind: str) -> None:
    from saga_sgl.policy.decisions import Tier
    from saga_sgl.policy.victim_index import shared_entry_view

    h = make_harness(kind, "reuse_time")
    system = ctx(10, 8)
    h.run(system + ctx(100, 4), hint=hinted("A", ttl_s=60.0))
    h.run(system + ctx(200, 4), hint=hinted("B", ttl_s=60.0))
    strategy = h.cache.tree_core.eviction_strategy if kind == "unified" else h.cache.eviction_strategy
    shared = h.node(h.cache.match_prefix(_match(system)).last_device_node)
    users = strategy.user_views(shared)
    assert {u.workflow_id for u in users} == {"A", "B"}
    view = strategy.entry_view(shared)
    assert view == shared_entry_view(users) and view.workflow_id is None and view.ttl_deadline_s is None
    # One user's TTL does not pin the shared prefix (it is ordered by last use, as in the simulator).
    key = strategy.key_of(shared, h.clock.now_s(), 0.0)
    assert key[0] == int(Tier.ORDINARY)
    private = h.node(h.cache.match_prefix(_match(system + ctx(100, 4))).last_device_node)
    assert strategy.key_of(private, h.clock.now_s(), 0.0)[0] == int(Tier.PROTECTED)


def _match(tokens: list[int]) -> Any:
    from array import array

    from sglang.srt.mem_cache.base_prefix_cache import MatchPrefixParams
    from sglang.srt.mem_cache.radix_cache import RadixKey

    return MatchPrefixParams(key=RadixKey(array("q", tokens)))
