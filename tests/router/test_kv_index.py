"""The exact per-worker prefix index and its KV-event subscriber, against SGLang 0.5.23's own
publisher (``ZmqEventPublisher``, real sockets on loopback; the events are SGLang's structs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from saga_router.kv_events import KvEventSubscriber
from saga_router.kv_index import ExactPrefixIndex, PrefixCatalog

from saga_sgl.local_workers import free_port
from saga_sgl.policy.views import WorkerId


def stored(hashes: list[int], parent: int | None, tokens: list[int]) -> dict[str, Any]:
    return {
        "type": "BlockStored",
        "block_hashes": hashes,
        "parent_block_hash": parent,
        "token_ids": tokens,
        "block_size": 1,
    }


def test_index_follows_stores_removals_and_clears() -> None:
    index = ExactPrefixIndex()
    index.apply(stored([1, 2, 3], None, [10, 11, 12]))
    index.apply(stored([4, 5], 3, [13, 14]))  # the same chain, extended (decode tokens)
    index.apply(stored([6], 2, [99]))  # a branch after [10, 11]
    assert index.match([10, 11, 12, 13, 14, 15]) == 5
    assert index.match([10, 11, 99]) == 3
    assert index.match([11]) == 0
    index.apply({"type": "BlockRemoved", "block_hashes": [5]})
    assert index.match([10, 11, 12, 13, 14]) == 4
    index.apply({"type": "BlockRemoved", "block_hashes": [3]})  # takes its descendant (4) along
    assert index.match([10, 11, 12, 13]) == 2
    assert len(index) == 3
    index.apply(stored([7], 123456, [1]))  # parent never seen: cannot be placed
    assert index.orphan_blocks == 1
    index.apply({"type": "AllBlocksCleared"})
    assert index.match([10, 11]) == 0 and len(index) == 0


def test_index_with_multi_token_blocks_matches_whole_blocks_only() -> None:
    index = ExactPrefixIndex(block_size=2)
    index.apply({**stored([1, 2], None, [5, 6, 7, 8]), "block_size": 2})
    assert index.match([5, 6, 7, 8, 9]) == 4
    assert index.match([5, 6, 7]) == 2
    with pytest.raises(ValueError, match="token ids"):
        index.store([3], None, [1])


def test_catalog_prefers_the_exact_index_and_falls_back_to_the_approximate_one() -> None:
    catalog = PrefixCatalog()
    a, b = WorkerId("a"), WorkerId("b")
    exact = catalog.use_exact(a, 1)
    exact.apply(stored([1, 2], None, [1, 2]))
    catalog.routed(a, [1, 2, 3, 4])  # ignored: a reports what it really holds
    catalog.routed(b, [1, 2, 3])  # b publishes nothing: what was sent there counts
    assert catalog.match([1, 2, 3, 4]) == {a: 2, b: 3}
    catalog.forget(b)
    assert catalog.match([1, 2, 3]) == {a: 2}


@pytest.fixture
def publisher(sglang_cpu: None) -> Iterator[tuple[Any, str, str, Any]]:
    from sglang.srt.disaggregation.kv_events import (
        AllBlocksCleared,
        BlockStored,
        KVEventBatch,
        ZmqEventPublisher,
    )

    endpoint, replay = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    pub = ZmqEventPublisher(0, endpoint=endpoint, replay_endpoint=replay, topic="kv", bind=True)

    def batch(*events: Any) -> Any:
        return KVEventBatch(ts=time.time(), events=list(events))

    def block(h: int, parent: int | None, token: int) -> Any:
        return BlockStored(
            block_hashes=[h],
            parent_block_hash=parent,
            token_ids=[token],
            block_size=1,
            lora_id=None,
            medium="GPU",
        )

    helpers = {"batch": batch, "block": block, "cleared": AllBlocksCleared}
    yield pub, endpoint, replay, helpers
    pub.shutdown()


def test_subscriber_catches_up_from_the_replay_buffer_then_follows_live_events(
    publisher: tuple[Any, str, str, Any],
) -> None:
    pub, endpoint, replay, h = publisher
    for i in range(3):  # history published before the router subscribed
        pub.publish(h["batch"](h["block"](100 + i, 99 + i if i else None, i + 1)))
    time.sleep(0.3)
    index = ExactPrefixIndex()
    sub = KvEventSubscriber(worker="w", endpoint=endpoint, topic="kv", index=index, replay_endpoint=replay)

    async def scenario() -> None:
        task = asyncio.ensure_future(sub.run())
        deadline = time.monotonic() + 5
        await asyncio.wait_for(sub.caught_up.wait(), 5)
        # The router admits a worker once this is set: the whole history is in the index by then.
        assert index.match([1, 2, 3]) == 3  # from the replay, before any live event
        pub.publish(h["batch"](h["block"](103, 102, 4)))
        while index.match([1, 2, 3, 4]) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert index.match([1, 2, 3, 4]) == 4
    assert sub.last_seq == 3  # SGLang numbers batches from 0
    assert sub.gaps == 0


def test_a_sequence_gap_is_replayed_or_else_clears_the_index(publisher: tuple[Any, str, str, Any]) -> None:
    pub, endpoint, replay, h = publisher
    payloads = []
    encoder = msgspec.msgpack.Encoder()
    for i in range(4):
        b = h["batch"](h["block"](200 + i, 199 + i if i else None, 10 + i))
        pub.publish(b)
        payloads.append(encoder.encode(b))
    time.sleep(0.3)
    gaps: list[str] = []
    index = ExactPrefixIndex()
    sub = KvEventSubscriber(
        worker="w", endpoint=endpoint, topic="kv", index=index, replay_endpoint=replay, on_gap=gaps.append
    )
    sub.last_seq = 0
    index.apply(stored([200], None, [10]))
    # Batches 1 and 2 were lost; 3 arrives: the subscriber replays 1..2 first.
    asyncio.run(sub.receive(3, payloads[3]))
    assert gaps == ["w"] and sub.resyncs_by_replay == 1
    assert index.match([10, 11, 12, 13]) == 4
    # Without a replay endpoint a gap leaves no way to know what was removed: start over.
    blind = KvEventSubscriber(worker="v", endpoint=endpoint, topic="kv", index=ExactPrefixIndex())
    blind.last_seq = 0
    blind.index.apply(stored([200], None, [10]))
    asyncio.run(blind.receive(3, payloads[3]))
    assert blind.gaps == 1 and len(blind.index) == 0
