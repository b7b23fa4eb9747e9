"""Per-process state of the plugin host: clock, hint table, control channel, counters.

One ``WorkerRuntime`` lives in each SGLang scheduler process that runs a saga eviction policy (the
plugin creates it when SGLang builds the strategy, i.e. at cache construction; tests build their
own). Hooks find it through the cache's strategy object, so a cache running a stock SGLang policy
is never touched.

Everything here runs on the scheduler thread except the control channel's receiver. The methods
called from hooks catch their own failures (:meth:`hook_failed`): a failure is counted, logged once
per (hook, error type), and SGLang's stock behaviour continues.

Rank-identical state (TP/PP): every input of an eviction key must be the same on every rank of a
replica at the same scheduler step. Request hints already are (SGLang broadcasts the requests).
Control messages and time are made so through a :class:`ControlStep`: the replica's request
leader (the rank that pulls requests from the tokenizer) drains at most ``control_drain_max``
control messages and stamps its clock once per step (``collect_step``); the step rides SGLang's
own broadcast of the received requests to every rank, and every rank applies it
(``apply_step``) before it handles the step's requests. From the first applied step on, the
runtime's time is the leader's stamp (``now_s``), never the rank's own clock. A runtime that never
sees a step (in-process tests) drains its channel at its hook points with its own clock instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.policy.decisions import Tier
from saga_sgl.policy.pressure import MAX_PROTECTED_FRAC, ResidenceTracker
from saga_sgl.policy.pressure import kv_pressure as shared_kv_pressure
from saga_sgl.policy.queue_order import AgeingSettings, QueuedCall, ageing_order
from saga_sgl.protocol import ControlMessage, ReuseHint, find_reuse_hint
from saga_sgl.worker.hints import HintTable, mark_path
from saga_sgl.worker.metrics import WorkerMetrics
from saga_sgl.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from saga_sgl.clock import Clock
    from saga_sgl.worker.control import ControlChannel
    from saga_sgl.worker.evictable import EvictableLeaves

log = logging.getLogger(__name__)

_HINT_ATTR = "_saga_hint"
"""Request attribute: the decoded hint (or None), parsed once per request."""

_QUEUED_AT_ATTR = "_saga_queued_at_s"
"""Request attribute: runtime time at which the waiting-queue hook first saw the request."""

TIER_LABELS = {int(t): t.name.lower() for t in Tier}
_PROTECTED = int(Tier.PROTECTED)


@dataclass(frozen=True, slots=True)
class ControlStep:
    """What one scheduler step applies on every rank: the leader's time and its control messages.

    Picklable (it rides SGLang's ``broadcast_pyobj`` of the received requests)."""

    now_s: float
    """The leader's clock when it pulled this step's requests."""
    messages: tuple[ControlMessage, ...] = ()
    """Control messages drained by the leader for this step (at most ``control_drain_max``)."""


class WorkerRuntime:
    """Host state shared by the strategy and the hooks of one scheduler process."""

    def __init__(self, *, clock: Clock, settings: WorkerSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or WorkerSettings()
        self.table = HintTable(
            self.settings.max_tracked_workflows,
            max_ttl_s=self.settings.max_ttl_s,
            finished_grace_s=self.settings.finished_grace_s,
        )
        self.metrics = WorkerMetrics()
        self.step_now_s: float | None = None
        """The last applied step's time; None until a step was applied (then: own clock)."""
        self.start_s = clock.now_s()
        self.control: ControlChannel | None = None
        self.last_pressure = 0.0
        self.in_round = False
        """Inside an eviction walk: keys use ``round_now_s`` and ``last_pressure``."""
        self.round_now_s = 0.0
        self.round_protected_tokens = 0
        """Tokens of TTL-protected candidates seen this round (minus protected victims)."""
        self.residence = ResidenceTracker()
        """The cache's eviction rate; its residence time is published on ``/v1/loads``
        (``worker/loads.py``), where the router's scheduler reads it for its reuse horizon."""
        self.cached_tokens = 0
        """Tokens in the radix tree (evictable + locked) at the end of the last eviction round."""
        self.leaf_indices: list[EvictableLeaves] = []
        """Persistent victim indices of the unified trees using this runtime (see evictable.py)."""
        self._logged_failures: set[tuple[str, str]] = set()
        self._metrics_served = False
        self._ttl_expiries_counted = 0
        """``table.num_ttl_expiries`` already added to the ``ttl_expiries`` counter."""

    # --- configuration ---------------------------------------------------------------------------

    def configure(
        self, settings: WorkerSettings, *, bind: bool = True, bind_address: str | None = None
    ) -> None:
        """Apply worker settings from a strategy's config; starts the control channel once.

        The channel binds ``bind_address`` (default ``settings.control_address``); ``bind=False``
        binds nothing (ranks other than the replica's request leader get control messages
        through the step broadcast)."""
        bind_address = (bind_address or settings.control_address) if bind else None
        self.settings = settings
        self.table.max_workflows = settings.max_tracked_workflows
        self.table.max_ttl_s = settings.max_ttl_s
        self.table.finished_grace_s = settings.finished_grace_s
        if bind_address and self.control is None:
            from saga_sgl.worker.control import ControlChannel

            self.control = ControlChannel(
                bind_address,
                max_queued=settings.control_queue_max,
                on_malformed=lambda reason: self.metrics.inc("malformed_messages", channel="control"),
                on_dropped=lambda: self.metrics.inc("dropped_control_messages"),
                max_rate=settings.control_max_rate,
                curve_secret_key=settings.control_curve_secret_key,
                client_keys=settings.control_client_keys,
            )
        if settings.metrics_port and not self._metrics_served:
            self.metrics.serve(settings.metrics_port)
            self._metrics_served = True

    def close(self) -> None:
        """Stop the control channel and our metrics port (tests; a scheduler just exits)."""
        if self.control is not None:
            self.control.close()
            self.control = None
        self.metrics.close()

    # --- failures --------------------------------------------------------------------------------

    def hook_failed(self, hook: str, exc: BaseException) -> None:
        """Count a failure at a hook boundary and log it once per (hook, error type)."""
        self.metrics.inc("hook_failures", hook=hook)
        reason = (hook, type(exc).__name__)
        if reason not in self._logged_failures:
            self._logged_failures.add(reason)
            log.error(
                "saga plugin hook %s failed (%s: %s); SGLang's stock behaviour is used. "
                "Further %s failures of this hook are counted, not logged.",
                hook,
                type(exc).__name__,
                exc,
                type(exc).__name__,
                exc_info=exc,
            )

    # --- requests and hints ----------------------------------------------------------------------

    def hint_of(self, req: Any) -> ReuseHint | None:
        """The request's ``saga.reuse`` hint, decoded once. On first sight (the earliest hook that sees
        the request: waiting-queue ordering or checkpoint) its relative times become absolute."""
        try:
            return req.__dict__[_HINT_ATTR]  # type: ignore[no-any-return]
        except KeyError:
            pass
        now_s = self.now_s()
        try:
            hint = find_reuse_hint(getattr(req, "kv_hints", None))
        except MalformedMessage as exc:
            self.metrics.inc("malformed_messages", channel="kv_hints")
            reason = ("kv_hints", str(exc).split(":", 1)[0])
            if reason not in self._logged_failures:
                self._logged_failures.add(reason)
                log.warning("saga plugin ignored a malformed kv_hints action (%s); logged once", exc)
            hint = None
        setattr(req, _HINT_ATTR, hint)
        if hint is not None:
            self.table.apply_hint(hint, now_s)
            self.metrics.inc("hint_updates", source="kv_hints")
            self._workflow_changed(hint.workflow_id)
        return hint

    def now_s(self) -> float:
        """The runtime's time: the last step's stamp once steps flow, else the own clock."""
        return self.clock.now_s() if self.step_now_s is None else self.step_now_s

    def collect_step(self) -> ControlStep:
        """Request leader: this step's time and up to ``control_drain_max`` control messages."""
        messages: tuple[ControlMessage, ...] = ()
        if self.control is not None:
            messages = tuple(self.control.drain(self.settings.control_drain_max))
        return ControlStep(now_s=self.clock.now_s(), messages=messages)

    def apply_step(self, step: ControlStep) -> None:
        """Every rank, same scheduler step: adopt the leader's time and apply its messages."""
        if self.step_now_s is None:
            self.start_s = step.now_s  # unmarked nodes' last use: the same on every rank
        self.step_now_s = step.now_s
        self._apply(step.messages, step.now_s)

    def drain(self) -> None:
        """At a hook point: without steps (in-process use), drain the channel on the own clock."""
        if self.step_now_s is not None:
            return  # steps apply control messages, identically on every rank
        if self.control is None:  # no channel, no messages: only time-driven expiry
            self._apply((), self.clock.now_s())
            return
        step = self.collect_step()
        self._apply(step.messages, step.now_s)

    def _apply(self, messages: Sequence[ControlMessage], now_s: float) -> None:
        for message in messages:
            if self.table.apply_control(message, now_s):
                self.metrics.inc("hint_updates", source="control")
                self._workflow_changed(message.workflow_id)
            else:
                self.metrics.inc("unknown_workflow_messages")
        self.table.expire(now_s)
        self._forget_dropped()
        expiries = self.table.num_ttl_expiries
        if expiries != self._ttl_expiries_counted:
            self.metrics.inc("ttl_expiries", expiries - self._ttl_expiries_counted)
            self._ttl_expiries_counted = expiries
        self.metrics.set_gauge("tracked_workflows", len(self.table))  # a no-op when unchanged

    def _forget_dropped(self) -> None:
        """Re-key only the nodes of workflows that left the table (lazy: no full re-key)."""
        dropped = self.table.take_dropped()
        if not dropped:
            return
        self.metrics.inc("forgotten_workflows", len(dropped))
        for workflow_id in dropped:
            self._workflow_changed(workflow_id)

    def on_checkpoint(self, req: Any, leaf: Any) -> None:
        """Mark the nodes of a checkpointed request's path with its workflow (or as unhinted).

        When the request has finished, its workflow's tool starts now: the hint's TTL starts."""
        hint = self.hint_of(req)
        self._forget_dropped()
        now_s = self.now_s()
        path = []
        node = leaf
        while node is not None and node.parent is not None:
            path.append(node)
            node = node.parent
        mark_path(
            path,
            workflow_id=None if hint is None else hint.workflow_id,
            now_s=now_s,
            table=self.table,
        )
        for index in list(self.leaf_indices):
            try:
                index.on_path(path)  # marks changed (resync) and the recency guard's reads
            except Exception as exc:
                self.leaf_index_failed(index, exc)
        if hint is not None and _finished(req) and self.table.start_call_ttl(hint.workflow_id, now_s):
            self._workflow_changed(hint.workflow_id)

    def _workflow_changed(self, workflow_id: str) -> None:
        """Refresh the indexed leaves of a workflow whose record changed (or left the table)."""
        for index in list(self.leaf_indices):
            try:
                index.touch_workflow(workflow_id)
            except Exception as exc:
                self.leaf_index_failed(index, exc)

    def leaf_index_failed(self, index: Any, exc: BaseException) -> None:
        """Drop a failed leaf index for good: its strategy goes back to SGLang's per-call heap."""
        self.hook_failed("leaf_index", exc)
        if index in self.leaf_indices:
            self.leaf_indices.remove(index)
        index.strategy.leaf_index = None
        index.strategy.use_leaf_index = False

    def urgency_of(self, req: Any) -> float:
        hint = self.hint_of(req)
        return 0.0 if hint is None else hint.urgency

    def order_waiting_queue(self, waiting_queue: list[Any], priority_sign: int | None) -> None:
        """Re-order SGLang's waiting queue by the core's ageing order (``policy.queue_order``).

        ``priority_sign``: SGLang's priority classes stay first when priority scheduling is on.
        A queue without any urgency keeps SGLang's order."""
        calls = []
        any_urgency = False
        for req in waiting_queue:
            urgency = self.urgency_of(req)
            any_urgency |= urgency > 0
            queued_at = req.__dict__.get(_QUEUED_AT_ATTR)
            if queued_at is None:
                queued_at = self.now_s()
                setattr(req, _QUEUED_AT_ATTR, queued_at)
            calls.append(QueuedCall(enqueued_at_s=queued_at, urgency=urgency))
        if not any_urgency:
            return
        order = ageing_order(calls, AgeingSettings(horizon_s=self.settings.queue_ageing_s))
        if priority_sign is not None:
            rank = {i: pos for pos, i in enumerate(order)}
            order = sorted(order, key=lambda i: (waiting_queue[i].priority * priority_sign, rank[i]))
        waiting_queue[:] = [waiting_queue[i] for i in order]

    # --- eviction rounds -------------------------------------------------------------------------

    def key_now(self) -> tuple[float, float]:
        """(now_s, pressure) for a key: frozen inside an eviction round, current otherwise."""
        return (self.round_now_s if self.in_round else self.now_s()), self.last_pressure

    def begin_round(self, *, pressure: float) -> None:
        """Freeze ``now_s`` and memory pressure for one eviction walk."""
        self.drain()
        self.last_pressure = pressure
        self.round_now_s = self.now_s()
        self.in_round = True
        self.round_protected_tokens = 0

    def on_victim(self, tier: int | None, num_tokens: int) -> None:
        """Count one evicted node by the tier of the key it was ranked with."""
        label = TIER_LABELS.get(tier, "unranked") if tier is not None else "unranked"
        self.residence.on_evict(self.round_now_s if self.in_round else self.now_s(), num_tokens)
        self.metrics.inc("evictions", tier=label)
        self.metrics.inc("evicted_tokens", num_tokens, tier=label)
        if self.in_round and tier == _PROTECTED:
            self.round_protected_tokens -= num_tokens

    def end_round(self, cached_tokens: int | None = None) -> None:
        """Publish the tokens still protected by a live TTL among the round's candidates;
        ``cached_tokens``: the tree's size after the round (the residence time's numerator)."""
        if cached_tokens is not None:
            self.cached_tokens = max(0, int(cached_tokens))
        if self.in_round:
            self.in_round = False
            if self.leaf_indices:
                protected = sum(index.protected_tokens for index in self.leaf_indices)
            else:
                protected = self.round_protected_tokens
            self.metrics.set_gauge("protected_tokens", protected)

    def residence_s(self) -> float:
        """The cache's recent residence time: cached tokens / eviction rate (Little's law,
        ``policy.pressure.ResidenceTracker``); inf before the first eviction."""
        return self.residence.residence_s(self.cached_tokens, self.now_s())


def cached_tokens(cache: Any) -> int:
    """Tokens in an SGLang radix tree: evictable plus locked (``protected_size``) ones."""
    return int(cache.evictable_size()) + int(cache.protected_size())


def _finished(req: Any) -> bool:
    finished = getattr(req, "finished", None)
    return bool(finished()) if callable(finished) else False


def kv_pressure(
    cache: Any, protected_tokens: int = 0, max_protected_frac: float = MAX_PROTECTED_FRAC
) -> float:
    """The one pressure definition (``policy.pressure.kv_pressure``) for an SGLang cache.

    held = tokens that are neither free nor evictable (memory held by live requests);
    ``protected_tokens`` = evictable tokens under a live TTL (the runtime passes the last eviction
    round's count) against a budget of ``max_protected_frac`` of the pool (``WorkerSettings``).
    Plain "used / capacity" would sit near 1 in a pool full of cache.
    """
    allocator = cache.token_to_kv_pool_allocator
    capacity = int(allocator.size)
    if capacity <= 0:
        return 0.0
    held = capacity - int(allocator.available_size()) - int(cache.evictable_size())
    # Page rounding can push the difference a few tokens outside [0, capacity].
    return shared_kv_pressure(
        capacity,
        min(max(held, 0), capacity),
        max(int(protected_tokens), 0),
        max_protected_frac=max_protected_frac,
    )
