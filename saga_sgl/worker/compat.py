"""Start-up self-check of every SGLang internal the plugin touches.

The plugin relies on private or unstable SGLang names (the strategy factory dict, method
signatures it hooks, node fields it reads). ``check()`` verifies all of them before anything is
registered and raises :class:`IncompatibleSGLang` listing every problem and naming the supported
version, instead of failing later inside the scheduler loop. A different version whose internals
all match is accepted with a warning.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, Final

from saga_sgl.errors import IncompatibleSGLang

log = logging.getLogger(__name__)

SUPPORTED_SGLANG: Final = "0.5.23"


def _resolve(dotted: str) -> Any:
    module_name, _, attr_path = dotted.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split(".") if attr_path else ():
        obj = getattr(obj, part)
    return obj


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def _has_params(dotted: str, names: tuple[str, ...]) -> Callable[[], str | None]:
    def check() -> str | None:
        fn = inspect.unwrap(_resolve(dotted))
        missing = [n for n in names if n not in _params(fn)]
        return f"{dotted} lacks parameter(s) {missing}" if missing else None

    return check


def _exists(dotted: str, kind: type | None = None) -> Callable[[], str | None]:
    def check() -> str | None:
        obj = _resolve(dotted)
        if kind is not None and not isinstance(obj, kind):
            return f"{dotted} is a {type(obj).__name__}, expected {kind.__name__}"
        return None

    return check


def _node_fields() -> str | None:
    from sglang.srt.mem_cache.radix_cache import TreeNode
    from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
    from sglang.srt.mem_cache.unified_cache.unified_tree_core import UnifiedTreeNode

    problems = []
    for node in (UnifiedTreeNode((ComponentType.FULL,)), TreeNode()):
        for name in ("parent", "children", "key", "id"):
            if not hasattr(node, name):
                problems.append(f"{type(node).__name__}.{name}")
        if hasattr(type(node), "__slots__"):
            problems.append(f"{type(node).__name__} has __slots__ (the plugin marks nodes)")
    return f"radix node fields missing: {problems}" if problems else None


def _load_snapshot_wire() -> str | None:
    """``/v1/loads`` snapshots: a msgspec Struct encoded as a map (a subclass adds a field), read back
    through the module-level ``snapshot_decoder`` (``worker/loads.py`` swaps it)."""
    import msgspec
    from sglang.srt.managers import load_snapshot

    snapshot = load_snapshot.LoadSnapshot
    if not issubclass(snapshot, msgspec.Struct) or snapshot.__struct_config__.array_like:
        return "LoadSnapshot is not a map-encoded msgspec Struct"
    if not isinstance(getattr(load_snapshot, "snapshot_decoder", None), msgspec.msgpack.Decoder):
        return "load_snapshot.snapshot_decoder is not a msgspec msgpack Decoder"
    if not callable(getattr(snapshot, "to_dict", None)):
        return "LoadSnapshot.to_dict is missing"
    return None


_CHECKS: Final[tuple[tuple[str, Callable[[], str | None]], ...]] = (
    ("policy choices", _exists("sglang.srt.arg_groups.choices:add_radix_eviction_policy_choices")),
    ("policy choices list", _exists("sglang.srt.arg_groups.choices:RADIX_EVICTION_POLICY_CHOICES", list)),
    ("strategy factory", _exists("sglang.srt.mem_cache.utils:_EVICTION_POLICY_FACTORIES", dict)),
    (
        "strategy builder",
        _has_params("sglang.srt.mem_cache.utils:get_eviction_strategy", ("eviction_policy", "config")),
    ),
    ("hook registry", _exists("sglang.srt.plugins.hook_registry:HookRegistry.register")),
    ("hook type", _exists("sglang.srt.plugins.hook_registry:HookType.AROUND")),
    (
        "unified checkpoint",
        _has_params(
            "sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache.checkpoint_into_tree",
            ("req", "up_to"),
        ),
    ),
    (
        "unified evict",
        _has_params("sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache._evict", ("params",)),
    ),
    (
        "unified evictable size",
        _exists("sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache.evictable_size"),
    ),
    (
        "tree core node lookup",
        _exists("sglang.srt.mem_cache.unified_cache.unified_tree_core:UnifiedTreeCore.node_by_id"),
    ),
    (
        "tree core selection",
        _has_params(
            "sglang.srt.mem_cache.unified_cache.tree_core_registry:select_tree_core_backend", ("params",)
        ),
    ),
    (
        "legacy checkpoint",
        _has_params("sglang.srt.mem_cache.radix_cache:RadixCache.checkpoint", ("req", "up_to")),
    ),
    ("legacy evict", _has_params("sglang.srt.mem_cache.radix_cache:RadixCache.evict", ("params",))),
    ("legacy victim", _has_params("sglang.srt.mem_cache.radix_cache:RadixCache._delete_leaf", ("node",))),
    (
        "unified victim",
        _has_params(
            "sglang.srt.mem_cache.unified_radix_cache:UnifiedRadixCache._evict_device_leaf", ("node_id",)
        ),
    ),
    ("legacy evictable size", _exists("sglang.srt.mem_cache.radix_cache:RadixCache.evictable_size")),
    ("radix key child key", _exists("sglang.srt.mem_cache.radix_cache:RadixKey.child_key")),
    (
        "queue order",
        _has_params("sglang.srt.managers.schedule_policy:SchedulePolicy.calc_priority", ("waiting_queue",)),
    ),
    (
        "request kv_hints",
        _has_params("sglang.srt.managers.schedule_batch:Req.__init__", ("kv_hints", "priority")),
    ),
    (
        "cache params",
        _has_params(
            "sglang.srt.mem_cache.cache_init_params:CacheInitParams",
            ("eviction_policy", "eviction_policy_config"),
        ),
    ),
    (
        "tree core leaf sets",
        _has_params(
            "sglang.srt.mem_cache.unified_cache.unified_tree_core:UnifiedTreeCore._update_evictable_leaf_sets",
            ("node",),
        ),
    ),
    (
        "full eviction walk start",
        _has_params(
            "sglang.srt.mem_cache.unified_cache.components.full:FullComponent._evict_device_start",
            ("request_cnt",),
        ),
    ),
    (
        "full eviction walk step",
        _has_params(
            "sglang.srt.mem_cache.unified_cache.components.full:FullComponent._evict_device_next_node",
            ("tracker",),
        ),
    ),
    (
        "full eviction walk end",
        _exists("sglang.srt.mem_cache.unified_cache.components.full:FullComponent._evict_device_end"),
    ),
    ("node fields", _node_fields),
    (
        "load snapshot builder",
        _exists("sglang.srt.managers.scheduler_components.load_inquirer:SchedulerLoadInquirer.get_loads"),
    ),
    ("load snapshot decoder", _load_snapshot_wire),
)


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return "not installed"


def check() -> None:
    """Verify every internal; raise :class:`IncompatibleSGLang` listing all problems."""
    found = installed_version()
    problems: list[str] = []
    for what, probe in _CHECKS:
        try:
            problem = probe()
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            problems.append(f"{what}: {problem}")
    if problems:
        raise IncompatibleSGLang(
            f"saga_sgl's worker plugin supports sglang=={SUPPORTED_SGLANG}, found sglang {found}; "
            "these internals are missing or changed:\n  " + "\n  ".join(problems)
        )
    if found != SUPPORTED_SGLANG:
        log.warning(
            "saga_sgl's worker plugin was built for sglang==%s, found %s; all internals it uses are "
            "present, continuing",
            SUPPORTED_SGLANG,
            found,
        )
