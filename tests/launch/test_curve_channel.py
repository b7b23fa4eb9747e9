"""CurveZMQ on the router -> plugin control channel: the router's real ``PluginChannels`` talking to the
plugin's real ``ControlChannel`` over TCP, with the keys the launcher generates."""

from __future__ import annotations

import json
import time

import pytest
import zmq
from saga_router.plugin_channel import CurveClient, PluginChannels

from saga_sgl.cluster.curve import ControlKeys
from saga_sgl.cluster.processes import RouterSpec, plugin_worker_spec
from saga_sgl.errors import InvalidSettings
from saga_sgl.protocol import TtlChanged
from saga_sgl.worker.control import ControlChannel
from saga_sgl.worker.settings import CONTROL_CURVE_SECRET_ENV, split_config


def _received(channel: ControlChannel, timeout_s: float) -> list[object]:
    deadline = time.monotonic() + timeout_s
    got: list[object] = []
    while time.monotonic() < deadline and not got:
        got = list(channel.drain(100))
        time.sleep(0.02)
    return got


def _router_for(keys: ControlKeys) -> PluginChannels:
    return PluginChannels(curve=CurveClient.from_env(keys.router_env()))


def test_router_reaches_the_plugin_only_with_the_clusters_keys() -> None:
    keys = ControlKeys.generate()
    # The worker side exactly as a launched worker configures it: secret from its environment,
    # the router's public key as its only client.
    spec = plugin_worker_spec(control_host="127.0.0.1", control_keys=keys, kv_events=False)
    config = json.loads(spec.command()[spec.command().index("--radix-eviction-policy-config") + 1])
    settings, _ = split_config(config, spec.env)
    channel = ControlChannel(
        "tcp://127.0.0.1:0",
        max_queued=100,
        on_malformed=lambda reason: None,
        on_dropped=lambda: None,
        curve_secret_key=settings.control_curve_secret_key,
        client_keys=settings.control_client_keys,
    )
    stranger = _router_for(ControlKeys.generate())  # a router of another cluster
    plain = PluginChannels(curve_from_env=False)  # no CurveZMQ at all
    router = _router_for(keys)
    try:
        assert channel.public_key == keys.worker_public
        for r in (stranger, plain):
            r.open("w", channel.endpoint)
            assert r.send("w", TtlChanged(workflow_id="intruder", ttl_s=1.0))
        assert _received(channel, timeout_s=1.5) == []
        router.open("w", channel.endpoint)
        assert router.send("w", TtlChanged(workflow_id="wf-1", ttl_s=2.0))
        got = _received(channel, timeout_s=30)
        assert [m.workflow_id for m in got] == ["wf-1"]  # type: ignore[attr-defined]
        assert _received(channel, timeout_s=0.5) == []  # and nothing from the others, ever
    finally:
        for r in (stranger, plain, router):
            r.close_all()
        channel.close()


def test_secrets_travel_in_the_environment_never_in_argv() -> None:
    keys = ControlKeys.generate()
    spec = plugin_worker_spec(control_host="10.0.0.7", control_keys=keys, kv_events=False)
    argv = " ".join(spec.command())
    assert keys.worker_secret not in argv and keys.router_secret not in argv
    assert keys.router_public in argv and "tcp://10.0.0.7:" in argv
    assert spec.env[CONTROL_CURVE_SECRET_ENV] == keys.worker_secret
    router = RouterSpec(port=1, env=keys.router_env())
    assert keys.router_secret not in " ".join(router.command())
    assert keys.worker_secret not in repr(keys) and keys.router_secret not in repr(keys)
    # A reachable control address with these keys passes the plugin's own check.
    config = json.loads(spec.command()[spec.command().index("--radix-eviction-policy-config") + 1])
    settings, _ = split_config(config, spec.env)
    assert settings.control_client_keys == (keys.router_public,)


def test_half_configured_router_keys_are_refused() -> None:
    keys = ControlKeys.generate()
    env = keys.router_env()
    assert CurveClient.from_env({}) is None
    with pytest.raises(InvalidSettings, match="SAGA_ROUTER_CURVE_SERVER_KEY"):
        CurveClient.from_env({k: v for k, v in env.items() if "SECRET" in k})
    with pytest.raises(InvalidSettings, match="40-character"):
        CurveClient(secret_key="short", server_public_key=keys.worker_public)
    assert zmq.curve_public(keys.router_secret.encode()).decode() == keys.router_public
