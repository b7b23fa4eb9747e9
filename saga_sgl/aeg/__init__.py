"""Agent Execution Graphs: the graph model, its builders and its predictors.

* ``graph``: AEG = (V, E, P, phi) with per-step token estimates; structural validation.
* ``build``: AEGs from explicit hints or a submitted graph.
* ``inference``: pattern inference per agent type (theta_conf) and the cold-start rule.
* ``tool_latency``: per-tool latency model (log-normal over a log-latency EMA, heavy tail).
* ``predict``: P_reuse (Eq. 4-5), time to next use, remaining work (Eq. 9).

Pure and deterministic: no I/O, no clock reads, no module-level randomness.
"""
