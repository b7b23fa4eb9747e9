"""Which victims did a policy regret? Victims re-read soon after their eviction, by what the key knew.

Replays one trace at one capacity (``saga_sgl.replay.prefix_replay``, the same access model as
``benchmarks/eviction_replay.py``) with LRU and with the default policy fed by the hint path, records
every victim with the view it was chosen by, and looks up its next read in the trace (hindsight,
used only for this diagnosis). A victim read again within ``--soon-s`` seconds is a *regret*. The
regrets are broken down by what the key had: no prediction (unhinted or shared block), a TTL-protected
entry (taken because nothing else was left), and the predicted P_reuse and wait at the time.

    python benchmarks/eviction_victims.py --trace swe-agent --capacity 0.1
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eviction_replay import MOONCAKE, SWE_AGENT

from saga_sgl.policy import registry
from saga_sgl.policy.victim_index import VictimIndex
from saga_sgl.policy.views import CacheEntryView
from saga_sgl.replay import prefix_replay
from saga_sgl.replay.driver import HintDriver
from saga_sgl.replay.prefix_replay import Mode, distinct_tokens, replay
from saga_sgl.replay.traces import SweAgentSettings, TraceRequest, load_mooncake, swe_agent_requests


class _Recording(VictimIndex):
    """VictimIndex that logs (time, victim view) of every eviction."""

    log: ClassVar[list[tuple[float, CacheEntryView]]] = []

    def pop_keyed(self, now_s: float, pressure: float) -> Any:
        item = super().pop_keyed(now_s, pressure)
        if item is not None:
            _Recording.log.append((now_s, item[0]))
        return item


def uses_by_entry(requests: list[TraceRequest]) -> dict[int, list[float]]:
    """Read times of every block, by the replay's entry ids (the same (parent, block) numbering)."""
    ids: dict[tuple[int, int], int] = {}
    uses: dict[int, list[float]] = {}
    for r in requests:
        parent = -1
        for block in r.hash_ids:
            eid = ids.setdefault((parent, block), len(ids))
            lst = uses.setdefault(eid, [])
            if not lst or lst[-1] != r.timestamp_s:
                lst.append(r.timestamp_s)
            parent = eid
    return uses


def victims(requests: list[TraceRequest], capacity: int, hints: bool) -> list[tuple[float, CacheEntryView]]:
    _Recording.log = []
    original = prefix_replay.VictimIndex
    prefix_replay.VictimIndex = _Recording  # type: ignore[misc]
    try:
        if hints:
            replay(requests, capacity, registry.create_eviction("saga"), Mode.HINTS, driver=HintDriver())
        else:
            replay(requests, capacity, registry.create_eviction("lru"), Mode.PLAIN)
    finally:
        prefix_replay.VictimIndex = original  # type: ignore[misc]
    return list(_Recording.log)


def _bucket(view: CacheEntryView, evicted_s: float) -> str:
    if view.workflow_id is None:
        return "no prediction (unhinted or shared)"
    if view.ttl_deadline_s is not None and view.ttl_deadline_s > evicted_s:
        return "TTL live (protected tier exhausted or pressure high)"
    p = view.reuse_prob
    if p is None:
        return "predicted, no P"
    if p == 0.0:
        return "P = 0 (dead tail / left branch)"
    wait = (view.next_use_at_s or evicted_s) - view.last_access_s
    prob = "<0.1" if p < 0.1 else "<0.5" if p < 0.5 else ">=0.5"
    return f"P {prob}, wait {'<60 s' if wait < 60 else '>=60 s'}"


def analyse(requests: list[TraceRequest], capacity: int, soon_s: float) -> dict[str, Any]:
    uses = uses_by_entry(requests)
    out: dict[str, Any] = {}
    for label, hints in (("lru", False), ("saga", True)):
        log = victims(requests, capacity, hints)
        regrets: Counter[str] = Counter()
        regret_tokens: Counter[str] = Counter()
        all_victims: Counter[str] = Counter()
        for t, view in log:
            b = _bucket(view, t) if hints else "lru"
            all_victims[b] += view.num_tokens
            lst = uses[view.entry_id]
            k = bisect.bisect_right(lst, t)
            nxt = lst[k] if k < len(lst) else math.inf
            if nxt - t <= soon_s:
                regrets[b] += 1
                regret_tokens[b] += view.num_tokens
        out[label] = {
            "victims": len(log),
            "regret_victims": sum(regrets.values()),
            "regret_tokens": sum(regret_tokens.values()),
            "by_bucket": {
                b: {"victim_tokens": all_victims[b], "regret_tokens": regret_tokens[b]} for b in all_victims
            },
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", choices=["swe-agent", "mooncake-synthetic"], default="swe-agent")
    ap.add_argument("--capacity", type=float, default=0.1, help="fraction of the distinct block tokens")
    ap.add_argument("--soon-s", type=float, default=60.0, help="a victim read again within this is a regret")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not 0 < args.capacity <= 1:
        ap.error("--capacity must be in (0, 1]")
    if args.trace == "swe-agent":
        reqs = swe_agent_requests(SWE_AGENT, SweAgentSettings(copies=10, mean_interarrival_s=2.0, seed=0))
    else:
        reqs = load_mooncake(MOONCAKE)
    report = {
        "trace": args.trace,
        "capacity": args.capacity,
        "soon_s": args.soon_s,
        **analyse(reqs, int(args.capacity * distinct_tokens(reqs)), args.soon_s),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
