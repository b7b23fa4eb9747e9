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


def test_a_thief_is_not_idle_while_the_router_prefills_on_it() -> None:
    """Live run: three steals landed on one thief within 5 s, each while it still re-built the last
    (10 s at 353 tokens/s), because a pre-fill with no waiting queue looked idle."""

    async def scenario() -> None:
        service = RouterService(RouterConfig())
        record = service.registry.add("http://thief")
        record.idle_since_s = service.idle.observe(record.worker_id, False, service.clock.now_s())
        assert record.idle_since_s is not None
        release = asyncio.Event()

        async def slow_prefill(worker: WorkerId, workflow_id: WorkflowId, token_ids: list[int]) -> None:
            await release.wait()

        service._prefill = slow_prefill  # type: ignore[method-assign]
        service.prefill(WorkerId("http://thief"), WorkflowId("wf"), [1, 2, 3])
        assert record.prefilling == 1 and record.view().idle_since_s is None  # busy at once

        async def loads(base: str, path: str) -> dict[str, object]:  # an empty queue, as SGLang reports
            return {"loads": [{"num_running_reqs": 1, "num_waiting_reqs": 0, "max_total_num_tokens": 100}]}

        service._get_json = loads  # type: ignore[method-assign,assignment]
        await service._poll_one(record)
        assert record.idle_since_s is None  # the pre-fill still runs: not idle
        release.set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert record.prefilling == 0
        await service._poll_one(record)
        assert record.idle_since_s is not None  # done: idle again

    asyncio.run(scenario())
