"""Trace replay for eviction policies: Mooncake-format traces, the router's hint path, a prefix cache.

``traces`` reads Mooncake JSONL and converts SWE-agent trajectories; ``driver`` is the hint path a
router would run (gap learning, predictions, TTL, pressure) built from the policy core and the AEG;
``prefix_replay`` replays a trace through a block-level prefix cache with any eviction policy.
``benchmarks/eviction_replay.py`` is the command line.

``sim_schedule`` records one simulator run as a fixed schedule (accesses with durations, the
scheduler's hint changes) and ``schedule_replay`` replays that same schedule through every policy
and Belady, so the simulator's eviction rows share one denominator (``benchmarks/eviction_sim.py``).
"""
