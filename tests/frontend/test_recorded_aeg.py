"""Recorded program graphs -> AEG (the rule for parallel fork branches) and bounded retention."""

from __future__ import annotations

import pytest

from saga_sgl.aeg import Edge, EdgeKind, Step, reuse_probability, tool_type_of
from saga_sgl.aeg.build import RecordedCall, RecordedLink, from_recorded
from saga_sgl.aeg.graph import AEG
from saga_sgl.errors import InvalidGraph
from saga_sgl.frontend.recorder import NodeRecord, Recorder
from saga_sgl.policy.views import StepId
from saga_sgl.protocol import AegSubmission, SubmittedEdge, SubmittedNode, aeg_from_submission


def _tree_of_thought(n: int, prefix: int = 400) -> tuple[list[RecordedCall], list[RecordedLink]]:
    """r0/0 -> prefill r0/1 -> n branches (gen) -> join -> r0/2 (terminal)."""
    calls = [
        RecordedCall(
            node_id="r0/0", prompt_tokens=300, output_tokens=60, tool="search", observation_tokens=40
        ),
        RecordedCall(node_id="r0/1", prompt_tokens=prefix),
    ]
    links = [RecordedLink(src="r0/0", dst="r0/1")]
    for i in range(n):
        b = f"r0.f0.{i}/0"
        calls.append(RecordedCall(node_id=b, prompt_tokens=prefix + 10, output_tokens=30))
        links.append(RecordedLink(src="r0/1", dst=b, kind="branch", shared_prefix_tokens=prefix))
        links.append(RecordedLink(src=b, dst="r0/2", kind="join", shared_prefix_tokens=prefix))
    calls.append(RecordedCall(node_id="r0/2", prompt_tokens=prefix + 20, output_tokens=10, terminal=True))
    return calls, links


def test_parallel_branches_with_probability_one_each_are_not_an_aeg() -> None:
    # Why a rule is needed at all: three certain branches sum to 3.
    steps = [Step(step_id=StepId(x)) for x in ("p", "a", "b", "c")]
    edges = [
        Edge(src=StepId("p"), dst=StepId(x), prob=1.0, kind=EdgeKind.BRANCH, shared_prefix_tokens=10)
        for x in ("a", "b", "c")
    ]
    with pytest.raises(InvalidGraph, match="sum"):
        AEG.build(steps, edges)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_fork_branches_share_the_continuation_probability(n: int) -> None:
    calls, links = _tree_of_thought(n)
    aeg = from_recorded(calls, links)
    fork = aeg.successors(StepId("r0/1"))
    assert len(fork) == n and all(e.kind is EdgeKind.BRANCH for e in fork)
    assert sum(e.prob for e in fork) == pytest.approx(0.95)  # 1 - p_term, the hint-chain default
    # Every branch starts with the whole fork context: P_reuse of the fork step is 1 - p_term.
    assert reuse_probability(aeg, StepId("r0/1"), context_tokens=400) == pytest.approx(0.95)
    # A join edge carries only the fork prefix: the branch's own tokens are not reused by the join.
    (join,) = aeg.successors(StepId("r0.f0.0/0"))
    assert join.kind is EdgeKind.BRANCH and join.shared_prefix_tokens == 400
    assert reuse_probability(aeg, StepId("r0.f0.0/0"), context_tokens=440) == pytest.approx(0.95 * 400 / 440)
    assert aeg.step(StepId("r0/2")).is_terminal
    # New prompt tokens: the branch inherits the prefix, the chain step its predecessor's context.
    assert aeg.step(StepId("r0.f0.0/0")).prompt_tokens_est == 10
    assert aeg.step(StepId("r0/1")).prompt_tokens_est == 400 - 360
    assert aeg.step(StepId("r0/0")).tool == tool_type_of("search")
    assert aeg.step(StepId("r0/1")).tool is None


def test_recorded_links_are_checked() -> None:
    calls, _ = _tree_of_thought(1)
    with pytest.raises(ValueError, match="unknown call"):
        from_recorded(calls, [RecordedLink(src="r0/0", dst="nowhere")])
    with pytest.raises(ValueError, match="kind"):
        RecordedLink(src="a", dst="b", kind="sideways")
    with pytest.raises(ValueError, match="at least one"):
        from_recorded([], [])


def test_submission_round_trips_into_an_aeg() -> None:
    calls, links = _tree_of_thought(3)
    sub = AegSubmission(
        workflow_id="w",
        agent_type="tot",
        complete=True,
        nodes=[
            SubmittedNode(
                node_id=c.node_id,
                prompt_tokens=c.prompt_tokens,
                output_tokens=c.output_tokens,
                tool=c.tool,
                terminal=c.terminal,
            )
            for c in calls
        ],
        edges=[
            SubmittedEdge(src=x.src, dst=x.dst, kind=x.kind, shared_prefix_tokens=x.shared_prefix_tokens)
            for x in links
        ],
    )
    aeg = aeg_from_submission(sub)
    assert len(aeg) == 6 and aeg.agent_type == "tot" and aeg.root == "r0/0"


def test_recorder_keeps_a_bounded_number_of_finished_workflows() -> None:
    rec = Recorder(max_finished=3, max_nodes=2)
    for i in range(5):
        w = rec.open(f"w{i}", explicit=False)
        for k in range(3):
            rec.add_node(w, NodeRecord(node_id=f"r0/{k}", step=k, call="gen", parents=[]))
        assert len(w.nodes) == 2
        assert rec.finish(w, ok=True)
        assert not rec.finish(w, ok=True)  # idempotent
    assert rec.finished_ids() == ["w2", "w3", "w4"]
    assert rec.dropped_finished == 2 and rec.dropped_nodes == 5
    assert rec.get("w0") is None and rec.get("w4") is not None and rec.live_ids() == []
    with pytest.raises(ValueError):
        Recorder(max_finished=-1)
