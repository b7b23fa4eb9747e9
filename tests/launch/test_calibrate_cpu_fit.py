"""The CPU calibration's fit: it recovers the worker's own extend form from its probes, and the
simulator's CPU cost model prices a chunk with it. No worker runs here: the probes are generated from
known coefficients (the real probes are benchmarks/calibrate_cpu.py's, on a real worker)."""

from __future__ import annotations

import pytest

from benchmarks.calibrate_cpu import fit
from benchmarks.sim_fidelity import CpuProfileCostModel

TRUE = {
    "o": 0.005,
    "k0": 0.004,
    "k1": 4.5e-4,
    "c2": 1.0e-7,
    "e": 9.0e-5,
    "d0": 0.003,
    "d1": 0.0016,
    "a": 2.3e-5,
}


def _extend_s(q: int, b: int, prefix: int) -> float:
    """What a torch_native worker takes: the query padded to the whole sequence L = P + q."""
    t = TRUE
    seq = prefix + q
    return t["o"] + t["k0"] + t["k1"] * q * b + b * (t["c2"] * seq * seq / 2 + t["e"] * seq)


def _raw() -> dict[str, list[dict[str, float]]]:
    t = TRUE
    decode = [
        {"batch": b, "context": c, "iter_s": t["d0"] + t["d1"] * b + t["a"] * b * c, "t1_s": 0.0}
        for b in (1, 2, 4)
        for c in (32, 1024)
    ]
    prefill = [{"q": q, "batch": b, "t_s": _extend_s(q, b, 0)} for q in (64, 256, 1024) for b in (1, 2, 4)]
    prefill += [{"q": 2048, "batch": b, "t_s": _extend_s(2048, b, 0)} for b in (1, 2)]
    attention = [
        {"q": q, "prefix": p, "t_s": _extend_s(q, 1, p)}
        for p in (256, 1024, 2048)
        for q in (64, 256, 1024, 2048)
        if p + q < 4096
    ]
    return {
        "decode": decode,
        "prefill": prefill,
        "attention": attention,
        "overhead": [{"t_s": _extend_s(1, 1, 0)}],
    }


def test_the_fit_recovers_the_workers_extend_form_and_the_linear_form_misses_it() -> None:
    prof = fit(_raw())
    ext = prof["extend"]
    assert ext["attn_s_per_seq_token2"] == pytest.approx(TRUE["c2"], rel=1e-6)
    assert ext["s_per_seq_token"] == pytest.approx(TRUE["e"], rel=1e-6)
    assert ext["k1_s"] == pytest.approx(TRUE["k1"], rel=1e-6)
    # The request overhead is the 1-token probe minus its one iteration, and the iteration constant
    # is the intercept less that overhead.
    assert prof["request_overhead_s"] + ext["k0_s"] == pytest.approx(TRUE["o"] + TRUE["k0"], rel=1e-6)
    assert prof["decode_attn_s_per_kv_token"] == pytest.approx(TRUE["a"], rel=1e-6)
    short_behind_long = next(c for c in prof["check"] if c["q"] == 64 and c["prefix"] == 2048)
    assert short_behind_long["extend_predicted_s"] == pytest.approx(short_behind_long["t_s"], rel=1e-6)
    # The router's linear form cannot express a prefix that costs at every extend.
    assert short_behind_long["predicted_s"] < 0.7 * short_behind_long["t_s"]
    for c in prof["check"]:  # the batched probes are not fitted, yet predicted
        assert c["extend_predicted_s"] == pytest.approx(c["t_s"], rel=1e-6)


def test_the_simulated_worker_prices_a_chunk_with_the_extend_form() -> None:
    prof = {**fit(_raw()), "meta": {"hidden_size": 256, "layers": 4}}
    cost = CpuProfileCostModel(prof, chunk_size_tokens=4096)
    for q, prefix in ((64, 2048), (300, 900), (1024, 0)):
        # One request alone: the calibrated time less the request overhead (paid outside the engine).
        want = _extend_s(q, 1, prefix) - prof["request_overhead_s"]
        assert cost.prefill_iteration_s([(q, prefix)]) == pytest.approx(want, rel=0.02)
    # Two requests in one iteration: one c(n) for the batch, the sequence terms per request.
    two = cost.prefill_iteration_s([(200, 1000), (100, 500)])
    seqs = TRUE["c2"] * (1200**2 + 600**2) / 2 + TRUE["e"] * 1800
    assert two == pytest.approx(cost.iteration_constant_s(300) + seqs, rel=1e-9)
    slow = CpuProfileCostModel(prof, chunk_size_tokens=4096, speed=1.5)
    assert slow.prefill_iteration_s([(64, 2048)]) == pytest.approx(
        1.5 * cost.prefill_iteration_s([(64, 2048)])
    )
