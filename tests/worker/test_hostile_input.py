"""Hostile or careless input to the plugin: wire validation, unknown workflows, floods, forgetting,
the control socket's exposure, and a NaN that once made victim selection loop forever."""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import pytest

from saga_sgl.errors import InvalidSettings, MalformedMessage
from saga_sgl.protocol import (
    MAX_ID_LEN,
    ReuseHint,
    ToolStarted,
    TtlChanged,
    decode_control,
    encode_control,
)
from saga_sgl.worker.settings import WorkerSettings, replica_address, split_config

# --- one validation for every message ----------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "tool_started", "workflow_id": "w", "tool": "t", "next_use_in_s": math.nan},
        {"type": "tool_started", "workflow_id": "w", "tool": "t", "next_use_in_s": math.inf},
        {"type": "tool_started", "workflow_id": "w", "tool": "t", "next_use_in_s": -5.0},
        {"type": "tool_started", "workflow_id": "w", "tool": "t", "ttl_s": 1e308},
        {"type": "tool_started", "workflow_id": "w", "tool": "x" * 100_000},
        {"type": "tool_started", "workflow_id": "w", "tool": "x" * (MAX_ID_LEN + 1)},
        {"type": "tool_started", "workflow_id": "", "tool": "t"},
        {"type": "tool_started", "workflow_id": 7, "tool": "t"},
        {"type": "ttl_changed", "workflow_id": "w", "ttl_s": math.nan},
        {"type": "ttl_changed", "workflow_id": "w", "ttl_s": "5"},
        {"type": "tool_finished", "workflow_id": "w", "tool": "x" * 300},
        {"type": "workflow_finished", "workflow_id": "w" * 300},
        {"type": "no_such_message", "workflow_id": "w"},
    ],
    ids=lambda f: f"{f['type']}-" + ",".join(f"{k}={str(v)[:8]}" for k, v in f.items() if k != "type"),
)
def test_control_messages_are_checked_like_kv_hints(fields: dict[str, Any]) -> None:
    with pytest.raises(MalformedMessage):
        decode_control(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ToolStarted(workflow_id="w", tool="t", next_use_in_s=math.nan),
        lambda: ToolStarted(workflow_id="w", tool="t", ttl_s=-1.0),
        lambda: TtlChanged(workflow_id="w", ttl_s=math.inf),
        lambda: ReuseHint(workflow_id="w", ttl_s=1e308),
        lambda: ReuseHint(workflow_id="w", step=10**12),
    ],
)
def test_constructors_run_the_same_validation(build: Any) -> None:
    with pytest.raises(MalformedMessage):
        build()


def test_valid_control_messages_round_trip() -> None:
    message = ToolStarted(workflow_id="w", tool="web", ttl_s=30.0, next_use_in_s=2.0)
    assert decode_control(encode_control(message)) == message


# --- the control socket: loopback by default, CurveZMQ for remote use ------------------------------


def test_a_non_loopback_control_address_needs_curve_keys() -> None:
    with pytest.raises(InvalidSettings, match="control_curve_secret_key"):
        split_config({"control_address": "tcp://0.0.0.0:5601"}, environ={})
    for address in ("tcp://127.0.0.1:5601", "tcp://localhost:5601", "ipc:///tmp/saga-ctl"):
        assert split_config({"control_address": address}, environ={})[0].control_address == address
    import zmq

    public, secret = zmq.curve_keypair()
    settings, _ = split_config(
        {"control_address": "tcp://0.0.0.0:5601", "control_client_keys": [public.decode()]},
        environ={"SAGA_WORKER_CONTROL_CURVE_SECRET": secret.decode()},
    )
    assert settings.control_curve_secret_key == secret.decode()


def test_one_control_address_per_data_parallel_replica() -> None:
    assert replica_address("tcp://127.0.0.1:5601", None) == "tcp://127.0.0.1:5601"
    assert replica_address("tcp://127.0.0.1:5601", 0) == "tcp://127.0.0.1:5601"
    assert replica_address("tcp://127.0.0.1:5601", 3) == "tcp://127.0.0.1:5604"
    assert replica_address("ipc:///tmp/saga-ctl", 2) == "ipc:///tmp/saga-ctl-dp2"


def _send(address: str, data: bytes, *, server_key: bytes | None = None, client: Any = None) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 500)
    if server_key is not None:
        public, secret = client
        sock.curve_serverkey = server_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    sock.connect(address)
    sock.send(data)
    sock.close()


def _wait(pred: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()  # type: ignore[no-any-return]


def test_curve_control_socket_admits_only_listed_clients() -> None:
    import zmq

    from saga_sgl.worker.control import ControlChannel

    allowed, stranger = zmq.curve_keypair(), zmq.curve_keypair()
    server_public, server_secret = zmq.curve_keypair()
    channel = ControlChannel(
        "tcp://127.0.0.1:0",
        max_queued=100,
        on_malformed=lambda reason: None,
        on_dropped=lambda: None,
        curve_secret_key=server_secret.decode(),
        client_keys=[allowed[0].decode()],
    )
    try:
        assert channel.public_key == server_public.decode()
        message = encode_control(TtlChanged(workflow_id="w", ttl_s=1.0))
        _send(channel.endpoint, message, server_key=server_public, client=stranger)
        _send(channel.endpoint, message)  # no Curve at all
        _send(channel.endpoint, message, server_key=server_public, client=allowed)
        assert _wait(lambda: channel.pending() >= 1)
        time.sleep(0.3)
        assert channel.drain(10) == [TtlChanged(workflow_id="w", ttl_s=1.0)]
    finally:
        channel.close()


# --- bounded work per scheduler step ---------------------------------------------------------------


def test_a_flood_is_applied_a_bounded_batch_per_step() -> None:
    from saga_sgl.clock import ManualClock
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock(100.0))
    runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0", control_drain_max=50))
    try:
        assert runtime.control is not None
        runtime.table.apply_hint(ReuseHint(workflow_id="w"), received_at_s=100.0)
        import zmq

        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.connect(runtime.control.endpoint)
        for i in range(500):
            sock.send(encode_control(TtlChanged(workflow_id="w", ttl_s=float(i % 7))))
        sock.close(linger=2000)
        assert _wait(lambda: runtime.control is not None and runtime.control.pending() == 500)
        step = runtime.collect_step()
        assert len(step.messages) == 50
        runtime.apply_step(step)
        assert runtime.control.pending() == 450
        assert runtime.metrics.value("hint_updates", source="control") == 50
    finally:
        runtime.close()


def test_a_full_queue_pushes_back_instead_of_decoding_and_dropping() -> None:
    from saga_sgl.worker.control import ControlChannel

    dropped: list[int] = []
    channel = ControlChannel(
        "tcp://127.0.0.1:0", max_queued=20, on_malformed=lambda r: None, on_dropped=lambda: dropped.append(1)
    )
    try:
        import zmq

        sock = zmq.Context.instance().socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDTIMEO, 0)
        sock.connect(channel.endpoint)
        sent = 0
        for _ in range(5000):
            try:
                sock.send(encode_control(TtlChanged(workflow_id="w", ttl_s=1.0)), zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                break
        # The sender stays open while the channel fills: closing it with linger 0 right away would
        # discard whatever ZMQ had not yet flushed over the (still connecting) TCP pipe.
        try:
            assert _wait(lambda: channel.pending() == 20)
            time.sleep(0.2)
            assert channel.pending() == 20 and not dropped
            assert sent < 5000  # ZMQ's high-water marks stopped the sender
        finally:
            sock.close(linger=0)
    finally:
        channel.close()


# --- a NaN key cannot hang victim selection ----------------------------------------------------------


def test_victim_index_survives_a_policy_that_returns_nan() -> None:
    import threading

    from saga_sgl.policy.decisions import EvictionKey, Tier
    from saga_sgl.policy.eviction.lru import LruEviction
    from saga_sgl.policy.victim_index import VictimIndex
    from saga_sgl.policy.views import CacheEntryView

    class NanPolicy(LruEviction):
        def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> EvictionKey:
            primary = math.nan if entry.entry_id % 2 else entry.last_access_s
            return EvictionKey(int(Tier.ORDINARY), primary, 0.0, entry.entry_id)

    index = VictimIndex(NanPolicy())
    for i in range(6):
        index.add(CacheEntryView(entry_id=i, num_tokens=1, depth_tokens=1, last_access_s=float(i)), 0.0, 0.0)
    popped: list[int] = []

    def drain() -> None:
        while (view := index.pop(1.0, 0.0)) is not None:
            popped.append(view.entry_id)

    worker = threading.Thread(target=drain, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "pop looped on a NaN key"
    assert popped == [0, 2, 4, 1, 3, 5]  # NaN orders as +inf: last within its tier, by id
