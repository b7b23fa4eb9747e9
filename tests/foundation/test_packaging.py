"""Packaging contract: the distribution maps saga_router, and registers the SGLang plugin entry point."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import saga_sgl
from saga_sgl.local_workers import WorkerSpec, WorkerStartError, free_port, running_workers

REPO = Path(__file__).resolve().parents[2]


def test_saga_router_is_mapped_from_router_dir() -> None:
    import saga_router

    assert saga_router.__file__ is not None
    assert Path(saga_router.__file__).resolve() == REPO / "router" / "__init__.py"
    assert Path(saga_sgl.__file__).resolve().parent == REPO / "saga_sgl"


def test_sglang_plugin_entry_point_is_registered() -> None:
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="sglang.srt.plugins") if ep.name == "saga"]
    assert ep.value == "saga_sgl.worker.plugin:register"
    assert ep.dist is not None and ep.dist.name == "saga-sgl"


@pytest.mark.live
def test_failed_worker_start_reports_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    spec = WorkerSpec(port=free_port(), extra_args=("--no-such-flag",))
    with pytest.raises(WorkerStartError) as err, running_workers([spec], tmp_path):
        pytest.fail("a worker with an unknown flag must not become ready")
    assert "--no-such-flag" in str(err.value)


def test_every_package_directory_is_listed_in_pyproject() -> None:
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "saga_sgl").rglob("__init__.py")
        if "stubs" not in init.parts
    }
    on_disk |= {"saga_router"} if (REPO / "router" / "__init__.py").exists() else set()
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
