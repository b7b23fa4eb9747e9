"""Ports for workers, KV events and control sockets: drawn outside the kernel's ephemeral range.

CI once lost a Ray test to "Address already in use" on a worker's control socket: the port had come
from bind(0), which the kernel also hands to outgoing connections."""

from __future__ import annotations

import socket

import pytest

from saga_sgl.local_workers import _ephemeral_floor, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    floor = _ephemeral_floor()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    if floor - 20000 >= 1000:
        assert all(20000 <= p < floor for p in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_taken_on_the_host_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The draw lands on a port another process listens on: the next draw is given instead."""
    import saga_sgl.local_workers as lw

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        held = busy.getsockname()[1]
        spare = free_port()
        lw._ports_given.discard(spare)
        draws = iter([held, spare])

        class Scripted:
            def randrange(self, lo: int, hi: int) -> int:
                return next(draws)

        monkeypatch.setattr(lw, "_PORT_FLOOR", 1)
        monkeypatch.setattr(lw, "_ephemeral_floor", lambda: 65536)
        monkeypatch.setattr(lw.random, "Random", Scripted)
        assert free_port() == spare


def test_a_port_for_another_machines_address_is_still_given() -> None:
    """A spec built here for a worker on another node names that node's address (not bindable here)."""
    port = free_port("192.0.2.123")  # TEST-NET-1: assigned to no interface of this machine
    assert 0 < port < 65536
