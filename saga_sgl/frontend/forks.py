"""The one patch: tell the backend about forks (SGLang 0.5.23 never calls ``fork_program``).

``StreamExecutor.fork`` is wrapped class-wide, once: the wrapper delegates to the original and then
calls ``backend.on_fork(parent, children)`` when the executor's backend has that method, so every
other backend is unaffected. It runs in the program's thread right after the fork's ``sync()``,
before any branch can issue a call.
"""

from __future__ import annotations

import threading
from typing import Any

_install_lock = threading.Lock()
_HOOK_FLAG = "_saga_fork_hook"


def install_fork_hook() -> None:
    """Idempotent; safe to call from several threads."""
    from sglang.lang.interpreter import StreamExecutor

    with _install_lock:
        if getattr(StreamExecutor.fork, _HOOK_FLAG, False):
            return
        original = StreamExecutor.fork

        def fork(self: Any, size: int = 1, position_ids_offset: Any = None) -> Any:
            children = original(self, size, position_ids_offset)
            on_fork = getattr(self.backend, "on_fork", None)
            if on_fork is not None:
                on_fork(self, children)
            return children

        setattr(fork, _HOOK_FLAG, True)
        fork.__wrapped__ = original  # type: ignore[attr-defined]
        StreamExecutor.fork = fork
