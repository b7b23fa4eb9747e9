"""Placement: which worker serves a call. ``saga`` (Eq. 7 + workflow-atomic admission) and the
baselines ``round_robin``, ``cache_aware`` (sglang-router rules) and ``consistent_hash``."""
