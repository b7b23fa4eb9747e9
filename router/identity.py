"""Which workflow a request belongs to, from whatever the client sent.

Sources, first match wins: our ``saga`` body field; the ``saga.aeg`` action of ``kv_hints`` (the
SGLang DSL frontend); the body's ``routing_key``; the ``X-SMG-Routing-Key`` header (sglang-router's
own); ``session_params.id`` (read, then removed: a worker answers 400 for a session it never
opened); the ``X-Session-ID`` header; the prefix of a ``"<workflow>:<step>"`` rid. Without any of
them a request is a workflow of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from saga_sgl.errors import MalformedMessage
from saga_sgl.protocol import MAX_ID_LEN, find_call_tag

from .inbound import BadRequest

ROUTING_KEY_HEADER = "X-SMG-Routing-Key"
SESSION_HEADER = "X-Session-ID"

_anonymous = itertools.count()


@dataclass(frozen=True, slots=True)
class Identity:
    workflow_id: str
    source: str
    """Where the id came from (a metric label): saga, kv_hints, routing_key, header, session, rid, own."""
    step: int | None = None
    tenant_id: str = ""
    agent_type: str = ""
    tool_before: str = ""
    tool_latency_s: float | None = None
    slo_s: float | None = None

    @property
    def is_own(self) -> bool:
        """A request with no workflow identity: its own one-call workflow."""
        return self.source == "own"


def _text_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise BadRequest(f"{what} is longer than {MAX_ID_LEN} characters")
    return value


def _saga_field(saga: Any) -> Identity:
    if not isinstance(saga, dict):
        raise BadRequest("'saga' must be an object with at least 'workflow_id'")
    workflow = _text_id(saga.get("workflow_id"), "saga.workflow_id")
    step = saga.get("step")
    if step is not None and (type(step) is not int or step < 0):
        raise BadRequest("saga.step must be an integer >= 0")
    slo = saga.get("slo_s")
    if slo is not None and (not isinstance(slo, int | float) or slo <= 0):
        raise BadRequest("saga.slo_s must be a positive number of seconds")
    return Identity(
        workflow_id=workflow,
        source="saga",
        step=step,
        tenant_id=_opt(saga, "tenant_id"),
        agent_type=_opt(saga, "agent_type"),
        tool_before=_opt(saga, "tool_before"),
        slo_s=None if slo is None else float(slo),
    )


def _opt(saga: Mapping[str, Any], key: str) -> str:
    value = saga.get(key, "")
    if value == "":
        return ""
    return _text_id(value, f"saga.{key}")


def _rid_step(rid: Any) -> tuple[str, int] | None:
    if not isinstance(rid, str):
        return None
    workflow, sep, step = rid.rpartition(":")
    if sep and workflow and step.isdigit():
        return workflow, int(step)
    return None


def identify(body: dict[str, Any], headers: Mapping[str, str]) -> Identity:
    """The request's workflow identity. Removes the fields a worker must not see (``saga``,
    ``session_params``) from ``body``."""
    saga = body.pop("saga", None)
    session = body.pop("session_params", None)
    rid_parts = _rid_step(body.get("rid"))
    step = rid_parts[1] if rid_parts else None
    if saga is not None:
        ident = _saga_field(saga)
        if ident.step is None and step is not None:
            ident = Identity(**{**_asdict(ident), "step": step})
        return ident
    kv_hints = body.get("kv_hints")
    if kv_hints is not None:
        try:
            tag = find_call_tag(kv_hints)
        except MalformedMessage as exc:
            raise BadRequest(str(exc)) from exc
        if tag is not None:
            return Identity(
                workflow_id=tag.workflow_id,
                source="kv_hints",
                step=tag.step,
                tenant_id=tag.tenant_id,
                agent_type=tag.agent_type,
                tool_before=tag.tool_before,
                tool_latency_s=tag.tool_latency_s,
            )
    key = body.get("routing_key")
    if key:
        return Identity(workflow_id=_text_id(key, "routing_key"), source="routing_key", step=step)
    key = headers.get(ROUTING_KEY_HEADER)
    if key:
        return Identity(workflow_id=_text_id(key, ROUTING_KEY_HEADER), source="header", step=step)
    if isinstance(session, dict) and session.get("id"):
        return Identity(workflow_id=_text_id(session["id"], "session_params.id"), source="session", step=step)
    key = headers.get(SESSION_HEADER)
    if key:
        return Identity(workflow_id=_text_id(key, SESSION_HEADER), source="session", step=step)
    if rid_parts is not None:
        return Identity(workflow_id=rid_parts[0], source="rid", step=step)
    return Identity(workflow_id=f"req-{next(_anonymous)}", source="own", step=0)


def _asdict(ident: Identity) -> dict[str, Any]:
    return {name: getattr(ident, name) for name in Identity.__slots__}
