"""``saga.workflow``, ``saga.function`` and ``saga.tool``: what the program tells the backend.

* ``with saga.workflow("task-42", agent_type="swe", tenant_id="acme", slo_class="interactive"):``
  every program run inside the block (on this thread, or on the executors it creates) belongs to one
  workflow; the block's exit waits for their submitted calls and ends the workflow. Without a block
  each program is its own workflow (id from a ``workflow_id`` argument, else generated).
* ``@saga.function``: ``sgl.function`` that also publishes the program's state, so that
  ``saga.tool("name")`` inside it needs no state argument.
* ``saga.tool("search")`` (or ``saga.tool("search", s)``): a context manager and a decorator that
  times a tool call of the program. It syncs the executor first (the tool consumes the last call's
  output), tells the backend the tool started and, on exit, how long it took; the program's next call
  carries the tool and its latency. With any backend other than ``SagaEndpoint`` it only times.

Context variables, not thread-locals: SGLang starts each executor's worker thread in a copy of the
creating thread's context (``interpreter.py`` StreamExecutor.__init__), so the block's workflow is
visible to the backend calls of the programs started inside it. ``run_batch`` pool threads do not
inherit it (Python 3.11): each batch item is its own workflow.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from saga_sgl.protocol import MAX_ID_LEN

if TYPE_CHECKING:
    from saga_sgl.frontend.endpoint import SagaEndpoint
    from saga_sgl.frontend.recorder import WorkflowRecord

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class WorkflowScope:
    """One ``saga.workflow`` block: its identity and what ran inside it."""

    workflow_id: str
    agent_type: str = ""
    tenant_id: str = ""
    slo_class: str = ""
    records: dict[int, tuple[SagaEndpoint, WorkflowRecord]] = field(default_factory=dict)
    """Per backend (by id) the record this block opened there."""
    executors: list[Any] = field(default_factory=list)
    """Root executors of the programs run inside (synced at exit)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


_WORKFLOW: contextvars.ContextVar[WorkflowScope | None] = contextvars.ContextVar(
    "saga_workflow", default=None
)
_STATE: contextvars.ContextVar[Any] = contextvars.ContextVar("saga_program_state", default=None)


def current_scope() -> WorkflowScope | None:
    return _WORKFLOW.get()


def _check_label(name: str, value: str, *, required: bool) -> None:
    if not isinstance(value, str) or (required and not value) or len(value) > MAX_ID_LEN:
        raise ValueError(
            f"saga.workflow: {name} must be a {'non-empty ' if required else ''}string of at "
            f"most {MAX_ID_LEN} characters, got {value!r}"
        )


@contextmanager
def workflow(
    workflow_id: str, *, agent_type: str = "", tenant_id: str = "", slo_class: str = ""
) -> Iterator[WorkflowScope]:
    """Run the programs inside the block as one workflow (see the module docstring)."""
    _check_label("workflow_id", workflow_id, required=True)
    for name, value in (("agent_type", agent_type), ("tenant_id", tenant_id), ("slo_class", slo_class)):
        _check_label(name, value, required=False)
    if _WORKFLOW.get() is not None:
        raise RuntimeError("saga.workflow blocks do not nest: one agent task is one workflow")
    scope = WorkflowScope(workflow_id, agent_type, tenant_id, slo_class)
    token = _WORKFLOW.set(scope)
    ok = False
    try:
        yield scope
        ok = True
    finally:
        _WORKFLOW.reset(token)
        executors = list(scope.executors)
        for executor in executors:
            # Wait for the program's worker thread to finish, not executor.sync(): once a program has
            # ended, a late ProgramState.__del__ can queue a second stop sentinel that no thread will
            # ever take, and sync() (queue.join) would then block forever.
            if executor.use_thread:
                executor.worker.join()
        ok = ok and all(getattr(e, "error_", None) is None for e in executors)
        for backend, record in list(scope.records.values()):
            backend.finish_workflow(record, ok=ok)


def function(func: Callable[..., Any] | None = None, *, num_api_spec_tokens: int | None = None) -> Any:
    """``sgl.function`` whose body can call ``saga.tool(name)`` without passing ``s``."""
    import sglang as sgl

    def wrap(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def program(s: Any, *args: Any, **kwargs: Any) -> Any:
            token = _STATE.set(s)
            try:
                return fn(s, *args, **kwargs)
            finally:
                _STATE.reset(token)

        # SglFunction reads the argument names with getfullargspec, which honours __signature__.
        program.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        return sgl.function(program, num_api_spec_tokens=num_api_spec_tokens)

    return wrap(func) if func is not None else wrap


def _executor_of(state: Any) -> Any:
    """The StreamExecutor behind a ProgramState (or the executor itself); None for tracer states."""
    from sglang.lang.interpreter import StreamExecutor

    if isinstance(state, StreamExecutor):
        return state
    executor = getattr(state, "stream_executor", None)
    return executor if isinstance(executor, StreamExecutor) else None


class tool:
    """Time one tool call of an agent program (context manager or decorator)."""

    def __init__(self, name: str, state: Any = None) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_ID_LEN:
            raise ValueError(f"saga.tool: name must be a non-empty string of at most {MAX_ID_LEN} characters")
        self.name = name
        self.state = state
        self.latency_s: float | None = None
        """Measured duration of the last use."""
        self._started: list[tuple[float, Any, Any]] = []

    def __enter__(self) -> tool:
        executor = _executor_of(self.state if self.state is not None else _STATE.get())
        backend = getattr(executor, "backend", None) if executor is not None else None
        handle = None
        if backend is not None and hasattr(backend, "tool_started"):
            executor.sync()  # the tool consumes the last call's output: that call is its producer
            handle = backend.tool_started(executor, self.name)
        self._started.append((time.monotonic(), backend, handle))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        started_at, backend, handle = self._started.pop()
        self.latency_s = time.monotonic() - started_at
        if handle is not None:
            backend.tool_finished(handle, self.latency_s, ok=exc_type is None)

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with tool(self.name, self.state):
                return fn(*args, **kwargs)

        return timed  # type: ignore[return-value]
