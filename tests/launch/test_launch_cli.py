"""``python -m saga_sgl.launch`` without workers: flags, config file, bad input, the summary's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga_sgl import launch
from saga_sgl.agents.workload import AgentResult
from saga_sgl.cluster.report import RunSummary, placements_from_log, recomputed_tokens
from saga_sgl.frontend.recorder import NodeRecord, WorkflowRecord


def test_help_explains_every_flag() -> None:
    for action in launch.build_parser()._actions:
        assert action.help, f"flag {action.option_strings} has no help"


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"],
        ["--tp", "0"],
        ["--agents", "0"],
        ["--scheduler-config", "[1]"],
        ["--device", "cuda"],
    ],
)
def test_bad_flags_are_refused_before_starting_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        launch.parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


def test_config_file_sets_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('workers = 3\nmax-total-tokens = 999\npolicy = "cache_aware"\nworker_arg = ["--x"]\n')
    args = launch.parse_args(["--config", str(toml), "--workers", "1"])
    assert (args.workers, args.max_total_tokens, args.policy, args.worker_arg) == (
        1,
        999,
        "cache_aware",
        ["--x"],
    )
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"agents": 5, "seed": "7"}))
    args = launch.parse_args(["--config", str(js)])
    assert (args.agents, args.seed) == (5, 7)


@pytest.mark.parametrize(
    "text,suffix",
    [("nope = 1\n", ".toml"), ("workers = [\n", ".toml"), ('{"workers": "two"}', ".json"), ("[1]", ".json")],
)
def test_bad_config_is_a_clear_error(
    tmp_path: Path, text: str, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(SystemExit):
        launch.parse_args(["--config", str(path)])
    assert "--config" in capsys.readouterr().err


def test_gpu_workers_get_disjoint_gpus_and_tp() -> None:
    args = launch.parse_args(["--device", "cuda", "--model-path", "m", "--workers", "2", "--tp", "2"])
    specs = launch.worker_specs(args)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0,1", "2,3"]
    assert all("--tp-size" in s.command() and "2" in s.command() for s in specs)
    cpu = launch.worker_specs(launch.parse_args(["--device", "cpu"]))
    assert all("CUDA_VISIBLE_DEVICES" not in s.env and "--kv-events-config" in s.command() for s in cpu)


def test_cpu_workers_share_the_cores_instead_of_oversubscribing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 8)
    specs = launch.worker_specs(launch.parse_args(["--device", "cpu", "--workers", "2"]))
    assert [s.env["OMP_NUM_THREADS"] for s in specs] == ["4", "4"]
    specs = launch.worker_specs(launch.parse_args(["--device", "cpu", "--workers", "16"]))
    assert {s.env["OMP_NUM_THREADS"] for s in specs} == {"1"}
    specs = launch.worker_specs(launch.parse_args(["--device", "cpu", "--threads-per-worker", "3"]))
    assert {s.env["OMP_NUM_THREADS"] for s in specs} == {"3"}
    gpu = launch.worker_specs(launch.parse_args(["--device", "cuda", "--model-path", "m"]))
    assert all("OMP_NUM_THREADS" not in s.env for s in gpu)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own setting is left alone
    assert all(
        "OMP_NUM_THREADS" not in s.env for s in launch.worker_specs(launch.parse_args(["--device", "cpu"]))
    )


def _node(node_id: str, prompt: int, output: int, cached: int, parents: list[tuple[str, str]]) -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        step=0,
        call="gen",
        parents=parents,
        prompt_tokens=prompt,
        output_tokens=output,
        cached_tokens=cached,
    )


def test_recomputed_counts_only_what_the_workflow_had_already_computed() -> None:
    rec = WorkflowRecord(workflow_id="w")
    rec.nodes["a"] = _node("a", 100, 10, 40, [])  # first call: nothing recomputed (40 shared-system hit)
    rec.nodes["b"] = _node("b", 150, 10, 110, [("a", "next")])  # all 110 of a's context cached
    rec.nodes["c"] = _node("c", 200, 10, 60, [("b", "next")])  # 160 known, 60 cached -> 100 recomputed
    assert recomputed_tokens(rec) == 100
    assert recomputed_tokens(None) == 0


def test_summary_reports_placements_and_ratios() -> None:
    log = (
        "DEBUG saga_router: call c0 of w1 -> http://127.0.0.1:9001 (new_workflow)\n"
        "DEBUG saga_router: call c1 of w1 -> http://127.0.0.1:9002 (steal)\n"
    )
    placements = placements_from_log(log)
    assert placements == {
        "w1": [("http://127.0.0.1:9001", "new_workflow"), ("http://127.0.0.1:9002", "steal")]
    }
    results = [
        AgentResult("w1", "coding", "tenant-0", 0.0, 0.0, 2.0, 2, 100, 25),
        AgentResult("w2", "tot", "tenant-1", 0.0, 0.0, 1.0, 1, 0, 0, error="boom"),
    ]
    s = RunSummary(
        results=results,
        recomputed={"w1": 5},
        placements=placements,
        router_counters={"saga_router_steals_total": 1.0},
    )
    d = s.as_dict()
    assert (d["failed"], d["cached_token_ratio"], d["recomputed_tokens"], d["steals"]) == (1, 0.25, 5, 1.0)
    text = s.render()
    assert ":9001 x1, :9002 x1" in text and "1 workflow(s) served by more than one worker" in text


def test_plugin_worker_spec_sends_policy_settings_beside_the_control_address() -> None:
    from saga_sgl.cluster.processes import plugin_worker_spec

    cmd = plugin_worker_spec(policy_config={"decay_s": 6.0}).command()
    config = json.loads(cmd[cmd.index("--radix-eviction-policy-config") + 1])
    assert config["decay_s"] == 6.0 and config["control_address"].startswith("tcp://127.0.0.1:")
    # A stock LRU worker gets no plugin config at all (SGLang's lru takes none).
    lru = plugin_worker_spec(eviction_policy="lru", policy_config={"decay_s": 6.0}).command()
    assert "--radix-eviction-policy-config" not in lru
    assert "--sleep-on-idle" in lru
