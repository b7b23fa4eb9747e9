"""The plugin measures its cache's residence time and publishes it on ``/v1/loads``; the router reads
it into the scheduler's worker view; the simulator's worker measures the same number for the same
evictions, so both hosts give the scheduler the same input and get the same hints.

Plugin side: real SGLang caches (unified and legacy) driven by the test harness, the ``get_loads``
hook around a real ``LoadSnapshot``, SGLang's own snapshot encoder, the decoder the plugin installs,
``LoadSnapshot.to_dict`` as ``/v1/loads`` calls it, then JSON into the router's ``WorkerLoad``.
Simulator side: a real ``SimWorker`` with a small host stand-in (as in test_eviction_parity.py).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from saga_sgl.policy.views import WorkerView, WorkflowId
from saga_sgl.protocol import LOADS_RESIDENCE_FIELD

pytestmark = pytest.mark.sglang

CTX = 10
CONTEXTS = 6
EVICT_AT_S = (2.0, 4.0, 6.0)
"""Seconds after the last request at which one context (CTX tokens) is evicted."""
READ_AT_S = 7.0
MAX_RUNNING = 64
WINDOW_S = 60.0  # PressureSettings().residence_window_s


def _tokens(i: int) -> list[int]:
    return list(range(100 + 50 * i, 100 + 50 * i + CTX))


def _expected_residence_s() -> float:
    """Little's law by hand: tokens left in the tree / the decayed eviction rate at READ_AT_S."""
    rate = sum(CTX / WINDOW_S * math.exp(-(READ_AT_S - t) / WINDOW_S) for t in EVICT_AT_S)
    return (CONTEXTS - len(EVICT_AT_S)) * CTX / rate


def _plugin_runtime(make_harness: Any, kind: str) -> Any:
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams

    h = make_harness(kind, "saga", kv_size=1024)
    for i in range(CONTEXTS):
        h.clock.advance(1.0)
        h.run(_tokens(i))
    assert math.isinf(h.runtime.residence_s())  # no eviction yet: unknown, nothing published
    t0 = h.clock.now_s()
    for at in EVICT_AT_S:
        h.clock.advance(t0 + at - h.clock.now_s())
        h.cache.evict(EvictParams(num_tokens=1))
    h.clock.advance(t0 + READ_AT_S - h.clock.now_s())
    return h.runtime


def _loads_json(runtime: Any, monkeypatch: pytest.MonkeyPatch, *, plugin_decoder: bool = True) -> Any:
    """What ``GET /v1/loads?include=core`` answers for this runtime's process (one DP rank)."""
    from sglang.srt.managers import load_snapshot

    from saga_sgl.worker import hooks, plugin
    from saga_sgl.worker.loads import install_decoder

    monkeypatch.setattr(plugin._STATE, "runtime", runtime)
    stock_decoder = msgspec.msgpack.Decoder(load_snapshot.LoadSnapshot)  # SGLang's own (undone after)
    monkeypatch.setattr(load_snapshot, "snapshot_decoder", stock_decoder)
    if plugin_decoder:
        install_decoder()
        assert load_snapshot.snapshot_decoder is not stock_decoder

    def stock(inquirer: Any) -> Any:  # SGLang's own get_loads: a real snapshot of a small worker
        return load_snapshot.LoadSnapshot(
            num_waiting_reqs=1, num_used_tokens=0, max_total_num_tokens=1024, max_running_requests=MAX_RUNNING
        )

    snapshot = hooks.get_loads(stock, None)
    wire = load_snapshot.snapshot_encoder.encode(snapshot)  # scheduler process -> shared memory
    decoded = load_snapshot.snapshot_decoder.decode(wire)  # HTTP process
    return json.loads(json.dumps({"loads": [decoded.to_dict({"core"})]}))


@pytest.mark.parametrize("kind", ["unified", "legacy"])
def test_the_plugin_publishes_a_finite_residence_time_after_evictions(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from saga_router.workers import WorkerLoad

    runtime = _plugin_runtime(make_harness, kind)
    assert runtime.cached_tokens == (CONTEXTS - len(EVICT_AT_S)) * CTX
    assert runtime.residence_s() == pytest.approx(_expected_residence_s(), rel=1e-9)
    answer = _loads_json(runtime, monkeypatch)
    rank = answer["loads"][0]
    assert rank[LOADS_RESIDENCE_FIELD] == pytest.approx(_expected_residence_s(), rel=1e-9)
    assert rank["num_waiting_reqs"] == 1 and rank["max_total_num_tokens"] == 1024  # SGLang's fields kept
    load = WorkerLoad.from_loads(answer, now_s=0.0)
    assert load.residence_s == pytest.approx(_expected_residence_s(), rel=1e-9)


def test_a_stock_reader_drops_the_field_and_the_router_takes_it_as_unknown(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_router.workers import WorkerLoad

    runtime = _plugin_runtime(make_harness, "unified")
    answer = _loads_json(runtime, monkeypatch, plugin_decoder=False)
    assert LOADS_RESIDENCE_FIELD not in answer["loads"][0]
    assert math.isinf(WorkerLoad.from_loads(answer, now_s=0.0).residence_s)


def test_no_saga_cache_in_the_process_leaves_sglangs_snapshot_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sglang.srt.managers.load_snapshot import LoadSnapshot

    from saga_sgl.worker import hooks, plugin

    monkeypatch.setattr(plugin._STATE, "runtime", None)
    snapshot = LoadSnapshot(num_running_reqs=2)
    assert hooks.get_loads(lambda inquirer: snapshot, None) is snapshot


class _Host:
    """Stand-in for the simulator's cluster: plain LRU views, no hints (residence needs none)."""

    def __init__(self) -> None:
        from saga_sgl.policy import registry

        self.eviction = registry.create_eviction("lru")

    def entry_view(self, worker: Any, node: Any, now_s: float) -> Any:
        from saga_sgl.policy.views import CacheEntryView

        return CacheEntryView(
            entry_id=node.entry_id,
            num_tokens=node.num_tokens,
            depth_tokens=node.depth_tokens,
            last_access_s=node.last_access_s,
        )

    def on_leaf(self, worker: Any, node: Any, added: bool) -> None:
        return None

    def on_evict(self, worker: Any, node: Any, now_s: float) -> None:
        return None


def _simulator_worker() -> Any:
    from saga_sgl.sim.cost_model import ProfileCostModel
    from saga_sgl.sim.worker import SimWorker, WorkerSettings
    from saga_sgl.sim.workloads.model import Segment

    settings = WorkerSettings(kv_capacity_tokens=1024, max_running_requests=MAX_RUNNING)
    worker = SimWorker("w0", ProfileCostModel(), settings, _Host())  # type: ignore[arg-type]
    now = 1000.0
    for i in range(CONTEXTS):
        now += 1.0
        worker.now_s = now
        worker.cache.insert([Segment(i, CTX)], now, f"c{i}")
    assert math.isinf(worker.residence_s(now))
    for at in EVICT_AT_S:
        worker.now_s = now + at
        worker._evict(1, now + at)
    worker.now_s = now + READ_AT_S
    worker.waiting.append(object())  # one waiting call, as the plugin's snapshot says
    return worker


def _hints_for(view: WorkerView) -> Any:
    """The scheduler's hints for a bash gap 40 s old on the worker seen as ``view``."""
    from saga_sgl.clock import ManualClock
    from saga_sgl.scheduler import (
        CallArrived,
        CallFinished,
        Dispatch,
        SchedulerSettings,
        ToolStarted,
        WorkerLoads,
        WorkflowScheduler,
    )

    clock = ManualClock(100.0)
    s = WorkflowScheduler(SchedulerSettings(stealing=None), clock=clock)
    s.handle(WorkerLoads(workers=(view,)))
    wf = WorkflowId("a")
    [d] = [a for a in s.handle(CallArrived(call_id="a:0", workflow_id=wf, step=0, prompt_tokens=2000))
           if isinstance(a, Dispatch)]  # fmt: skip
    s.handle(CallFinished(call_id="a:0", workflow_id=wf, worker_id=d.worker_id, prompt_tokens=2000,
                          output_tokens=100))  # fmt: skip
    s.handle(ToolStarted(workflow_id=wf, tool="bash"))
    while clock.now_s() < 140.0 - 1e-9:
        clock.advance(s.settings.epoch_s)
        s.epoch()
    return s.cache_hints(wf)


@pytest.mark.parametrize("kind", ["unified", "legacy"])
def test_plugin_and_simulator_give_the_scheduler_the_same_residence_and_the_same_hints(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from saga_router.workers import WorkerLoad, WorkerRecord

    from saga_sgl.sim.views import ViewBuilder

    worker = _simulator_worker()
    [sim_view] = ViewBuilder(SimpleNamespace(workers=[worker])).workers(worker.now_s)  # type: ignore[arg-type]
    assert sim_view.residence_s == pytest.approx(_expected_residence_s(), rel=1e-9)
    record = WorkerRecord(url="w0")
    record.ready = record.healthy = True
    answer = _loads_json(_plugin_runtime(make_harness, kind), monkeypatch)
    record.observe_load(WorkerLoad.from_loads(answer, 0.0))
    router_view = record.view()
    assert router_view.residence_s == pytest.approx(sim_view.residence_s, rel=1e-9)
    # The same load fields in both views (the hints' other inputs: queue delay, KV usage).
    same = (
        "num_running_reqs",
        "num_waiting_reqs",
        "kv_used_tokens",
        "kv_capacity_tokens",
        "max_running_reqs",
    )
    assert [getattr(router_view, f) for f in same] == [getattr(sim_view, f) for f in same]
    plugin_hints, sim_hints = _hints_for(router_view), _hints_for(sim_view)
    assert plugin_hints.reuse_prob == pytest.approx(sim_hints.reuse_prob, rel=1e-9)
    assert plugin_hints.next_use_at_s == pytest.approx(sim_hints.next_use_at_s, rel=1e-9)
    assert plugin_hints.ttl_deadline_s == pytest.approx(sim_hints.ttl_deadline_s, rel=1e-9)
    # ... and the residence time mattered: unknown, the same gap gets another P.
    unknown = _hints_for(WorkerView(**{**_fields(sim_view), "residence_s": math.inf}))
    assert unknown.reuse_prob > sim_hints.reuse_prob + 0.05


def _fields(view: WorkerView) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(view, f.name) for f in dataclasses.fields(view)}
