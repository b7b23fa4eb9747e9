"""Trace replay: Mooncake parsing, SWE-agent conversion, the prefix-cache replay and its rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from saga_sgl.policy import registry
from saga_sgl.policy.eviction.reuse_time import ReuseTimeEviction, ReuseTimeSettings
from saga_sgl.replay.driver import HintDriver
from saga_sgl.replay.prefix_replay import Mode, distinct_tokens, replay
from saga_sgl.replay.traces import (
    SweAgentSettings,
    TraceError,
    TraceRequest,
    load_mooncake,
    parse_row,
    swe_agent_requests,
)

SWE = Path("/work/shared/data/swe-agent-trajectories")


def _synthetic(seed: int = 0, sessions: int = 40) -> list[TraceRequest]:
    """Agent sessions (a code tool between 6 calls that grow the context) interleaved with one-shot
    requests of about the same size that never come back."""
    rng = random.Random(seed)
    out = []
    next_id = 1000
    for s in range(sessions):
        t = rng.uniform(0, 10.0 * sessions)
        ids = [s % 3]  # three shared "system prompts"
        agent = s % 2 == 1
        for k in range(6 if agent else 1):
            ids = ids + list(range(next_id, next_id + (2 if agent else 8)))
            next_id += 8
            out.append(
                TraceRequest(
                    timestamp_s=t,
                    input_length=512 * len(ids),
                    output_length=10,
                    hash_ids=tuple(ids),
                    session=f"s{s}",
                    step=k,
                    tool="code" if agent else "",
                )
            )
            t += rng.uniform(0.3, 20.0)
    out.sort(key=lambda r: r.timestamp_s)
    return out


def test_parse_row_rejects_bad_input_with_its_location(tmp_path: Path) -> None:
    good = {"timestamp": 5, "input_length": 600, "output_length": 3, "hash_ids": [1, 2]}
    r = parse_row(good, "x:1")
    assert r.timestamp_s == 0.005 and r.block_tokens(1) == 88 and r.session is None
    with pytest.raises(TraceError, match="x:2: 1 hash_ids for input_length 600"):
        parse_row({**good, "hash_ids": [1]}, "x:2")
    with pytest.raises(TraceError, match="timestamp"):
        parse_row({**good, "timestamp": -1}, "x:3")
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(TraceError, match=r"t.jsonl:2: not JSON"):
        load_mooncake(p)
    with pytest.raises(TraceError, match="no such trace"):
        load_mooncake(tmp_path / "missing.jsonl")


def test_belady_bounds_every_row_and_no_hints_is_exactly_lru() -> None:
    reqs = _synthetic()
    cap = distinct_tokens(reqs) // 10
    belady = replay(reqs, cap, ReuseTimeEviction(ReuseTimeSettings(ttl_protection=False)), Mode.ORACLE)
    lru = replay(reqs, cap, registry.create_eviction("lru"), Mode.PLAIN)
    fifo = replay(reqs, cap, registry.create_eviction("lru"), Mode.FIFO)
    saga_plain = replay(reqs, cap, registry.create_eviction("saga"), Mode.PLAIN)
    assert saga_plain == lru
    for name in ("wa_lru", "reuse_time", "reuse_density"):
        st = replay(reqs, cap, registry.create_eviction(name), Mode.HINTS, driver=HintDriver())
        assert st.total_tokens == lru.total_tokens
        assert st.recomputed_tokens >= belady.recomputed_tokens, name
    assert fifo.recomputed_tokens >= belady.recomputed_tokens
    assert belady.recomputed_tokens < lru.recomputed_tokens
    # With room for everything, every policy misses exactly the compulsory (first-use) blocks.
    full = distinct_tokens(reqs)
    assert (
        replay(
            reqs, full, registry.create_eviction("saga"), Mode.HINTS, driver=HintDriver()
        ).recomputed_tokens
        == full
    )


def test_reuse_density_with_hints_recomputes_less_than_lru_on_agent_sessions() -> None:
    """Half the sessions are one-shot; the driver learns that they do not come back."""
    reqs = _synthetic(sessions=120)
    cap = distinct_tokens(reqs) // 40
    lru = replay(reqs, cap, registry.create_eviction("lru"), Mode.PLAIN).recomputed_tokens
    saga = replay(
        reqs, cap, registry.create_eviction("saga"), Mode.HINTS, driver=HintDriver()
    ).recomputed_tokens
    assert saga < lru


def test_true_returns_bound_what_better_return_prediction_buys() -> None:
    """The ``true_return`` oracle gives each idle session its true next request: the reuse-time key
    then never misses more than with the predictions, Belady (which also knows every block's
    reader) stays the floor, and the mode refuses to run without the hint path."""
    reqs = _synthetic(sessions=120)
    cap = distinct_tokens(reqs) // 40
    belady = replay(reqs, cap, ReuseTimeEviction(ReuseTimeSettings(ttl_protection=False)), Mode.ORACLE)
    rt = ReuseTimeSettings(ttl_protection=False)
    predicted = replay(reqs, cap, ReuseTimeEviction(rt), Mode.HINTS, driver=HintDriver())
    true = replay(reqs, cap, ReuseTimeEviction(rt), Mode.TRUE_RETURN, driver=HintDriver())
    saga_true = replay(reqs, cap, registry.create_eviction("saga"), Mode.TRUE_RETURN, driver=HintDriver())
    assert belady.recomputed_tokens <= true.recomputed_tokens < predicted.recomputed_tokens
    assert belady.recomputed_tokens <= saga_true.recomputed_tokens
    with pytest.raises(ValueError, match="needs a HintDriver"):
        replay(reqs, cap, ReuseTimeEviction(rt), Mode.TRUE_RETURN)


@pytest.mark.skipif(not SWE.is_dir(), reason="SWE-agent trajectories not present")
def test_swe_agent_conversion_keeps_mooncake_invariants_and_shares_only_system_prompts() -> None:
    reqs = swe_agent_requests(SWE, SweAgentSettings(copies=2))
    assert reqs == sorted(reqs, key=lambda r: r.timestamp_s)
    for r in reqs:
        assert len(r.hash_ids) == -(-r.input_length // 512)
        assert r.agent_type == "swe-agent" and r.session is not None
    by_session: dict[str, list[TraceRequest]] = {}
    for r in reqs:
        by_session.setdefault(r.session or "", []).append(r)
    a, b = (v for k, v in sorted(by_session.items()) if k.startswith("demonstrations/ctf/crypto/katy.traj"))
    # Two copies of one trajectory share the system prompt's blocks but not the rest.
    assert a[-1].hash_ids[0] == b[-1].hash_ids[0]
    assert a[-1].hash_ids[-1] != b[-1].hash_ids[-1]
    # Within a session, each call extends the previous prompt (all but its partial last block).
    assert a[1].hash_ids[: len(a[0].hash_ids) - 1] == a[0].hash_ids[:-1]


@pytest.mark.skipif(not SWE.is_dir(), reason="SWE-agent trajectories not present")
def test_swe_agent_conversion_with_small_blocks() -> None:
    from saga_sgl.errors import InvalidSettings
    from saga_sgl.replay.traces import iter_rows

    small = swe_agent_requests(SWE, SweAgentSettings(copies=1, block_tokens=16))
    big = swe_agent_requests(SWE, SweAgentSettings(copies=1))
    assert [r.input_length for r in small] == [r.input_length for r in big]
    for r in small:
        assert r.block_size == 16 and len(r.hash_ids) == -(-r.input_length // 16)
        assert sum(r.block_tokens(j) for j in range(len(r.hash_ids))) == r.input_length
    assert distinct_tokens(small) < distinct_tokens(big)  # shorter dead tails: fewer distinct tokens
    with pytest.raises(TraceError, match="512-token blocks"):
        list(iter_rows(small))
    with pytest.raises(InvalidSettings, match="block_tokens"):
        SweAgentSettings(block_tokens=0)


def test_benchmark_choice_puts_never_worse_than_lru_first() -> None:
    from benchmarks.eviction_replay import choose

    def report(ratios: dict[str, list[float]]) -> dict[str, object]:
        caps = [
            {"rows": [{"label": name, "ratio_to_lru": v[k]} for name, v in ratios.items()]} for k in range(2)
        ]
        return {"traces": {"t": {"capacities": caps}}}

    # A safe policy wins over a lower mean that loses somewhere.
    assert choose(report({"wa_lru": [0.80, 1.01], "reuse_density": [0.95, 1.0]}))["pick"] == "reuse_density"
    # None safe: the smallest worst-case loss, even against a (slightly) lower mean.
    pick = choose(report({"wa_lru": [0.88, 1.006], "reuse_density": [0.90, 1.001]}))["pick"]
    assert pick == "reuse_density"
    # Worst cases within 0.1%: the mean decides.
    assert choose(report({"wa_lru": [0.80, 1.0015], "reuse_density": [0.90, 1.001]}))["pick"] == "wa_lru"


def _tracelab_row(session: str, index: int, start: str, total: int, prefix: int, tool: str) -> str:
    return json.dumps(
        {
            "session_id": session,
            "round_index": index,
            "provider": "claude",
            "input_tokens_total": total,
            "prefix_tokens": prefix,
            "output_tokens": 50,
            "timing_events": [{"event_type": "user_message", "timestamp": start}],
            "tools": [{"tool_name": tool}] if tool else [],
        }
    )


def test_tracelab_rounds_share_the_reported_cached_prefix_in_whole_blocks(tmp_path: Path) -> None:
    from saga_sgl.replay.traces import tracelab_requests

    path = tmp_path / "round_trace.jsonl"
    rows = [
        _tracelab_row("a", 0, "2026-06-01T05:40:20.000Z", 2000, 1500, "Bash"),
        _tracelab_row("b", 0, "2026-06-01T05:40:21.000Z", 1024, 0, ""),
        _tracelab_row("a", 1, "2026-06-01T05:40:30.000Z", 2600, 1900, "Write"),
        _tracelab_row("a", 2, "2026-06-01T05:40:40.000Z", 2700, 600, ""),
    ]
    path.write_text("\n".join(rows) + "\n")
    reqs = tracelab_requests(path)
    assert [r.session for r in reqs] == ["a", "b", "a", "a"]
    assert [r.timestamp_s for r in reqs] == [0.0, 1.0, 10.0, 20.0]
    a0, b0, a1, a2 = reqs
    assert a0.tool == "Bash" and a0.step == 0 and a0.agent_type == "claude"
    assert len(a1.hash_ids) == 6 and a1.hash_ids[:3] == a0.hash_ids[:3]  # min(1900, 2000) // 512 = 3
    assert a1.hash_ids[3] not in a0.hash_ids
    assert a2.hash_ids[:1] == a1.hash_ids[:1] and a2.hash_ids[1] not in a1.hash_ids  # 600 // 512 = 1
    assert not set(b0.hash_ids) & set(a0.hash_ids)
    path.write_text('{"session_id": "a"}\n')
    with pytest.raises(TraceError, match=r"round_trace\.jsonl:1"):
        tracelab_requests(path)


def test_the_drivers_re_keys_anchor_the_wait_as_the_plugin_does() -> None:
    """An idle session re-predicted by a re-key timer is conditional on its age then: the view's
    wait runs from the re-key (as the plugin anchors the scheduler's age re-keys at their arrival);
    the prediction at the request's end, and every one with ``anchor_rekeys=False``, from the last use."""
    from saga_sgl.replay.driver import DriverSettings

    req = TraceRequest(
        timestamp_s=0.0, input_length=512, output_length=1, hash_ids=(1,), session="a", tool="code"
    )
    for anchor in (True, False):
        driver = HintDriver(DriverSettings(anchor_rekeys=anchor))
        sess = driver.session_of(req)
        driver.on_arrival(sess, req, 0.0)
        driver.on_end(sess, req, 1.0)
        assert sess.predicted_at_s is None
        fired = driver.due_timers(10_000.0)
        assert fired and all(s is sess for _, s in fired)
        assert sess.predicted_at_s == (fired[-1][0] if anchor else None)
        driver.on_arrival(sess, req, 10_001.0)  # the call came: the prediction is known, not anchored
        assert sess.predicted_at_s is None
