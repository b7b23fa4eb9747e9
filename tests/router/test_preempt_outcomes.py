"""How the router carries out the scheduler's ``Preempt`` (no workers: a loopback aiohttp server
stands in for the worker's ``/abort_request``; the live test drives a real SGLang worker)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from saga_router.identity import Identity
from saga_router.router_config import RouterConfig
from saga_router.scheduling import Call
from saga_router.service import MAX_PREEMPTIONS_PER_CALL, Attempt, RouterService

from saga_sgl.policy.views import WorkerId, WorkflowId

from .conftest import start_app


def _call(call_id: str) -> Call:
    return Call(call_id=call_id, identity=Identity(workflow_id=call_id.split(":")[0], source="saga"),
                prompt_ids=[1, 2, 3], prompt_tokens=3, arrived_s=0.0)


def _outcomes(service: RouterService) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for m in service.metrics.preemptions.collect() for s in m.samples
            if s.name.endswith("_total")}


def test_each_preempt_is_applied_or_refused_for_a_stated_reason_and_the_abort_names_the_rid() -> None:
    async def main() -> None:
        aborted: list[str] = []

        async def abort(request: web.Request) -> web.Response:
            aborted.append(json.loads(await request.read())["rid"])
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/abort_request", abort)
        runner, url = await start_app(app)
        worker = WorkerId(url)
        service = RouterService(RouterConfig())
        try:
            bounded = _call("d:0")
            bounded.preemptions = MAX_PREEMPTIONS_PER_CALL
            for call, rid, stream in ((_call("a:0"), "a:0", False), (_call("b:0"), "b:0", True),
                                      (_call("c:0"), None, False), (bounded, "d:0", False)):
                service._attempts[call.call_id] = Attempt(call=call, worker=worker, rid=rid, stream=stream)
            why = "test"
            assert service.preempt("a:0", worker, WorkflowId("u"), why) == "applied"
            assert service.preempt("a:0", worker, WorkflowId("u"), why) == "refused_pending"
            assert service.preempt("b:0", worker, WorkflowId("u"), why) == "refused_streaming"
            assert service.preempt("c:0", worker, WorkflowId("u"), why) == "refused_no_rid"
            assert service.preempt("d:0", worker, WorkflowId("u"), why) == "refused_bound"
            assert service.preempt("gone:0", worker, WorkflowId("u"), why) == "gone"
            assert service.preempt("a:0", WorkerId("http://elsewhere"), WorkflowId("u"), why) == "gone"
            for _ in range(200):
                if aborted:
                    break
                await asyncio.sleep(0.01)
            assert aborted == ["a:0"]  # one abort, with the rid the router set
            assert service._attempts["a:0"].beneficiary == "u"
            assert _outcomes(service) == {"applied": 1, "refused_pending": 1, "refused_streaming": 1,
                                          "refused_no_rid": 1, "refused_bound": 1, "gone": 2}
        finally:
            await service.upstream.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 30))
