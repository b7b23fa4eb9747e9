"""The saga plugin's residence time on ``/v1/loads`` (``protocol.LOADS_RESIDENCE_FIELD``) reaches the
scheduler's worker view; answers without it (stock SGLang, older plugins) still parse, as unknown.

The service test's worker is the router's NAMED FAKE backend (``saga_router.fake_backend``) with its
``/v1/loads`` answer replaced; the plugin side is tested on real SGLang caches in
tests/worker/test_loads_residence.py.
"""

from __future__ import annotations

import asyncio
import copy
import math
from typing import Any

import pytest
from aiohttp import web
from saga_router.fake_backend import LOADS, build_app
from saga_router.router_config import RouterConfig
from saga_router.service import RouterService
from saga_router.workers import WorkerLoad, WorkerRecord

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import LOADS_RESIDENCE_FIELD, decode_loads_residence

from .conftest import start_app


def _loads(*residences: Any) -> dict[str, Any]:
    """A /v1/loads answer with one rank per residence value (None: the field absent)."""
    rank = LOADS["loads"][0]
    ranks = []
    for i, value in enumerate(residences):
        r = dict(copy.deepcopy(rank), dp_rank=i)
        if value is not None:
            r[LOADS_RESIDENCE_FIELD] = value
        ranks.append(r)
    return {"loads": ranks}


def test_loads_without_the_field_parse_as_before_with_the_residence_unknown() -> None:
    load = WorkerLoad.from_loads(_loads(None), now_s=5.0)
    assert load.residence_s == math.inf
    assert (load.num_running_reqs, load.max_total_num_tokens, load.max_running_requests) == (0, 4096, 256)
    record = WorkerRecord(url="http://w0")
    record.observe_load(load)
    assert record.view().residence_s == math.inf


def test_loads_with_the_field_give_the_worker_view_its_residence_time() -> None:
    load = WorkerLoad.from_loads(_loads(42.5), now_s=5.0)
    assert load.residence_s == 42.5
    record = WorkerRecord(url="http://w0")
    record.observe_load(load)
    assert record.view().residence_s == 42.5
    # Several DP ranks: the shortest published one (the router does not know which rank holds a
    # workflow); a rank without the field does not count.
    assert WorkerLoad.from_loads(_loads(90.0, None, 30.0), now_s=5.0).residence_s == 30.0


@pytest.mark.parametrize("bad", [-1.0, 0, "12", True, 1e9])
def test_a_malformed_residence_is_refused_clearly_and_the_rest_of_the_sample_is_kept(bad: Any) -> None:
    with pytest.raises(MalformedMessage, match=LOADS_RESIDENCE_FIELD):
        decode_loads_residence(_loads(bad)["loads"])
    answer = _loads(bad)
    answer["loads"][0]["num_running_reqs"] = 3
    load = WorkerLoad.from_loads(answer, now_s=5.0)
    assert load.residence_s == math.inf and load.num_running_reqs == 3


async def _scheduler_residence(answers: list[dict[str, Any]]) -> list[float]:
    """Serve the ``answers`` one after the other on /v1/loads; the residence times the saga
    scheduler's worker view showed, in order of change."""
    app = build_app()
    state = {"i": 0}

    @web.middleware
    async def loads(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/v1/loads":
            return web.json_response(answers[min(state["i"], len(answers) - 1)])
        return await handler(request)

    app.middlewares.append(loads)
    runner, url = await start_app(app)
    service = RouterService(RouterConfig(policy="saga", worker_urls=(url,), kv_events=False))
    seen: list[float] = []
    try:
        await service.start()
        scheduler = service.host.scheduler  # type: ignore[attr-defined]
        for i in range(len(answers)):
            state["i"] = i
            want = answers[i]["loads"][0].get(LOADS_RESIDENCE_FIELD, math.inf)
            for _ in range(400):  # polled every 50 ms; bounded wait for the view to follow
                views = scheduler._worker_views(scheduler.clock.now_s())
                if views and views[0].residence_s == want and views[0].kv_capacity_tokens == 4096:
                    seen.append(views[0].residence_s)
                    break
                await asyncio.sleep(0.05)
    finally:
        await service.stop()
        await runner.cleanup()
    return seen


def test_the_polled_residence_time_reaches_the_schedulers_worker_view() -> None:
    seen = asyncio.run(_scheduler_residence([_loads(None), _loads(25.0), _loads(None)]))
    assert seen == [math.inf, 25.0, math.inf]
