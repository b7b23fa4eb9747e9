"""A stolen workflow's next call waits for the router's pre-fill of it on the thief (no workers)."""

from __future__ import annotations

import asyncio

from saga_router.router_config import RouterConfig
from saga_router.service import RouterService

from saga_sgl.scheduler.ports import WorkerId, WorkflowId


def test_a_call_waits_for_its_workflows_prefill_on_that_worker_only() -> None:
    async def scenario() -> list[str]:
        service = RouterService(RouterConfig())
        order: list[str] = []
        release = asyncio.Event()

        async def slow_prefill(worker: WorkerId, workflow_id: WorkflowId, token_ids: list[int]) -> None:
            await release.wait()
            order.append("prefill done")

        service._prefill = slow_prefill  # type: ignore[method-assign]
        service.prefill(WorkerId("http://thief"), WorkflowId("wf"), [1, 2, 3])

        async def call(worker: str, name: str) -> None:
            await service._await_prefill("wf", worker)
            order.append(name)

        on_victim = asyncio.ensure_future(call("http://victim", "call on victim"))
        on_thief = asyncio.ensure_future(call("http://thief", "call on thief"))
        await asyncio.sleep(0.05)
        assert not on_thief.done()  # held behind the pre-fill
        release.set()
        await asyncio.gather(on_victim, on_thief)
        assert not service._prefills  # forgotten once done
        await service._await_prefill("wf", "http://thief")  # nothing pending: no wait
        return order

    assert asyncio.run(scenario()) == ["call on victim", "prefill done", "call on thief"]
