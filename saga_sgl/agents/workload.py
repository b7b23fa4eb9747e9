"""Run N shipped agents concurrently against an endpoint: the live workload of the launcher and the
live benchmark.

Each agent is one workflow (``saga.workflow``) of a seeded kind (coding, browser, tree-of-thought)
and tenant, started at a seeded Poisson arrival time; ``concurrency`` threads run them. Everything
about an agent's shape comes from ``seed`` and its index, so two runs with the same seed send the
same programs (common random numbers across configurations).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from saga_sgl.agents.browser import browser_agent, plan_browser_task
from saga_sgl.agents.coding import coding_agent, plan_coding_task
from saga_sgl.agents.common import AgentScale
from saga_sgl.agents.tot import plan_tot_task, tot_agent
from saga_sgl.frontend import SagaEndpoint, workflow

log = logging.getLogger(__name__)

AGENT_KINDS: dict[str, tuple[Any, Callable[[int, AgentScale], dict[str, Any]]]] = {
    "coding": (coding_agent, plan_coding_task),
    "browser": (browser_agent, plan_browser_task),
    "tot": (tot_agent, plan_tot_task),
}
"""Agent kind -> (SGLang program, planner drawing its shape from the workload model)."""


@dataclass(frozen=True, slots=True)
class AgentResult:
    workflow_id: str
    kind: str
    tenant_id: str
    arrival_s: float
    started_s: float
    duration_s: float
    calls: int
    prompt_tokens: int
    cached_tokens: int
    error: str = ""


def run_agents(
    url: str,
    num_agents: int,
    *,
    seed: int = 0,
    kinds: Sequence[str] = ("coding", "browser", "tot"),
    tenants: int = 2,
    concurrency: int = 4,
    arrival_rate_per_s: float | None = None,
    scale: AgentScale | None = None,
    backend: SagaEndpoint | None = None,
    progress: bool = True,
) -> list[AgentResult]:
    """Run ``num_agents`` agents against ``url`` (a worker, sglang-router or the saga router).

    ``arrival_rate_per_s``: Poisson arrivals (None = all at once, limited by ``concurrency``).
    Returns one result per agent, in agent order; an agent that fails is reported, not raised.
    """
    if num_agents < 1 or concurrency < 1 or tenants < 1:
        raise ValueError("num_agents, concurrency and tenants must be >= 1")
    unknown = [k for k in kinds if k not in AGENT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown agent kind(s) {unknown}; known: {sorted(AGENT_KINDS)}")
    scale = scale or AgentScale()
    backend = backend or SagaEndpoint(url)
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(kinds), size=num_agents)
    tenant_ids = rng.integers(tenants, size=num_agents)
    gaps = (
        rng.exponential(1.0 / arrival_rate_per_s, size=num_agents)
        if arrival_rate_per_s
        else np.zeros(num_agents)
    )
    arrivals = np.cumsum(gaps) - gaps[0]
    t0 = time.monotonic()
    lock = threading.Lock()

    def one(i: int) -> AgentResult:
        kind = kinds[int(picks[i])]
        program, planner = AGENT_KINDS[kind]
        plan = planner(seed * 1_000_003 + i, scale)
        wid = f"{kind}-s{seed}-{i}"
        tenant = f"tenant-{int(tenant_ids[i])}"
        wait = t0 + float(arrivals[i]) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        started = time.monotonic()
        error = ""
        try:
            with workflow(wid, agent_type=kind, tenant_id=tenant):
                state = program.run(task_id=wid, plan=plan, scale=scale, backend=backend)
                err = state.error()
                error = repr(err) if err is not None else ""
        except Exception as exc:  # an agent's failure is a result, not the end of the run
            error = repr(exc)
        duration = time.monotonic() - started
        with lock:
            record = backend.recorded(wid)
            nodes = list(record.nodes.values()) if record is not None else []
        if error:
            log.warning("agent %s failed: %s", wid, error)
        return AgentResult(
            workflow_id=wid,
            kind=kind,
            tenant_id=tenant,
            arrival_s=float(arrivals[i]),
            started_s=started - t0,
            duration_s=duration,
            calls=len(nodes),
            prompt_tokens=sum(n.prompt_tokens for n in nodes),
            cached_tokens=sum(n.cached_tokens for n in nodes),
            error=error,
        )

    results: list[AgentResult | None] = [None] * num_agents
    with ThreadPoolExecutor(concurrency, thread_name_prefix="saga-agent") as pool:
        futures = {pool.submit(one, i): i for i in range(num_agents)}
        for fut in tqdm(as_completed(futures), total=num_agents, disable=not progress, desc="agents"):
            results[futures[fut]] = fut.result()
    return [r for r in results if r is not None]
