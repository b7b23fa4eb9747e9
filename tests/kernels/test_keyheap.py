"""saga_kernels.KeyHeap: the native build and its pure-Python twin take the same decisions.

Property tests drive both implementations with the same random operation sequences (push/update,
remove, pop, top) and compare every answer; VictimIndex over random entries and hints (TTLs, finished
and terminal workflows, predictions, pressure crossing threshold_high, the clock moving) must pop
the same victims in the same order with either backend, and the same as the index built on the
previous (heapq-only) implementation's rule: the smallest fresh key.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import saga_kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saga_kernels import PyKeyHeap, new_key_heap

from saga_sgl.policy import registry
from saga_sgl.policy.victim_index import VictimIndex, entry_key
from saga_sgl.policy.views import CacheEntryView, WorkflowId

REPO = Path(__file__).resolve().parents[2]
native_only = pytest.mark.skipif(
    saga_kernels.NativeKeyHeap is None, reason=f"native kernels not built: {saga_kernels.NATIVE_IMPORT_ERROR}"
)
# The native heap where setup.sh could build it (no C compiler: only the fallback runs, and says why).
BACKENDS = [pytest.param("native", marks=native_only), "python"]

# Few distinct values, so ties in tier/primary/tiebreak are common and the id decides.
tiers = st.integers(0, 2)
floats = st.sampled_from([-math.inf, -1.5, -0.0, 0.0, 1.0, 2.5, 1e300, math.inf]) | st.floats(
    -1e6, 1e6, allow_nan=False
)
ids = st.integers(0, 40) | st.integers(-(2**63), 2**63 - 1)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), tiers, floats, floats, ids),
        st.tuples(st.just("remove"), ids),
        st.tuples(st.just("pop")),
        st.tuples(st.just("top")),
        st.tuples(st.just("min_key")),
    ),
    max_size=200,
)


def _replay(heap: object, script: list[tuple[object, ...]]) -> list[object]:
    out: list[object] = []
    for op in script:
        name, args = op[0], op[1:]
        if name == "push":
            heap.push(args)  # type: ignore[attr-defined]
            out.append(len(heap))  # type: ignore[arg-type]
        else:
            out.append(getattr(heap, str(name))(*args))
    out.append([(heap.key_of(i), i in heap) for i in range(41)])  # type: ignore[attr-defined, operator]
    return out


@native_only
@settings(max_examples=300, deadline=None)
@given(ops)
def test_native_and_python_heaps_answer_every_operation_alike(script: list[tuple[object, ...]]) -> None:
    assert _replay(new_key_heap("native"), script) == _replay(PyKeyHeap(), script)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_python_heap_pops_in_key_order(script: list[tuple[object, ...]]) -> None:
    heap = PyKeyHeap()
    live: dict[int, tuple[int, float, float, int]] = {}
    for op in script:
        if op[0] == "push":
            key = (int(op[1]), float(op[2]), float(op[3]), int(op[4]))  # type: ignore[call-overload, arg-type]
            heap.push(key)
            live[key[3]] = key
        elif op[0] == "remove":
            assert heap.remove(op[1]) == (live.pop(op[1], None) is not None)  # type: ignore[arg-type]
    drained = []
    while (entry_id := heap.pop()) is not None:
        drained.append(entry_id)
    assert drained == [k[3] for k in sorted(live.values())]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_keys_are_refused_and_lose_nothing(backend: str) -> None:
    heap = new_key_heap(backend)
    heap.push((1, 2.0, 0.0, 7))
    for bad, error in [
        ((1, math.nan, 0.0, 8), ValueError),
        ((1, 1.0, math.nan, 8), ValueError),
        ((1, 1.0, 0.0), TypeError),
        ([1, 1.0, 0.0, 8], TypeError),
        ((1, "x", 0.0, 8), TypeError),
        ((1.5, 1.0, 0.0, 8), TypeError),
        ((1, 1.0, 0.0, 2**63), OverflowError),
    ]:
        with pytest.raises(error):
            heap.push(bad)  # type: ignore[arg-type]
    assert len(heap) == 1 and heap.min_key() == (1, 2.0, 0.0, 7) and 8 not in heap


def test_backend_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGA_KERNELS", "python")
    assert saga_kernels.default_backend() == "python"
    assert VictimIndex(registry.create_eviction("lru")).backend == "python"
    monkeypatch.setenv("SAGA_KERNELS", "fast")
    with pytest.raises(ValueError, match="SAGA_KERNELS"):
        saga_kernels.default_backend()
    monkeypatch.setenv("SAGA_KERNELS", "auto")
    expected = "python" if saga_kernels.NativeKeyHeap is None else "native"
    assert saga_kernels.default_backend() == expected
    with pytest.raises(ValueError, match="unknown KeyHeap backend"):
        new_key_heap("rust")


def test_the_package_is_listed_in_pyproject() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "saga_kernels" in tool["packages"]
    assert tool["package-dir"]["saga_kernels"] == "kernels/saga_kernels"
    assert (REPO / "kernels" / "saga_kernels" / "__init__.py").exists()
    assert Path(saga_kernels.__file__).resolve().parent == REPO / "kernels" / "saga_kernels"


# --- VictimIndex over random entries and hints --------------------------------------------------

POLICIES = ["reuse_density", "reuse_density guarded", "reuse_time", "wa_lru", "lru", "vllm_prefix"]
"""``reuse_density`` is its key alone; ``reuse_density guarded`` the default (``saga``) with the
recency guard, whose reads (``use``) decide between the key's victim and LRU's."""


@st.composite
def entry_views(draw: st.DrawFn, entry_id: int, now_s: float) -> CacheEntryView:
    num = draw(st.integers(1, 64))
    hinted = draw(st.booleans())
    return CacheEntryView(
        entry_id=entry_id,
        num_tokens=num,
        depth_tokens=num + draw(st.integers(0, 4096)),
        last_access_s=now_s - draw(st.sampled_from([0.0, 1.0, 5.0, 30.0])),
        workflow_id=WorkflowId(f"wf{draw(st.integers(0, 5))}") if hinted else None,
        is_finished=hinted and draw(st.booleans()) and draw(st.booleans()),
        is_terminal=hinted and draw(st.integers(0, 5)) == 0,
        reuse_prob=draw(st.none() | st.sampled_from([0.0, 0.3, 0.9, 1.0])) if hinted else None,
        next_use_at_s=draw(st.none() | st.sampled_from([now_s + 2, now_s + 30, math.inf])) if hinted else None,  # noqa: E501
        ttl_deadline_s=draw(st.none() | st.sampled_from([now_s + 0.5, now_s + 3.0])) if hinted else None,
    )


@st.composite
def index_scripts(draw: st.DrawFn) -> tuple[str, list[tuple[str, object, float, float]]]:
    policy = draw(st.sampled_from(POLICIES))
    now = 1000.0
    script: list[tuple[str, object, float, float]] = []
    for _ in range(draw(st.integers(1, 60))):
        now += draw(st.sampled_from([0.0, 0.25, 1.0, 4.0]))
        pressure = draw(st.sampled_from([0.3, 0.85, 0.95]))
        kind = draw(st.sampled_from(["add", "add", "add", "pop", "remove", "use"]))
        if kind == "use":
            script.append(("use", draw(st.integers(0, 25)), now, pressure))
        elif kind == "add":
            script.append(("add", draw(entry_views(draw(st.integers(0, 25)), now)), now, pressure))
        elif kind == "remove":
            script.append(("remove", draw(st.integers(0, 25)), now, pressure))
        else:
            script.append(("pop", None, now, pressure))
    script.append(("drain", None, now + 10.0, 0.5))
    return policy, script


Script = list[tuple[str, object, float, float]]


def _recency(policy: Any, v: CacheEntryView, now: float, pressure: float) -> tuple[int, float, int]:
    """The guard's second expert: LRU within the policy's tier."""
    return (entry_key(policy, v, now, pressure)[0], v.last_access_s, v.entry_id)


def _run_index(
    backend: str, policy_name: str, script: Script, *, revalidate_all: bool = False
) -> list[object]:
    guarded = policy_name.endswith(" guarded")
    config = None if guarded or policy_name != "reuse_density" else {"recency_guard": False}
    policy = registry.create_eviction(policy_name.split()[0], config)
    index = VictimIndex(policy, backend, revalidate_all=revalidate_all)
    assert (index.guard is not None) is guarded
    reference: dict[int, CacheEntryView] = {}
    out: list[object] = []
    policy = index.policy
    for kind, arg, now, pressure in script:
        if kind == "use":
            assert isinstance(arg, int)
            index.note_use(arg)
        elif kind == "add":
            assert isinstance(arg, CacheEntryView)
            index.add(arg, now, pressure)
            reference[arg.entry_id] = arg
        elif kind == "remove":
            assert isinstance(arg, int)
            out.append(index.remove(arg))
            reference.pop(arg, None)
        else:
            while True:
                item = index.pop_keyed(now, pressure)
                if item is not None:
                    # The exact policy's choice: the smallest fresh key among the indexed entries
                    # (guarded: that or the recency victim, the least recently used of the lowest tier).
                    best = min(reference.values(), key=lambda v: entry_key(policy, v, now, pressure))
                    if guarded and item[0].entry_id != best.entry_id:
                        best = min(reference.values(), key=lambda v: _recency(policy, v, now, pressure))
                    assert item[0].entry_id == best.entry_id
                    assert item[1] == entry_key(policy, best, now, pressure)
                    del reference[best.entry_id]
                out.append(None if item is None else (item[0].entry_id, tuple(item[1])))
                if kind == "pop" or item is None:
                    break
        out.append(index.protected_tokens)
    if index.guard is not None:
        out.append((index.guard.score, index.guard.votes, index.guard.chose_prediction))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_scripts())
def test_victim_index_pops_the_exact_policys_victims_with_either_backend(
    case: tuple[str, list[tuple[str, object, float, float]]],
) -> None:
    policy, script = case
    python = _run_index("python", policy, script)
    if saga_kernels.NativeKeyHeap is not None:
        assert _run_index("native", policy, script) == python


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_scripts())
def test_the_contract_shortcut_takes_the_decisions_of_full_revalidation(
    case: tuple[str, list[tuple[str, object, float, float]]],
) -> None:
    """The index recomputes a candidate's key only where the EvictionPolicy contract allows it to
    have changed (a TTL, or protects(pressure) flipped since it was keyed). Every answer (victims,
    keys, removals, protected tokens, the guard's score and votes) equals the index that recomputes
    every candidate's key, on both backends."""
    policy, script = case
    backends = ["python"] + (["native"] if saga_kernels.NativeKeyHeap is not None else [])
    for backend in backends:
        assert _run_index(backend, policy, script) == _run_index(backend, policy, script, revalidate_all=True)


class _CountingPolicy:
    """``reuse_density`` (guarded) that counts its key computations."""

    def __init__(self) -> None:
        self.inner = registry.create_eviction("reuse_density")
        self.name = "counting"
        self.recency_guard = self.inner.recency_guard
        self.calls = 0

    def key(self, entry: CacheEntryView, now_s: float, pressure: float) -> Any:
        self.calls += 1
        return self.inner.key(entry, now_s, pressure)

    def protects(self, pressure: float) -> bool:
        return bool(self.inner.protects(pressure))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_shortcut_skips_key_computations_and_keeps_the_victims(backend: str) -> None:
    victims: dict[bool, list[int]] = {}
    calls: dict[bool, int] = {}
    for revalidate_all in (False, True):
        policy = _CountingPolicy()
        index = VictimIndex(policy, backend, revalidate_all=revalidate_all)  # type: ignore[arg-type]
        now = 1000.0
        for i in range(200):  # no TTLs: every stored key stays exact under the contract
            index.add(CacheEntryView(entry_id=i, num_tokens=1 + i % 7, depth_tokens=8 + i % 13,
                                     last_access_s=now - (i * 37) % 200, workflow_id=WorkflowId(f"w{i % 9}"),
                                     reuse_prob=(i % 10) / 10, next_use_at_s=now + (i * 11) % 50),
                      now, 0.5)  # fmt: skip
        policy.calls = 0
        out = []
        for step in range(150):
            now += 0.01
            view = index.pop(now, 0.5 if step % 50 else 0.95)  # protects flips twice
            assert view is not None
            out.append(view.entry_id)
            index.note_use(view.entry_id)
        victims[revalidate_all], calls[revalidate_all] = out, policy.calls
    assert victims[False] == victims[True]
    # Full revalidation recomputes at least the top's key per pop; the shortcut only after a flip.
    assert calls[True] >= 150
    assert calls[False] < calls[True] // 2


# --- the build detects a missing toolchain and falls back ---------------------------------------


def test_build_without_a_compiler_says_so_and_keeps_the_fallback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from saga_kernels import build

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(build, "TARGET", tmp_path / "_keyheap.so")  # never touch the real build
    assert build.find_compiler() is None
    assert build.build(force=True) is False
    assert "no C compiler" in capsys.readouterr().out
    assert not (tmp_path / "_keyheap.so").exists()
    assert len(PyKeyHeap()) == 0  # the fallback needs nothing built


def test_build_compiles_the_extension_from_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from saga_kernels import build

    if build.find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    target = tmp_path / build.TARGET.name
    monkeypatch.setattr(build, "TARGET", target)
    assert build.build(force=True) is True and target.exists()
