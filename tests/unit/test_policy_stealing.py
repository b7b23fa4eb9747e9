"""Work stealing: triggers, the AND guard, victim and session choice, limits, no repeat steals."""

from __future__ import annotations

import random

import pytest
from factories import make_worker, make_workflow
from hypothesis import given, settings
from hypothesis import strategies as st

from saga_sgl.errors import InvalidSettings
from saga_sgl.policy.decisions import StealTrigger
from saga_sgl.policy.stealing import NoStealing, StealSettings, WorkStealing
from saga_sgl.policy.views import WorkerView, WorkflowState, WorkflowView

NOW = 10.0


def _idle(wid: str, since: float = NOW - 0.2) -> WorkerView:
    return make_worker(wid, idle_since_s=since)


def _busy(wid: str, running: int = 90, waiting: int = 10) -> WorkerView:
    return make_worker(wid, running=running, waiting=waiting, kv_used_tokens=80_000)


def test_idle_thief_steals_from_overloaded_victim() -> None:
    wf = make_workflow("wf1", worker_id="hot", state=WorkflowState.QUEUED, cached_prefix_tokens=4000)
    steals = WorkStealing().plan([_idle("cold"), _busy("hot")], [wf], NOW)
    assert len(steals) == 1
    s = steals[0]
    assert (s.workflow_id, s.victim, s.thief, s.rebuild_tokens) == ("wf1", "hot", "cold", 4000)
    assert s.trigger == StealTrigger.IDLE_AND_RATIO


def test_idle_threshold_is_100_ms() -> None:
    wf = make_workflow("wf1", worker_id="hot")
    assert WorkStealing().plan([_idle("cold", since=0.001), _busy("hot")], [wf], 0.1) == []
    assert len(WorkStealing().plan([_idle("cold", since=0.0), _busy("hot")], [wf], 0.1)) == 1


def test_and_guard_needs_an_idle_thief_but_or_does_not() -> None:
    wf = make_workflow("wf1", worker_id="hot")
    not_idle = make_worker("cold", running=5)  # light but its queue is not empty-for-100ms
    assert WorkStealing().plan([not_idle, _busy("hot")], [wf], NOW) == []
    steals = WorkStealing(StealSettings(guard="or")).plan([not_idle, _busy("hot")], [wf], NOW)
    assert len(steals) == 1 and steals[0].trigger == StealTrigger.LOAD_RATIO


def test_no_steal_without_excess_load() -> None:
    # The thief is idle but itself 30% loaded: the victim's 0.45 is not above 2.0 x 0.3.
    thief = make_worker("cold", running=30, kv_used_tokens=30_000, idle_since_s=0.0)
    victim = make_worker("hot", running=45, kv_used_tokens=45_000)
    assert WorkStealing().plan([thief, victim], [make_workflow("wf1", worker_id="hot")], NOW) == []


def test_never_steals_running_or_already_stolen_workflows() -> None:
    wfs = [
        make_workflow("running", worker_id="hot", state=WorkflowState.RUNNING),
        make_workflow("stolen", worker_id="hot", times_stolen=1),
        make_workflow("done", worker_id="hot", state=WorkflowState.FINISHED),
    ]
    assert WorkStealing().plan([_idle("cold"), _busy("hot")], wfs, NOW) == []


def test_cost_aware_session_choice() -> None:
    ws = WorkStealing()
    hidden = make_workflow(
        "gap-long",
        worker_id="hot",
        state=WorkflowState.TOOL_GAP,
        cached_prefix_tokens=45_000,
        tool_gap_ends_at_s=NOW + 5.0,
    )  # 1 s rebuild hidden
    short = make_workflow(
        "gap-short",
        worker_id="hot",
        state=WorkflowState.TOOL_GAP,
        cached_prefix_tokens=45_000,
        tool_gap_ends_at_s=NOW + 0.1,
    )
    queued_big = make_workflow("queued-big", worker_id="hot", cached_prefix_tokens=20_000, admitted_at_s=1.0)
    queued_small = make_workflow(
        "queued-small", worker_id="hot", cached_prefix_tokens=2_000, admitted_at_s=5.0
    )
    queued_small_old = make_workflow(
        "queued-small-old", worker_id="hot", cached_prefix_tokens=2_000, admitted_at_s=2.0
    )
    order = sorted(
        [short, queued_big, queued_small, hidden, queued_small_old], key=lambda w: ws.rank_session(w, NOW)
    )
    assert [w.workflow_id for w in order] == [
        "gap-long",
        "queued-small-old",
        "queued-small",
        "queued-big",
        "gap-short",
    ]
    # A long queue on the victim (2.4 s expected wait) pays for the 1 s rebuild of the long gap...
    steals = ws.plan([_idle("cold"), _busy("hot", running=50, waiting=60)], order[::-1], NOW)
    assert steals[0].workflow_id == "gap-long"
    # ...a short one (0.22 s) only for a cheap move; the short gap is never stolen.
    steals = ws.plan([_idle("cold"), _busy("hot")], order[::-1], NOW)
    assert steals[0].workflow_id == "queued-small-old"


def test_at_most_k_steals_per_epoch_and_one_per_thief() -> None:
    thieves = [_idle(f"idle{i}") for i in range(6)]
    victims = [_busy("hot")]
    wfs = [make_workflow(f"wf{i}", worker_id="hot") for i in range(10)]
    steals = WorkStealing().plan(thieves + victims, wfs, NOW)
    assert len(steals) == 4
    assert len({s.thief for s in steals}) == 4
    assert len({s.workflow_id for s in steals}) == 4
    assert WorkStealing(StealSettings(max_steals_per_epoch=0)).plan(thieves + victims, wfs, NOW) == []


def test_victim_choice_random_or_most_loaded() -> None:
    workers = [_idle("cold"), _busy("hot1", running=70), _busy("hot2", running=95)]
    wfs = [make_workflow("a", worker_id="hot1"), make_workflow("b", worker_id="hot2")]
    ml = WorkStealing(StealSettings(victim_choice="most_loaded")).plan(workers, wfs, NOW)
    assert ml[0].victim == "hot2"
    picked = {WorkStealing(rng=random.Random(s)).plan(workers, wfs, NOW)[0].victim for s in range(30)}
    assert picked == {"hot1", "hot2"}


def test_revalidate_rejects_stale_steals() -> None:
    ws = WorkStealing()
    wf = make_workflow("wf1", worker_id="hot")
    workers = [_idle("cold"), _busy("hot")]
    steal = ws.plan(workers, [wf], NOW)[0]
    assert ws.revalidate(steal, workers, [wf], NOW)
    drained = [_idle("cold"), make_worker("hot", running=2)]
    assert not ws.revalidate(steal, drained, [wf], NOW)
    moved_on = make_workflow("wf1", worker_id="hot", state=WorkflowState.RUNNING)
    assert not ws.revalidate(steal, workers, [moved_on], NOW)
    assert not ws.revalidate(steal, workers[1:], [wf], NOW)


def test_baseline_never_steals_and_settings_validate() -> None:
    assert NoStealing().plan([_idle("cold"), _busy("hot")], [make_workflow(worker_id="hot")], NOW) == []
    with pytest.raises(InvalidSettings, match="guard"):
        StealSettings(guard="xor")
    with pytest.raises(InvalidSettings, match="max_load_ratio"):
        StealSettings(max_load_ratio=0.5)


worker_st = st.builds(
    lambda i, r, w, idle: make_worker(
        f"w{i}", running=r, waiting=w, kv_used_tokens=r * 1000, idle_since_s=0.0 if idle else None
    ),
    st.integers(0, 7),
    st.integers(0, 100),
    st.integers(0, 50),
    st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(
    workers=st.lists(worker_st, min_size=2, max_size=8, unique_by=lambda w: w.worker_id),
    placements=st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(list(WorkflowState)), st.integers(0, 1)), max_size=40
    ),
    epochs=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_steals_never_repeat_a_session(
    workers: list[WorkerView], placements: list[tuple[int, WorkflowState, int]], epochs: int, seed: int
) -> None:
    wfs: list[WorkflowView] = [
        make_workflow(f"wf{k}", worker_id=f"w{w}", state=state, times_stolen=stolen)
        for k, (w, state, stolen) in enumerate(placements)
    ]
    ws = WorkStealing(StealSettings(guard="or"), rng=random.Random(seed))
    stolen: set[str] = {wf.workflow_id for wf in wfs if wf.times_stolen}
    for _ in range(epochs):
        steals = ws.plan(workers, wfs, NOW)
        assert len(steals) <= 4
        ids = [s.workflow_id for s in steals]
        assert len(ids) == len(set(ids))
        assert not set(ids) & stolen
        stolen |= set(ids)
        # The host applies the steals: re-binds, marks them stolen.
        by_id = {s.workflow_id: s for s in steals}
        wfs = [
            make_workflow(
                wf.workflow_id, worker_id=by_id[wf.workflow_id].thief, state=wf.state, times_stolen=1
            )
            if wf.workflow_id in by_id
            else wf
            for wf in wfs
        ]
    # Same inputs and seed -> same plan.
    a = WorkStealing(StealSettings(guard="or"), rng=random.Random(seed)).plan(workers, wfs, NOW)
    b = WorkStealing(StealSettings(guard="or"), rng=random.Random(seed)).plan(workers, wfs, NOW)
    assert a == b
