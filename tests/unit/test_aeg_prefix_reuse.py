"""PrefixReuse: which blocks of a workflow's last prompt the next call reads, and the driver's use of it."""

from __future__ import annotations

import pytest

from saga_sgl.aeg.prefix_reuse import PrefixReuse, PrefixReuseSettings, common_prefix, offset_bucket, on_path
from saga_sgl.errors import InvalidSettings
from saga_sgl.replay.driver import HintDriver
from saga_sgl.replay.traces import TraceRequest


def test_without_data_every_block_counts_as_read() -> None:
    pr = PrefixReuse()
    assert pr.share(0) == 1.0 and pr.share(100, agent_type="swe") == 1.0


def test_learns_that_the_partial_last_block_is_never_read_by_a_continuation() -> None:
    pr = PrefixReuse(PrefixReuseSettings(min_class_samples=5))
    prev: tuple[int, ...] = (1, 2, 3)
    for k in range(50):
        # Each call keeps every full block of the previous prompt; the partial last block changes.
        cur = (*prev[:-1], 100 + k, 200 + k)
        assert pr.observe(prev, cur, agent_type="swe") == len(prev) - 1
        prev = cur
    assert pr.share(0, agent_type="swe") < 0.05
    assert pr.share(1, agent_type="swe") > 0.95
    # An unseen class falls back to the population, which saw the same data.
    assert pr.share(0, agent_type="other") == pytest.approx(pr.share(0, agent_type=""))


def test_helpers() -> None:
    assert common_prefix((1, 2, 3), (1, 2, 4, 5)) == 2 and common_prefix((), (1,)) == 0
    assert [offset_bucket(o) for o in (0, 1, 2, 3, 4, 7, 8, 15, 16, 99)] == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6]
    assert on_path((5, 6, 7), 1, 6) and not on_path((5, 6, 7), 1, 9) and not on_path((5, 6), 2, 7)
    with pytest.raises(InvalidSettings):
        PrefixReuseSettings(prior_reads=0.0)


def _req(t: float, ids: tuple[int, ...]) -> TraceRequest:
    return TraceRequest(t, 512 * len(ids), 1, ids, session="w", agent_type="a", tool="code")


def test_driver_gives_dead_tails_and_left_branches_no_reuse_and_no_ttl() -> None:
    drv = HintDriver()
    drv.prefix_reuse = PrefixReuse(PrefixReuseSettings(min_class_samples=1))
    prev = (1, 2, 3)
    t = 0.0
    for k in range(30):
        cur = (*prev[:-1], 100 + k, 200 + k)
        req = _req(t, cur)
        sess = drv.session_of(req)
        drv.on_arrival(sess, req, t)
        drv.on_end(sess, req, t + 0.5)
        prev, t = cur, t + 2.0
    sess = drv.sessions["w"]
    assert sess.reuse_prob is not None and sess.ttl_deadline_s is not None
    n = len(sess.last_blocks)
    tail_prob, tail_ttl = drv.block_hints(sess, n - 1, sess.last_blocks[-1])
    body_prob, body_ttl = drv.block_hints(sess, n - 2, sess.last_blocks[-2])
    assert tail_prob is not None and body_prob is not None
    assert tail_prob < 0.1 * body_prob and tail_ttl is None and body_ttl == sess.ttl_deadline_s
    # A block of an older prompt that the current one no longer holds: a branch the workflow left.
    assert drv.block_hints(sess, n - 1, 200) == (0.0, None)
