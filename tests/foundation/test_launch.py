"""python -m saga_sgl.launch: the README's main job, on a real CPU worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga_sgl import launch
from saga_sgl.local_workers import free_port


def test_help_explains_every_flag() -> None:
    parser = launch.build_parser()
    for action in parser._actions:
        assert action.help, f"flag {action.option_strings} has no help"


def test_bad_counts_are_rejected_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert launch.main(["--workers", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.live
def test_demo_replays_agent_workflows_with_hints(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    argv = [
        "--base-port",
        str(free_port()),
        "--workflows",
        "2",
        "--steps",
        "3",
        "--compare-with",
        "none",
        "--log-dir",
        str(tmp_path / "logs"),
        "--json",
        str(out),
    ]
    assert launch.main(argv) == 0
    results = json.loads(out.read_text())["saga"]
    assert [(r["workflow_id"], r["step"]) for r in results] == [
        (f"demo-wf{i}", s) for s in range(3) for i in range(2)
    ]
    # 768 KV tokens hold both workflows: every later step is served from the cache up to the new tokens.
    for prev, cur in zip(results[:-2], results[2:], strict=True):
        assert cur["cached_tokens"] >= prev["prompt_tokens"] - 1
