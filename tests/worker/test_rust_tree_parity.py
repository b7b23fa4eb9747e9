"""The saga-rust tree core (SGLang's Rust tree core, victims from the plugin's leaf index) takes the
same eviction decisions as the plugin on SGLang's Python tree core, over random trees (requests that
share random prefixes: splits), random hints, time steps and held requests (locks).

Each example runs one script on two real caches (``unified``: Python core; ``unified-rust``: the
Rust core through ``saga_sgl.worker.rust_tree``) and compares, after every request, the cached
prefix it got and the evictable leaves (by their token paths), and at the end the evicted tokens per
tier. After every request the mirror is also checked against the Rust core itself
(``collect_path_info``): same parents, spans and child counts for every mirrored node.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kernels_tree_parity import _tokens, requests

from saga_sgl.policy.victim_index import shared_entry_view
from saga_sgl.worker.evictable import cached_content, node_content

pytestmark = [pytest.mark.sglang]


def _path_tokens(node: Any) -> tuple[int, ...]:
    parts = []
    while node.parent is not None:
        parts.append(tuple(node.key.token_ids))
        node = node.parent
    return tuple(t for part in reversed(parts) for t in part)


def _check_mirror(tree_core: Any) -> None:
    """Every mirrored node matches the Rust core's own view of it; leaves are exactly the
    unlocked childless nodes."""
    nodes = [n for n in tree_core.nodes.values() if n.parent is not None]
    infos = tree_core.collect_path_info([n.id for n in nodes])
    for node, path in zip(nodes, infos, strict=True):
        info = path[-1]
        assert info.node_id == node.id
        assert info.parent_id == node.parent.id
        assert info.path_end - info.path_start == len(node.key)
        assert info.num_children == len(node.children)
    leaves = {n for n in nodes if not n.children and not n.locks}
    assert leaves == tree_core.evictable_device_leaves


def _run(make_harness: Any, kind: str, policy: str, script: list[Any]) -> Any:
    h = make_harness(kind, policy, kv_size=96)
    held: list[Any] = []
    trace = []
    for stem, cut, tail, salt, hint, dt, hold in script:
        h.clock.advance(dt)
        served = h.run(_tokens(stem, cut, tail, salt), hint=hint, hold=hold == 0 and len(held) < 2)
        if served.held:
            held.append(served)
        if hold == 1 and held:
            h.release(held.pop(0))
        tree_core = h.cache.tree_core
        if kind == "unified-rust":
            _check_mirror(tree_core)
        strategy = tree_core.eviction_strategy
        for node in tree_core.evictable_device_leaves:  # the fast paths are exact
            assert cached_content(node) == node_content(node)
            assert strategy.entry_view(node) == shared_entry_view(strategy.user_views(node))
        leaves = sorted(_path_tokens(n) for n in tree_core.evictable_device_leaves)
        trace.append((served.cached_tokens, leaves))
    metrics = h.runtime.metrics
    tiers = {t: metrics.value("evicted_tokens", tier=t) for t in ("dead", "ordinary", "protected")}
    return trace, tiers


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["reuse_density", "reuse_time", "wa_lru"]), st.lists(requests, min_size=4, max_size=30)
)
def test_rust_core_evicts_what_the_python_core_evicts(
    make_harness: Any, policy: str, script: list[Any]
) -> None:
    rust = _run(make_harness, "unified-rust", policy, script)
    python = _run(make_harness, "unified", policy, script)
    assert rust == python


def test_saga_policies_get_the_rust_core_and_stock_ones_stay_untouched(make_harness: Any) -> None:
    saga = make_harness("unified-rust", "reuse_density", kv_size=64)
    assert type(saga.cache.tree_core).__name__ == "SagaRustTreeCore"
    lru = make_harness("unified-rust", "sglang_lru", kv_size=64)
    assert type(lru.cache.tree_core).__name__ == "RustUnifiedTreeCore"


def test_a_finished_workflow_goes_first_on_the_rust_core(make_harness: Any) -> None:
    """What option (a) (Rust ``priority`` classes) gets wrong: a hint that changes after insertion.
    Here the finished workflow's context is evicted before an idle one, as the exact policy says."""
    from saga_sgl.protocol import ReuseHint, WorkflowFinished

    h = make_harness("unified-rust", "reuse_density", kv_size=48)
    kept, idle = list(range(10, 30)), list(range(40, 60))
    h.run(kept, hint=ReuseHint(workflow_id="done", step=0, reuse_prob=0.95, next_use_in_s=1.0))
    h.clock.advance(1.0)
    h.run(idle, hint=ReuseHint(workflow_id="idle", step=0, reuse_prob=0.5, next_use_in_s=30.0))
    h.runtime.table.apply_control(WorkflowFinished(workflow_id="done"), h.clock.now_s())
    h.runtime._workflow_changed("done")
    h.clock.advance(1.0)
    h.run(list(range(70, 90)))  # needs 20 of 8 free tokens: one 20-token context must go
    assert h.resident_tokens(kept) == 0
    assert h.resident_tokens(idle) == 20
    assert h.runtime.metrics.value("evicted_tokens", tier="dead") == 20


def test_caches_the_rust_core_cannot_serve_keep_the_python_core(
    saga_hooks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HiCache (attached by SGLang after the cache is built), other components, sessions: the
    Python tree core, with the reason logged (``hooks.select_tree_core_backend``)."""
    from types import SimpleNamespace

    from sglang.srt import runtime_context
    from sglang.srt.mem_cache.unified_cache.components.base import ComponentType

    from saga_sgl.worker.rust_tree import supported

    full = SimpleNamespace(tree_components=(ComponentType.FULL,))
    assert supported(full) is None  # no runtime context published (in-process cache): no host tier
    assert supported(SimpleNamespace(tree_components=(ComponentType.FULL, ComponentType.SWA))) is not None
    assert "session" in str(supported(SimpleNamespace(tree_components=None, enable_session_radix_cache=True)))
    memory = SimpleNamespace(enable_hierarchical_cache=True, enable_unified_cache_external_linker=False)
    disagg = SimpleNamespace(disaggregation_decode_retraction_backup=None)
    monkeypatch.setattr(runtime_context, "get_memory", lambda: memory)
    monkeypatch.setattr(runtime_context, "get_disagg", lambda: disagg)
    assert supported(full) == "HiCache (host tier)"
    memory.enable_hierarchical_cache = False
    assert supported(full) is None


def test_a_victim_the_core_refuses_hands_the_walk_to_the_cores_own_lru(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's own walk (its heap of every leaf) is only started when a walk must fall back to
    it: here the index hands out a node the core does not hold as a leaf, mid-walk. The walk goes
    on with the core's LRU, the failure is counted, and later walks stay on the core."""
    h = make_harness("unified-rust", "reuse_density", kv_size=48, allow_hook_failures=True)
    old, recent = list(range(10, 30)), list(range(10, 20)) + list(range(40, 50))
    h.run(old)
    h.clock.advance(1.0)
    h.run(recent)  # splits ``old``: an inner node [10, 20) with two leaves
    h.clock.advance(1.0)
    tree_core = h.cache.tree_core
    assert not tree_core._core_walk
    inner = next(n for n in tree_core.nodes.values() if n.parent is not None and n.children)
    monkeypatch.setattr(tree_core, "_pop_victim", lambda: inner)
    h.run(list(range(70, 90)))  # needs 20 of 18 free tokens
    assert h.runtime.metrics.value("hook_failures", hook="saga_rust_mirror") == 1
    assert tree_core._mirror_failed and not tree_core._core_walk  # the core's walk ran and ended
    assert h.resident_tokens(list(range(70, 90))) == 20
    assert h.resident_tokens(old) == 10  # LRU: the oldest leaf (old's tail) went
    assert h.resident_tokens(recent) == 20
    monkeypatch.undo()
    h.run(list(range(100, 120)))  # the next walk is the core's from the start
    assert h.resident_tokens(list(range(100, 120))) == 20
    assert h.runtime.metrics.value("hook_failures", hook="saga_rust_mirror") == 1
