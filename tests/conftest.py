"""Shared fixtures: real SGLang workers on loopback, and the CPU shims for in-process SGLang tests."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saga_sgl.local_workers import WorkerProcess, WorkerSpec, free_port, running_workers

HAVE_SGLANG = importlib.util.find_spec("sglang") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The README's test command installs sglang; a bare checkout without it must say so, loudly.
    if HAVE_SGLANG:
        return
    skip = pytest.mark.skip(reason="sglang 0.5.23 not installed: run scripts/setup.sh")
    for item in items:
        if item.get_closest_marker("sglang") or item.get_closest_marker("live"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sglang_cpu() -> None:
    """Make SGLang importable in this process on a CPU-only machine (import-only stubs)."""
    from saga_sgl import _cpu_shims

    _cpu_shims.activate()


WorkerFactory = Callable[..., list[WorkerProcess]]


@pytest.fixture
def sglang_workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Factory: ``sglang_workers(n, **spec_kwargs)`` starts n real SGLang CPU workers on free ports,
    waits until each is healthy and returns them; all are stopped at teardown, even on failure."""
    with contextlib.ExitStack() as stack:

        def start(n: int = 1, **spec_kwargs: Any) -> list[WorkerProcess]:
            specs = [WorkerSpec(port=free_port(), **spec_kwargs) for _ in range(n)]
            return stack.enter_context(running_workers(specs, tmp_path / "worker-logs"))

        yield start
