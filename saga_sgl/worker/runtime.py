"""Per-process state of the plugin host: clock, hint table, control channel, counters.

One ``WorkerRuntime`` lives in each SGLang scheduler process that runs a saga eviction policy (the
plugin creates it when SGLang builds the strategy, i.e. at cache construction; tests build their
own). Hooks find it through the cache's strategy object, so a cache running a stock SGLang policy
is never touched.

Everything here runs on the scheduler thread except the control channel's receiver. The methods
called from hooks catch their own failures (:meth:`hook_failed`): a failure is counted, logged once
per (hook, error type), and SGLang's stock behaviour continues.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.policy.decisions import Tier
from saga_sgl.policy.pressure import kv_pressure as shared_kv_pressure
from saga_sgl.protocol import ReuseHint, find_reuse_hint
from saga_sgl.worker.hints import HintTable, mark_path
from saga_sgl.worker.metrics import WorkerMetrics
from saga_sgl.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from saga_sgl.clock import Clock
    from saga_sgl.worker.control import ControlChannel
    from saga_sgl.worker.leaf_index import LeafIndex

log = logging.getLogger(__name__)

_HINT_ATTR = "_saga_hint"
"""Request attribute: the decoded hint (or None), parsed once per request."""

TIER_LABELS = {int(t): t.name.lower() for t in Tier}
_PROTECTED = int(Tier.PROTECTED)


class WorkerRuntime:
    """Host state shared by the strategy and the hooks of one scheduler process."""

    def __init__(self, *, clock: Clock, settings: WorkerSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or WorkerSettings()
        self.table = HintTable(self.settings.max_tracked_workflows)
        self.metrics = WorkerMetrics()
        self.start_s = clock.now_s()
        self.control: ControlChannel | None = None
        self.last_pressure = 0.0
        self.in_round = False
        """Inside an eviction walk: keys use ``round_now_s`` and ``last_pressure``."""
        self.round_now_s = 0.0
        self.round_protected_tokens = 0
        """Tokens of TTL-protected candidates seen this round (minus protected victims)."""
        self.leaf_indices: list[LeafIndex] = []
        """Persistent victim indices of the unified trees using this runtime (see leaf_index.py)."""
        self._forgotten_seen = 0
        self._logged_failures: set[tuple[str, str]] = set()
        self._metrics_served = False

    # --- configuration ---------------------------------------------------------------------------

    def configure(self, settings: WorkerSettings) -> None:
        """Apply worker settings from a strategy's config; starts the control channel once."""
        self.settings = settings
        self.table.max_workflows = settings.max_tracked_workflows
        if settings.control_address and self.control is None:
            from saga_sgl.worker.control import ControlChannel

            self.control = ControlChannel(
                settings.control_address,
                max_queued=settings.control_queue_max,
                on_malformed=lambda reason: self.metrics.inc("malformed_messages", channel="control"),
                on_dropped=lambda: self.metrics.inc("dropped_control_messages"),
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
        now_s = self.clock.now_s()
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

    def drain(self) -> None:
        """Apply queued control messages and account TTL expiries (scheduler thread)."""
        now_s = self.clock.now_s()
        if self.control is not None:
            for message in self.control.drain():
                if self.table.apply_control(message, now_s):
                    self.metrics.inc("hint_updates", source="control")
                    self._workflow_changed(message.workflow_id)
                else:
                    self.metrics.inc("unknown_workflow_messages")
        self.table.pop_expired_ttls(now_s)
        self.metrics.inc("ttl_expiries", self.table.num_ttl_expiries - self.metrics.value("ttl_expiries"))
        forgotten = self.table.num_forgotten - self.metrics.value("forgotten_workflows")
        self.metrics.inc("forgotten_workflows", forgotten)
        self.metrics.set_gauge("tracked_workflows", len(self.table))

    def on_checkpoint(self, req: Any, leaf: Any) -> None:
        """Mark the nodes of a checkpointed request's path with its workflow (or as unhinted)."""
        hint = self.hint_of(req)
        path = []
        node = leaf
        while node is not None and node.parent is not None:
            path.append(node)
            node = node.parent
        mark_path(
            path,
            workflow_id=None if hint is None else hint.workflow_id,
            now_s=self.clock.now_s(),
            table=self.table,
        )
        for index in list(self.leaf_indices):
            try:
                for node in path:
                    index.resync(node)
            except Exception as exc:
                self.leaf_index_failed(index, exc)

    def _workflow_changed(self, workflow_id: str) -> None:
        """Re-key the indexed leaves of a workflow whose record changed."""
        forgot = self.table.num_forgotten != self._forgotten_seen
        self._forgotten_seen = self.table.num_forgotten
        for index in list(self.leaf_indices):
            try:
                if forgot:
                    index.rekey_all()
                else:
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

    # --- eviction rounds -------------------------------------------------------------------------

    def key_now(self) -> tuple[float, float]:
        """(now_s, pressure) for a key: frozen inside an eviction round, current otherwise."""
        return (self.round_now_s if self.in_round else self.clock.now_s()), self.last_pressure

    def begin_round(self, *, pressure: float) -> None:
        """Freeze ``now_s`` and memory pressure for one eviction walk."""
        self.drain()
        self.last_pressure = pressure
        self.round_now_s = self.clock.now_s()
        self.in_round = True
        self.round_protected_tokens = 0

    def on_victim(self, tier: int | None, num_tokens: int) -> None:
        """Count one evicted node by the tier of the key it was ranked with."""
        label = TIER_LABELS.get(tier, "unranked") if tier is not None else "unranked"
        self.metrics.inc("evictions", tier=label)
        self.metrics.inc("evicted_tokens", num_tokens, tier=label)
        if self.in_round and tier == _PROTECTED:
            self.round_protected_tokens -= num_tokens

    def end_round(self) -> None:
        """Publish the tokens still protected by a live TTL among the round's candidates."""
        if self.in_round:
            self.in_round = False
            if self.leaf_indices:
                protected = sum(index.protected_tokens for index in self.leaf_indices)
            else:
                protected = self.round_protected_tokens
            self.metrics.set_gauge("protected_tokens", protected)


def kv_pressure(cache: Any, protected_tokens: int = 0) -> float:
    """The one pressure definition (``policy.pressure.kv_pressure``) for an SGLang cache.

    held = tokens that are neither free nor evictable (memory held by live requests);
    ``protected_tokens`` = evictable tokens under a live TTL (the runtime passes the last eviction
    round's count). Plain "used / capacity" would sit near 1 in a pool full of cache.
    """
    allocator = cache.token_to_kv_pool_allocator
    capacity = int(allocator.size)
    if capacity <= 0:
        return 0.0
    held = capacity - int(allocator.available_size()) - int(cache.evictable_size())
    # Page rounding can push the difference a few tokens outside [0, capacity].
    return shared_kv_pressure(capacity, min(max(held, 0), capacity), max(int(protected_tokens), 0))
