"""The simulator's eviction replay (``benchmarks/eviction_sim.py``) restricted to the guard rows:
Belady (oracle), LRU, WA-LRU, saga (the default: the key behind the pairwise recency guard), saga
behind the ghost LRU guard (``policy.eviction.ghost``) and the key alone (no guard).

Same schedules, cells, flags and output format as ``eviction_sim.py`` (every flag is passed on; see
its ``--help``); only the rows differ, so a guard comparison costs six rows, not thirteen. Write it
somewhere other than eviction_sim's default results (``--out``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eviction_sim

from saga_sgl.policy import registry
from saga_sgl.replay.schedule_replay import ViewMode

GHOST = eviction_sim.Row(
    "saga ghost guard", ViewMode.HINTS, lambda: registry.create_eviction("saga", {"guard_mode": "ghost"})
)
KEEP = ("belady (oracle)", "lru", "wa_lru", "saga", "saga no guard")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    eviction_sim.ROWS = (*(r for r in eviction_sim.ROWS if r.label in KEEP), GHOST)
    args = argv if argv is not None else sys.argv[1:]
    report = eviction_sim.main(args)
    # eviction_sim names itself in the report: name this script instead (same flags).
    report["command"] = "python benchmarks/eviction_sim_guards.py " + " ".join(args)
    out = Path(report["settings"]["out"])
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(eviction_sim.render(report))
    return report


if __name__ == "__main__":
    if "-h" in sys.argv or "--help" in sys.argv:
        print(__doc__)
    main()
