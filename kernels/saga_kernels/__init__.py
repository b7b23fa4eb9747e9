"""saga_kernels: the native fast path of saga-sgl, with a pure-Python twin for every kernel.

``KeyHeap`` is an indexed min-heap of eviction keys (tier, primary, tiebreak, entry_id): the ordered
index behind the policy core's ``VictimIndex``. It is generic (it orders whatever key a policy
returns; the policy's formula stays in Python, so the decisions are the exact policy's). The native
build (``_keyheap.c``, compiled by ``scripts/setup.sh`` through ``python -m saga_kernels.build``) is
used when it imports; otherwise the pure-Python ``keyheap_py.KeyHeap`` gives identical decisions.
``SAGA_KERNELS=python`` forces the fallback (tests, A/B runs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from saga_kernels.keyheap_py import KeyHeap as PyKeyHeap


class KeyHeapLike(Protocol):
    """What both ``KeyHeap`` implementations offer."""

    def __len__(self) -> int: ...
    def __contains__(self, entry_id: object) -> bool: ...
    def push(self, key: Sequence[object]) -> None: ...
    def remove(self, entry_id: int) -> bool: ...
    def top(self) -> int | None: ...
    def pop(self) -> int | None: ...
    def min_key(self) -> tuple[int, float, float, int] | None: ...
    def key_of(self, entry_id: int) -> tuple[int, float, float, int] | None: ...
    def clear(self) -> None: ...


NativeKeyHeap: type[KeyHeapLike] | None
NATIVE_IMPORT_ERROR: str | None = None
try:
    from saga_kernels._keyheap import KeyHeap as _NativeKeyHeap

    NativeKeyHeap = _NativeKeyHeap
except ImportError as exc:  # not built (no compiler at setup time) or built for another Python
    NativeKeyHeap = None
    NATIVE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

BACKENDS = ("native", "python")


def default_backend() -> str:
    """``native`` when the extension imports and ``SAGA_KERNELS`` does not say ``python``."""
    wanted = os.environ.get("SAGA_KERNELS", "auto").strip().lower() or "auto"
    if wanted not in ("auto", *BACKENDS):
        raise ValueError(f"SAGA_KERNELS must be one of auto, native, python; got {wanted!r}")
    if wanted == "python":
        return "python"
    if NativeKeyHeap is None:
        if wanted == "native":
            raise ImportError(f"SAGA_KERNELS=native but no native build: {NATIVE_IMPORT_ERROR}")
        return "python"
    return "native"


def new_key_heap(backend: str | None = None) -> KeyHeapLike:
    """A fresh ``KeyHeap`` of ``backend`` (default: :func:`default_backend`)."""
    backend = backend or default_backend()
    if backend == "native":
        if NativeKeyHeap is None:
            raise ImportError(f"the native kernels are not built ({NATIVE_IMPORT_ERROR})")
        return NativeKeyHeap()
    if backend == "python":
        return PyKeyHeap()
    raise ValueError(f"unknown KeyHeap backend {backend!r}; choose one of {BACKENDS}")


__all__ = ["BACKENDS", "NATIVE_IMPORT_ERROR", "KeyHeapLike", "NativeKeyHeap", "PyKeyHeap", "default_backend",
           "new_key_heap"]
