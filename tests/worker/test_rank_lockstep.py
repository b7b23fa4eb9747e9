"""TP/PP ranks of one replica evict identically: two real SGLang caches driven in lock step.

Each "rank" is a real ``UnifiedRadixCache`` with its own plugin runtime and its own clock (the two
clocks have different offsets and rates, as two processes' clocks may). Only the leader binds the
control socket. Every scheduler step, the leader's ``collect_step`` (its time plus a bounded batch
of control messages) is handed to both ranks' ``apply_step``, which is what the hooks on
``SchedulerRequestReceiver._pull_raw_reqs`` and ``Scheduler.process_input_requests`` do with
SGLang's own broadcast of the received requests. Then both ranks serve the same request. This is
the in-process stand-in for a ``--tp 2`` worker (see the live test for the real one).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from control_push import push_control

from saga_sgl.protocol import ReuseHint, ToolFinished, ToolStarted, WorkflowFinished, encode_control
from saga_sgl.worker.settings import WorkerSettings

pytestmark = pytest.mark.sglang


def _script() -> list[tuple[str, Any]]:
    """Requests (hinted, shared, unhinted) and control messages, enough to force many evictions."""
    steps: list[tuple[str, Any]] = []
    system = list(range(1, 9))
    for i in range(30):
        wf = f"wf{i % 6}"
        tokens = system + list(range(100 + 37 * (i % 6), 100 + 37 * (i % 6) + 6 + i % 5))
        if i % 7 == 3:
            tokens = list(range(300 + 11 * i, 310 + 11 * i))  # unhinted filler
            steps.append(("request", (tokens, None)))
        else:
            kw: dict[str, Any] = {"next_use_in_s": float((i * 3) % 11)}
            if i % 4 == 1:
                kw["ttl_s"] = 4.0
            steps.append(("request", (tokens, ReuseHint(workflow_id=wf, step=i, **kw))))
        if i % 5 == 2:
            steps.append(("control", ToolStarted(workflow_id=wf, tool="web", ttl_s=3.0, next_use_in_s=2.0)))
        if i % 9 == 4:
            steps.append(("control", ToolFinished(workflow_id=wf)))
        if i == 17:
            steps.append(("control", WorkflowFinished(workflow_id="wf2")))
    return steps


def _victims(h: Any) -> list[int]:
    """Resident token count of every node, in a canonical order (the tree's exact state)."""
    out = []
    stack = [h.root]
    while stack:
        node = stack.pop()
        for key in sorted(node.children):
            child = node.children[key]
            out.append(0 if child.evicted else len(child.key))
            stack.append(child)
    return out


def test_tp_ranks_driven_by_the_leaders_steps_evict_identically(make_harness: Any) -> None:
    leader = make_harness("unified", "reuse_time", kv_size=56, start_s=1000.0)
    follower = make_harness("unified", "reuse_time", kv_size=56, start_s=73_456.25)
    leader.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"))
    follower.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"), bind=False)
    assert leader.runtime.control is not None and follower.runtime.control is None
    history: list[tuple[list[int], list[int]]] = []
    for kind, item in _script():
        if kind == "control":
            push_control(leader.runtime.control.endpoint, encode_control(item))
            deadline = time.monotonic() + 5
            while leader.runtime.control.pending() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            continue
        step = leader.runtime.collect_step()
        for rank in (leader, follower):
            rank.runtime.apply_step(step)
        tokens, hint = item
        leader.run(tokens, hint=hint)
        follower.run(tokens, hint=hint)
        history.append((_victims(leader), _victims(follower)))
        leader.clock.advance(0.7)
        follower.clock.advance(1.3)  # a different clock: it must not matter
    assert all(a == b for a, b in history)
    for name in ("evictions", "evicted_tokens", "hint_updates", "ttl_expiries"):
        assert leader.runtime.metrics.value(name) == follower.runtime.metrics.value(name), name
    assert leader.runtime.metrics.value("evictions") >= 8
    assert leader.runtime.metrics.value("hint_updates", source="control") >= 5


def test_without_steps_each_rank_would_use_its_own_clock(make_harness: Any) -> None:
    """The hazard the steps remove: hint times converted on each rank's own clock differ."""
    a = make_harness("unified", "reuse_time", start_s=1000.0)
    b = make_harness("unified", "reuse_time", start_s=2000.0)
    hint = ReuseHint(workflow_id="w", next_use_in_s=5.0)
    a.run(list(range(10, 20)), hint=hint)
    b.run(list(range(10, 20)), hint=hint)
    assert a.runtime.table.get("w").next_use_at_s != b.runtime.table.get("w").next_use_at_s  # type: ignore[union-attr]
    step = a.runtime.collect_step()
    for h in (a, b):
        h.runtime.apply_step(step)
    hint2 = ReuseHint(workflow_id="w", step=1, next_use_in_s=5.0)
    a.run(list(range(10, 25)), hint=hint2)
    b.run(list(range(10, 25)), hint=hint2)
    assert a.runtime.table.get("w").next_use_at_s == b.runtime.table.get("w").next_use_at_s == 1005.0  # type: ignore[union-attr]


def test_the_step_rides_the_pulled_requests_and_is_applied_before_them(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two hooks around SGLang's receive path, called as SGLang calls them (the receiver and
    the scheduler are stand-ins here: their methods are SGLang's, passed in as ``original``)."""
    from saga_sgl.worker import hooks, plugin
    from saga_sgl.worker.runtime import ControlStep

    h = make_harness("unified", "reuse_time", start_s=50.0)
    monkeypatch.setattr(plugin._STATE, "runtime", h.runtime)
    request = object()
    pulled = hooks.pull_raw_reqs(lambda receiver: [request], None)
    assert pulled[0] is request and isinstance(pulled[1], ControlStep) and pulled[1].now_s == 50.0
    seen: list[Any] = []

    class Scheduler:  # stand-in: only the attribute the hook reads
        tree_cache = h.cache

    hooks.process_input_requests(lambda scheduler, reqs: seen.extend(reqs), Scheduler(), pulled)
    assert seen == [request] and h.runtime.step_now_s == 50.0
    # An idle loop does not broadcast a step on every spin, but time still moves on.
    h.clock.advance(0.01)
    assert hooks.pull_raw_reqs(lambda receiver: [], None) == []
    h.clock.advance(0.1)
    idle = hooks.pull_raw_reqs(lambda receiver: [], None)
    assert len(idle) == 1 and idle[0].now_s == pytest.approx(50.11)
    # A follower rank (pull returns None) appends nothing: it gets the leader's list by broadcast.
    assert hooks.pull_raw_reqs(lambda receiver: None, None) is None
