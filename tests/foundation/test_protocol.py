"""The wire schema: kv_hints action saga.reuse v1 and the control channel."""

from __future__ import annotations

import msgspec
import pytest

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import (
    REUSE_ACTION_TYPE,
    ReuseHint,
    ToolStarted,
    WorkflowFinished,
    decode_control,
    encode_control,
    encode_kv_hints,
    find_reuse_hint,
    request_id,
)


def test_kv_hints_round_trip() -> None:
    hint = ReuseHint(
        workflow_id="wf-7", step=3, tool="run_test", reuse_prob=0.85, next_use_in_s=2.4, ttl_s=5.0
    )
    envelope = encode_kv_hints(hint)
    assert envelope["protocol_version"] == "1"
    assert envelope["message_id"] == request_id("wf-7", 3) == "wf-7:3"
    (action,) = envelope["actions"]
    assert action["action_type"] == REUSE_ACTION_TYPE
    assert action["action_version"] == "1"
    # The JSON body survives an HTTP hop unchanged.
    decoded = find_reuse_hint(msgspec.json.decode(msgspec.json.encode(envelope)))
    assert decoded == hint


def test_other_consumers_actions_and_unknown_versions_are_not_ours() -> None:
    foreign = {
        "protocol_version": "1",
        "message_id": "m",
        "actions": [
            {"action_id": "a", "action_type": "hicache.prefetch", "action_version": "1", "payload": {}}
        ],
    }
    assert find_reuse_hint(foreign) is None
    newer = {
        "protocol_version": "1",
        "message_id": "m",
        "actions": [
            {"action_id": "a", "action_type": REUSE_ACTION_TYPE, "action_version": "9", "payload": {}}
        ],
    }
    assert find_reuse_hint(newer) is None
    assert find_reuse_hint(None) is None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"workflow_id": ""},
        {"workflow_id": "w", "reuse_prob": 1.5},
        {"workflow_id": "w", "ttl_s": -1.0},
        {"workflow_id": "w", "next_use_in_s": float("nan")},
        {"workflow_id": "w", "step": -2},
        {"workflow_id": "w" * 300},
        {"workflow_id": 12},
    ],
    ids=["empty", "blank-id", "prob>1", "neg-ttl", "nan-eta", "neg-step", "long-id", "int-id"],
)
def test_malformed_reuse_payload_is_rejected(payload: dict[str, object]) -> None:
    envelope = {
        "protocol_version": "1",
        "message_id": "m",
        "actions": [
            {"action_id": "a", "action_type": REUSE_ACTION_TYPE, "action_version": "1", "payload": payload}
        ],
    }
    with pytest.raises(MalformedMessage):
        find_reuse_hint(envelope)


def test_control_round_trip_and_garbage() -> None:
    for msg in (ToolStarted(workflow_id="w", tool="read_file", ttl_s=0.2), WorkflowFinished(workflow_id="w")):
        assert decode_control(encode_control(msg)) == msg
    for garbage in (
        b"",
        b"\x00\x01",
        msgspec.msgpack.encode({"type": "nope", "workflow_id": "w"}),
        msgspec.msgpack.encode({"type": "ttl_changed", "workflow_id": "w", "ttl_s": -3.0}),
    ):
        with pytest.raises(MalformedMessage):
            decode_control(garbage)
