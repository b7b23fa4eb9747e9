"""Agent programs written in the SGLang DSL, shipped with saga-sgl, and a runner for them.

* ``coding``: SWE-bench-style ReAct coding agent (read_file, edit_code, run_test, ...).
* ``browser``: WebArena-style browser agent with a growing history.
* ``tot``: tree-of-thought agent using ``fork`` and ``select``.
* ``workload.run_agents``: N agents concurrently against an endpoint URL, seeded.

With the dummy-weight CPU model the text is meaningless: steps, tools and latencies come from the
workload model (``saga_sgl.sim.workloads``), never from parsing the output.
``python -m saga_sgl.agents --help`` runs them from the command line.
"""

from saga_sgl.agents.common import AgentScale
from saga_sgl.agents.workload import AGENT_KINDS, AgentResult, run_agents

__all__ = ["AGENT_KINDS", "AgentResult", "AgentScale", "run_agents"]
