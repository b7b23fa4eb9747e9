"""The plugin on SGLang's real radix cache evicts the same nodes with the native KeyHeap and with
its pure-Python twin (saga_kernels), over random trees (requests that share random prefixes) and
random hints, time steps and holds, on SGLang's Python tree core and on the saga-rust core (SGLang's
Rust core with the plugin's victims). Each example runs the same script on two fresh caches whose
leaf index was built under ``SAGA_KERNELS=native`` and ``SAGA_KERNELS=python``.
"""

from __future__ import annotations

from typing import Any

import pytest
import saga_kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saga_sgl.protocol import ReuseHint

pytestmark = [
    pytest.mark.sglang,
    pytest.mark.skipif(saga_kernels.NativeKeyHeap is None, reason="native kernels not built"),
]

hints = st.none() | st.builds(
    ReuseHint,
    workflow_id=st.sampled_from(["a", "b", "c", "d"]),
    step=st.integers(0, 3),
    reuse_prob=st.sampled_from([0.05, 0.5, 0.95, 1.0]),
    next_use_in_s=st.none() | st.sampled_from([0.5, 5.0, 60.0]),
    ttl_s=st.sampled_from([0.0, 1.0, 10.0]),
    tool=st.sampled_from(["", "web"]),
    terminal=st.booleans(),
)
# A request: one of 4 stems (shared prefixes: the tree branches), a random cut, a random tail.
requests = st.tuples(
    st.integers(0, 3), st.integers(0, 20), st.integers(1, 12), st.integers(0, 500), hints,
    st.sampled_from([0.0, 0.5, 2.0]), st.integers(0, 9),
)  # fmt: skip


def _tokens(stem: int, cut: int, tail: int, salt: int) -> list[int]:
    base = [1000 * (stem + 1) + i for i in range(20)][:cut]
    return base + [100_000 + salt * 16 + i for i in range(tail)]


def _run(
    make_harness: Any,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    policy: str,
    script: Any,
    kind: str = "unified",
) -> Any:
    monkeypatch.setenv("SAGA_KERNELS", backend)
    h = make_harness(kind, policy, kv_size=96)
    held = []
    out = []
    for stem, cut, tail, salt, hint, dt, hold in script:
        h.clock.advance(dt)
        served = h.run(_tokens(stem, cut, tail, salt), hint=hint, hold=hold == 0 and len(held) < 2)
        if served.held:
            held.append(served)
        out.append(served.cached_tokens)
        if hold == 1 and held:
            h.release(held.pop(0))
    index = h.cache.tree_core.eviction_strategy.leaf_index
    assert index is not None and index.victims.backend == backend
    metrics = h.runtime.metrics
    return out, {t: metrics.value("evicted_tokens", tier=t) for t in ("dead", "ordinary", "protected")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["unified", "unified-rust"]),  # SGLang's Python tree core, and the saga-rust core
    st.sampled_from(["reuse_density", "reuse_time"]),
    st.lists(requests, min_size=4, max_size=30),
)
def test_native_and_python_keyheaps_evict_the_same_nodes(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, kind: str, policy: str, script: list[Any]
) -> None:
    native = _run(make_harness, monkeypatch, "native", policy, script, kind)
    python = _run(make_harness, monkeypatch, "python", policy, script, kind)
    assert native == python
