"""The client-side wire types: ``POST /saga/events`` bodies and the per-call ``saga.aeg`` action."""

from __future__ import annotations

import msgspec
import pytest

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import (
    AEG_ACTION_TYPE,
    AegSubmission,
    CallTag,
    ClientEvent,
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    SubmittedEdge,
    SubmittedNode,
    decode_client_event,
    encode_call_tag,
    encode_client_event,
    find_call_tag,
    find_reuse_hint,
)

EVENTS: list[ClientEvent] = [
    ClientToolStarted(workflow_id="wf-1", tool="run_test", node_id="r0/3"),
    ClientToolFinished(workflow_id="wf-1", tool="run_test", node_id="r0/3", latency_s=2.5, ok=False),
    ClientWorkflowFinished(workflow_id="wf-1", calls=7, duration_s=31.0),
    AegSubmission(
        workflow_id="wf-1",
        revision=2,
        complete=True,
        agent_type="tot",
        tenant_id="t1",
        slo_class="interactive",
        nodes=[
            SubmittedNode(node_id="r0/0", prompt_tokens=120, output_tokens=16, tool="search"),
            SubmittedNode(node_id="r0.f0.0/0", prompt_tokens=140, output_tokens=8, cached_tokens=120),
            SubmittedNode(node_id="r0.f0.1/0", prompt_tokens=141, output_tokens=8, cached_tokens=120),
            SubmittedNode(node_id="r0/1", prompt_tokens=160, output_tokens=4, terminal=True),
        ],
        edges=[
            SubmittedEdge(src="r0/0", dst="r0.f0.0/0", kind="branch", shared_prefix_tokens=136),
            SubmittedEdge(src="r0/0", dst="r0.f0.1/0", kind="branch", shared_prefix_tokens=136),
            SubmittedEdge(src="r0.f0.0/0", dst="r0/1", kind="join", shared_prefix_tokens=136),
            SubmittedEdge(src="r0.f0.1/0", dst="r0/1", kind="join", shared_prefix_tokens=136),
        ],
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_client_event_round_trip(event: ClientEvent) -> None:
    body = encode_client_event(event)
    assert decode_client_event(body) == event
    # The tag names the event on the wire, so a router can log it without decoding the rest.
    assert msgspec.json.decode(body)["type"] in {
        "tool_started",
        "tool_finished",
        "workflow_finished",
        "aeg_submission",
    }


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    body = b'{"type":"tool_started","workflow_id":"w","tool":"search","added_in_v2":1}'
    assert decode_client_event(body) == ClientToolStarted(workflow_id="w", tool="search")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"type":"nope","workflow_id":"w"}',
        b'{"workflow_id":"w","tool":"t"}',
        b'{"type":"tool_started","workflow_id":"","tool":"t"}',
        b'{"type":"tool_started","workflow_id":"w"}',
        b'{"type":"tool_finished","workflow_id":"w","tool":"t","latency_s":-1}',
        b'{"type":"tool_finished","workflow_id":"w","tool":"t","latency_s":"slow"}',
        b'{"type":"workflow_finished","workflow_id":"w","calls":-1}',
        b'{"type":"aeg_submission","workflow_id":"w","nodes":[{"node_id":"a"}],'
        b'"edges":[{"src":"a","dst":"b"}]}',
        b'{"type":"aeg_submission","workflow_id":"w","nodes":[{"node_id":"a"},{"node_id":"a"}]}',
        b'{"type":"aeg_submission","workflow_id":"w","nodes":[{"node_id":"a","prompt_tokens":-3}]}',
        b'{"type":"aeg_submission","workflow_id":"w","nodes":[{"node_id":"a"}],'
        b'"edges":[{"src":"a","dst":"a","kind":"teleport"}]}',
        b'{"type":"aeg_submission","workflow_id":"' + b"w" * 300 + b'"}',
    ],
    ids=[
        "empty",
        "list",
        "unknown-tag",
        "no-tag",
        "blank-workflow",
        "no-tool",
        "neg-latency",
        "str-latency",
        "neg-calls",
        "dangling-edge",
        "dup-node",
        "neg-tokens",
        "bad-kind",
        "long-id",
    ],
)
def test_malformed_client_events_are_rejected(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_client_event(body)


def test_aeg_submission_is_bounded() -> None:
    nodes = [{"node_id": f"n{i}"} for i in range(5000)]
    body = msgspec.json.encode({"type": "aeg_submission", "workflow_id": "w", "nodes": nodes})
    with pytest.raises(MalformedMessage, match="more than"):
        decode_client_event(body)


def test_call_tag_rides_in_kv_hints_and_is_not_a_reuse_hint() -> None:
    tag = CallTag(
        workflow_id="wf-9",
        node_id="r0.f0.1/0",
        step=4,
        parents=["r0/2"],
        edge_kinds=["branch"],
        tool_before="search",
        tool_latency_s=0.4,
        agent_type="tot",
    )
    kv = encode_call_tag(tag, message_id="wf-9:4")
    (action,) = kv["actions"]
    assert action["action_type"] == AEG_ACTION_TYPE and action["action_id"] == "wf-9:4/aeg"
    over_http = msgspec.json.decode(msgspec.json.encode(kv))
    assert find_call_tag(over_http) == tag
    # The worker plugin looks only for saga.reuse: our client tag must not be mistaken for one.
    assert find_reuse_hint(over_http) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"workflow_id": "w"},
        {"workflow_id": "w", "node_id": "n", "call": "teleport"},
        {"workflow_id": "w", "node_id": "n", "parents": ["a", "b"], "edge_kinds": ["next"]},
        {"workflow_id": "w", "node_id": "n", "parents": ["a"], "edge_kinds": ["sideways"]},
        {"workflow_id": "w", "node_id": "n", "tool_latency_s": float("inf")},
        {"workflow_id": "w", "node_id": "n", "step": -1},
    ],
    ids=["no-node", "bad-call", "kinds-len", "bad-kind", "inf-latency", "neg-step"],
)
def test_malformed_call_tag_is_rejected(payload: dict[str, object]) -> None:
    kv = {
        "protocol_version": "1",
        "message_id": "m",
        "actions": [
            {"action_id": "a", "action_type": AEG_ACTION_TYPE, "action_version": "1", "payload": payload}
        ],
    }
    with pytest.raises(MalformedMessage):
        find_call_tag(kv)
