"""The router's inference of which forwarded calls run at a worker, and how it reads an abort."""

from __future__ import annotations

import json

from saga_router.running import RunningCalls
from saga_router.service import _was_aborted

from saga_sgl.policy.views import WorkerId, WorkflowId

W = WorkerId("http://w")


def _forward(calls: RunningCalls, *ids: str, preemptible: bool = True) -> None:
    for cid in ids:
        calls.forwarded(W, cid, WorkflowId(cid.split(":")[0]), preemptible=preemptible)


def test_the_oldest_forwarded_calls_run_as_many_as_the_worker_counts() -> None:
    calls = RunningCalls()
    _forward(calls, "a:0", "b:0", "c:0")
    # One runs, two wait (FCFS): the oldest forward is the running one.
    assert [c.call_id for c in calls.observe(W, num_running=1, num_waiting=2)] == ["a:0"]
    assert calls.is_running(W, WorkflowId("a")) and not calls.is_running(W, WorkflowId("b"))
    assert calls.observe(W, 1, 2) == []  # nothing new
    calls.ended(W, "a:0")
    assert [c.call_id for c in calls.observe(W, 1, 1)] == ["b:0"]


def test_a_call_the_worker_has_not_queued_yet_is_not_taken_as_running() -> None:
    calls = RunningCalls()
    _forward(calls, "a:0", "b:0")
    # The sample lags: the worker reports one running and none waiting, b has not reached it.
    assert [c.call_id for c in calls.observe(W, num_running=1, num_waiting=0)] == ["a:0"]


def test_a_resent_call_goes_to_the_back() -> None:
    calls = RunningCalls()
    _forward(calls, "a:0", "b:0")
    calls.observe(W, 1, 1)
    calls.ended(W, "a:0")  # aborted for a preemption
    _forward(calls, "a:0")  # re-sent
    assert [c.call_id for c in calls.observe(W, 1, 1)] == ["b:0"]
    assert not calls.is_running(W, WorkflowId("a")) and calls.has_call(W, WorkflowId("a"))


def test_streamed_calls_are_marked_not_preemptible() -> None:
    calls = RunningCalls()
    _forward(calls, "s:0", preemptible=False)
    [c] = calls.observe(W, 1, 0)
    assert not c.preemptible


def test_an_abort_answer_is_recognised_and_a_normal_one_is_not() -> None:
    # SGLang 0.5.23's answer to a non-streamed /generate aborted while running (measured).
    aborted = {"output_ids": [1, 2], "meta_info": {"id": "L1", "finish_reason": {
        "type": "abort", "message": "Aborted", "status_code": None}}}
    done = {"output_ids": [1, 2], "meta_info": {"id": "L1", "finish_reason": {"type": "length", "length": 2}}}
    assert _was_aborted(json.dumps(aborted).encode())
    assert _was_aborted(json.dumps([aborted]).encode())
    assert not _was_aborted(json.dumps(done).encode())
    assert _was_aborted(json.dumps({"error": {"message": "Abort in waiting queue"}}).encode())
    assert not _was_aborted(b"not json")
