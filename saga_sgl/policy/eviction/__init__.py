"""Eviction: keys for KV entries (smaller = evicted first), tool-aware TTL, and the Belady oracle.

Policies: ``lru`` (SGLang's default order), ``vllm_prefix`` (vLLM v1 free-queue order), ``wa_lru``
(the paper's Eq. 1-3) and ``reuse_time`` (farthest predicted next use first). All return an
``EvictionKey`` (tier, primary, tiebreak, entry_id); ``VictimIndex`` selects victims in O(log n).
"""
