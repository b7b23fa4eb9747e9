"""Harness for the worker plugin's in-process tests: real SGLang caches on CPU, driven like the
scheduler drives them (match and lock the prefix, allocate, evict on shortage, checkpoint into the
tree through the hooked method, release).

The plugin's hooks are installed once per session through SGLang's own ``HookRegistry`` and the
originals are restored at the end. Every cache built here is a real ``UnifiedRadixCache`` (Python
tree core) or legacy ``RadixCache`` over real CPU KV pools; nothing about SGLang is faked.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from saga_sgl.clock import ManualClock
from saga_sgl.protocol import ReuseHint, encode_kv_hints

KV_DTYPE_NAME = "bfloat16"


@pytest.fixture(scope="session")
def saga_hooks(sglang_cpu: None) -> Iterator[None]:
    """Register and apply the plugin's AROUND hooks with SGLang's HookRegistry; undo at the end."""
    import pkgutil

    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from saga_sgl.worker.hooks import HOOKS

    HookRegistry.reset()
    originals = []
    for target, hook in HOOKS:
        owner_path, attr = target.rsplit(".", 1)
        owner = pkgutil.resolve_name(owner_path)
        originals.append((owner, attr, owner.__dict__[attr]))
        HookRegistry.register(target, hook, HookType.AROUND)
    HookRegistry.apply_hooks()
    from saga_sgl.worker.plugin import register_rust_tree_core

    register_rust_tree_core()  # kind "unified-rust": the saga-rust tree core (idempotent)
    for owner, attr, original in originals:
        assert getattr(owner, attr).__wrapped__ is original, f"hook not applied on {owner.__name__}.{attr}"
    yield
    import sys

    for owner, attr, original in originals:
        wrapped = owner.__dict__[attr]
        setattr(owner, attr, original)
        # HookRegistry re-pointed `from X import Y` bindings elsewhere too; restore those.
        for module in list(sys.modules.values()):
            module_vars = getattr(module, "__dict__", None)
            if module_vars is None:
                continue
            for name, value in list(module_vars.items()):
                if value is wrapped:
                    setattr(module, name, original)
    HookRegistry.reset()


@dataclass
class Served:
    """One request the harness ran: its SGLang ``Req`` and how many prompt tokens were cached."""

    req: Any
    cached_tokens: int
    held: bool


@dataclass
class CacheHarness:
    """A real SGLang radix cache plus just enough scheduler behaviour to drive it."""

    kind: str
    cache: Any
    allocator: Any
    req_to_token_pool: Any
    clock: ManualClock
    runtime: Any = None
    served: list[Served] = field(default_factory=list)
    _rid: int = 0

    @property
    def root(self) -> Any:
        if self.kind == "unified-rust":  # the saga-rust core's mirror of the Rust tree
            tree_core = self.cache.tree_core
            from saga_sgl.worker.rust_tree import MirrorNode

            handle = tree_core.root_node_handle()
            return tree_core.nodes.get(handle) or MirrorNode(handle, None, None)
        return self.cache.tree_core.root_node if self.kind == "unified" else self.cache.root_node

    def node(self, handle: Any) -> Any:
        return self.cache.tree_core.node_by_id(handle) if self.kind != "legacy" else handle

    def run(self, tokens: list[int], *, hint: ReuseHint | None = None, hold: bool = False) -> Served:
        """Serve one request: match, lock, allocate (evicting on shortage), checkpoint, release."""
        from sglang.srt.managers.schedule_batch import Req
        from sglang.srt.mem_cache.base_prefix_cache import EvictParams, MatchPrefixParams
        from sglang.srt.mem_cache.radix_cache import RadixKey
        from sglang.srt.sampling.sampling_params import SamplingParams

        cache, allocator = self.cache, self.allocator
        req = Req(
            rid=f"r{self._rid}",
            origin_input_text="",
            origin_input_ids=array("q", tokens),
            sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
            kv_hints=None if hint is None else _envelope(hint),
        )
        self._rid += 1
        self.req_to_token_pool.alloc([req])
        match = cache.match_prefix(MatchPrefixParams(key=RadixKey(array("q", tokens))))
        prefix_len = match.device_prefix_len
        req.lock = cache.lock(match.last_device_node)
        req.last_node = match.last_device_node
        need = len(tokens) - prefix_len
        shortage = need - allocator.available_size()
        if shortage > 0:
            cache.evict(EvictParams(num_tokens=shortage))
        new_indices = allocator.alloc(need)
        assert new_indices is not None, f"cannot allocate {need} tokens after eviction"
        import torch

        prefix_indices = cache.path_device_indices(req.last_node)[:prefix_len]
        row = torch.cat([prefix_indices.to(torch.int64), new_indices.to(torch.int64)])
        self.req_to_token_pool.write((req.kv.req_pool_idx, slice(0, len(tokens))), row)
        req.full_untruncated_fill_ids = array("q", tokens)
        req.extend_end = len(tokens)
        req.kv.kv_committed_len = len(tokens)
        req.kv.cache_protected_len = prefix_len
        req.extra_key = None
        if not hold:
            from sglang.srt.managers.schedule_batch import FINISH_LENGTH

            # As in SGLang: a request that ends is checkpointed with its finish reason set (the
            # plugin starts the hint's TTL then: the workflow's tool starts now).
            req.finished_reason = FINISH_LENGTH(length=1)
        if self.kind != "legacy":
            cache.checkpoint_into_tree(req, up_to=len(tokens))
        else:
            cache.checkpoint(req, up_to=len(tokens))
        served = Served(req=req, cached_tokens=prefix_len, held=hold)
        if not hold:
            self.release(served)
        self.served.append(served)
        return served

    def release(self, served: Served) -> None:
        self.cache.unlock(served.req.lock)
        served.req.lock = None
        self.req_to_token_pool.free(served.req)
        served.held = False

    def resident_tokens(self, tokens: list[int]) -> int:
        """Length of the device-resident cached prefix of ``tokens``, without touching recency."""
        from sglang.srt.mem_cache.radix_cache import RadixKey

        node, matched = self.root, 0
        while matched < len(tokens):
            key = RadixKey(array("q", tokens[matched:]))
            child = node.children.get(key.child_key(1))
            if child is None or _is_evicted(child):
                break
            common = child.key.match(key)
            matched += common
            if common < len(child.key):
                break
            node = child
        return matched

    def eviction_order(self, contexts: dict[str, list[int]]) -> list[str]:
        """Evict one token at a time until every context is gone; the names in the order they went
        (each eviction must take exactly one whole context: they share no prefix)."""
        from sglang.srt.mem_cache.base_prefix_cache import EvictParams

        order: list[str] = []
        alive = dict(contexts)
        while alive:
            self.cache.evict(EvictParams(num_tokens=1))
            gone = [name for name, tokens in alive.items() if self.resident_tokens(tokens) == 0]
            assert len(gone) == 1, gone
            order.append(gone[0])
            del alive[gone[0]]
        return order

    def evictable_tokens(self) -> int:
        return int(self.cache.evictable_size())


def _is_evicted(node: Any) -> bool:
    return bool(getattr(node, "evicted", False))  # the Rust core's mirror holds resident nodes only


def _envelope(hint: ReuseHint) -> Any:
    import json

    from sglang.srt.managers.kv_hints import decode_kv_hints_envelope

    # Through JSON, as the HTTP server receives it; SGLang's own decoder builds the envelope.
    return decode_kv_hints_envelope(json.loads(json.dumps(encode_kv_hints(hint))))


def build_harness(
    kind: str,
    *,
    kv_size: int,
    eviction_policy: str,
    runtime: Any,
    clock: ManualClock,
    policy_config: dict[str, Any] | None = None,
) -> CacheHarness:
    """A real cache of ``kind`` over CPU pools: 'unified' (Python tree core), 'unified-rust' (SGLang's
    Rust tree core; with a saga policy the plugin's ``saga-rust`` core), or 'legacy'."""
    import torch
    from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.mem_cache.radix_cache import RadixCache
    from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    set_global_server_args_for_scheduler(ServerArgs(model_path="dummy", page_size=1))
    dtype = getattr(torch, KV_DTYPE_NAME)
    pool = MHATokenToKVPool(
        size=kv_size,
        page_size=1,
        dtype=dtype,
        head_num=1,
        head_dim=4,
        layer_num=1,
        device="cpu",
        enable_memory_saver=False,
    )
    allocator = TokenToKVPoolAllocator(size=kv_size, dtype=dtype, device="cpu", kvcache=pool, need_sort=False)
    req_to_token_pool = ReqToTokenPool(size=16, max_context_len=512, device="cpu", enable_memory_saver=False)
    common = dict(
        disable=False,
        req_to_token_pool=req_to_token_pool,
        token_to_kv_pool_allocator=allocator,
        page_size=1,
        eviction_policy=eviction_policy,
        eviction_policy_config=policy_config,
    )
    if kind == "unified":
        cache = UnifiedRadixCache(
            CacheInitParams(**common, tree_components=(ComponentType.FULL,), tree_core_backend="python")
        )
        assert type(cache.tree_core).__name__ == "UnifiedTreeCore"
    elif kind == "unified-rust":
        cache = UnifiedRadixCache(
            CacheInitParams(**common, tree_components=(ComponentType.FULL,), tree_core_backend="rust")
        )
        expected = "RustUnifiedTreeCore" if runtime is None else "SagaRustTreeCore"
        assert type(cache.tree_core).__name__ == expected, type(cache.tree_core).__name__
    elif kind == "legacy":
        cache = RadixCache(CacheInitParams(**common))
    else:
        raise ValueError(kind)
    return CacheHarness(
        kind=kind,
        cache=cache,
        allocator=allocator,
        req_to_token_pool=req_to_token_pool,
        clock=clock,
        runtime=runtime,
    )


@pytest.fixture
def make_harness(saga_hooks: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Factory: ``make_harness(kind, policy, kv_size=..., **config)`` -> CacheHarness.

    ``policy`` is a core eviction policy name (served by our strategy, with a fresh runtime on a
    ManualClock) or ``"sglang_lru"`` for SGLang's own LRUStrategy. At teardown every saga runtime
    must report zero hook failures: the fallback path must never hide a bug in the normal path.
    """
    from sglang.srt.mem_cache import utils

    from saga_sgl.worker.plugin import StrategyFactory
    from saga_sgl.worker.runtime import WorkerRuntime

    runtimes: list[Any] = []
    closers: list[Any] = []

    def make(
        kind: str,
        policy: str,
        *,
        kv_size: int = 64,
        start_s: float = 1000.0,
        allow_hook_failures: bool = False,
        **config: Any,
    ) -> CacheHarness:
        clock = ManualClock(start_s)
        if policy == "sglang_lru":
            return build_harness(kind, kv_size=kv_size, eviction_policy="lru", runtime=None, clock=clock)
        runtime = WorkerRuntime(clock=clock)
        if not allow_hook_failures:
            runtimes.append(runtime)
        closers.append(runtime)
        test_name = f"saga_test_{policy}"
        monkeypatch.setitem(
            utils._EVICTION_POLICY_FACTORIES, test_name, StrategyFactory(policy, lambda: runtime)
        )
        return build_harness(
            kind,
            kv_size=kv_size,
            eviction_policy=test_name,
            runtime=runtime,
            clock=clock,
            policy_config=config or None,
        )

    yield make
    for runtime in closers:
        runtime.close()
    for runtime in runtimes:
        assert runtime.metrics.value("hook_failures") == 0, runtime.metrics.snapshot()
