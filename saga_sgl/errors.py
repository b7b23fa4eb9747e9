"""The small exception hierarchy of saga-sgl; hosts map these to HTTP codes, counters or exit codes."""

from __future__ import annotations


class SagaError(Exception):
    """Base class of every error saga-sgl raises on purpose."""


class MalformedMessage(SagaError, ValueError):
    """A wire message (HTTP body, kv_hints payload, control message) failed validation.

    A ValueError too, so msgspec reports it as a validation error when raised in ``__post_init__``.
    """


class UnknownWorkflow(SagaError, KeyError):
    """A message names a workflow the receiver has never seen (or already forgot)."""


class NoEligibleWorker(SagaError):
    """Placement found no healthy worker for a call."""


class InvalidSettings(SagaError, ValueError):
    """A policy or host setting is out of range or unknown; the message names the field."""


class IncompatibleSGLang(SagaError, RuntimeError):
    """The installed SGLang lacks an internal the worker plugin needs (we support sglang==0.5.23)."""


class UnknownPolicy(SagaError, KeyError):
    """A policy name is not in ``saga_sgl.policy.registry``; the message lists the known names."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; we want the sentence as written.
        return str(self.args[0]) if self.args else "unknown policy"


class InvalidGraph(SagaError, ValueError):
    """An Agent Execution Graph is structurally wrong (dangling edge, probabilities out of range, ...)."""
