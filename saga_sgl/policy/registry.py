"""The one registry of policies: name -> (kind, settings class, factory).

From it come the router's ``--policy`` choices, the eviction names the worker plugin registers with
SGLang, and the simulator's configuration rows. It is a constant built once, here; nothing else
adds to it.

Settings are loaded strictly from a mapping (JSON from SGLang's ``--radix-eviction-policy-config``,
router flags, simulator rows): an unknown key raises ``InvalidSettings`` naming it.

A factory takes (settings, rng). Policies that never draw ignore the ``random.Random``; the ones
that do (ties, random victims) keep it, so the same inputs and seed give the same decisions.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from saga_sgl.errors import UnknownPolicy
from saga_sgl.policy.cost_model import LinearCostModel, LinearCostSettings
from saga_sgl.policy.eviction.lru import LruEviction, LruSettings
from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction, ReuseTimeSettings
from saga_sgl.policy.eviction.vllm_prefix import VllmPrefixEviction, VllmPrefixSettings
from saga_sgl.policy.eviction.wa_lru import WaLruEviction, WaLruSettings
from saga_sgl.policy.fairness import AfsSettings, AgentFairShare, FcfsSettings, FirstComeFirstServed
from saga_sgl.policy.interfaces import (
    CostModel,
    EvictionPolicy,
    FairnessPolicy,
    PlacementPolicy,
    StealPolicy,
)
from saga_sgl.policy.placement.bounded_hash import BoundedHashPlacement, BoundedHashSettings
from saga_sgl.policy.placement.cache_aware import CacheAwarePlacement, CacheAwareSettings
from saga_sgl.policy.placement.consistent_hash import ConsistentHashPlacement, ConsistentHashSettings
from saga_sgl.policy.placement.prefix_affinity import PrefixAffinityPlacement, PrefixAffinitySettings
from saga_sgl.policy.placement.round_robin import RoundRobinPlacement, RoundRobinSettings
from saga_sgl.policy.placement.saga import SagaPlacement, SagaPlacementSettings
from saga_sgl.policy.placement.sticky import StickyLeastLoadedPlacement, StickySettings
from saga_sgl.policy.settings import load_settings, settings_to_dict
from saga_sgl.policy.stealing import NoStealing, NoStealSettings, StealSettings, WorkStealing


class PolicyKind(StrEnum):
    """Decision kind; each kind has one Protocol in ``policy.interfaces``."""

    EVICTION = "eviction"
    PLACEMENT = "placement"
    STEALING = "stealing"
    FAIRNESS = "fairness"
    COST_MODEL = "cost_model"


PROTOCOL_OF: Mapping[PolicyKind, type] = MappingProxyType(
    {
        PolicyKind.EVICTION: EvictionPolicy,
        PolicyKind.PLACEMENT: PlacementPolicy,
        PolicyKind.STEALING: StealPolicy,
        PolicyKind.FAIRNESS: FairnessPolicy,
        PolicyKind.COST_MODEL: CostModel,
    }
)
"""The Protocol every policy of a kind satisfies."""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """One registry row."""

    name: str
    """Registry key (lowercase snake_case; matches the policy class's ``name``)."""
    kind: PolicyKind
    """Decision kind."""
    settings_cls: type
    """Frozen settings dataclass."""
    factory: Callable[[Any, random.Random], Any]
    """(settings, rng) -> policy."""
    summary: str
    """One line for ``--help``."""
    is_baseline: bool
    """A baseline we compare against (its rules follow the real system's)."""


def _spec(
    name: str,
    kind: PolicyKind,
    settings_cls: type,
    factory: Callable[[Any, random.Random], Any],
    summary: str,
    *,
    baseline: bool = False,
) -> PolicySpec:
    return PolicySpec(name, kind, settings_cls, factory, summary, baseline)


_SPECS = (
    _spec("lru", PolicyKind.EVICTION, LruSettings, lambda s, r: LruEviction(s),
          "least recently used first (SGLang's default)", baseline=True),
    _spec("vllm_prefix", PolicyKind.EVICTION, VllmPrefixSettings, lambda s, r: VllmPrefixEviction(s),
          "vLLM v1 prefix caching free-queue order: least recently released, tail first", baseline=True),
    _spec("wa_lru", PolicyKind.EVICTION, WaLruSettings, lambda s, r: WaLruEviction(s),
          "SAGA's workflow-aware LRU score (Eq. 1-3) with tool-aware TTL protection"),
    _spec("reuse_time", PolicyKind.EVICTION, ReuseTimeSettings, lambda s, r: ReuseTimeEviction(s),
          "finished workflows first, then farthest predicted next use; TTL-protected last"),
    _spec("round_robin", PolicyKind.PLACEMENT, RoundRobinSettings, lambda s, r: RoundRobinPlacement(s),
          "next healthy worker in turn (sglang-router round_robin)", baseline=True),
    _spec("cache_aware", PolicyKind.PLACEMENT, CacheAwareSettings, lambda s, r: CacheAwarePlacement(s),
          "sglang-router cache_aware: approximate prefix tree with load-balance thresholds", baseline=True),
    _spec("consistent_hash", PolicyKind.PLACEMENT, ConsistentHashSettings,
          lambda s, r: ConsistentHashPlacement(s),
          "session affinity by sha256 hash ring on the workflow id", baseline=True),
    _spec("bounded_hash", PolicyKind.PLACEMENT, BoundedHashSettings, lambda s, r: BoundedHashPlacement(s),
          "consistent hashing with bounded loads (c = 1.25) on the workflow id", baseline=True),
    _spec("prefix_affinity", PolicyKind.PLACEMENT, PrefixAffinitySettings,
          lambda s, r: PrefixAffinityPlacement(s, r),
          "Ray Serve PrefixCacheAffinityRouter: per-request prefix affinity, imbalance guard, "
          "power of two choices", baseline=True),
    _spec("sticky_least_loaded", PolicyKind.PLACEMENT, StickySettings,
          lambda s, r: StickyLeastLoadedPlacement(s),
          "session bound at its first call to the least-loaded worker, kept there", baseline=True),
    _spec("saga", PolicyKind.PLACEMENT, SagaPlacementSettings, lambda s, r: SagaPlacement(s, r),
          "workflow-atomic admission, then Eq. 7 session affinity (theta 0.8)"),
    _spec("saga_steal", PolicyKind.STEALING, StealSettings, lambda s, r: WorkStealing(s, r),
          "work stealing: idle 100 ms and load ratio 2.0, cost-aware session choice, no repeat steals"),
    _spec("no_steal", PolicyKind.STEALING, NoStealSettings, lambda s, r: NoStealing(s),
          "never steal", baseline=True),
    _spec("afs", PolicyKind.FAIRNESS, AfsSettings, lambda s, r: AgentFairShare(s),
          "Agent Fair Share (Eq. 8): proportional dispatch, priorities, 500 ms preemption"),
    _spec("fcfs", PolicyKind.FAIRNESS, FcfsSettings, lambda s, r: FirstComeFirstServed(s),
          "arrival order, no priorities, no preemption", baseline=True),
    _spec("linear", PolicyKind.COST_MODEL, LinearCostSettings, lambda s, r: LinearCostModel(s),
          "analytic per-request prefill/decode time (Llama-3-8B, H100 defaults)"),
)  # fmt: skip

REGISTRY: Mapping[str, PolicySpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Every registered policy by name."""


def names(kind: PolicyKind | str | None = None) -> list[str]:
    """Registered names, optionally of one kind, in registration order."""
    if kind is None:
        return [s.name for s in _SPECS]
    k = PolicyKind(kind)
    return [s.name for s in _SPECS if s.kind is k]


def get(name: str) -> PolicySpec:
    """The registry row of ``name``; ``UnknownPolicy`` lists the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownPolicy(f"unknown policy {name!r}; known: {', '.join(names())}") from None


def load(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """Settings of ``name`` loaded strictly from ``config`` (unknown key -> ``InvalidSettings``)."""
    return load_settings(get(name).settings_cls, config)


def create(name: str, config: Mapping[str, Any] | None = None, *, rng: random.Random | None = None) -> Any:
    """Build policy ``name`` from ``config`` (defaults when None) and an injected RNG (seed 0 if None)."""
    spec = get(name)
    settings: Any = load_settings(spec.settings_cls, config)
    return spec.factory(settings, rng if rng is not None else random.Random(0))


def _typed(name: str, kind: PolicyKind) -> PolicySpec:
    spec = get(name)
    if spec.kind is not kind:
        raise UnknownPolicy(
            f"{name!r} is a {spec.kind} policy, not {kind}; {kind} policies: {', '.join(names(kind))}"
        )
    return spec


def create_eviction(name: str, config: Mapping[str, Any] | None = None) -> EvictionPolicy:
    """An eviction policy by name (``lru``, ``vllm_prefix``, ``wa_lru``, ``reuse_time``)."""
    _typed(name, PolicyKind.EVICTION)
    policy: EvictionPolicy = create(name, config)
    return policy


def create_placement(
    name: str, config: Mapping[str, Any] | None = None, *, rng: random.Random | None = None
) -> PlacementPolicy:
    """A placement policy by name (``round_robin``, ``cache_aware``, ``consistent_hash``, ``saga``)."""
    _typed(name, PolicyKind.PLACEMENT)
    policy: PlacementPolicy = create(name, config, rng=rng)
    return policy


def create_stealing(
    name: str, config: Mapping[str, Any] | None = None, *, rng: random.Random | None = None
) -> StealPolicy:
    """A stealing policy by name (``saga_steal``, ``no_steal``)."""
    _typed(name, PolicyKind.STEALING)
    policy: StealPolicy = create(name, config, rng=rng)
    return policy


def create_fairness(name: str, config: Mapping[str, Any] | None = None) -> FairnessPolicy:
    """A fairness policy by name (``afs``, ``fcfs``)."""
    _typed(name, PolicyKind.FAIRNESS)
    policy: FairnessPolicy = create(name, config)
    return policy


def create_cost_model(name: str = "linear", config: Mapping[str, Any] | None = None) -> CostModel:
    """A cost model by name (``linear``)."""
    _typed(name, PolicyKind.COST_MODEL)
    model: CostModel = create(name, config)
    return model


def describe(name: str) -> str:
    """A short help text: kind, summary and every setting with its default."""
    spec = get(name)
    lines = [f"{spec.name} ({spec.kind}{', baseline' if spec.is_baseline else ''}): {spec.summary}"]
    defaults = settings_to_dict(spec.settings_cls())
    for f in dataclasses.fields(spec.settings_cls):
        lines.append(f"  {f.name} = {defaults[f.name]!r}")
    return "\n".join(lines)
