"""The simulator is a host of the workflow scheduler: it feeds events, carries out actions, and
decides nothing itself."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from saga_sgl.scheduler import Action, Dispatch, Prefill, Redirect
from saga_sgl.sim import rows
from saga_sgl.sim.cluster import Cluster, ClusterSettings
from saga_sgl.sim.policies import build_row
from saga_sgl.sim.worker import SimCall, SimWorker, WorkerSettings
from saga_sgl.sim.workloads.model import Segment
from tests.sim._helpers import chain_task, workload

SIM = Path(__file__).resolve().parents[2] / "saga_sgl" / "sim"

DECISION_MODULES = (
    "saga_sgl.policy.placement",
    "saga_sgl.policy.fairness",
    "saga_sgl.policy.stealing",
    "saga_sgl.policy.eviction",
    "saga_sgl.aeg",
)
"""Where decisions and the models that feed them live; the scheduler (and, for the workers'
eviction order, the registry) is the simulator's only way to them."""


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_simulator_imports_no_decision_module() -> None:
    files = [p for p in SIM.rglob("*.py") if "workloads" not in p.parts]
    assert len(files) > 5
    for path in files:
        bad = sorted(m for m in _imports(path) if m.startswith(DECISION_MODULES))
        assert not bad, f"{path.name} imports {bad}: decisions belong in saga_sgl.scheduler"


def test_every_call_a_worker_receives_was_dispatched_by_the_scheduler() -> None:
    tasks = [
        chain_task(f"t{i}", 0.3 * i, [Segment(1, 3000), Segment(1000 + i, 2000)], 6, first_id=100 * (i + 1))
        for i in range(24)
    ]
    cluster = Cluster(
        workload(*tasks),
        build_row(rows.SAGA, seed=0),
        ClusterSettings(num_workers=3, worker=WorkerSettings(kv_capacity_tokens=40_000)),
    )
    actions: list[Action] = []
    handle, epoch = cluster.scheduler.handle, cluster.scheduler.epoch

    def spy_handle(event):  # type: ignore[no-untyped-def]
        out = handle(event)
        actions.extend(out)
        return out

    def spy_epoch():  # type: ignore[no-untyped-def]
        out = epoch()
        actions.extend(out)
        return out

    cluster.scheduler.handle = spy_handle  # type: ignore[method-assign]
    cluster.scheduler.epoch = spy_epoch  # type: ignore[method-assign]
    received: list[tuple[str, str, bool]] = []
    for w in cluster.workers:
        orig = w.enqueue

        def enqueue(call: SimCall, now_s: float, _w: SimWorker = w, _orig=orig):  # type: ignore[no-untyped-def]
            received.append((call.call_id, _w.worker_id, call.is_rebuild))
            return _orig(call, now_s)

        w.enqueue = enqueue  # type: ignore[method-assign]
    result = cluster.run()
    assert len(result.tasks) == 24 and result.unfinished == 0
    sent = {(a.call_id, a.worker_id) for a in actions if isinstance(a, Dispatch)}
    moved = {(a.call_id, a.to_worker) for a in actions if isinstance(a, Redirect)}
    prefills = [(a.workflow_id, a.worker_id) for a in actions if isinstance(a, Prefill)]
    calls = [(c, w) for c, w, rebuild in received if not rebuild]
    assert len(calls) == 24 * 6 + len(moved)
    for c, w in calls:
        assert (c, w) in sent or (c, w) in moved, f"{c} reached {w} without a scheduler action"
    rebuilds = [(c.split(":")[0], w) for c, w, rebuild in received if rebuild]
    assert sorted(rebuilds) == sorted(prefills)


def _one_call_decoding(steps: int) -> tuple[Any, Any, Any]:
    """One task of ``steps`` calls (3,000-token prompt, 400 output tokens) on one worker, run 0.5 s:
    its first call's prefill is done and it is decoding."""
    task = chain_task("t", 0.0, [Segment(1, 3000)], steps, first_id=100, output_tokens=400)
    cluster = Cluster(
        workload(task),
        build_row(rows.ROUND_ROBIN, seed=0),
        ClusterSettings(num_workers=1, worker=WorkerSettings(kv_capacity_tokens=40_000)),
    )
    from saga_sgl.sim.cluster import _TaskArrival

    cluster.engine.schedule(0.0, _TaskArrival(cluster, cluster.tasks[0]))
    worker = cluster.workers[0]
    cluster.engine.run(0.5)
    [call] = worker.decoding
    return cluster, worker, call


def test_a_preempted_call_is_retracted_and_runs_again_from_its_cached_prefix() -> None:
    cluster, worker, call = _one_call_decoding(steps=2)
    assert 0 < call.generated < 400
    for t, ev in worker.retract(call, cluster.engine.now_s):
        cluster.engine.schedule(t, ev)
    cluster.engine.run()
    result = cluster.recorder.result(cluster.engine.now_s)
    assert [t.task_id for t in result.tasks] == ["t"]
    assert result.counters["calls"] == 3  # the retracted call was admitted twice
    assert worker.private_tokens == 0 and not worker.decoding and not worker.waiting


def test_a_retracted_call_keeps_its_generated_tokens_and_prefills_them_again() -> None:
    """SGLang's retract keeps a request's output ids: re-admitted, it prefills prompt + those tokens
    (past the cached prefix) and decodes only what is left."""
    cluster, worker, call = _one_call_decoding(steps=1)
    before = call.generated
    assert 0 < before < 400
    for t, ev in worker.retract(call, cluster.engine.now_s):
        cluster.engine.schedule(t, ev)
    admitted: list[int] = []
    on_admit = cluster.recorder.on_admit
    cluster.recorder.on_admit = lambda w, c, now: (admitted.append(c.new_tokens), on_admit(w, c, now))[1]  # type: ignore[method-assign]
    cluster.engine.run()
    # Retracted at the next iteration boundary, with what it had generated by then.
    assert before <= call.kept < 400
    # The prompt's new KV was freed, not cached: the whole prompt and the kept tokens are prefilled.
    assert admitted == [call.prompt_tokens + call.kept]
    assert call.generated == 400
    assert [t.task_id for t in cluster.recorder.result(cluster.engine.now_s).tasks] == ["t"]
