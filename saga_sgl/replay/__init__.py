"""Trace replay for eviction policies: Mooncake-format traces, the router's hint path, a prefix cache.

``traces`` reads Mooncake JSONL and converts SWE-agent trajectories; ``driver`` is the hint path a
router would run (gap learning, predictions, TTL, pressure) built from the policy core and the AEG;
``prefix_replay`` replays a trace through a block-level prefix cache with any eviction policy.
``benchmarks/eviction_replay.py`` is the command line.
"""
