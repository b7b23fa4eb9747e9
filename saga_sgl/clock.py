"""Injected clocks: the one place saga-sgl reads time.

Policies and models never read a clock; they receive ``now_s`` from their host. Hosts own one of:

* ``SystemClock``: monotonic wall time (router, worker plugin);
* ``SimClock``: simulated time, set by the simulator's event loop;
* ``ManualClock``: tests, advanced explicitly.

All times are float seconds on a monotonic base (not the Unix epoch).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds."""

    def now_s(self) -> float:
        """Current time in seconds on a monotonic base."""
        ...


class SystemClock:
    """Monotonic wall-clock time (``time.monotonic``); the only clock that reads the machine."""

    def now_s(self) -> float:
        return time.monotonic()


class SimClock:
    """Simulated time. Only the simulator's event loop moves it, and only forward."""

    __slots__ = ("_now_s",)

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)

    def now_s(self) -> float:
        return self._now_s

    def advance_to(self, t_s: float) -> None:
        """Move to ``t_s``; time never goes backwards (an event heap bug would show up here)."""
        if t_s < self._now_s:
            raise ValueError(f"SimClock cannot go back from {self._now_s} to {t_s}")
        self._now_s = float(t_s)


class ManualClock:
    """A clock for tests: it stays put until told to move."""

    __slots__ = ("_now_s",)

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = float(start_s)

    def now_s(self) -> float:
        return self._now_s

    def advance(self, dt_s: float) -> float:
        """Move forward by ``dt_s`` seconds and return the new time."""
        if dt_s < 0:
            raise ValueError(f"ManualClock.advance needs dt_s >= 0, got {dt_s}")
        self._now_s += dt_s
        return self._now_s

    def set(self, t_s: float) -> None:
        """Jump to ``t_s`` (either direction; tests only)."""
        self._now_s = float(t_s)
