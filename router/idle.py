"""When each worker's queue last became empty: the idle trigger of work stealing.

SGLang reports no idle time, so the router derives it from what it sees: a worker is idle when its
last ``/v1/loads`` sample shows no waiting requests and the router holds no call queued for it. The
moment that first became true is ``idle_since_s``; any queued work resets it to None.
"""

from __future__ import annotations

from saga_sgl.policy.views import WorkerId


class IdleTracker:
    def __init__(self) -> None:
        self._since: dict[WorkerId, float | None] = {}

    def observe(self, worker: WorkerId, has_queued_work: bool, now_s: float) -> float | None:
        """Record one observation; returns the worker's ``idle_since_s``."""
        if has_queued_work:
            self._since[worker] = None
            return None
        since = self._since.get(worker)
        if since is None:
            since = now_s
            self._since[worker] = since
        return since

    def idle_since(self, worker: WorkerId) -> float | None:
        return self._since.get(worker)

    def forget(self, worker: WorkerId) -> None:
        self._since.pop(worker, None)
