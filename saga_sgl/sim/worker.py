"""An SGLang-like worker (one model replica): waiting queue, continuous batching, chunked prefill,
KV capacity, a segment radix cache, and decode fast-forward.

Mental model of one scheduling round (SGLang's ``get_next_batch_to_run`` with mixed chunks off):

1. apply what the iteration that just ended produced (prefill progress, decoded tokens, finishes);
2. build a prefill batch: the unfinished chunked request first, then waiting requests in the order
   the host's *policy* gives, while the chunk budget, the running-request cap and KV memory allow
   (a request that does not fit stops admission: SGLang's head-of-line rule). Admission matches the
   longest cached prefix, locks it, reserves the new prompt tokens plus the output, and evicts
   unlocked leaves in the *policy's* key order if memory is short;
3. if there is a prefill batch, run it (one iteration); otherwise run decode for all running
   requests, fast-forwarded to the next finish in closed form; a new arrival interrupts the run at
   the next iteration boundary.

Decisions (queue order, eviction order) come from the host, which calls the policy core. This module
only models the mechanism and its cost.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from saga_sgl.policy.pressure import ProtectedTokens, ResidenceTracker, kv_pressure
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView
from saga_sgl.sim.engine import Event, EventKind
from saga_sgl.sim.radix import Node, RadixCache
from saga_sgl.sim.workloads.model import CallSpec, Segment

if TYPE_CHECKING:
    from saga_sgl.sim.cost_model import ProfileCostModel


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """Mechanism settings of one replica (SGLang server defaults where they exist)."""

    chunked_prefill_size: int = 8192
    """Max prefill tokens per iteration (SGLang --chunked-prefill-size; 8192 on large GPUs)."""
    max_running_requests: int = 256
    """Running-batch cap (SGLang --max-running-requests)."""
    page_size: int = 1
    """KV page size in tokens (SGLang default 1; vLLM blocks are 16)."""
    kv_capacity_tokens: int = 0
    """KV pool size in tokens; 0 = derive from the cost model (GPU memory, weights, TP)."""
    infinite_kv: bool = False
    """Oracle row: never evict (capacity unbounded)."""


class SimCall:
    """One call (request) on a worker. ``host`` fields belong to the cluster host."""

    __slots__ = (
        "admitted_s",
        "call_id",
        "enqueued_s",
        "finished_s",
        "first_token_s",
        "generated",
        "hit_tokens",
        "host",
        "is_rebuild",
        "kept",
        "lock_node",
        "new_tokens",
        "output_seg",
        "output_tokens",
        "prefilled",
        "priority",
        "private_tokens",
        "prompt",
        "prompt_tokens",
        "released_s",
        "spec",
        "worker",
    )

    def __init__(
        self,
        *,
        call_id: str,
        prompt: tuple[Segment, ...],
        output_tokens: int,
        output_seg: Segment | None,
        spec: CallSpec | None,
        host: Any,
        released_s: float,
        is_rebuild: bool = False,
    ) -> None:
        self.call_id = call_id
        self.prompt = prompt
        self.prompt_tokens = sum(s.num_tokens for s in prompt)
        self.output_tokens = output_tokens
        self.output_seg = output_seg
        self.spec = spec
        self.host = host
        self.is_rebuild = is_rebuild
        self.released_s = released_s
        self.enqueued_s = released_s
        self.admitted_s = -1.0
        self.first_token_s = -1.0
        self.finished_s = -1.0
        self.hit_tokens = 0
        self.new_tokens = 0
        self.prefilled = 0
        self.generated = 0
        self.kept = 0
        """Output tokens generated before a retract: SGLang keeps a retracted request's output ids
        and prefills them again with the prompt (``Req.reset_for_retract`` keeps ``output_ids``)."""
        self.private_tokens = 0
        self.lock_node: Node | None = None
        self.worker: SimWorker | None = None
        self.priority = 0
        """SGLang request priority the scheduler sent (carried, as a real request carries it)."""


class WorkerHost(Protocol):
    """What a worker asks of the cluster host (which asks the policy core)."""

    def order_queue(self, worker: SimWorker, waiting: list[SimCall], now_s: float) -> list[SimCall]: ...

    @property
    def eviction(self) -> Any:
        """The row's ``EvictionPolicy``; it keys the worker's ``VictimIndex``."""
        ...

    def entry_view(self, worker: SimWorker, node: Node, now_s: float) -> CacheEntryView: ...

    def on_leaf(self, worker: SimWorker, node: Node, added: bool) -> None: ...

    def on_evict(self, worker: SimWorker, node: Node, now_s: float) -> None: ...

    def on_admit(self, worker: SimWorker, call: SimCall, now_s: float) -> None: ...

    def on_finish(self, worker: SimWorker, call: SimCall, now_s: float) -> Iterable[tuple[float, Event]]: ...

    def on_reject(self, worker: SimWorker, call: SimCall, now_s: float) -> Iterable[tuple[float, Event]]: ...


class WorkerStep:
    """End of a worker's iteration or decode run (stale if the worker's version moved on)."""

    __slots__ = ("version", "worker")
    kind = EventKind.WORKER_STEP

    def __init__(self, worker: SimWorker, version: int) -> None:
        self.worker = worker
        self.version = version

    def fire(self, now_s: float) -> Iterable[tuple[float, Event]]:
        if self.version != self.worker.version:
            return ()
        return self.worker.step(now_s)


class SimWorker:
    """One replica. All times are simulated seconds."""

    def __init__(
        self, worker_id: str, cost: ProfileCostModel, settings: WorkerSettings, host: WorkerHost
    ) -> None:
        self.worker_id = worker_id
        self.cost = cost
        self.settings = settings
        self.host = host
        cap = settings.kv_capacity_tokens or cost.kv_capacity_tokens()
        self.capacity_tokens = 1 << 62 if settings.infinite_kv else cap
        self.nominal_capacity_tokens = cap
        self.victims = VictimIndex(host.eviction, content_of=self._content_of)
        """Evictable leaves in the eviction policy's key order (the policy core's index)."""
        self.protected = ProtectedTokens()
        """Evictable tokens under a live TTL (the pressure's protected term)."""
        self.residence = ResidenceTracker()
        """The cache's recent eviction rate: its residence time goes into the worker's view, as the
        plugin publishes it on ``/v1/loads``."""
        self.now_s = 0.0
        self.cache = RadixCache(settings.page_size, listener=self)
        self.waiting: list[SimCall] = []
        self.prefilling: list[SimCall] = []
        self.decoding: list[SimCall] = []
        self.private_tokens = 0
        self.version = 0
        self.busy = False
        self.blocked = False
        """Admission failed for memory; new arrivals do not interrupt decode until a call finishes."""
        # Current run: ("prefill", [(call, q)], start) or ("decode", k, start, n, sum_kv).
        self._run: tuple[Any, ...] | None = None
        self.idle_since_s: float | None = 0.0
        self._retract: list[SimCall] = []
        """Running calls to retract at the next iteration boundary (preemption)."""
        # Statistics (read by the metrics observer).
        self.busy_s = 0.0
        self.used_token_s = 0.0
        self.active_token_s = 0.0
        self.private_token_s = 0.0
        """Integral of tokens reserved by admitted requests outside the tree (new prompt + output)."""
        self._last_stat_s = 0.0
        self.num_iterations = 0

    def _content_of(self, view: CacheEntryView) -> Hashable:
        """A node's content for the recency guard: its segment at its depth (survives eviction)."""
        node = self.cache.by_id[view.entry_id]
        return (node.depth_tokens, node.seg_id)

    def _note_reads(self, call: SimCall) -> None:
        """The call reads its prompt's segments (hits and misses): the recency guard's evidence."""
        self._note_path(call.prompt, count=True)

    def _note_path(self, segs: Sequence[Segment], *, count: bool) -> None:
        """Report a path (root first) to the guard; ``count=False``: written at a call's end (the
        ghost guard's LRU order, no evidence). The pool's size is learned by the ghost: the tree's
        share of it varies with the running calls' private KV."""
        if self.victims.guard is None:
            return
        depth = 0
        contents: list[Hashable] = []
        for seg in segs:
            depth += seg.num_tokens
            contents.append((depth, seg.seg_id))
        self.victims.note_path(contents, [seg.num_tokens for seg in segs], count=count)

    # --- state ----------------------------------------------------------------------------------
    @property
    def used_tokens(self) -> int:
        return self.cache.tree_tokens + self.private_tokens

    @property
    def pressure(self) -> float:
        """``policy.pressure.kv_pressure``: held (locked tree + requests' private KV) and TTL-protected
        tokens against their budgets; the same definition the worker plugin uses."""
        held = self.cache.tree_tokens - self.cache.evictable_tokens + self.private_tokens
        return kv_pressure(self.nominal_capacity_tokens, held, self.protected.tokens(self.now_s))

    @property
    def num_running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def _account(self, now_s: float) -> None:
        dt = now_s - self._last_stat_s
        if dt > 0:
            self.used_token_s += dt * self.used_tokens
            locked = self.cache.tree_tokens - self.cache.evictable_tokens
            self.active_token_s += dt * (locked + self.private_tokens)
            self.private_token_s += dt * self.private_tokens
            if self.busy:
                self.busy_s += dt
            self._last_stat_s = now_s

    # --- LeafListener: keep the victim index in step with the tree -------------------------------
    def leaf_added(self, node: Node) -> None:
        view = self.host.entry_view(self, node, self.now_s)
        self.protected.track(node.entry_id, view.depth_tokens, view.ttl_deadline_s, self.now_s)
        self.victims.add(view, self.now_s, self.pressure)
        self.host.on_leaf(self, node, True)

    def leaf_removed(self, node: Node) -> None:
        self.victims.remove(node.entry_id)
        self.protected.untrack(node.entry_id)
        self.host.on_leaf(self, node, False)

    def refresh_leaf(self, node: Node, now_s: float) -> None:
        """The owner's state changed: re-key the leaf from a fresh view."""
        if node.entry_id in self.victims:
            view = self.host.entry_view(self, node, now_s)
            self.protected.track(node.entry_id, view.depth_tokens, view.ttl_deadline_s, now_s)
            self.victims.update(view, now_s, self.pressure)

    def _pop_victim(self, now_s: float, pressure: float) -> int | None:
        view = self.victims.pop(now_s, pressure)
        if view is None:
            return None
        self.protected.untrack(view.entry_id)
        node = self.cache.by_id[view.entry_id]
        self.host.on_leaf(self, node, False)
        return view.entry_id

    # --- arrivals -------------------------------------------------------------------------------
    def enqueue(self, call: SimCall, now_s: float) -> Iterable[tuple[float, Event]]:
        self.now_s = now_s
        if self.cache.pages(call.prompt_tokens) + call.output_tokens > self.capacity_tokens:
            # Longer than the whole KV pool: SGLang rejects such a request up front.
            return self.host.on_reject(self, call, now_s)
        call.worker = self
        call.enqueued_s = now_s
        self.waiting.append(call)
        self.idle_since_s = None
        if not self.busy:
            return self._wake(now_s)
        if self._run is not None and self._run[0] == "decode" and not self.blocked:
            return self._interrupt_decode(now_s)
        return ()

    def remove_waiting(self, call: SimCall) -> bool:
        """Take a queued (not yet admitted) call out of the queue (work stealing)."""
        if call in self.waiting:
            self.waiting.remove(call)
            if not self.waiting and self.idle_since_s is None:
                self.idle_since_s = self._last_stat_s
            return True
        return False

    def retract(self, call: SimCall, now_s: float) -> Iterable[tuple[float, Event]]:
        """Preempt a running call as SGLang's retract does: at the next iteration boundary it leaves
        the batch, its reservation is freed (its new KV is not put in the tree) and it goes back to
        the head of the waiting queue. Its generated tokens are kept: admitted again, it prefills
        the prompt past the cached prefix plus those tokens, then decodes the rest."""
        if call not in self.prefilling and call not in self.decoding:
            return ()
        self._retract.append(call)
        if self._run is not None and self._run[0] == "decode":
            return self._interrupt_decode(now_s)
        return ()

    def _apply_retracts(self, now_s: float) -> None:
        for call in self._retract:
            if call in self.prefilling:
                self.prefilling.remove(call)
            elif call in self.decoding:
                self.decoding.remove(call)
            else:
                continue  # it finished meanwhile
            if call.lock_node is not None:
                self.cache.unlock(call.lock_node, now_s)
                call.lock_node = None
            self.private_tokens -= call.private_tokens
            call.private_tokens = 0
            call.kept = call.generated
            call.prefilled = call.generated = 0
            call.first_token_s = -1.0
            call.enqueued_s = now_s
            self.waiting.insert(0, call)
            self.blocked = False
        self._retract.clear()

    def _wake(self, now_s: float) -> list[tuple[float, Event]]:
        self._account(now_s)  # the idle time up to now is idle, not busy
        self.version += 1
        self.busy = True
        self._run = None
        return [(now_s, WorkerStep(self, self.version))]

    def _interrupt_decode(self, now_s: float) -> list[tuple[float, Event]]:
        assert self._run is not None
        _, k, start, n, sum_kv = self._run
        done = self.cost.decode_iters_within(n, sum_kv, now_s - start)
        if done + 1 >= k:
            return []  # the run ends within the current iteration anyway
        self.version += 1
        self._run = ("decode", done + 1, start, n, sum_kv)
        return [(start + self.cost.decode_run_s(n, sum_kv, done + 1), WorkerStep(self, self.version))]

    # --- the scheduling round -------------------------------------------------------------------
    def step(self, now_s: float) -> list[tuple[float, Event]]:
        self.now_s = now_s
        self._account(now_s)
        out: list[tuple[float, Event]] = []
        self._apply_run(now_s, out)
        if self._retract:
            self._apply_retracts(now_s)
        if self.waiting:
            self._admit(now_s)
        batch = self._prefill_batch()
        if batch:
            self._run = ("prefill", batch, now_s)
            self.num_iterations += 1
            self.version += 1
            out.append(
                (
                    now_s + self.cost.prefill_iteration_s([(q, p) for _, q, p in batch]),
                    WorkerStep(self, self.version),
                )
            )
        elif self.decoding:
            n = len(self.decoding)
            sum_kv = sum(c.prompt_tokens + c.generated for c in self.decoding)
            k = min(c.output_tokens - c.generated for c in self.decoding)
            self._run = ("decode", k, now_s, n, sum_kv)
            self.num_iterations += k
            self.version += 1
            out.append((now_s + self.cost.decode_run_s(n, sum_kv, k), WorkerStep(self, self.version)))
        else:
            self._run = None
            self.busy = False
            if not self.waiting:
                self.idle_since_s = now_s
        return out

    def _apply_run(self, now_s: float, out: list[tuple[float, Event]]) -> None:
        run = self._run
        self._run = None
        if run is None:
            return
        finished: list[SimCall] = []
        if run[0] == "prefill":
            for call, q, _ in run[1]:
                call.prefilled += q
                if call.prefilled >= call.new_tokens:
                    self.prefilling.remove(call)
                    if call.output_tokens <= 0:
                        finished.append(call)
                        continue
                    call.generated = call.kept + 1
                    call.first_token_s = now_s
                    if call.generated >= call.output_tokens:
                        finished.append(call)
                    else:
                        self.decoding.append(call)
        else:
            k = run[1]
            still: list[SimCall] = []
            for call in self.decoding:
                call.generated += k
                (finished if call.generated >= call.output_tokens else still).append(call)
            self.decoding = still
        for call in finished:
            self._finish(call, now_s, out)

    def _finish(self, call: SimCall, now_s: float, out: list[tuple[float, Event]]) -> None:
        call.finished_s = now_s
        if call.lock_node is not None:
            self.cache.unlock(call.lock_node, now_s)
            call.lock_node = None
        seq = call.prompt if call.output_seg is None or call.is_rebuild else (*call.prompt, call.output_seg)
        self.cache.insert(seq, now_s, call.host)
        self._note_path(seq, count=False)
        self.private_tokens -= call.private_tokens
        call.private_tokens = 0
        # The tree may now exceed capacity by page rounding of duplicates; never by design.
        self.blocked = False
        out.extend(self.host.on_finish(self, call, now_s))

    def _admit(self, now_s: float) -> None:
        ordered = self.host.order_queue(self, self.waiting, now_s)
        budget = self.settings.chunked_prefill_size - sum(
            min(self.settings.chunked_prefill_size, c.new_tokens - c.prefilled) for c in self.prefilling
        )
        admitted: list[SimCall] = []
        for call in ordered:
            if budget <= 0 or self.num_running + len(admitted) >= self.settings.max_running_requests:
                break
            node, matched = self.cache.match(call.prompt)
            self._note_reads(call)
            self.cache.lock(node, now_s, call.host)
            new = call.prompt_tokens - matched + call.kept
            need = self.cache.pages(new) + call.output_tokens - call.kept
            free = self.capacity_tokens - self.used_tokens
            if free < need:
                self._evict(need - free, now_s)
                free = self.capacity_tokens - self.used_tokens
            if free < need:
                self.cache.unlock(node, now_s)
                self.blocked = True
                break
            call.lock_node = node
            call.hit_tokens = matched
            call.new_tokens = new
            call.prefilled = 0
            call.private_tokens = need
            call.admitted_s = now_s
            self.private_tokens += need
            admitted.append(call)
            budget -= min(new, budget)
            self.host.on_admit(self, call, now_s)
        if admitted:
            ids = {id(c) for c in admitted}
            self.waiting = [c for c in self.waiting if id(c) not in ids]
            self.prefilling.extend(admitted)

    def _evict(self, num_tokens: int, now_s: float) -> None:
        pressure = self.pressure
        self.cache.evict(
            num_tokens,
            lambda: self._pop_victim(now_s, pressure),
            lambda n: self._on_evicted(n, now_s),
        )

    def _on_evicted(self, node: Node, now_s: float) -> None:
        self.residence.on_evict(now_s, node.num_tokens)
        self.host.on_evict(self, node, now_s)

    def residence_s(self, now_s: float) -> float:
        """The cache's recent residence time (``ResidenceTracker``: tree tokens / eviction rate)."""
        return self.residence.residence_s(self.cache.tree_tokens, now_s)

    def _prefill_batch(self) -> list[tuple[SimCall, int, int]]:
        """(call, new tokens this iteration, cached prefix before them) within the chunk budget."""
        budget = self.settings.chunked_prefill_size
        batch: list[tuple[SimCall, int, int]] = []
        for call in self.prefilling:
            if budget <= 0:
                break
            q = min(budget, call.new_tokens - call.prefilled)
            batch.append((call, q, call.hit_tokens + call.prefilled))
            budget -= q
        # A call with nothing to prefill (full hit) still needs one iteration to produce its first
        # token: SGLang recomputes the last prompt token in that case.
        return [(c, max(q, 1) if c.new_tokens == 0 else q, p) for c, q, p in batch]

    def finalize(self, now_s: float) -> None:
        self._account(now_s)
