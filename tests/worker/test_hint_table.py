"""The hint side table: conversion of relative wire times at receipt, control messages, TTL-expiry
accounting (property test against a reference model), and the bound on tracked workflows."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import (
    ReuseHint,
    ToolFinished,
    ToolStarted,
    TtlChanged,
    WorkflowFinished,
    decode_control,
    encode_control,
)
from saga_sgl.worker.hints import HintTable, NodeMark, mark_path


def test_relative_wire_times_become_absolute_and_the_ttl_starts_with_the_tool() -> None:
    table = HintTable(10)
    record = table.apply_hint(ReuseHint(workflow_id="w", next_use_in_s=4.0, ttl_s=30.0), received_at_s=100.0)
    # The TTL guards the tool gap after the call: a long decode (here 2.5 s) must not use it up.
    assert (record.next_use_at_s, record.ttl_deadline_s) == (104.0, None)
    assert table.start_call_ttl("w", 102.5)
    assert record.ttl_deadline_s == 132.5
    assert not table.start_call_ttl("w", 103.0)  # started once per call
    assert table.apply_control(ToolFinished(workflow_id="w"), 110.0)
    assert (record.next_use_at_s, record.ttl_deadline_s) == (110.0, None)
    assert table.apply_control(WorkflowFinished(workflow_id="w"), 111.0)
    assert record.is_finished and record.next_use_at_s is None
    # A new call shows the workflow is alive again.
    table.apply_hint(ReuseHint(workflow_id="w", step=7), received_at_s=112.0)
    assert not record.is_finished and record.step == 7


def test_tool_started_carries_the_routers_reuse_prediction() -> None:
    """The scheduler's ReusePredictor travels in ToolStarted (refreshed as the gap ages); a message
    without it keeps the hint's P; an out-of-range P is refused at decode with a clear error."""
    table = HintTable(10)
    record = table.apply_hint(ReuseHint(workflow_id="w", reuse_prob=0.9), received_at_s=0.0)
    started = ToolStarted(workflow_id="w", tool="web", next_use_in_s=5.0, reuse_prob=0.25)
    assert table.apply_control(started, 1.0)
    assert (record.reuse_prob, record.next_use_at_s) == (0.25, 6.0)
    assert table.apply_control(ToolStarted(workflow_id="w", tool="web", ttl_s=1.0), 2.0)
    assert record.reuse_prob == 0.25
    assert decode_control(encode_control(ToolStarted(workflow_id="w", tool="web", reuse_prob=0.5))) == (
        ToolStarted(workflow_id="w", tool="web", reuse_prob=0.5)
    )
    bad = {"type": "tool_started", "workflow_id": "w", "tool": "web", "reuse_prob": 1.5}
    wire = msgspec.msgpack.encode(bad)
    with pytest.raises(MalformedMessage, match="reuse_prob"):
        decode_control(wire)
    with pytest.raises(MalformedMessage, match="reuse_prob"):
        ToolStarted(workflow_id="w", tool="web", reuse_prob=-0.1)


def test_control_for_unknown_workflows_creates_no_record() -> None:
    table = HintTable(2)
    table.apply_hint(ReuseHint(workflow_id="real"), received_at_s=0.0)
    assert not table.apply_control(WorkflowFinished(workflow_id="x"), 1.0)
    assert not table.apply_control(TtlChanged(workflow_id="x", ttl_s=5.0), 1.0)
    # Before: ToolStarted for an unknown workflow created a record, so a flood of them pushed
    # the real workflows out of the bounded table.
    for i in range(10):
        assert not table.apply_control(ToolStarted(workflow_id=f"x{i}", tool="web", ttl_s=5.0), 1.0)
    assert len(table) == 1 and table.get("real") is not None and table.num_forgotten == 0
    assert table.apply_control(ToolStarted(workflow_id="real", tool="web", ttl_s=5.0), 2.0)
    assert table.get("real").ttl_deadline_s == 7.0  # type: ignore[union-attr]


def test_ttls_are_capped() -> None:
    table = HintTable(10, max_ttl_s=300.0)
    table.apply_hint(ReuseHint(workflow_id="w"), received_at_s=0.0)
    table.apply_control(ToolStarted(workflow_id="w", tool="t", ttl_s=86_400.0), 1.0)
    assert table.get("w").ttl_deadline_s == 301.0  # type: ignore[union-attr]


def test_finished_workflows_leave_the_table_after_the_grace_period() -> None:
    table = HintTable(100, finished_grace_s=60.0)
    for wf in ("done", "alive", "revived"):
        table.apply_hint(ReuseHint(workflow_id=wf), received_at_s=0.0)
    table.apply_control(WorkflowFinished(workflow_id="done"), 10.0)
    table.apply_control(WorkflowFinished(workflow_id="revived"), 10.0)
    table.apply_hint(ReuseHint(workflow_id="revived", step=1), received_at_s=20.0)  # a new call
    table.expire(69.9)
    assert table.get("done") is not None
    table.expire(70.0)
    assert table.get("done") is None and table.get("alive") is not None and table.get("revived") is not None
    assert table.take_dropped() == ["done"] and table.num_expired == 1 and table.take_dropped() == []


def test_the_ttl_heap_is_bounded_by_the_table() -> None:
    table = HintTable(4)
    for wf in "abcd":
        table.apply_hint(ReuseHint(workflow_id=wf), received_at_s=0.0)
    # 100K valid TtlChanged messages, each with a long TTL: one live deadline per workflow.
    for i in range(100_000):
        table.apply_control(TtlChanged(workflow_id="abcd"[i % 4], ttl_s=250.0), float(i) * 1e-3)
    assert table.ttl_heap_size() <= 2 * len(table) + 64


def test_table_forgets_the_least_recently_updated_workflow() -> None:
    table = HintTable(2)
    for i, wf in enumerate(["a", "b", "a", "c"]):
        table.apply_hint(ReuseHint(workflow_id=wf), received_at_s=float(i))
    assert table.get("b") is None and table.get("a") is not None and table.get("c") is not None
    assert table.num_forgotten == 1


def test_split_fragments_inherit_their_childrens_workflows() -> None:
    class Node:
        def __init__(self, key: list[int], parent: Any = None) -> None:
            self.key, self.parent, self.children = key, parent, {}
            if parent is not None:
                parent.children[key[0]] = self

    root = Node([])
    upper = Node([1, 2], root)  # a split fragment: unmarked, with a marked child
    lower = Node([3, 4, 5], upper)
    lower._saga_mark = NodeMark(workflows={"A"}, depth_tokens=5)
    other = Node([9], upper)
    mark_path([other, upper], workflow_id="B", now_s=7.0)
    assert upper._saga_mark.workflows == {"A", "B"}
    assert (upper._saga_mark.depth_tokens, other._saga_mark.depth_tokens) == (2, 3)
    assert other._saga_mark.workflows == {"B"} and other._saga_mark.last_use_s == 7.0


_ops = st.lists(
    st.tuples(
        st.sampled_from(["hint", "tool_started", "tool_finished", "finished", "ttl_changed", "drain"]),
        st.sampled_from(["a", "b"]),
        st.floats(min_value=0.0, max_value=5.0),  # time step before the op
        st.sampled_from([0.0, 1.0, 2.5, 4.0]),  # ttl_s
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_every_ttl_deadline_that_passes_is_counted_exactly_once(
    ops: list[tuple[str, str, float, float]],
) -> None:
    table = HintTable(10, finished_grace_s=1e9)
    now = 0.0
    current: dict[str, float | None] = {}  # reference model: each workflow's live deadline
    expected = 0

    def replace(wf: str, new: float | None) -> None:
        nonlocal expected
        old = current.get(wf)
        if old is not None and old <= now:
            expected += 1
        current[wf] = new

    for kind, wf, dt, ttl in ops:
        now += dt
        known = wf in current
        if kind == "hint":  # a call, which ends at once: its TTL starts
            table.apply_hint(ReuseHint(workflow_id=wf, ttl_s=ttl), received_at_s=now)
            replace(wf, None)
            table.start_call_ttl(wf, now)
            replace(wf, now + ttl if ttl > 0 else None)
        elif kind == "tool_started" and known:
            table.apply_control(ToolStarted(workflow_id=wf, tool="t", ttl_s=ttl), now)
            replace(wf, now + ttl if ttl > 0 else None)
        elif kind == "drain":
            table.pop_expired_ttls(now)
        elif known and kind != "tool_started":
            message = {
                "tool_finished": ToolFinished(workflow_id=wf),
                "finished": WorkflowFinished(workflow_id=wf),
                "ttl_changed": TtlChanged(workflow_id=wf, ttl_s=ttl),
            }[kind]
            table.apply_control(message, now)
            replace(wf, now + ttl if kind == "ttl_changed" and ttl > 0 else None)
    table.pop_expired_ttls(now)
    expected += sum(1 for d in current.values() if d is not None and d <= now)
    assert table.num_ttl_expiries == expected


@pytest.mark.parametrize("max_workflows", [0, -1])
def test_settings_reject_an_empty_table(max_workflows: int) -> None:
    from saga_sgl.errors import InvalidSettings
    from saga_sgl.worker.settings import WorkerSettings

    with pytest.raises(InvalidSettings, match="max_tracked_workflows"):
        WorkerSettings(max_tracked_workflows=max_workflows)
