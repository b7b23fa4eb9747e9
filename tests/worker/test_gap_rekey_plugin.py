"""The plugin carries out the workflow scheduler's age re-keys (``SchedulerSettings.gap_rekey_ages_s``)
as it does any hint update: the real SGLang cache, fed the scheduler's dispatch hints and its
``ToolStarted`` control messages (at the tool start and at each re-key), evicts in the order the
policy core gives the scheduler's hint records (the simulator's views), the wait anchored where the
re-key arrived. The same scenario's ranking is tested on the scheduler alone in
tests/scheduler/test_gap_rekeys.py."""

from __future__ import annotations

import dataclasses
from array import array
from typing import Any

import pytest
from control_push import push_control, wait_applied

from saga_sgl.clock import ManualClock
from saga_sgl.policy.views import WorkflowId
from saga_sgl.protocol import encode_control
from saga_sgl.scheduler import Control, Dispatch
from tests.scheduler.test_gap_rekeys import GAPS, _sched, _view, drive_gaps

pytestmark = pytest.mark.sglang

CTX = 10


def _tokens(wf: str) -> list[int]:
    base = 100 + 50 * [g[1] for g in GAPS].index(wf)
    return list(range(base, base + CTX))


def _leaf(h: Any, tokens: list[int]) -> Any:
    """The radix node that ends ``tokens`` (each context here is one node under the root)."""
    from sglang.srt.mem_cache.radix_cache import RadixKey

    key = RadixKey(array("q", tokens))
    node = h.root.children.get(key.child_key(1))
    assert node is not None and len(node.key) == len(tokens)
    return node


@pytest.mark.parametrize("kind", ["unified", "legacy"])
def test_the_plugin_re_keys_a_gap_at_the_schedulers_age_updates(make_harness: Any, kind: str) -> None:
    from saga_sgl.worker.settings import WorkerSettings

    s, clock = _sched()
    # TTL tier off: the keys alone decide (the fresh gap's TTL would protect it either way).
    h = make_harness(kind, "saga", kv_size=64, start_s=clock.now_s(), ttl_protection=False)
    h.runtime.configure(WorkerSettings(control_address="tcp://127.0.0.1:0"))
    plugin_clock: ManualClock = h.clock
    applied = 0
    rekey_times: dict[str, float] = {}

    def deliver(t: float, action: object) -> None:
        nonlocal applied
        plugin_clock.advance(t - plugin_clock.now_s())
        if isinstance(action, Dispatch):
            h.run(_tokens(action.workflow_id), hint=action.hint)
        elif isinstance(action, Control):
            push_control(h.runtime.control.endpoint, encode_control(action.message))
            applied += 1
            wait_applied(h.runtime, applied)
            rekey_times[action.message.workflow_id] = t

    drive_gaps(s, clock, deliver)
    plugin_clock.advance(clock.now_s() - plugin_clock.now_s())
    assert applied > len(GAPS)  # tool starts, and age re-keys on top
    for _, wf, _ in GAPS:
        record, hints = h.runtime.table.get(wf), s.cache_hints(WorkflowId(wf))
        assert record is not None and hints is not None
        assert record.predicted_at_s == pytest.approx(rekey_times[wf])  # anchored where it arrived
        assert record.next_use_at_s == pytest.approx(hints.next_use_at_s)
    # The plugin's entry view of each context is the simulator's view of the scheduler's record
    # (the wait anchored at the re-key), and the policy keys them alike.
    strategy = h.cache.tree_core.eviction_strategy if kind == "unified" else h.cache.eviction_strategy
    now = plugin_clock.now_s()
    for i, (_, wf, _) in enumerate(GAPS):
        view = strategy.entry_view(_leaf(h, _tokens(wf)))
        assert view.predicted_at_s == pytest.approx(rekey_times[wf])
        sim_view = dataclasses.replace(
            _view(s.cache_hints(WorkflowId(wf)), i, view.last_access_s),
            num_tokens=view.num_tokens,
            depth_tokens=view.depth_tokens,
        )
        assert strategy.policy.key(view, now, 1.0).primary == pytest.approx(
            strategy.policy.key(sim_view, now, 1.0).primary
        )
    order = h.eviction_order({wf: _tokens(wf) for _, wf, _ in GAPS})
    assert order == ["old", "short", "fresh"]  # tool-start keys alone: old, fresh, short
