"""The plugin entry point, the compatibility check, settings, and the waiting-queue hook."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from saga_sgl.errors import IncompatibleSGLang, InvalidSettings, UnknownPolicy
from saga_sgl.protocol import ReuseHint
from saga_sgl.worker.settings import CONTROL_ADDRESS_ENV, METRICS_PORT_ENV, WorkerSettings, split_config

# --- no sglang at import time ---------------------------------------------------------------------


def test_importing_the_worker_package_does_not_import_sglang() -> None:
    code = (
        "import sys\n"
        "import saga_sgl, saga_sgl.worker, saga_sgl.worker.plugin, saga_sgl.worker.hooks\n"
        "import saga_sgl.worker.compat, saga_sgl.worker.control\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sglang', 'torch', 'aiohttp', 'zmq'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- settings -------------------------------------------------------------------------------------


def test_split_config_takes_worker_keys_and_leaves_policy_keys() -> None:
    worker, policy = split_config(
        {"control_address": "tcp://127.0.0.1:7000", "unknown_reuse_after_s": 10.0}, environ={}
    )
    assert worker == WorkerSettings(control_address="tcp://127.0.0.1:7000")
    assert policy == {"unknown_reuse_after_s": 10.0}


def test_environment_fills_worker_settings_and_config_wins() -> None:
    env = {CONTROL_ADDRESS_ENV: "tcp://127.0.0.1:7001", METRICS_PORT_ENV: "9400"}
    worker, _ = split_config(None, environ=env)
    assert worker.control_address == "tcp://127.0.0.1:7001" and worker.metrics_port == 9400
    worker, _ = split_config({"control_address": "ipc:///tmp/saga-ctl"}, environ=env)
    assert worker.control_address == "ipc:///tmp/saga-ctl"


@pytest.mark.parametrize(
    "config",
    [{"control_address": "localhost:7000"}, {"metrics_port": 0}, {"max_tracked_workflows": 0},
     {"max_protected_frac": 0.0}],
    ids=["address-without-scheme", "port-zero", "empty-table", "no-ttl-budget"],
)
def test_bad_worker_settings_fail_naming_the_field(config: dict[str, Any]) -> None:
    with pytest.raises(InvalidSettings, match=next(iter(config))):
        split_config(config, environ={})


def test_the_ttl_budget_is_a_worker_setting_that_the_pressure_level_uses() -> None:
    # Issue 13: at 5% a 2,560-token pool may protect 128 tokens, less than one context in a tool
    # gap; the budget is the plugin's setting now. A stand-in for the cache's two counters (the
    # arithmetic only; the hook that passes the setting runs in the live worker tests).
    from types import SimpleNamespace

    from saga_sgl.worker.runtime import kv_pressure

    worker, policy = split_config({"max_protected_frac": 0.5}, environ={})
    assert worker.max_protected_frac == 0.5 and policy == {}
    pool = SimpleNamespace(size=2560, available_size=lambda: 2560 - 900)
    cache = SimpleNamespace(token_to_kv_pool_allocator=pool, evictable_size=lambda: 900)
    # 900 tokens of a context in its gap under a live TTL: over the 5% budget, pressure is 1 and
    # protection off; within a 50% budget the level is 900 / 1,280.
    assert kv_pressure(cache, 900) == 1.0
    assert kv_pressure(cache, 900, worker.max_protected_frac) == pytest.approx(900 / 1280)


# --- entry point, registration, tree core selection -----------------------------------------------


@pytest.mark.sglang
def test_register_adds_policy_names_once(sglang_cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from sglang.srt.arg_groups import choices
    from sglang.srt.mem_cache import utils
    from sglang.srt.plugins.hook_registry import HookRegistry

    from saga_sgl.worker import plugin

    monkeypatch.setattr(plugin, "_STATE", plugin._ProcessState())
    monkeypatch.setattr(utils, "_EVICTION_POLICY_FACTORIES", dict(utils._EVICTION_POLICY_FACTORIES))
    monkeypatch.setattr(HookRegistry, "_hooks", type(HookRegistry._hooks)(list))
    from sglang.srt.managers import load_snapshot

    monkeypatch.setattr(load_snapshot, "snapshot_decoder", load_snapshot.snapshot_decoder)
    # add_radix_eviction_policy_choices is the bound `extend` of SGLang's own list: restore it in place.
    saved_choices = list(choices.RADIX_EVICTION_POLICY_CHOICES)
    try:
        plugin.register()
        plugin.register()  # idempotent
        _check_registered(plugin, utils, choices, HookRegistry)
    finally:
        choices.RADIX_EVICTION_POLICY_CHOICES[:] = saved_choices


def _check_registered(plugin: Any, utils: Any, choices: Any, HookRegistry: Any) -> None:

    names = plugin.registered_names()
    assert names == {
        "vllm_prefix": "vllm_prefix",
        "wa_lru": "wa_lru",
        "reuse_time": "reuse_time",
        "reuse_density": "reuse_density",
        "saga": "reuse_density",
    }
    for name in names:
        assert isinstance(utils._EVICTION_POLICY_FACTORIES[name], plugin.StrategyFactory)
        assert choices.RADIX_EVICTION_POLICY_CHOICES.count(name) == 1
    # SGLang's own LRU stays SGLang's: the baseline is the real one.
    assert utils._EVICTION_POLICY_FACTORIES["lru"].__name__ == "LRUStrategy"
    assert sum(len(v) for v in HookRegistry._hooks.values()) == len(plugin_hooks())
    # /v1/loads answers of this process carry the residence time its scheduler adds (worker/loads.py).
    from sglang.srt.managers import load_snapshot

    from saga_sgl.worker.loads import SagaLoadSnapshot

    assert load_snapshot.snapshot_decoder.type is SagaLoadSnapshot


def plugin_hooks() -> tuple[Any, ...]:
    from saga_sgl.worker.hooks import HOOKS

    return HOOKS


@pytest.mark.sglang
def test_strategy_factory_loads_policy_settings_strictly(sglang_cpu: None) -> None:
    from saga_sgl.clock import ManualClock
    from saga_sgl.worker.plugin import StrategyFactory
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock())
    strategy = StrategyFactory("wa_lru", lambda: runtime)(alpha=0.6, beta=0.3, gamma=0.1)
    assert strategy.policy.settings.alpha == 0.6
    with pytest.raises(InvalidSettings, match="alhpa"):
        StrategyFactory("wa_lru", lambda: runtime)(alhpa=0.6)
    with pytest.raises(UnknownPolicy):
        StrategyFactory("no_such_policy", lambda: runtime)()


@pytest.mark.sglang
@pytest.mark.parametrize(
    ("policy", "backend", "expected_core"),
    [
        ("saga", "rust", "SagaRustTreeCore"),  # SGLang's Rust core, victims from the saga leaf index
        ("lru", "rust", "RustUnifiedTreeCore"),
        ("saga", "python", "UnifiedTreeCore"),  # where SGLang picks the Python core, so do we
    ],
)
def test_saga_policies_get_the_rust_tree_core_with_saga_victims_and_others_keep_theirs(
    saga_hooks: None, monkeypatch: pytest.MonkeyPatch, policy: str, backend: str, expected_core: str
) -> None:
    import torch
    from sglang.srt.environ import envs
    from sglang.srt.mem_cache import utils
    from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
    from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    from saga_sgl.clock import ManualClock
    from saga_sgl.worker.plugin import StrategyFactory
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock())
    monkeypatch.setitem(
        utils._EVICTION_POLICY_FACTORIES, "saga", StrategyFactory("reuse_time", lambda: runtime)
    )
    pool = MHATokenToKVPool(
        size=32, page_size=1, dtype=torch.bfloat16, head_num=1, head_dim=4, layer_num=1, device="cpu",
        enable_memory_saver=False,
    )  # fmt: skip
    allocator = TokenToKVPoolAllocator(
        size=32, dtype=torch.bfloat16, device="cpu", kvcache=pool, need_sort=False
    )
    params = CacheInitParams(
        disable=False,
        req_to_token_pool=ReqToTokenPool(size=2, max_context_len=64, device="cpu", enable_memory_saver=False),
        token_to_kv_pool_allocator=allocator,
        page_size=1,
        eviction_policy=policy,
        tree_components=(ComponentType.FULL,),
    )
    with envs.SGLANG_UNIFIED_RADIX_TREE_CORE_BACKEND.override(backend):
        cache = UnifiedRadixCache(params)
    assert type(cache.tree_core).__name__ == expected_core


# --- compatibility check ----------------------------------------------------------------------------


@pytest.mark.sglang
def test_compat_check_passes_on_the_installed_sglang(sglang_cpu: None) -> None:
    from saga_sgl.worker import compat

    assert compat.installed_version() == compat.SUPPORTED_SGLANG
    compat.check()


@pytest.mark.sglang
def test_compat_check_names_every_missing_internal_and_the_supported_version(
    sglang_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sglang.srt.managers.schedule_policy import SchedulePolicy
    from sglang.srt.mem_cache import utils

    from saga_sgl.worker import compat

    monkeypatch.delattr(utils, "_EVICTION_POLICY_FACTORIES")
    monkeypatch.delattr(SchedulePolicy, "calc_priority")
    with pytest.raises(IncompatibleSGLang) as info:
        compat.check()
    message = str(info.value)
    assert "sglang==0.5.23" in message
    assert "_EVICTION_POLICY_FACTORIES" in message and "calc_priority" in message


# --- waiting-queue order ----------------------------------------------------------------------------


def _queued_req(rid: str, urgency: float | None, priority: int = 0) -> Any:
    from array import array

    from sglang.srt.managers.kv_hints import decode_kv_hints_envelope
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.sampling.sampling_params import SamplingParams

    from saga_sgl.protocol import encode_kv_hints

    hints = None
    if urgency is not None:
        hint = ReuseHint(workflow_id=f"wf-{rid}", urgency=urgency)
        hints = decode_kv_hints_envelope(json.loads(json.dumps(encode_kv_hints(hint))))
    return Req(
        rid=rid,
        origin_input_text="",
        origin_input_ids=array("q", [1, 2, 3]),
        sampling_params=SamplingParams(temperature=0, max_new_tokens=1),
        kv_hints=hints,
        priority=priority,
    )


@pytest.mark.sglang
@pytest.mark.parametrize(
    ("queue", "priority_scheduling", "expected"),
    [
        ([("a", None), ("b", None), ("c", None)], False, ["a", "b", "c"]),
        ([("a", 0.0), ("b", 2.0), ("c", None), ("d", 1.0), ("e", 2.0)], False, ["b", "e", "d", "a", "c"]),
        ([("a", 5.0, 0), ("b", 1.0, 9), ("c", 3.0, 9)], True, ["c", "b", "a"]),
    ],
    ids=["no-hints-no-op", "by-urgency-stable", "within-priority-class"],
)
def test_calc_priority_reorders_by_urgency(
    make_harness: Any, queue: list[tuple[Any, ...]], priority_scheduling: bool, expected: list[str]
) -> None:
    from sglang.srt.managers.schedule_policy import SchedulePolicy

    h = make_harness("unified", "reuse_time")
    policy = SchedulePolicy(
        policy="fcfs",
        tree_cache=h.cache,
        enable_hierarchical_cache=False,
        enable_priority_scheduling=priority_scheduling,
        schedule_low_priority_values_first=False,
    )
    waiting = [_queued_req(*item) for item in queue]
    for req in waiting:
        req.time_stats.wait_queue_entry_time = 0.0
    policy.calc_priority(waiting)
    assert [r.rid for r in waiting] == expected
    assert h.runtime.metrics.value("hint_updates", source="kv_hints") == sum(
        1 for item in queue if item[1] is not None
    )


@pytest.mark.sglang
def test_calc_priority_leaves_stock_policies_alone(make_harness: Any) -> None:
    from sglang.srt.managers.schedule_policy import SchedulePolicy

    h = make_harness("unified", "sglang_lru")
    policy = SchedulePolicy("fcfs", h.cache, False, False, False)
    waiting = [_queued_req("a", 0.0), _queued_req("b", 9.0)]
    policy.calc_priority(waiting)
    assert [r.rid for r in waiting] == ["a", "b"]


# --- metrics endpoint of our own --------------------------------------------------------------------


def test_metrics_served_on_a_port_of_ours() -> None:
    import urllib.request

    from saga_sgl.clock import ManualClock
    from saga_sgl.local_workers import free_port
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock())
    port = free_port()
    runtime.configure(WorkerSettings(metrics_port=port))
    runtime.metrics.inc("evictions", tier="dead")
    runtime.metrics.inc("evicted_tokens", 30, tier="dead")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        runtime.close()
    assert 'saga_worker_evictions_total{tier="dead"} 1.0' in text
    assert 'saga_worker_evicted_tokens_total{tier="dead"} 30.0' in text
    assert runtime.metrics.snapshot()["evicted_tokens{dead}"] == 30.0


def test_strategy_config_reaches_the_runtime(sglang_cpu: None) -> None:
    from saga_sgl.clock import ManualClock
    from saga_sgl.worker.plugin import StrategyFactory
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock())
    StrategyFactory("reuse_time", lambda: runtime)(max_tracked_workflows=3, threshold_high=0.8)
    assert runtime.table.max_workflows == 3
    for i in range(5):
        runtime.table.apply_hint(ReuseHint(workflow_id=f"w{i}"), received_at_s=float(i))
    assert len(runtime.table) == 3 and runtime.table.num_forgotten == 2


# --- a version mismatch is said where the user sees it -----------------------------------------------


@pytest.mark.sglang
@pytest.mark.parametrize(("policy", "exits"), [("saga", True), ("lru", False)])
def test_version_mismatch_stops_a_saga_server_with_our_message(policy: str, exits: bool) -> None:
    """SGLang's load_plugins swallows plugin errors; argparse then said "invalid choice: 'saga'"."""
    code = (
        "import sys\n"
        "from saga_sgl import _cpu_shims\n"
        "_cpu_shims.activate()\n"
        f"sys.argv = ['launch_server', '--model-path', 'x', '--radix-eviction-policy', {policy!r}]\n"
        "from saga_sgl.errors import IncompatibleSGLang\n"
        "from saga_sgl.worker import compat\n"
        "def broken():\n"
        "    raise IncompatibleSGLang('saga_sgl supports sglang==0.5.23, found sglang 9.9; x missing')\n"
        "compat.check = broken\n"
        "from sglang.srt.plugins import load_plugins\n"
        "load_plugins()\n"
        "print('server continues')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "saga-sgl worker plugin not loaded" in out.stderr and "sglang==0.5.23" in out.stderr
    if exits:
        assert out.returncode != 0 and "server continues" not in out.stdout
    else:
        assert out.returncode == 0 and "server continues" in out.stdout


# --- waiting-queue order: urgent first, nobody waits unboundedly ------------------------------------


@pytest.mark.sglang
def test_an_old_low_urgency_request_is_not_starved_by_new_urgent_ones(make_harness: Any) -> None:
    from sglang.srt.managers.schedule_policy import SchedulePolicy

    h = make_harness("unified", "reuse_time", queue_ageing_s=5.0)
    policy = SchedulePolicy("fcfs", h.cache, False, False, False)
    old = _queued_req("old-low", 0.1)
    waiting = [old]
    policy.calc_priority(waiting)
    h.clock.advance(2.0)
    waiting += [_queued_req("new-high", 1.0)]
    policy.calc_priority(waiting)
    # 2 s of head start is less than the 4.5 s the urgency gap is worth: urgent first.
    assert [r.rid for r in waiting] == ["new-high", "old-low"]
    h.clock.advance(4.0)
    waiting += [_queued_req(f"newer-high-{i}", 1.0) for i in range(5)]
    policy.calc_priority(waiting)
    # Queued 6 s ago it now beats every urgent request that arrived more than 4.5 s after it.
    assert [r.rid for r in waiting][:2] == ["new-high", "old-low"]


def test_the_ageing_order_bounds_the_head_start() -> None:
    from saga_sgl.policy.queue_order import AgeingSettings, QueuedCall, ageing_order

    calls = [QueuedCall(0.0, 0.0), QueuedCall(0.5, 2.0), QueuedCall(4.0, 2.0), QueuedCall(6.0, 2.0)]
    assert ageing_order(calls, AgeingSettings(horizon_s=5.0)) == [1, 2, 0, 3]
    assert ageing_order([QueuedCall(1.0, 0.0), QueuedCall(0.0, 0.0)]) == [1, 0]  # no urgency: FCFS


# --- parallel layouts ---------------------------------------------------------------------------------


@pytest.mark.sglang
def test_only_the_request_leader_binds_and_each_dp_replica_has_its_own_address(
    sglang_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from sglang.srt import runtime_context

    from saga_sgl.worker.plugin import control_bind_address

    settings = WorkerSettings(control_address="tcp://127.0.0.1:6000")

    def ranks(pp: int, attn_tp: int, dp: int | None) -> None:
        # A stand-in for SGLang's published ParallelContext: only the ranks the plugin reads.
        parallel = SimpleNamespace(pp_rank=pp, attn_tp_rank=attn_tp, attn_cp_rank=0, dp_rank=dp)
        monkeypatch.setattr(runtime_context, "get_parallel", lambda: parallel)

    ranks(0, 0, None)
    assert control_bind_address(settings) == "tcp://127.0.0.1:6000"
    ranks(0, 1, None)
    assert control_bind_address(settings) is None  # a TP follower gets steps, binds nothing
    ranks(1, 0, None)
    assert control_bind_address(settings) is None  # a later PP stage
    ranks(0, 0, 2)
    assert control_bind_address(settings) == "tcp://127.0.0.1:6002"


@pytest.mark.sglang
def test_dp_attention_is_refused_for_both_cache_kinds(saga_hooks: None) -> None:
    from sglang.srt.runtime_context import get_parallel

    from saga_sgl.clock import ManualClock
    from saga_sgl.worker.plugin import StrategyFactory
    from saga_sgl.worker.runtime import WorkerRuntime

    runtime = WorkerRuntime(clock=ManualClock())
    with get_parallel().override(attn_dp_enabled=True), pytest.raises(InvalidSettings, match="dp-attention"):
        StrategyFactory("reuse_time", lambda: runtime)()
    with get_parallel().override(attn_dp_enabled=False):
        assert StrategyFactory("reuse_time", lambda: runtime)().policy.name == "reuse_time"
