"""The routed-prompt overlay over the exact prefix index: what the router sent to a worker shows at
once, and the worker's real KV events take over when they arrive (SGLang's own event types and
publisher; the last test a real CPU worker behind the saga router)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from saga_router.kv_events import KvEventSubscriber
from saga_router.kv_index import PrefixCatalog

from saga_sgl.local_workers import running_workers
from saga_sgl.policy.views import WorkerId

from .conftest import http, worker_spec
from .test_kv_index import publisher, stored

__all__ = ["publisher"]  # the fixture, shared with test_kv_index

W = WorkerId("w")


class Wall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def chain(first_hash: int, tokens: list[int]) -> dict[str, Any]:
    return stored(list(range(first_hash, first_hash + len(tokens))), None, tokens)


def test_a_routed_prompt_shows_until_its_blocks_are_stored_then_the_events_rule() -> None:
    wall = Wall()
    catalog = PrefixCatalog(wall_clock=wall)
    index = catalog.use_exact(W, 1)
    prompt = [5, 6, 7, 8]
    catalog.routed(W, prompt, "call-1")
    assert catalog.match([5, 6, 7, 8, 9]) == {W: 4}  # the events show nothing yet
    assert catalog.lag.lookups == 1 and catalog.lag.stale_lookups == 1 and catalog.lag.stale_tokens == 4
    index.apply(chain(100, prompt))  # BlockStored arrives while the call still decodes
    index.published_at_s = wall.t
    catalog.published(W)
    assert catalog.pending(W) == 0 and catalog.lag.dropped == {"stored": 1}
    index.apply({"type": "BlockRemoved", "block_hashes": [102]})  # later evicted: the events say so
    assert catalog.match(prompt) == {W: 2}
    assert catalog.lag.stale_lookups == 1  # this lookup was not stale


def test_a_prompt_stored_and_evicted_before_the_publish_is_not_over_promised() -> None:
    wall = Wall()
    catalog = PrefixCatalog(wall_clock=wall)
    index = catalog.use_exact(W, 1)
    catalog.routed(W, [1, 2, 3], "a")
    wall.t += 1
    catalog.ended(W, "a")
    # A batch stamped before the call ended says nothing about it: the overlay stays.
    index.published_at_s = wall.t - 0.5
    catalog.published(W)
    assert catalog.match([1, 2, 3]) == {W: 3}
    # One batch, stamped after the answer, stores and removes the prompt: the events describe it.
    index.apply(chain(10, [1, 2, 3]))
    index.apply({"type": "BlockRemoved", "block_hashes": [10]})
    index.published_at_s = wall.t + 0.1
    catalog.published(W)
    assert catalog.match([1, 2, 3]) == {}
    assert catalog.lag.dropped == {"described": 1}


def test_an_entry_no_batch_describes_ages_out_and_a_resent_key_replaces_its_entry() -> None:
    wall = Wall()
    catalog = PrefixCatalog(wall_clock=wall)
    catalog.use_exact(W, 1)
    catalog.routed(W, [1, 2], "a")
    catalog.routed(W, [1, 2, 3], "a")  # the same forward re-sent (preemption): one entry
    assert catalog.pending(W) == 1 and catalog.match([1, 2, 3]) == {W: 3}
    wall.t += 121
    catalog.published(W)
    assert catalog.pending(W) == 0 and catalog.lag.dropped == {"aged": 1}
    assert catalog.match([1, 2, 3]) == {}


def test_without_the_overlay_matches_come_from_the_events_but_the_lag_is_still_measured() -> None:
    catalog = PrefixCatalog(overlay=False, wall_clock=Wall())
    catalog.use_exact(W, 1)
    b = WorkerId("b")
    catalog.routed(b, [1, 2, 3])  # no events from b: the approximate index, as before
    catalog.routed(W, [1, 2, 3], "a")
    assert catalog.match([1, 2, 3]) == {b: 3}
    assert catalog.lag.stale_lookups == 1 and catalog.lag.stale_tokens == 3


@pytest.mark.sglang
def test_the_subscriber_hands_routed_prompts_over_on_sglang_events(
    publisher: tuple[Any, str, str, Any],
) -> None:
    pub, endpoint, replay, h = publisher
    catalog = PrefixCatalog()
    index = catalog.use_exact(W, 1)
    sub = KvEventSubscriber(worker="w", endpoint=endpoint, topic="kv", index=index, replay_endpoint=replay,
                            on_batch=lambda: catalog.published(W))
    catalog.routed(W, [1, 2], "call")

    async def scenario() -> None:
        task = asyncio.ensure_future(sub.run())
        deadline = time.monotonic() + 10
        await asyncio.sleep(0.3)  # the subscriber connects (ZMQ slow joiner; replay covers it too)
        pub.publish(h["batch"](h["block"](1, None, 1), h["block"](2, 1, 2)))
        while catalog.pending(W) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert catalog.pending(W) == 0 and catalog.lag.dropped == {"stored": 1}
    assert catalog.match([1, 2, 9]) == {W: 2}


@pytest.mark.live
@pytest.mark.sglang
def test_a_real_worker_s_kv_events_take_over_the_prompts_the_router_sent(
    tmp_path: Path, router_factory: Any
) -> None:
    """The router's token ids are the ones SGLang stores: the overlay entry of a call leaves by
    "stored" (its blocks arrived), not by age, and the next lookup of that prefix is not stale."""
    with running_workers([worker_spec()], tmp_path, ready_timeout_s=480) as workers:
        url = workers[0].url
        router = router_factory([url])
        prompt = list(range(3, 403))
        body = {"input_ids": prompt, "rid": "wf-1:0",
                "sampling_params": {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True}}
        assert http("POST", router.url + "/generate", body).status == 200
        deadline = time.monotonic() + 60
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the worker publishes when it goes idle
            info = http("GET", router.url + "/server_info").json()
            if info["routed_not_published"][url] == 0:
                break
            time.sleep(0.1)
        assert info["exact_prefix_index"][url] is True
        assert info["routed_not_published"][url] == 0, info
        assert info["prefix_lag"]["dropped"].get("stored", 0) >= 1, info
        lag_before = info["prefix_lag"]
        body2 = {**body, "input_ids": [*prompt, 7, 8], "rid": "wf-2:0"}
        reply = http("POST", router.url + "/generate", body2)
        assert reply.status == 200 and reply.json()["meta_info"]["cached_tokens"] >= len(prompt) - 1
        lag = http("GET", router.url + "/server_info").json()["prefix_lag"]
        assert lag["lookups"] > lag_before["lookups"]
        assert lag["stale_lookups"] == lag_before["stale_lookups"]  # the events already showed it
