"""Plugin and simulator order victims the same way for the same inputs.

Plugin side: the real SGLang caches (unified and legacy) driven by the test harness, hints through
``kv_hints``. Simulator side: a real ``SimWorker`` (its ``RadixCache``, ``VictimIndex`` and
``policy.pressure``), with a small host stand-in in place of the cluster that builds each leaf's
view from the same per-workflow facts the plugin's hint table holds (the cluster needs a whole
generated workload; the view fields are what both hosts hand the policy core).
"""

from __future__ import annotations

from typing import Any

import pytest

from saga_sgl.policy import registry
from saga_sgl.policy.views import CacheEntryView, WorkflowId
from saga_sgl.protocol import ReuseHint

pytestmark = pytest.mark.sglang

CTX = 10
# (name, hint fields or None for unhinted traffic), served in this order one second apart.
SCRIPT: list[tuple[str, dict[str, Any] | None]] = [
    ("due", {"reuse_prob": 0.95, "next_use_in_s": 1.0}),
    ("plain_old", None),
    ("idle", {"reuse_prob": 0.2, "next_use_in_s": 120.0}),
    ("done", {"terminal": True}),
    ("tool", {"tool": "web", "ttl_s": 60.0}),
    ("mid", {"reuse_prob": 0.6, "next_use_in_s": 20.0}),
    ("plain_new", None),
    ("deep", {"reuse_prob": 0.6, "next_use_in_s": 25.0}),
]


def _tokens(i: int) -> list[int]:
    return list(range(100 + 50 * i, 100 + 50 * i + CTX))


def _plugin_order(make_harness: Any, kind: str, policy: str) -> list[str]:
    h = make_harness(kind, policy, kv_size=1024)
    for i, (name, hint) in enumerate(SCRIPT):
        h.clock.advance(1.0)
        h.run(_tokens(i), hint=None if hint is None else ReuseHint(workflow_id=name, **hint))
    h.clock.advance(1.0)
    return list(h.eviction_order({name: _tokens(i) for i, (name, _) in enumerate(SCRIPT)}))


class _Host:
    """Stand-in for the simulator's cluster host: views from per-workflow facts, eviction log."""

    def __init__(self, policy: str) -> None:
        self.eviction = registry.create_eviction(policy)
        self.facts: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self.evicted: list[str] = []

    def entry_view(self, worker: Any, node: Any, now_s: float) -> CacheEntryView:
        name = node.owner
        served_s, hint = self.facts[name]
        if hint is None:
            return CacheEntryView(
                entry_id=node.entry_id,
                num_tokens=node.num_tokens,
                depth_tokens=node.depth_tokens,
                last_access_s=node.last_access_s,
            )
        nxt = hint.get("next_use_in_s")
        ttl = hint.get("ttl_s", 0.0)
        return CacheEntryView(
            entry_id=node.entry_id,
            num_tokens=node.num_tokens,
            depth_tokens=node.depth_tokens,
            last_access_s=node.last_access_s,
            workflow_id=WorkflowId(name),
            is_terminal=hint.get("terminal", False),
            reuse_prob=hint.get("reuse_prob", 1.0),
            next_use_at_s=None if nxt is None else served_s + nxt,
            ttl_deadline_s=served_s + ttl if ttl > 0 else None,
        )

    def on_leaf(self, worker: Any, node: Any, added: bool) -> None:
        return None

    def on_evict(self, worker: Any, node: Any, now_s: float) -> None:
        self.evicted.append(node.owner)


def _simulator_order(policy: str) -> list[str]:
    from saga_sgl.sim.cost_model import ProfileCostModel
    from saga_sgl.sim.worker import SimWorker, WorkerSettings
    from saga_sgl.sim.workloads.model import Segment

    host = _Host(policy)
    worker = SimWorker("w0", ProfileCostModel(), WorkerSettings(kv_capacity_tokens=1024), host)  # type: ignore[arg-type]
    now = 1000.0
    for i, (name, hint) in enumerate(SCRIPT):
        now += 1.0
        worker.now_s = now
        host.facts[name] = (now, hint)
        worker.cache.insert([Segment(i, CTX)], now, name)
    now += 1.0
    worker.now_s = now
    while len(host.evicted) < len(SCRIPT):
        worker._evict(1, now)
    return host.evicted


@pytest.mark.parametrize("policy", ["saga", "reuse_time", "wa_lru"])
@pytest.mark.parametrize("kind", ["unified", "legacy"])
def test_plugin_and_simulator_evict_in_the_same_order(make_harness: Any, kind: str, policy: str) -> None:
    plugin = _plugin_order(make_harness, kind, policy)
    sim = _simulator_order(policy)
    assert plugin == sim
    assert plugin[0] == "done" and plugin[-1] == "tool"  # dead first, the live TTL last
    if policy == "saga":
        # The tool-due context outlives the unhinted one served before it and the idle one after it.
        assert plugin.index("due") > plugin.index("plain_old")
        assert plugin.index("due") > plugin.index("idle")
