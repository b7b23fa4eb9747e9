"""The ``sglang.srt.plugins`` entry point: ``register()``.

SGLang calls ``register()`` once per process (launcher, scheduler, detokenizer; they are spawned,
so each process registers again). It is idempotent and cheap:

1. ``compat.check()``: every SGLang internal the plugin uses exists (else ``IncompatibleSGLang``).
   SGLang's ``load_plugins`` logs and swallows plugin errors, after which argparse would only say
   "invalid choice: 'saga'"; so when the command line asks for one of our policies, the mismatch
   message is printed and the process exits with it (``refuse_incompatible``).
2. Every eviction policy of ``saga_sgl.policy.registry`` that SGLang does not already implement
   becomes a ``--radix-eviction-policy`` choice (``add_radix_eviction_policy_choices``) and a
   strategy factory (``_EVICTION_POLICY_FACTORIES``); ``saga`` is an alias of our default.
   SGLang's own names (``lru``) keep SGLang's own strategy: the baseline stays the real one.
3. AROUND hooks (``saga_sgl.worker.hooks.HOOKS``) are registered with SGLang's ``HookRegistry``;
   SGLang's plugin loader applies them after all plugins ran.

The scheduler process's ``WorkerRuntime`` (hint table, control channel, counters) is created when
SGLang first builds a saga strategy, i.e. at cache construction, so the launcher and the
detokenizer never bind a socket. Caches with a saga policy get SGLang's Rust tree core with the
saga victims (``rust_tree``, registered as tree-core backend ``saga-rust``) where SGLang would pick
the Rust core and the cache has no host tier, else the Python tree core (hooked
``select_tree_core_backend``); other caches keep SGLang's choice (Rust by default).

Configuration: ``--radix-eviction-policy-config '{...}'`` holds the policy's settings (strictly
loaded by the policy registry) plus the worker keys of ``saga_sgl.worker.settings.WorkerSettings``
(``control_address``, ``metrics_port``, ...). Environment variables: see ``worker/settings.py``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from saga_sgl.errors import IncompatibleSGLang
from saga_sgl.policy import registry
from saga_sgl.worker.runtime import WorkerRuntime
from saga_sgl.worker.settings import WorkerSettings, replica_address, split_config
from saga_sgl.worker.strategy import SagaEvictionStrategy

log = logging.getLogger(__name__)

SAGA_ALIAS: Final = "saga"
"""SGLang policy name that selects our default eviction policy."""
DEFAULT_EVICTION: Final = registry.DEFAULT_EVICTION
"""Registry eviction policy behind ``saga``: the registry's default (chosen by the replay benchmark)."""


class StrategyFactory:
    """What SGLang's ``get_eviction_strategy`` calls: ``factory(**config) -> strategy``."""

    def __init__(self, policy_name: str, runtime_provider: Callable[[], WorkerRuntime]) -> None:
        self.policy_name = policy_name
        self._runtime_provider = runtime_provider

    def __repr__(self) -> str:
        return f"StrategyFactory({self.policy_name!r})"

    def __call__(self, **config: Any) -> SagaEvictionStrategy:
        require_replica_steps()
        worker_settings, policy_config = split_config(config)
        policy = build_eviction_policy(self.policy_name, policy_config)
        runtime = self._runtime_provider()
        address = control_bind_address(worker_settings)
        runtime.configure(worker_settings, bind=address is not None, bind_address=address)
        log.info(
            "saga eviction strategy: policy=%s settings=%s control=%s",
            self.policy_name,
            getattr(policy, "settings", None),
            runtime.control.endpoint if runtime.control is not None else None,
        )
        return SagaEvictionStrategy(runtime, policy)


class _ProcessState:
    """What ``register()`` did in this process (SGLang's loader is per process, so is this)."""

    def __init__(self) -> None:
        self.registered = False
        self.sglang_names: dict[str, str] = {}
        self.runtime: WorkerRuntime | None = None

    def process_runtime(self) -> WorkerRuntime:
        if self.runtime is None:
            from saga_sgl.clock import SystemClock

            self.runtime = WorkerRuntime(clock=SystemClock())
        return self.runtime


_STATE = _ProcessState()


def process_runtime() -> WorkerRuntime | None:
    """This process's runtime, if a saga strategy was built here (else None)."""
    return _STATE.runtime


def require_replica_steps() -> None:
    """Refuse data-parallel attention, the one layout the control step cannot follow.

    TP and PP ranks of a replica share one request leader, whose ``ControlStep`` reaches every
    rank with the requests. With DP attention several leaders share one TP group and SGLang
    re-broadcasts non-request objects from global rank 0 only, so groups would see another
    group's step. Plain data parallelism (one scheduler per replica) is fine.
    """
    try:
        from sglang.srt.runtime_context import get_parallel

        attn_dp = bool(get_parallel().attn_dp_enabled)
    except (ImportError, RuntimeError, ValueError, AttributeError):
        return  # no parallel context (in-process use): one rank
    if attn_dp:
        from saga_sgl.errors import InvalidSettings

        raise InvalidSettings(
            "saga eviction policies do not support --enable-dp-attention (several request leaders "
            "per TP group); use tensor/pipeline parallelism or plain --dp replicas"
        )


def control_bind_address(settings: WorkerSettings) -> str | None:
    """The control address this process binds: the replica's, on its request leader only.

    TP/PP ranks other than the leader get control messages through the step broadcast; with data
    parallelism each replica binds its own address (``replica_address``)."""
    if not settings.control_address:
        return None
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        leader = parallel.pp_rank == 0 and parallel.attn_tp_rank == 0 and parallel.attn_cp_rank == 0
        dp_rank = parallel.dp_rank
    except (ImportError, RuntimeError, ValueError, AttributeError):
        leader, dp_rank = True, None  # no parallel context (in-process use): one rank
    if not leader:
        return None
    address = replica_address(settings.control_address, dp_rank)
    if address != settings.control_address:
        log.info("saga control channel of data-parallel replica %s: %s", dp_rank, address)
    return address


def build_eviction_policy(name: str, config: Mapping[str, Any] | None) -> Any:
    """The core policy ``name`` with settings from ``config`` (strict: unknown keys raise)."""
    from saga_sgl.policy import registry

    return registry.create_eviction(name, config)


def sglang_policy_names(existing: Mapping[str, Any] | None = None) -> dict[str, str]:
    """SGLang ``--radix-eviction-policy`` name -> core policy name, for names SGLang lacks."""
    from saga_sgl.policy import registry

    taken = set(existing or ())
    names = {n: n for n in registry.names(registry.PolicyKind.EVICTION) if n not in taken}
    names[SAGA_ALIAS] = DEFAULT_EVICTION
    return names


def is_saga_policy(sglang_name: str | None) -> bool:
    """True when ``sglang_name`` is a policy this plugin registered with SGLang."""
    if not sglang_name:
        return False
    from sglang.srt.mem_cache import utils

    return isinstance(utils._EVICTION_POLICY_FACTORIES.get(sglang_name.lower()), StrategyFactory)


def register() -> None:
    """Entry point of group ``sglang.srt.plugins`` (idempotent)."""
    if _STATE.registered:
        return
    from saga_sgl.worker import compat

    try:
        compat.check()
    except IncompatibleSGLang as exc:
        refuse_incompatible(exc, sys.argv)
        raise

    from sglang.srt.arg_groups.choices import (
        RADIX_EVICTION_POLICY_CHOICES,
        add_radix_eviction_policy_choices,
    )
    from sglang.srt.mem_cache import utils
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from saga_sgl.worker.hooks import HOOKS

    names = sglang_policy_names(
        {n: f for n, f in utils._EVICTION_POLICY_FACTORIES.items() if not isinstance(f, StrategyFactory)}
    )
    for sglang_name, core_name in names.items():
        utils._EVICTION_POLICY_FACTORIES[sglang_name] = StrategyFactory(core_name, _STATE.process_runtime)
    new_choices = [n for n in names if n not in RADIX_EVICTION_POLICY_CHOICES]
    if new_choices:
        add_radix_eviction_policy_choices(new_choices)
    for target, hook in HOOKS:
        HookRegistry.register(target, hook, HookType.AROUND)
    from saga_sgl.worker.loads import install_decoder

    install_decoder()  # /v1/loads answers carry the residence time the scheduler process adds
    register_rust_tree_core()
    _STATE.sglang_names = names
    _STATE.registered = True
    log.info("saga worker plugin registered eviction policies %s", sorted(names))


def register_rust_tree_core() -> None:
    """Register ``rust_tree.SagaRustTreeCore`` as a tree-core backend (imported when first built,
    so a process that never builds a saga cache never loads the Rust extension)."""
    from sglang.srt.mem_cache.unified_cache import tree_core_registry

    from saga_sgl.worker.hooks import RUST_BACKEND

    def factory(params: Any, components: Any) -> Any:
        from saga_sgl.worker.rust_tree import SagaRustTreeCore

        return SagaRustTreeCore(params)

    if tree_core_registry.get_tree_core_factory(RUST_BACKEND) is None:
        tree_core_registry.register_tree_core_backend(RUST_BACKEND, factory)


def registered_names() -> dict[str, str]:
    """SGLang name -> core policy name registered in this process (empty before ``register``)."""
    return dict(_STATE.sglang_names)


OUR_POLICY_NAMES: Final = frozenset({SAGA_ALIAS, "reuse_time", "wa_lru", "vllm_prefix"})


def requested_policy(argv: Sequence[str]) -> str | None:
    """The ``--radix-eviction-policy`` value on a command line, if any."""
    for i, arg in enumerate(argv):
        if arg == "--radix-eviction-policy" and i + 1 < len(argv):
            return argv[i + 1].lower()
        if arg.startswith("--radix-eviction-policy="):
            return arg.split("=", 1)[1].lower()
    return None


def refuse_incompatible(exc: IncompatibleSGLang, argv: Sequence[str]) -> None:
    """Say why the plugin cannot load where the user looks; exit if the command needs it.

    SGLang's loader would log and swallow the error, and argparse would then report an "invalid
    choice" for our policy name. A server that does not ask for a saga policy keeps running."""
    message = f"saga-sgl worker plugin not loaded: {exc}"
    print(message, file=sys.stderr, flush=True)
    log.error("%s", message)
    if requested_policy(argv) in OUR_POLICY_NAMES:
        raise SystemExit(message)
