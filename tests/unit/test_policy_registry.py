"""Registry contract: every registered name builds, satisfies its Protocol, is deterministic, and
loads its settings strictly from JSON."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest
from factories import (
    make_blocking,
    make_call,
    make_entry,
    make_pending,
    make_tenant,
    make_worker,
    make_workflow,
)

from saga_sgl.errors import InvalidSettings, UnknownPolicy
from saga_sgl.policy import registry
from saga_sgl.policy.decisions import EvictionKey, Tier
from saga_sgl.policy.registry import PROTOCOL_OF, PolicyKind
from saga_sgl.policy.settings import settings_to_dict
from saga_sgl.policy.views import WorkflowState

ALL = registry.names()


def test_expected_names_are_registered() -> None:
    assert registry.names(PolicyKind.EVICTION) == ["lru", "vllm_prefix", "wa_lru", "reuse_time"]
    assert registry.names("placement") == [
        "round_robin",
        "cache_aware",
        "consistent_hash",
        "bounded_hash",
        "prefix_affinity",
        "sticky_least_loaded",
        "saga",
    ]
    assert registry.names("stealing") == ["saga_steal", "no_steal"]
    assert registry.names("fairness") == ["afs", "fcfs"]
    assert registry.names("cost_model") == ["linear"]


def _decide(kind: PolicyKind, policy: Any) -> object:
    """Run a fixed scenario through a policy and return everything it decided."""
    if kind is PolicyKind.EVICTION:
        entries = [
            make_entry(
                i,
                last_access_s=float(i % 5),
                reuse_prob=(i % 3) / 2,
                next_use_at_s=float(50 - i),
                ttl_deadline_s=20.0 if i % 4 == 0 else None,
                is_finished=i == 7,
                depth_tokens=100 + i,
            )
            for i in range(12)
        ]
        return [policy.key(e, 10.0, p) for e in entries for p in (0.2, 0.95)]
    if kind is PolicyKind.PLACEMENT:
        workers = [make_worker(f"w{i}", running=10 * i % 70, kv_used_tokens=1000 * i) for i in range(6)]
        calls = [
            make_call(
                f"wf{i}",
                prefix=tuple(range(i % 3, 40)),
                affinity_worker_id=f"w{i % 6}" if i % 2 else None,
                affinity_cached=i % 3 == 0,
            )
            for i in range(20)
        ]
        return [policy.place(c, workers, float(i)) for i, c in enumerate(calls)]
    if kind is PolicyKind.STEALING:
        workers = [
            make_worker("idle", idle_since_s=0.0),
            make_worker("hot", running=95, kv_used_tokens=90_000),
            make_worker("hot2", running=90, kv_used_tokens=95_000),
        ]
        wfs = [
            make_workflow(f"wf{i}", worker_id="hot" if i % 2 else "hot2", state=WorkflowState.QUEUED)
            for i in range(6)
        ]
        return policy.plan(workers, wfs, 1.0)
    if kind is PolicyKind.FAIRNESS:
        wfs = [
            make_workflow(f"wf{i}", tenant_id=f"t{i % 3}", remaining_work_s=1.0 + i, deadline_s=50.0 + i)
            for i in range(9)
        ]
        ep = policy.epoch(wfs, [make_tenant("t0", weight=2.0)], 10.0)
        order = policy.order(
            [make_pending(f"c{i}", tenant_id=f"t{i % 3}", enqueued_at_s=float(i)) for i in range(9)], ep
        )
        pre = policy.preemptions([make_blocking("wf0", "wf1", blocked_since_s=0.0)], ep, 10.0)
        return (ep, order, pre)
    return [
        policy.prefill_time_s(n, c) + policy.decode_time_s(n // 10, c)
        for n in (0, 1, 512, 8192)
        for c in (0, 4096)
    ]


@pytest.mark.parametrize("name", ALL)
def test_contract(name: str) -> None:
    spec = registry.get(name)
    policy = registry.create(name)
    assert isinstance(policy, PROTOCOL_OF[spec.kind])
    assert policy.name == name
    # Same inputs and seed -> same decisions, on fresh instances.
    a = _decide(spec.kind, registry.create(name, rng=random.Random(3)))
    b = _decide(spec.kind, registry.create(name, rng=random.Random(3)))
    assert a == b
    if spec.kind is PolicyKind.EVICTION:
        keys = _decide(spec.kind, policy)
        assert isinstance(keys, list)
        for k in keys:
            assert isinstance(k, EvictionKey) and len(k) == 4
            assert k.tier in set(Tier)
            assert (
                isinstance(k.primary, float) and isinstance(k.tiebreak, float) and isinstance(k.entry_id, int)
            )
        # Keys order exactly as plain tuples do (SGLang's heap and the simulator compare them raw).
        assert [tuple(k) for k in sorted(keys)] == sorted(tuple(k) for k in keys)
        if not policy.protects(0.0):
            assert all(k.tier != Tier.PROTECTED for k in keys)


@pytest.mark.parametrize("name", ALL)
def test_settings_load_strictly_from_json(name: str) -> None:
    spec = registry.get(name)
    defaults = spec.settings_cls()
    as_json = json.dumps(settings_to_dict(defaults))
    assert registry.load(name, json.loads(as_json)) == defaults
    assert registry.load(name, None) == defaults
    with pytest.raises(InvalidSettings, match="no_such_knob"):
        registry.load(name, {"no_such_knob": 1})
    assert dataclasses.is_dataclass(defaults)
    assert spec.settings_cls.__dataclass_params__.frozen
    assert all(f.kw_only for f in dataclasses.fields(spec.settings_cls))
    assert hasattr(spec.settings_cls, "__slots__")
    text = registry.describe(name)
    assert text.startswith(name) and spec.kind in text
    for f in dataclasses.fields(spec.settings_cls):
        assert f.name in text


def test_settings_from_sglang_style_json_config() -> None:
    policy = registry.create_eviction("wa_lru", json.loads('{"alpha": 1, "beta": 0.0, "gamma": 0}'))
    assert policy.settings.alpha == 1.0  # type: ignore[attr-defined]
    with pytest.raises(InvalidSettings, match="alpha"):
        registry.load("wa_lru", {"alpha": "high"})
    with pytest.raises(InvalidSettings, match="alpha"):
        registry.load("wa_lru", {"alpha": True})
    with pytest.raises(InvalidSettings, match="theta"):
        registry.load("saga", {"theta": 1.5})


def test_unknown_and_wrong_kind_names() -> None:
    with pytest.raises(UnknownPolicy, match="known: lru"):
        registry.get("nope")
    with pytest.raises(UnknownPolicy, match="placement policies"):
        registry.create_placement("lru")
    assert isinstance(registry.create_eviction("lru"), PROTOCOL_OF[PolicyKind.EVICTION])
    assert isinstance(
        registry.create_placement("saga", rng=random.Random(1)), PROTOCOL_OF[PolicyKind.PLACEMENT]
    )
    assert isinstance(registry.create_stealing("saga_steal"), PROTOCOL_OF[PolicyKind.STEALING])
    assert isinstance(registry.create_fairness("afs"), PROTOCOL_OF[PolicyKind.FAIRNESS])
    assert isinstance(registry.create_cost_model(), PROTOCOL_OF[PolicyKind.COST_MODEL])
