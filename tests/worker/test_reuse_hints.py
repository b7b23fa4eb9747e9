"""The live path carries what the replay benchmark measures, and the plugin's recency guard learns.

1. For the same call history, the workflow scheduler's ``cache_hints()`` (what its control messages
   tell the worker) equal the trace-replay hint path's predictions (``replay.driver.HintDriver``):
   P(reuse within the horizon), the expected next read, the tool-aware TTL.
2. The real SGLang caches (unified and legacy), fed those hints through ``kv_hints`` and the
   scheduler's own ``ToolStarted`` control messages, evict in the same order as the core
   ``VictimIndex`` over the replay driver's views (the replay benchmark's order).
3. The plugin's recency guard: a victim the key chose that is read again sends the next
   disagreement to LRU (unified tree, where victims come from the persistent leaf index).
"""

from __future__ import annotations

from typing import Any

import pytest
from control_push import push_control, wait_applied

from saga_sgl.aeg.tool_latency import tool_type_of
from saga_sgl.clock import ManualClock
from saga_sgl.policy import registry
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView, WorkerId, WorkerView, WorkflowId
from saga_sgl.protocol import ReuseHint, encode_control
from saga_sgl.replay.driver import DriverSettings, HintDriver
from saga_sgl.replay.traces import TraceRequest
from saga_sgl.scheduler import (
    CallArrived,
    CallFinished,
    Control,
    Dispatch,
    SchedulerSettings,
    ToolStarted,
    WorkerLoads,
    WorkflowScheduler,
)

pytestmark = pytest.mark.sglang

CTX = 10
TOOL = str(tool_type_of("bash"))
# (time, workflow): calls of four workflows; their gap histories differ (short, long, none, steady).
CALLS = [
    (1000.0, "a"), (1001.0, "b"), (1002.0, "c"), (1003.0, "d"), (1004.0, "d"), (1005.0, "a"),
    (1005.5, "d"), (1007.0, "d"), (1010.0, "a"), (1061.0, "b"), (1062.0, "d"),
]  # fmt: skip
NAMES = ["a", "b", "c", "d"]


def _tokens(name: str) -> list[int]:
    base = 100 + 50 * NAMES.index(name)
    return list(range(base, base + CTX))


def _drive() -> tuple[WorkflowScheduler, HintDriver, dict[str, tuple[float, ReuseHint, bytes]]]:
    """Both hint paths over CALLS; per workflow: its last call's time, kv_hint and control message."""
    clock = ManualClock(CALLS[0][0])
    sched = WorkflowScheduler(SchedulerSettings(stealing=None), clock=clock)
    worker = WorkerView(
        worker_id=WorkerId("w0"),
        num_running_reqs=0,
        num_waiting_reqs=0,
        kv_used_tokens=0,
        kv_capacity_tokens=1_000_000,
        max_running_reqs=100,
    )
    sched.handle(WorkerLoads(workers=(worker,)))
    driver = HintDriver(DriverSettings(prefix_reuse=False))
    steps: dict[str, int] = {}
    last: dict[str, tuple[float, ReuseHint, bytes]] = {}
    for t, name in CALLS:
        clock.advance(t - clock.now_s())
        step = steps.get(name, 0)
        steps[name] = step + 1
        wid = WorkflowId(name)
        call = f"{name}:{step}"
        arrived = sched.handle(CallArrived(call_id=call, workflow_id=wid, prompt_tokens=CTX, step=step))
        [dispatch] = [a for a in arrived if isinstance(a, Dispatch)]
        sched.handle(
            CallFinished(
                call_id=call,
                workflow_id=wid,
                worker_id=dispatch.worker_id,
                prompt_tokens=CTX,
                output_tokens=0,
            )
        )
        started = sched.handle(ToolStarted(workflow_id=wid, tool="bash"))
        [control] = [a for a in started if isinstance(a, Control)]
        req = TraceRequest(
            timestamp_s=t, input_length=CTX, output_length=0, hash_ids=(NAMES.index(name),), session=name,
            step=step, tool=TOOL,
        )  # fmt: skip
        sess = driver.session_of(req)
        driver.on_arrival(sess, req, t)
        driver.on_end(sess, req, t)
        assert dispatch.hint is not None
        last[name] = (t, dispatch.hint, encode_control(control.message))
    return sched, driver, last


def test_the_schedulers_cache_hints_are_the_replay_hint_paths_predictions() -> None:
    sched, driver, last = _drive()
    waits = set()
    for name in NAMES:
        hints = sched.cache_hints(WorkflowId(name))
        sess = driver.sessions[name]
        assert hints is not None and sess.reuse_prob is not None and sess.next_use_at_s is not None
        assert hints.reuse_prob == pytest.approx(sess.reuse_prob)
        assert hints.next_use_at_s == pytest.approx(sess.next_use_at_s)
        assert hints.ttl_deadline_s == pytest.approx(sess.ttl_deadline_s)
        waits.add(round(sess.next_use_at_s - last[name][0], 6))
    assert len(waits) > 1  # the histories differ, and so do the predicted waits


@pytest.mark.parametrize("kind", ["unified", "legacy"])
def test_plugin_fed_by_the_scheduler_evicts_in_the_replay_drivers_order(make_harness: Any, kind: str) -> None:
    from saga_sgl.worker.settings import WorkerSettings

    _, driver, last = _drive()
    h = make_harness(kind, "saga", kv_size=1024, start_s=CALLS[0][0])
    h.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"))
    for served, name in enumerate(sorted(NAMES, key=lambda n: last[n][0]), start=1):
        t, hint, control = last[name]
        h.clock.advance(t - h.clock.now_s())
        h.run(_tokens(name), hint=hint)
        push_control(h.runtime.control.endpoint, control)
        wait_applied(h.runtime, served)
    end = max(t for t, _ in CALLS) + 400.0  # every TTL has expired: the keys alone decide
    h.clock.advance(end - h.clock.now_s())
    plugin = h.eviction_order({name: _tokens(name) for name in NAMES})

    index = VictimIndex(registry.create_eviction("saga"))
    for i, name in enumerate(NAMES):
        sess = driver.sessions[name]
        prob, ttl = driver.block_hints(sess, 0, i)
        index.add(
            CacheEntryView(
                entry_id=i,
                num_tokens=CTX,
                depth_tokens=CTX,
                last_access_s=last[name][0],
                workflow_id=WorkflowId(name),
                reuse_prob=prob,
                next_use_at_s=sess.next_use_at_s,
                ttl_deadline_s=ttl,
            ),
            end,
            0.0,
        )
    replay = []
    while (v := index.pop(end, 0.0)) is not None:
        replay.append(NAMES[v.entry_id])
    assert plugin == replay
    assert replay != sorted(NAMES, key=lambda n: last[n][0])  # the predictions moved it off LRU


def test_the_plugins_recency_guard_sends_the_next_disagreement_to_lru(make_harness: Any) -> None:
    from sglang.srt.mem_cache.base_prefix_cache import EvictParams

    # guard_confidence 0: one settled vote decides (the default z = 2 waits for a lead beyond noise,
    # tests/unit/test_policy_eviction_guard.py); this test is about the plugin's wiring of the guard.
    h = make_harness("unified", "saga", kv_size=64, guard_confidence=0.0)
    # Below a shared system prompt: the guard must recognise a re-inserted node at depth > 0.
    system = [7, 8, 9, 10]
    old, dead, dead2 = (system + list(range(b, b + CTX)) for b in (100, 200, 300))
    hopeless = {"reuse_prob": 0.01, "next_use_in_s": 600.0}
    h.clock.advance(1.0)
    h.run(old)
    h.clock.advance(1.0)
    h.run(dead, hint=ReuseHint(workflow_id="d1", **hopeless))
    h.clock.advance(1.0)
    [index] = h.runtime.leaf_indices
    guard = index.victims.guard
    assert guard is not None and guard.follows_prediction()
    h.cache.evict(EvictParams(num_tokens=1))  # the key's victim (the hopeless one), not LRU's (old)
    assert h.resident_tokens(dead) == len(system) and h.resident_tokens(old) == len(old)
    h.clock.advance(1.0)
    h.run(dead)  # ...is read again: the key chose worse than LRU would have
    assert guard.votes == 1 and not guard.follows_prediction()
    h.clock.advance(1.0)
    h.run(dead2, hint=ReuseHint(workflow_id="d2", **hopeless))
    h.clock.advance(1.0)
    h.cache.evict(EvictParams(num_tokens=1))  # now LRU's victim: the least recently used context
    assert h.resident_tokens(old) == len(system) and h.resident_tokens(dead2) == len(dead2)
