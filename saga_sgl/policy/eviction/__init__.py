"""Eviction: keys for KV entries (smaller = evicted first), tool-aware TTL, recency guard, Belady.

Policies: ``lru`` (SGLang's default order), ``vllm_prefix`` (vLLM v1 free-queue order), ``wa_lru``
(the paper's Eq. 1-3), ``reuse_time`` (farthest predicted next use first) and ``reuse_density``
(expected recompute saved per token-second; ``saga``). All return an ``EvictionKey`` (tier,
primary, tiebreak, entry_id); ``VictimIndex`` selects victims in O(log n), behind the recency guard
(``guard``) when the policy asks for it.
"""
