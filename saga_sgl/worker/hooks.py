"""Thin AROUND hooks on SGLang internals, installed through SGLang's ``HookRegistry``.

Each hook calls SGLang's original first (or around it), finds the plugin runtime through the
cache's eviction strategy (so caches running a stock policy pass straight through), and hands the
plugin's part to the runtime inside a guard: a failure is counted, logged once, and SGLang's own
result stands.

Targets (all checked by ``compat.check``):

* ``UnifiedRadixCache.checkpoint_into_tree`` and the legacy ``RadixCache.checkpoint``: after the
  request's tokens are in the tree, mark its path with its workflow hint.
* ``UnifiedRadixCache._evict`` and ``RadixCache.evict``: freeze ``now_s`` and memory pressure for
  the walk, after draining control messages.
* ``UnifiedRadixCache._evict_device_leaf`` and ``RadixCache._delete_leaf`` (called once per victim,
  only by the eviction loops): count the victim by the tier of the key it was ranked with.
* ``SchedulePolicy.calc_priority``: after SGLang's order, the core's ageing order of the waiting
  queue by the AFS urgency in the hints (``policy.queue_order``; a no-op when no waiting request
  carries one).
* ``SchedulerRequestReceiver._pull_raw_reqs`` (request leader) and
  ``Scheduler.process_input_requests`` (every rank): the leader appends one ``ControlStep`` (its
  time and a bounded batch of control messages) to the requests it pulled; SGLang's own TP
  broadcast (and PP relay) carries it to every rank of the replica, where it is applied before
  the step's requests are handled (rank-identical keys; see ``runtime.py``).
* ``managers.utils.validate_input_length`` (every worker, saga policy or not): a prompt with a
  token id outside ``[0, vocab_size)`` is answered with an error instead of crashing the model's
  embedding (which kills the scheduler process).
* ``SchedulerLoadInquirer.get_loads``: the snapshot behind ``/v1/loads`` carries the cache's
  residence time (``loads.py``; ``plugin.register`` installs the matching decoder).
* ``tree_core_registry.select_tree_core_backend``: a cache configured with a saga policy gets the
  ``saga-rust`` tree core (``rust_tree.py``: SGLang's Rust core, our victims) where SGLang would pick
  the Rust core and the cache is FULL-only without HiCache, else the Python tree core; other caches
  are untouched.
* ``UnifiedTreeCore._update_evictable_leaf_sets`` (the one place SGLang adds evictable leaves) and
  ``FullComponent._evict_device_start / _next_node / _end``: the evictable leaves live in a
  persistent index (the core ``VictimIndex``, ``evictable.py``) and the eviction walk pops victims
  from it in O(log n), instead of SGLang re-heaping every leaf on every eviction call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from saga_sgl.worker.runtime import ControlStep, WorkerRuntime, cached_tokens, kv_pressure
from saga_sgl.worker.strategy import SagaEvictionStrategy, victim_tier

log = logging.getLogger(__name__)

UNIFIED_CACHE = "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache"
LEGACY_CACHE = "sglang.srt.mem_cache.radix_cache.RadixCache"
SCHEDULE_POLICY = "sglang.srt.managers.schedule_policy.SchedulePolicy"
TREE_CORE_REGISTRY = "sglang.srt.mem_cache.unified_cache.tree_core_registry"
TREE_CORE = "sglang.srt.mem_cache.unified_cache.unified_tree_core.UnifiedTreeCore"
FULL_COMPONENT = "sglang.srt.mem_cache.unified_cache.components.full.FullComponent"
REQUEST_RECEIVER = "sglang.srt.managers.scheduler_components.request_receiver.SchedulerRequestReceiver"
SCHEDULER = "sglang.srt.managers.scheduler.Scheduler"
INPUT_VALIDATION = "sglang.srt.managers.utils.validate_input_length"
LOAD_INQUIRER = "sglang.srt.managers.scheduler_components.load_inquirer.SchedulerLoadInquirer"
RUST_BACKEND = "saga-rust"
"""Tree-core backend name of ``rust_tree.SagaRustTreeCore`` (registered by ``plugin.register``)."""


def runtime_of(cache: Any) -> WorkerRuntime | None:
    """The saga runtime behind ``cache``'s eviction strategy, or None for a stock policy."""
    tree_core = getattr(cache, "tree_core", None)
    strategy = getattr(tree_core if tree_core is not None else cache, "eviction_strategy", None)
    if isinstance(strategy, SagaEvictionStrategy):
        return strategy.runtime
    return None


def checkpoint_into_tree(
    original: Callable[..., Any], cache: Any, req: Any, *args: Any, **kwargs: Any
) -> Any:
    result = original(cache, req, *args, **kwargs)
    runtime = runtime_of(cache)
    if runtime is not None and not cache.disable:
        try:
            runtime.drain()
            runtime.on_checkpoint(req, cache.tree_core.node_by_id(req.last_node))
        except Exception as exc:
            runtime.hook_failed("checkpoint_into_tree", exc)
    return result


def legacy_checkpoint(original: Callable[..., Any], cache: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
    result = original(cache, req, *args, **kwargs)
    runtime = runtime_of(cache)
    if runtime is not None and not cache.disable:
        try:
            runtime.drain()
            runtime.on_checkpoint(req, req.last_node)
        except Exception as exc:
            runtime.hook_failed("legacy_checkpoint", exc)
    return result


def evict(original: Callable[..., Any], cache: Any, *args: Any, **kwargs: Any) -> Any:
    runtime = runtime_of(cache)
    if runtime is None or cache.disable:
        return original(cache, *args, **kwargs)
    try:
        protected = int(runtime.metrics.value("protected_tokens"))
        runtime.begin_round(pressure=kv_pressure(cache, protected, runtime.settings.max_protected_frac))
    except Exception as exc:
        runtime.hook_failed("evict_begin", exc)
    try:
        return original(cache, *args, **kwargs)
    finally:
        try:
            runtime.end_round(cached_tokens(cache))
        except Exception as exc:
            runtime.hook_failed("evict_end", exc)


def evict_device_leaf(
    original: Callable[..., Any], cache: Any, node_id: Any, *args: Any, **kwargs: Any
) -> Any:
    runtime = runtime_of(cache)
    if runtime is None:
        return original(cache, node_id, *args, **kwargs)
    try:
        node = cache.tree_core.node_by_id(node_id)
        tier, num_tokens = victim_tier(node), len(node.key)
    except Exception as exc:
        runtime.hook_failed("evict_device_leaf", exc)
        return original(cache, node_id, *args, **kwargs)
    result = original(cache, node_id, *args, **kwargs)
    runtime.on_victim(tier, num_tokens)
    return result


def legacy_delete_leaf(original: Callable[..., Any], cache: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
    runtime = runtime_of(cache)
    if runtime is None:
        return original(cache, node, *args, **kwargs)
    try:
        tier, num_tokens = victim_tier(node), len(node.key)
    except Exception as exc:
        runtime.hook_failed("legacy_delete_leaf", exc)
        return original(cache, node, *args, **kwargs)
    result = original(cache, node, *args, **kwargs)
    runtime.on_victim(tier, num_tokens)
    return result


# --- /v1/loads ----------------------------------------------------------------------------------


def get_loads(original: Callable[..., Any], inquirer: Any, *args: Any, **kwargs: Any) -> Any:
    """SGLang's load snapshot plus this process's cache residence time (``worker/loads.py``)."""
    snapshot = original(inquirer, *args, **kwargs)
    from saga_sgl.worker.plugin import process_runtime

    runtime = process_runtime()
    if runtime is None:
        return snapshot  # no saga cache in this process: SGLang's own answer
    try:
        from saga_sgl.worker.loads import with_residence

        return with_residence(snapshot, runtime.residence_s())
    except Exception as exc:
        runtime.hook_failed("get_loads", exc)
        return snapshot


# --- persistent leaf index (unified tree, FULL component) ------------------------------------------


def update_evictable_leaf_sets(
    original: Callable[..., Any], tree_core: Any, node: Any, *args: Any, **kwargs: Any
) -> Any:
    result = original(tree_core, node, *args, **kwargs)
    strategy = getattr(tree_core, "eviction_strategy", None)
    if isinstance(strategy, SagaEvictionStrategy):
        strategy.sync_leaf_at_hook(tree_core, node)
    return result


def _leaf_index_of(component: Any) -> Any:
    tree_core = component.tree_core
    strategy = getattr(tree_core, "eviction_strategy", None)
    if not isinstance(strategy, SagaEvictionStrategy) or tree_core.enable_session_radix_cache:
        return None
    index = strategy.leaf_index
    if index is None or index.leaf_set is not tree_core.evictable_device_leaves:
        return None
    return index


def full_evict_device_start(
    original: Callable[..., Any], component: Any, request_cnt: int, *args: Any, **kwargs: Any
) -> Any:
    index = _leaf_index_of(component)
    if index is None:
        return original(component, request_cnt, *args, **kwargs)
    # Victims come from the persistent index: no O(leaves) heap build.
    component._evict_device_request_cnt = request_cnt
    component._evict_device_last_node = None
    component._evict_device_heap = []
    component._saga_index_walk = True
    index.popped = []
    return None


def full_evict_device_next_node(
    original: Callable[..., Any], component: Any, tracker: Any, *args: Any, **kwargs: Any
) -> Any:
    if not component.__dict__.get("_saga_index_walk"):
        return original(component, tracker, *args, **kwargs)
    strategy = component.tree_core.eviction_strategy
    index = strategy.leaf_index
    if index is not None:
        try:
            now_s, pressure = strategy.runtime.key_now()
            if tracker[component.component_type] >= component._evict_device_request_cnt:
                return None
            node = index.pop(now_s, pressure)
            if node is None:
                return None
            index.popped.append(node)
            component._evict_device_last_node = node
            return node.id
        except Exception as exc:
            strategy.runtime.leaf_index_failed(index, exc)
    # The index failed during this walk: finish it with SGLang's own heap.
    component._saga_index_walk = False
    component._evict_device_start(component._evict_device_request_cnt)
    return original(component, tracker, *args, **kwargs)


def full_evict_device_end(original: Callable[..., Any], component: Any, *args: Any, **kwargs: Any) -> Any:
    result = original(component, *args, **kwargs)
    if component.__dict__.get("_saga_index_walk"):
        component._saga_index_walk = False
        strategy = component.tree_core.eviction_strategy
        index = strategy.leaf_index
        if index is not None:
            try:
                # A handed-out leaf that SGLang did not evict (write-back declined) is a leaf again.
                for node in index.popped:
                    index.sync(node)
                index.popped = []
            except Exception as exc:
                strategy.runtime.leaf_index_failed(index, exc)
    return result


def calc_priority(
    original: Callable[..., Any], policy: Any, waiting_queue: list[Any], *args: Any, **kwargs: Any
) -> Any:
    result = original(policy, waiting_queue, *args, **kwargs)
    runtime = runtime_of(policy.tree_cache)
    if runtime is not None and waiting_queue:
        try:
            runtime.drain()
            sign = policy.priority_sign if policy.enable_priority_scheduling else None
            runtime.order_waiting_queue(waiting_queue, sign)
        except Exception as exc:
            runtime.hook_failed("calc_priority", exc)
    return result


# --- one control step per scheduler step, identical on every rank ---------------------------------


IDLE_STEP_INTERVAL_S = 0.05
"""Without requests or control messages, the leader stamps a new step at most this often."""


def _process_runtime() -> WorkerRuntime | None:
    from saga_sgl.worker.plugin import process_runtime

    return process_runtime()


def _is_request_leader() -> bool:
    """This rank pulls requests from the tokenizer (pp 0, attention tp 0, attention cp 0)."""
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    try:
        return bool(parallel.pp_rank == 0 and parallel.attn_tp_rank == 0 and parallel.attn_cp_rank == 0)
    except (RuntimeError, ValueError, AttributeError):
        return True  # no parallel context published: a single-rank process


def pull_raw_reqs(original: Callable[..., Any], receiver: Any, *args: Any, **kwargs: Any) -> Any:
    recv_reqs = original(receiver, *args, **kwargs)
    runtime = _process_runtime()
    if runtime is None or recv_reqs is None or not _is_request_leader():
        return recv_reqs
    try:
        step = runtime.collect_step()
    except Exception as exc:
        runtime.hook_failed("collect_step", exc)
        return recv_reqs
    last = runtime.step_now_s
    if not recv_reqs and not step.messages and last is not None and step.now_s - last < IDLE_STEP_INTERVAL_S:
        # Nothing to apply: skip (an idle loop would otherwise broadcast a step every spin and
        # SGLang would count every poll as active). Time still advances every interval.
        return recv_reqs
    return [*recv_reqs, step]


def process_input_requests(
    original: Callable[..., Any], scheduler: Any, recv_reqs: list[Any], *args: Any, **kwargs: Any
) -> Any:
    if not any(isinstance(r, ControlStep) for r in recv_reqs):
        return original(scheduler, recv_reqs, *args, **kwargs)
    runtime = runtime_of(getattr(scheduler, "tree_cache", None))
    for step in (r for r in recv_reqs if isinstance(r, ControlStep)):
        if runtime is not None:
            try:
                runtime.apply_step(step)
            except Exception as exc:
                runtime.hook_failed("apply_step", exc)
    requests = [r for r in recv_reqs if not isinstance(r, ControlStep)]
    return original(scheduler, requests, *args, **kwargs)


# --- the worker protects itself from token ids outside the vocabulary ------------------------------

_logged_vocabulary_errors: set[str] = set()


def validate_input_length(original: Callable[..., Any], req: Any, *args: Any, **kwargs: Any) -> Any:
    error = original(req, *args, **kwargs)
    if error is not None:
        return error
    try:
        error = out_of_vocabulary_error(req)
    except Exception as exc:  # never take the scheduler down from a guard
        log.error(
            "saga input-id check failed (%s: %s); the request goes on unchecked", type(exc).__name__, exc
        )
        return None
    if error is not None and "logged" not in _logged_vocabulary_errors:
        _logged_vocabulary_errors.add("logged")
        log.warning("saga rejected a request: %s (logged once; later ones are only answered)", error)
    return error


def out_of_vocabulary_error(req: Any) -> str | None:
    """An error message when a prompt holds a token id outside ``[0, vocab_size)``, else None.

    Multimodal prompts carry pad ids above the vocabulary by design and are left to SGLang."""
    vocab_size = getattr(req, "vocab_size", None)
    ids = getattr(req, "origin_input_ids", None)
    if not vocab_size or not ids or getattr(req, "multimodal_inputs", None) is not None:
        return None
    low, high = min(ids), max(ids)
    if low >= 0 and high < vocab_size:
        return None
    bad = low if low < 0 else high
    return (
        f"Invalid request: input token id {bad} is outside the model's vocabulary [0, {vocab_size}); "
        "rejected before it reaches the embedding"
    )


def select_tree_core_backend(original: Callable[..., Any], params: Any) -> Any:
    """A saga policy runs on SGLang's Rust core with our victims (``rust_tree``) where SGLang would
    pick the Rust core and the cache is one that core serves; else on the Python core."""
    backend = original(params)
    from saga_sgl.worker.plugin import is_saga_policy

    if not is_saga_policy(params.eviction_policy) or backend in ("python", RUST_BACKEND):
        return backend
    reason = f"requested {backend!r}"
    if backend == "rust":
        from saga_sgl.worker.rust_tree import supported

        reason = supported(params) or ""
        if not reason:
            log.info("saga: eviction policy %r on the Rust TreeCore, victims from the saga leaf index (%r)",
                     params.eviction_policy, RUST_BACKEND)  # fmt: skip
            return RUST_BACKEND
    log.info("saga: eviction policy %r uses the Python TreeCore (%s)", params.eviction_policy, reason)
    return "python"


HOOKS: tuple[tuple[str, Callable[..., Any]], ...] = (
    (UNIFIED_CACHE + ".checkpoint_into_tree", checkpoint_into_tree),
    (UNIFIED_CACHE + "._evict", evict),
    (UNIFIED_CACHE + "._evict_device_leaf", evict_device_leaf),
    (LEGACY_CACHE + ".checkpoint", legacy_checkpoint),
    (LEGACY_CACHE + ".evict", evict),
    (LEGACY_CACHE + "._delete_leaf", legacy_delete_leaf),
    (SCHEDULE_POLICY + ".calc_priority", calc_priority),
    (TREE_CORE_REGISTRY + ".select_tree_core_backend", select_tree_core_backend),
    (REQUEST_RECEIVER + "._pull_raw_reqs", pull_raw_reqs),
    (SCHEDULER + ".process_input_requests", process_input_requests),
    (INPUT_VALIDATION, validate_input_length),
    (LOAD_INQUIRER + ".get_loads", get_loads),
    (TREE_CORE + "._update_evictable_leaf_sets", update_evictable_leaf_sets),
    (FULL_COMPONENT + "._evict_device_start", full_evict_device_start),
    (FULL_COMPONENT + "._evict_device_next_node", full_evict_device_next_node),
    (FULL_COMPONENT + "._evict_device_end", full_evict_device_end),
)
"""(dotted target, AROUND hook) pairs the plugin registers."""
