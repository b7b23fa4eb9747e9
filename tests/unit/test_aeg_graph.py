"""AEG model and builders: Figure 3, validation, hints."""

from __future__ import annotations

import pytest

from saga_sgl.aeg.build import HintBuildSettings, from_submitted, from_tool_hints, paper_figure3
from saga_sgl.aeg.graph import AEG, Edge, EdgeKind, Step
from saga_sgl.errors import InvalidGraph
from saga_sgl.policy.views import StepId, ToolType

V = [StepId(f"v{i}") for i in range(5)]


def test_figure3_structure() -> None:
    g = paper_figure3()
    assert len(g) == 5
    assert g.root == V[0]
    assert [g.step(v).tool for v in V] == ["file", "code", "code", "code", None]
    assert g.step(V[4]).is_terminal
    forward = {(e.src, e.dst): e.prob for e in g.edges if e.kind is EdgeKind.NEXT}
    assert forward == {(V[0], V[1]): 0.95, (V[1], V[2]): 0.85, (V[2], V[3]): 0.70, (V[3], V[4]): 0.60}
    retries = sorted(e.prob for e in g.edges if e.kind is EdgeKind.RETRY)
    assert retries == [0.30, 0.40]
    # Out-edges of v2 and v3 sum to 1 (that is why the retries sit there); v0, v1 may terminate.
    assert g.termination_prob(V[2]) == pytest.approx(0.0)
    assert g.termination_prob(V[3]) == pytest.approx(0.0)
    assert g.termination_prob(V[0]) == pytest.approx(0.05)
    assert g.termination_prob(V[1]) == pytest.approx(0.15)
    assert g.termination_prob(V[4]) == 1.0
    # 12K tokens across the active chain v0-v3.
    assert sum(g.step(v).prompt_tokens_est for v in V[:4]) == 12_000


def test_most_likely_path_follows_forward_edges() -> None:
    g = paper_figure3()
    assert g.most_likely_path(V[0], max_depth=64) == V[1:]
    assert g.most_likely_path(V[0], max_depth=2) == V[1:3]
    assert g.most_likely_successor(V[4]) is None


@pytest.mark.parametrize(
    ("steps", "edges", "match"),
    [
        ([], [], "at least one step"),
        ([Step(step_id=V[0]), Step(step_id=V[0])], [], "duplicate step"),
        ([Step(step_id=V[0])], [Edge(src=V[0], dst=V[1], prob=0.5)], "unknown step"),
        (
            [Step(step_id=V[0]), Step(step_id=V[1]), Step(step_id=V[2])],
            [Edge(src=V[0], dst=V[1], prob=0.7), Edge(src=V[0], dst=V[2], prob=0.4)],
            "sum to",
        ),
        (
            [Step(step_id=V[0], is_terminal=True), Step(step_id=V[1])],
            [Edge(src=V[0], dst=V[1], prob=0.5)],
            "terminal step",
        ),
        (
            [Step(step_id=V[0]), Step(step_id=V[1])],
            [Edge(src=V[0], dst=V[1], prob=0.5), Edge(src=V[0], dst=V[1], prob=0.2)],
            "duplicate edge",
        ),
    ],
    ids=["empty", "dup-step", "dangling", "prob-sum", "terminal-out", "dup-edge"],
)
def test_validation_names_the_problem(steps: list[Step], edges: list[Edge], match: str) -> None:
    with pytest.raises(InvalidGraph, match=match):
        AEG.build(steps, edges)


def test_edge_and_step_validation() -> None:
    with pytest.raises(InvalidGraph, match="not in"):
        Edge(src=V[0], dst=V[1], prob=1.5)
    with pytest.raises(InvalidGraph, match="shared_prefix_tokens"):
        Edge(src=V[0], dst=V[1], prob=0.5, kind=EdgeKind.BRANCH)
    with pytest.raises(InvalidGraph, match="output_tokens_est"):
        Step(step_id=V[0], output_tokens_est=-1)
    with pytest.raises(InvalidGraph, match="root"):
        AEG.build([Step(step_id=V[0])], [], root=V[3])
    with pytest.raises(InvalidGraph, match="no step"):
        paper_figure3().step(StepId("nope"))


def test_hints_build_react_chain_with_p_term() -> None:
    g = from_tool_hints(["read_file", "edit_code", "run_test", "finish", "ignored"])
    assert len(g) == 4
    assert g.source == "hints"
    assert [g.step(StepId(f"v{i}")).tool for i in range(4)] == ["file", "code", "code", None]
    assert g.step(StepId("v3")).is_terminal
    assert all(e.prob == pytest.approx(0.95) for e in g.edges)
    g2 = from_tool_hints(["shell", "shell"], settings=HintBuildSettings(termination_prob=0.2))
    assert g2.step(StepId("v1")).is_terminal
    assert g2.edges[0].prob == pytest.approx(0.8)
    with pytest.raises(ValueError):
        from_tool_hints([])


def test_submitted_tree_of_thought_graph() -> None:
    steps = [Step(step_id=V[0], tool=ToolType("web")), Step(step_id=V[1]), Step(step_id=V[2])]
    edges = [
        Edge(src=V[0], dst=V[1], prob=0.6, kind=EdgeKind.BRANCH, shared_prefix_tokens=500),
        Edge(src=V[0], dst=V[2], prob=0.4, kind=EdgeKind.BRANCH, shared_prefix_tokens=800),
    ]
    g = from_submitted(steps, edges)
    assert [e.dst for e in g.successors(V[0])] == [V[1], V[2]]  # highest probability first
    assert g.source == "explicit"
