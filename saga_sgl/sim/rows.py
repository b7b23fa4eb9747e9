"""The benchmark's configuration rows, by policy-registry name (labels are table names only).

Baselines use their policies' *default* settings: sglang-router ``cache_aware`` thresholds, vLLM's
prefix-caching eviction order with 16-token blocks, consistent hashing on the workflow id (the
paper's primary baseline, vLLM + APC with affinity routing). SAGA rows add workflow-atomic
placement, predicted-reuse eviction with tool-aware TTLs, work stealing and Agent Fair Share.
"""

from __future__ import annotations

import dataclasses

from saga_sgl.sim.policies import RowSpec

ROUND_ROBIN = RowSpec(
    label="round_robin",
    placement="round_robin",
    eviction="lru",
    fairness="fcfs",
    description="sglang-router round_robin per call + SGLang radix LRU",
)
CACHE_AWARE = RowSpec(
    label="sglang_cache_aware",
    placement="cache_aware",
    eviction="lru",
    fairness="fcfs",
    description="sglang-router cache_aware (defaults; approximate tree blind to evictions) + radix LRU",
)
VLLM_AFFINITY = RowSpec(
    label="vllm_apc_affinity",
    placement="consistent_hash",
    eviction="vllm_prefix",
    fairness="fcfs",
    page_size=16,
    description="consistent hash on the workflow id (session affinity) + vLLM prefix-caching eviction",
)
SAGA = RowSpec(
    label="saga",
    placement="saga",
    eviction="saga",
    fairness="afs",
    stealing="saga_steal",
    ttl=True,
    predictions=True,
    description="SAGA: workflow-atomic placement (Eq. 7 + admission), reuse-density eviction + TTL, "
    "work stealing with prefix rebuild, Agent Fair Share",
)
SAGA_WA_LRU = dataclasses.replace(
    SAGA, label="saga_wa_lru", eviction="wa_lru", description="SAGA with the paper's WA-LRU score (Eq. 1-3)"
)
ORACLE_BELADY = dataclasses.replace(
    SAGA,
    label="oracle_belady",
    eviction="reuse_time",
    oracle_next_use=True,
    settings={"eviction": {"ttl_protection": False}},
    description="SAGA routing + Belady eviction (clairvoyant next use of each workflow's KV)",
)
INFINITE_KV = dataclasses.replace(
    SAGA, label="oracle_infinite_kv", infinite_kv=True, description="SAGA routing + unbounded KV"
)

BASELINES = (ROUND_ROBIN, CACHE_AWARE, VLLM_AFFINITY)
MAIN_ROWS = (*BASELINES, SAGA, SAGA_WA_LRU, ORACLE_BELADY, INFINITE_KV)

ABLATIONS = (
    dataclasses.replace(
        SAGA,
        label="saga-no_affinity",
        settings={"placement": {"theta": 0.0}},
        description="Eq. 7 with theta = 0: every call goes to the least-loaded worker",
    ),
    dataclasses.replace(
        SAGA,
        label="saga-no_reuse_eviction",
        eviction="lru",
        ttl=False,
        description="SGLang LRU instead of predicted-reuse eviction (and its TTL tier)",
    ),
    dataclasses.replace(
        SAGA,
        label="saga-no_ttl",
        ttl=False,
        settings={"eviction": {"ttl_protection": False}},
        description="no tool-aware TTL protection",
    ),
    dataclasses.replace(SAGA, label="saga-no_stealing", stealing=None, description="no work stealing"),
    dataclasses.replace(SAGA, label="saga-no_afs", fairness="fcfs", description="FCFS queues instead of AFS"),
    dataclasses.replace(
        SAGA,
        label="saga-no_locality",
        settings={"placement": {"locality_weight": 0.0, "load_weight": 0.7}},
        description="admission without the shared-prefix locality score (its weight moved to load)",
    ),
)
