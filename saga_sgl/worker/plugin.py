"""The ``sglang.srt.plugins`` entry point: ``register()``.

SGLang calls ``register()`` once per process (launcher, scheduler, detokenizer; they are spawned,
so each process registers again). It is idempotent and cheap:

1. ``compat.check()``: every SGLang internal the plugin uses exists (else ``IncompatibleSGLang``).
2. Every eviction policy of ``saga_sgl.policy.registry`` that SGLang does not already implement
   becomes a ``--radix-eviction-policy`` choice (``add_radix_eviction_policy_choices``) and a
   strategy factory (``_EVICTION_POLICY_FACTORIES``); ``saga`` is an alias of our default.
   SGLang's own names (``lru``) keep SGLang's own strategy: the baseline stays the real one.
3. AROUND hooks (``saga_sgl.worker.hooks.HOOKS``) are registered with SGLang's ``HookRegistry``;
   SGLang's plugin loader applies them after all plugins ran.

The scheduler process's ``WorkerRuntime`` (hint table, control channel, counters) is created when
SGLang first builds a saga strategy, i.e. at cache construction, so the launcher and the
detokenizer never bind a socket. Caches with a saga policy get the Python tree core (hooked
``select_tree_core_backend``); other caches keep SGLang's choice (Rust by default).

Configuration: ``--radix-eviction-policy-config '{...}'`` holds the policy's settings (strictly
loaded by the policy registry) plus the worker keys of ``saga_sgl.worker.settings.WorkerSettings``
(``control_address``, ``metrics_port``, ...). Environment variables: see ``worker/settings.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from saga_sgl.policy import registry
from saga_sgl.worker.runtime import WorkerRuntime
from saga_sgl.worker.settings import split_config
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
        worker_settings, policy_config = split_config(config)
        policy = build_eviction_policy(self.policy_name, policy_config)
        runtime = self._runtime_provider()
        runtime.configure(worker_settings)
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

    compat.check()

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
    _STATE.sglang_names = names
    _STATE.registered = True
    log.info("saga worker plugin registered eviction policies %s", sorted(names))


def registered_names() -> dict[str, str]:
    """SGLang name -> core policy name registered in this process (empty before ``register``)."""
    return dict(_STATE.sglang_names)
