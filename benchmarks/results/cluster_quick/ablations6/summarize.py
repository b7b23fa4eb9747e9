"""Per seed and row: completions in the window (tasks/min, swe + web-history summed), paired geomean
and ratio of means against sticky least-loaded, from a throughput_probe.py JSONL (argv[1])."""

from __future__ import annotations

import collections
import json
import sys

import numpy as np

BASE = "vllm_sticky_least_loaded"


def main() -> None:
    with open(sys.argv[1]) as f:
        runs = [json.loads(x) for x in f]
    cells: dict[tuple[int, int, str], dict[str, dict]] = collections.defaultdict(dict)
    for r in runs:
        cells[(r.get("agents_per_replica", 0), r["seed"], r["scenario"])][r["row"]] = r
    totals: dict[tuple[int, int], dict[str, float]] = collections.defaultdict(
        lambda: collections.defaultdict(float)
    )
    print("| agents/replica | seed | scenario | row | tasks/min | mean TCT s | held s | queued s | decode s "
          "| KV in use | vs sticky geomean | vs sticky means |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (apr, seed, scen), rows in sorted(cells.items()):
        base = rows.get(BASE)
        for label, r in rows.items():
            lo, hi = r["window"]
            done = sum(1 for t in r["tasks"] if lo <= t[2] < hi)
            tpm = done / (hi - lo) * 60
            totals[(apr, seed)][label] += tpm
            own = {t[0]: t for t in r["tasks"] if lo <= t[1] < hi}
            vs = ("-", "-")
            if base is not None and label != BASE:
                b = {t[0]: t[2] - t[1] for t in base["tasks"] if lo <= t[1] < hi}
                ids = sorted(set(b) & set(own))
                o = {i: own[i][2] - own[i][1] for i in ids}
                vs = (f"{np.exp(np.mean([np.log(b[i] / o[i]) for i in ids])):.3f}",
                      f"{np.mean([b[i] for i in ids]) / np.mean([o[i] for i in ids]):.3f}")
            held, queued, decode = (np.mean([t[k] for t in own.values()]) for k in (3, 4, 6))
            tct = np.mean([t[2] - t[1] for t in own.values()])
            print(f"| {apr} | {seed} | {scen} | {label} | {tpm:.2f} | {tct:.1f} | {held:.1f} | "
                  f"{queued:.1f} | "
                  f"{decode:.1f} | {r['summary']['kv_util_active']:.2f} | {vs[0]} | {vs[1]} |")
    print()
    print("| agents/replica | seed | row | tasks/min (swe + web-history) | / sticky |")
    print("|---|---|---|---|---|")
    for (apr, seed), per in sorted(totals.items()):
        for label, v in per.items():
            ratio = v / per[BASE] if per.get(BASE) else float("nan")
            print(f"| {apr} | {seed} | {label} | {v:.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
