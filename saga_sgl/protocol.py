"""The one wire schema of saga-sgl (msgspec Structs), versioned.

Channels:

* **kv_hints** on SGLang's ``/generate``: the router attaches a :class:`ReuseHint` as the action
  ``saga.reuse`` (version ``"1"``) inside SGLang's own ``KvHintsEnvelope``
  ``{protocol_version, message_id, actions: [{action_id, action_type, action_version, payload}]}``.
  SGLang passes the envelope to ``Req.kv_hints`` untouched; the worker plugin decodes the payload.
* **control** (router -> worker plugin, ZMQ, msgpack): :data:`ControlMessage`, a tagged union of
  tool started / tool finished / workflow finished / TTL change, for events not tied to a request.
* **/v1/loads** (worker -> router, SGLang's own endpoint): the plugin adds one optional field per
  DP rank, :data:`LOADS_RESIDENCE_FIELD` (``worker/loads.py``); :func:`decode_loads_residence`.

Times on the wire are *relative* seconds (``*_in_s``) measured from the moment the sender built the
message: router and worker clocks are different monotonic clocks, so absolute times would be
meaningless across processes. The receiver converts to its own clock once, at the edge.

Evolution rules (version 1 onwards): new fields go last and have defaults; a field never changes
type; fields are never reordered or renamed. A consumer ignores (and counts) an action type or
version it does not know. Every message is validated once, here; nothing below the decoders
handles raw dicts.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from saga_sgl.errors import MalformedMessage

KV_HINTS_PROTOCOL_VERSION: Final = "1"
"""Version of SGLang's kv_hints envelope that we emit (SGLang 0.5.23 ``managers/kv_hints.py``)."""

REUSE_ACTION_TYPE: Final = "saga.reuse"
REUSE_ACTION_VERSION: Final = "1"

MAX_ID_LEN: Final = 256
"""Workflow, tenant, tool and agent-type ids longer than this are rejected (bounded label/memory use)."""

MAX_DURATION_S: Final = 86_400.0
"""Relative times on the wire (``*_in_s``, ``ttl_s``) above one day are rejected: no prediction of
an agent's next step is that long, and an unbounded value (1e308) would only grow receivers' timers.
Receivers apply their own, tighter caps (the worker caps TTLs at ``WorkerSettings.max_ttl_s``)."""

MAX_STEP: Final = 1_000_000
"""Largest call index of a workflow accepted on the wire."""

MAX_URGENCY: Final = 1e12
"""Largest |urgency| accepted (AFS urgencies are work/slack ratios, far below this)."""

MAX_CONTROL_BYTES: Final = 4096
"""A control message larger than this is rejected before it is decoded (the largest valid one, with
three 256-character ids, is well under 1 KiB)."""


class ReuseHint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """What the router predicts about the KV of one LLM call of a workflow (action ``saga.reuse`` v1).

    Attached to the request that *produces* the KV; the worker plugin records it on the radix nodes of
    that request's path when the request is checkpointed into the tree.
    """

    workflow_id: str
    """Workflow (agent task) the call belongs to; also the request's ``routing_key``."""
    step: int = 0
    """Index of the call (AEG node) within the workflow."""
    tenant_id: str = ""
    """Tenant for fairness accounting; empty when unknown."""
    agent_type: str = ""
    """Agent type (pattern-inference key); empty when unknown."""
    tool: str = ""
    """Tool the agent runs after this call, when known (drives the tool-aware TTL)."""
    reuse_prob: float = 1.0
    """P_reuse of this call's KV (paper Eq. 4-5), in [0, 1]."""
    next_use_in_s: float | None = None
    """Predicted seconds from sending until the KV is read again; None when unknown."""
    ttl_s: float = 0.0
    """Tool-aware TTL (paper Algorithm 1): protect the KV for this many seconds after this call ends
    (= when the tool starts; the worker starts the clock then, so a long decode does not use it up);
    0 = no protection."""
    terminal: bool = False
    """True when this call is the workflow's last: its KV has no predicted reuse."""
    urgency: float = 0.0
    """Agent Fair Share urgency (higher = serve sooner) for the worker's waiting-queue order."""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        for name in ("tenant_id", "agent_type", "tool"):
            _check_id(name, getattr(self, name), required=False)
        if not (0 <= self.step <= MAX_STEP):
            raise MalformedMessage(f"step must be in [0, {MAX_STEP}], got {self.step}")
        if not (0.0 <= self.reuse_prob <= 1.0):
            raise MalformedMessage(f"reuse_prob must be in [0, 1], got {self.reuse_prob}")
        _check_duration("next_use_in_s", self.next_use_in_s)
        _check_duration("ttl_s", self.ttl_s)
        if not (math.isfinite(self.urgency) and abs(self.urgency) <= MAX_URGENCY):
            raise MalformedMessage(
                f"urgency must be finite and |urgency| <= {MAX_URGENCY:g}, got {self.urgency}"
            )


# One validation for every message (run by msgspec on decode and by the constructor alike): ids are
# bounded strings, durations finite, non-negative and at most MAX_DURATION_S.


def _check_id(field: str, value: object, *, required: bool) -> None:
    if not isinstance(value, str):
        raise MalformedMessage(f"{field} must be a string, got {type(value).__name__}")
    if required and not value:
        raise MalformedMessage(f"{field} must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise MalformedMessage(f"{field} is longer than {MAX_ID_LEN} characters")


def _check_duration(field: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"{field} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= MAX_DURATION_S):
        raise MalformedMessage(f"{field} must be finite and in [0, {MAX_DURATION_S:g}] s, got {value}")


# --- kv_hints envelope (SGLang's shape, mirrored and pinned to 0.5.23) ---------------------------


class KvHintAction(msgspec.Struct, frozen=True, kw_only=True):
    action_id: str
    action_type: str
    action_version: str
    payload: dict[str, Any]


class KvHintsEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    protocol_version: str
    message_id: str
    actions: list[KvHintAction]


def request_id(workflow_id: str, step: int) -> str:
    """The ``rid`` we give SGLang for a workflow call: ``"<workflow>:<step>"`` (echoed in meta_info.id)."""
    return f"{workflow_id}:{step}"


def encode_kv_hints(hint: ReuseHint, *, message_id: str | None = None) -> dict[str, Any]:
    """The JSON-ready ``kv_hints`` value for a ``/generate`` body carrying ``hint``."""
    rid = message_id or request_id(hint.workflow_id, hint.step)
    envelope = KvHintsEnvelope(
        protocol_version=KV_HINTS_PROTOCOL_VERSION,
        message_id=rid,
        actions=[
            KvHintAction(
                action_id=f"{rid}/reuse",
                action_type=REUSE_ACTION_TYPE,
                action_version=REUSE_ACTION_VERSION,
                payload=msgspec.to_builtins(hint),
            )
        ],
    )
    return msgspec.to_builtins(envelope)  # type: ignore[no-any-return]


def decode_reuse_hint(payload: Any) -> ReuseHint:
    """Validate one ``saga.reuse`` v1 payload (a dict, as SGLang hands it over).

    Raises :class:`MalformedMessage` naming what is wrong.
    """
    try:
        return msgspec.convert(payload, ReuseHint)
    except MalformedMessage:
        raise
    except msgspec.ValidationError as exc:
        raise MalformedMessage(f"bad saga.reuse payload: {exc}") from exc


def find_reuse_hint(kv_hints: Any) -> ReuseHint | None:
    """Extract our hint from whatever ``Req.kv_hints`` holds (SGLang's decoded envelope or a dict).

    Returns None when there is no ``saga.reuse`` v1 action: other consumers' actions and unknown
    versions are not ours to judge. Raises :class:`MalformedMessage` when our action is malformed.
    """
    if kv_hints is None:
        return None
    actions = _field(kv_hints, "actions")
    if not isinstance(actions, list | tuple):
        raise MalformedMessage("kv_hints.actions must be a list")
    for action in actions:
        if _field(action, "action_type") != REUSE_ACTION_TYPE:
            continue
        if _field(action, "action_version") != REUSE_ACTION_VERSION:
            return None
        return decode_reuse_hint(_field(action, "payload"))
    return None


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# --- control channel (router -> worker plugin over ZMQ) -------------------------------------------


class ToolStarted(msgspec.Struct, frozen=True, kw_only=True, tag="tool_started"):
    """The workflow's agent started a tool call: its KV will be needed again after the tool gap."""

    workflow_id: str
    tool: str
    ttl_s: float = 0.0
    """Tool-aware TTL computed by the router (Algorithm 1), counted from the tool start; 0 = none."""
    next_use_in_s: float | None = None
    """Expected seconds until the workflow reads its KV again, given that it does
    (``aeg.predict.ReusePredictor``); None when unknown."""
    reuse_prob: float | None = None
    """P(the workflow reads its KV again within the cache's horizon), in [0, 1]
    (``aeg.predict.ReusePredictor``, times the AEG's overlap when known); None keeps the hint's."""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_id("tool", self.tool, required=False)
        _check_duration("ttl_s", self.ttl_s)
        _check_duration("next_use_in_s", self.next_use_in_s)
        if self.reuse_prob is not None and not (
            isinstance(self.reuse_prob, int | float)
            and not isinstance(self.reuse_prob, bool)
            and 0.0 <= self.reuse_prob <= 1.0
        ):
            raise MalformedMessage(f"reuse_prob must be in [0, 1], got {self.reuse_prob!r}")


class ToolFinished(msgspec.Struct, frozen=True, kw_only=True, tag="tool_finished"):
    """The tool returned: the next call of the workflow is imminent."""

    workflow_id: str
    tool: str = ""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_id("tool", self.tool, required=False)


class WorkflowFinished(msgspec.Struct, frozen=True, kw_only=True, tag="workflow_finished"):
    """The workflow ended: its private KV has no further predicted reuse and goes first."""

    workflow_id: str

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)


class TtlChanged(msgspec.Struct, frozen=True, kw_only=True, tag="ttl_changed"):
    """The router re-computed a workflow's TTL (e.g. memory pressure changed)."""

    workflow_id: str
    ttl_s: float

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_duration("ttl_s", self.ttl_s)


ControlMessage = ToolStarted | ToolFinished | WorkflowFinished | TtlChanged

_control_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(ControlMessage)


def encode_control(message: ControlMessage) -> bytes:
    return _control_encoder.encode(message)


def decode_control(data: bytes) -> ControlMessage:
    """Decode one control message; raises :class:`MalformedMessage` on anything else.

    Every field is checked by the message's own validation (bounded ids, finite bounded durations);
    an oversized message is rejected before it is decoded.
    """
    if len(data) > MAX_CONTROL_BYTES:
        raise MalformedMessage(f"bad control message: {len(data)} bytes, more than {MAX_CONTROL_BYTES}")
    try:
        message: ControlMessage = _control_decoder.decode(data)
    except MalformedMessage as exc:
        raise MalformedMessage(f"bad control message: {exc}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"bad control message: {exc}") from exc
    return message


# --- client side (SGLang DSL programs via SagaEndpoint -> router) ---------------------------------
#
# Two carriers, both produced by ``saga_sgl.frontend``:
#
# * per call, a ``saga.aeg`` v1 action in the request's kv_hints (:class:`CallTag`): which workflow,
#   which node of the program's graph, its parents and the tool gap before it. The request's ``rid``
#   is ``request_id(workflow_id, step)`` and its ``routing_key`` the workflow id; the stock
#   sglang-router drops kv_hints, so there only the rid survives.
# * out of band, ``POST /saga/events`` (:data:`CLIENT_EVENTS_PATH`) with one JSON :data:`ClientEvent`
#   per body: tool started / tool finished / workflow finished (the router maps them to the control
#   messages above) and the AEG recorded so far (:class:`AegSubmission`). A server without the
#   endpoint (plain worker, stock router) answers 404; the client then stops sending.

CLIENT_EVENTS_PATH: Final = "/saga/events"
"""Router endpoint that accepts one JSON-encoded :data:`ClientEvent` per POST."""

AEG_ACTION_TYPE: Final = "saga.aeg"
AEG_ACTION_VERSION: Final = "1"

EDGE_KINDS: Final = ("next", "branch", "join", "retry")
"""Edge kinds of a recorded program graph. ``next``: the program's following call (same context,
grown); ``branch``: parent -> first call of a fork branch (shares the fork prefix); ``join``: last call
of a branch -> the parent's first call after ``join()``; ``retry``: a repeated call after a failure."""

CALL_KINDS: Final = ("gen", "select", "prefill", "cache_prefix")
"""What a tagged request is: a ``gen``, a ``select`` (and its per-choice sub-requests), the prefill a
fork sends on its parent before the branches start, or a ``run_batch`` prefix pre-cache."""

MAX_GRAPH_NODES: Final = 4096
"""Largest node (and edge) list one AEG submission may carry; bounds the router's memory per workflow."""

MAX_PARENTS: Final = 256
"""Most parents one call may name (a join of that many fork branches)."""


def _check_ids(field: str, values: list[str], limit: int) -> None:
    if len(values) > limit:
        raise MalformedMessage(f"{field} has {len(values)} entries, more than {limit}")
    for value in values:
        _check_id(field, value, required=True)


def _check_seconds(field: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0.0):
        raise MalformedMessage(f"{field} must be finite and >= 0, got {value}")


class CallTag(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Where one request sits in its workflow's program graph (action ``saga.aeg`` v1).

    The client knows structure, not the future: it never claims reuse probabilities (those are the
    router's :class:`ReuseHint`), only what happened: this call, its parents, the tool gap before it.
    """

    workflow_id: str
    node_id: str
    """Deterministic id of the call in the program, e.g. ``r0/1`` or ``r0.f0.1/0`` (branch 1 of fork 0)."""
    step: int = 0
    """Issue order of the call within the workflow (``request_id``'s step)."""
    call: str = "gen"
    """One of :data:`CALL_KINDS`."""
    parents: list[str] = msgspec.field(default_factory=list)
    """Node ids this call follows (several after a join)."""
    edge_kinds: list[str] = msgspec.field(default_factory=list)
    """Kind of the edge from each parent (same length as ``parents``), one of :data:`EDGE_KINDS`."""
    tool_before: str = ""
    """Tool the program ran between the parent and this call; empty when none."""
    tool_latency_s: float | None = None
    """Measured duration of ``tool_before``."""
    agent_type: str = ""
    tenant_id: str = ""
    slo_class: str = ""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_id("node_id", self.node_id, required=True)
        for name in ("tool_before", "agent_type", "tenant_id", "slo_class"):
            _check_id(name, getattr(self, name), required=False)
        if self.step < 0:
            raise MalformedMessage(f"step must be >= 0, got {self.step}")
        if self.call not in CALL_KINDS:
            raise MalformedMessage(f"call must be one of {CALL_KINDS}, got {self.call!r}")
        _check_ids("parents", self.parents, MAX_PARENTS)
        if len(self.edge_kinds) != len(self.parents):
            raise MalformedMessage(
                f"edge_kinds has {len(self.edge_kinds)} entries for {len(self.parents)} parents"
            )
        for kind in self.edge_kinds:
            if kind not in EDGE_KINDS:
                raise MalformedMessage(f"edge kind must be one of {EDGE_KINDS}, got {kind!r}")
        _check_seconds("tool_latency_s", self.tool_latency_s)


def encode_call_tag(tag: CallTag, *, message_id: str) -> dict[str, Any]:
    """The JSON-ready ``kv_hints`` value for a ``/generate`` body tagged with ``tag``."""
    envelope = KvHintsEnvelope(
        protocol_version=KV_HINTS_PROTOCOL_VERSION,
        message_id=message_id,
        actions=[
            KvHintAction(
                action_id=f"{message_id}/aeg",
                action_type=AEG_ACTION_TYPE,
                action_version=AEG_ACTION_VERSION,
                payload=msgspec.to_builtins(tag),
            )
        ],
    )
    return msgspec.to_builtins(envelope)  # type: ignore[no-any-return]


def find_call_tag(kv_hints: Any) -> CallTag | None:
    """Extract the ``saga.aeg`` v1 action from a request's kv_hints (None when absent or another
    version); raises :class:`MalformedMessage` when ours is malformed."""
    if kv_hints is None:
        return None
    actions = _field(kv_hints, "actions")
    if not isinstance(actions, list | tuple):
        raise MalformedMessage("kv_hints.actions must be a list")
    for action in actions:
        if _field(action, "action_type") != AEG_ACTION_TYPE:
            continue
        if _field(action, "action_version") != AEG_ACTION_VERSION:
            return None
        try:
            return msgspec.convert(_field(action, "payload"), CallTag)
        except MalformedMessage:
            raise
        except msgspec.ValidationError as exc:
            raise MalformedMessage(f"bad saga.aeg payload: {exc}") from exc
    return None


class ClientToolStarted(msgspec.Struct, frozen=True, kw_only=True, tag="tool_started"):
    """The agent program started a tool (``saga.tool``) after call ``node_id``; its KV waits."""

    workflow_id: str
    tool: str
    node_id: str = ""
    """The call whose output the tool consumes (the workflow's last call); empty when none yet."""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_id("tool", self.tool, required=True)
        _check_id("node_id", self.node_id, required=False)


class ClientToolFinished(msgspec.Struct, frozen=True, kw_only=True, tag="tool_finished"):
    """The tool returned after ``latency_s`` seconds (measured by the client); the next call is near."""

    workflow_id: str
    tool: str
    node_id: str = ""
    latency_s: float = 0.0
    ok: bool = True
    """False when the tool raised (the latency still counts)."""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        _check_id("tool", self.tool, required=True)
        _check_id("node_id", self.node_id, required=False)
        _check_seconds("latency_s", self.latency_s)


class ClientWorkflowFinished(msgspec.Struct, frozen=True, kw_only=True, tag="workflow_finished"):
    """The agent program (all programs of a ``saga.workflow`` block) ended."""

    workflow_id: str
    calls: int = 0
    """LLM calls the workflow made."""
    duration_s: float | None = None
    """Wall time from the first call to the end, measured by the client."""
    ok: bool = True
    """False when the program ended with an error."""

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        if self.calls < 0:
            raise MalformedMessage(f"calls must be >= 0, got {self.calls}")
        _check_seconds("duration_s", self.duration_s)


class SubmittedNode(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One call of a recorded program graph, with token counts from its response (estimates for the
    AEG's next use: prompt = input tokens of the call, output = completion tokens)."""

    node_id: str
    call: str = "gen"
    tool: str = ""
    """Tool the program ran after this call; empty when none."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    observation_tokens: int = 0
    """Tokens the program appended between this call and its successor (tool output, user text)."""
    terminal: bool = False

    def __post_init__(self) -> None:
        _check_id("node_id", self.node_id, required=True)
        _check_id("tool", self.tool, required=False)
        if self.call not in CALL_KINDS:
            raise MalformedMessage(f"call must be one of {CALL_KINDS}, got {self.call!r}")
        for name in ("prompt_tokens", "output_tokens", "cached_tokens", "observation_tokens"):
            if getattr(self, name) < 0:
                raise MalformedMessage(f"{name} must be >= 0, got {getattr(self, name)}")


class SubmittedEdge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One recorded edge. ``shared_prefix_tokens``: tokens of ``src``'s context that ``dst`` starts
    with (the fork prefix for ``branch`` and ``join``); None when unknown."""

    src: str
    dst: str
    kind: str = "next"
    shared_prefix_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_id("src", self.src, required=True)
        _check_id("dst", self.dst, required=True)
        if self.kind not in EDGE_KINDS:
            raise MalformedMessage(f"edge kind must be one of {EDGE_KINDS}, got {self.kind!r}")
        if self.shared_prefix_tokens is not None and self.shared_prefix_tokens < 0:
            raise MalformedMessage(f"shared_prefix_tokens must be >= 0, got {self.shared_prefix_tokens}")


class AegSubmission(msgspec.Struct, frozen=True, kw_only=True, tag="aeg_submission"):
    """The program graph a workflow has run so far (tier 1, explicit AEG). Sent again, with a higher
    ``revision``, as the program grows; ``complete`` on the last one. ``saga_sgl.aeg.build.from_recorded``
    turns it into an AEG (the rule for parallel fork branches lives there)."""

    workflow_id: str
    revision: int = 0
    complete: bool = False
    agent_type: str = ""
    tenant_id: str = ""
    slo_class: str = ""
    nodes: list[SubmittedNode] = msgspec.field(default_factory=list)
    edges: list[SubmittedEdge] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        _check_id("workflow_id", self.workflow_id, required=True)
        for name in ("agent_type", "tenant_id", "slo_class"):
            _check_id(name, getattr(self, name), required=False)
        if self.revision < 0:
            raise MalformedMessage(f"revision must be >= 0, got {self.revision}")
        for name, items in (("nodes", self.nodes), ("edges", self.edges)):
            if len(items) > MAX_GRAPH_NODES:
                raise MalformedMessage(f"{name} has {len(items)} entries, more than {MAX_GRAPH_NODES}")
        known = {n.node_id for n in self.nodes}
        if len(known) != len(self.nodes):
            raise MalformedMessage("duplicate node_id in nodes")
        for e in self.edges:
            for end in (e.src, e.dst):
                if end not in known:
                    raise MalformedMessage(f"edge {e.src!r}->{e.dst!r} names unknown node {end!r}")


def aeg_from_submission(submission: AegSubmission) -> Any:
    """The :class:`saga_sgl.aeg.AEG` of a submission (``aeg.build.from_recorded``: the rule for
    parallel fork branches). Raises ``InvalidGraph``/``ValueError`` when it is not a valid AEG."""
    from saga_sgl.aeg.build import RecordedCall, RecordedLink, from_recorded
    from saga_sgl.policy.views import AgentType

    if not submission.nodes:
        raise MalformedMessage("an AEG submission needs at least one node to build a graph")
    calls = [
        RecordedCall(
            node_id=n.node_id,
            tool=n.tool,
            prompt_tokens=n.prompt_tokens,
            output_tokens=n.output_tokens,
            observation_tokens=n.observation_tokens,
            terminal=n.terminal,
        )
        for n in submission.nodes
    ]
    links = [
        RecordedLink(src=e.src, dst=e.dst, kind=e.kind, shared_prefix_tokens=e.shared_prefix_tokens)
        for e in submission.edges
    ]
    return from_recorded(
        calls, links, agent_type=AgentType(submission.agent_type) if submission.agent_type else None
    )


ClientEvent = ClientToolStarted | ClientToolFinished | ClientWorkflowFinished | AegSubmission

_client_event_decoder = msgspec.json.Decoder(ClientEvent)


def encode_client_event(event: ClientEvent) -> bytes:
    """The JSON body of one ``POST /saga/events``."""
    return msgspec.json.encode(event)


def decode_client_event(data: bytes) -> ClientEvent:
    """Decode one ``POST /saga/events`` body; raises :class:`MalformedMessage` on anything else."""
    try:
        event: ClientEvent = _client_event_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(f"bad client event: {exc}") from exc
    return event


# -- /v1/loads -----------------------------------------------------------------------------------

LOADS_RESIDENCE_FIELD: Final = "saga_residence_s"
"""Optional field of a ``/v1/loads`` rank entry: the rank's cache residence time in seconds (cached
tokens / recent eviction rate), published by the saga plugin once its cache has evicted. Absent:
unknown (stock SGLang, an older plugin, no eviction yet)."""


def decode_loads_residence(ranks: Any) -> float:
    """The worker's residence time from the rank entries of a ``/v1/loads`` answer: the shortest one
    published (the most pressured rank; the router does not know which rank holds a workflow), inf
    when no rank publishes it. Raises :class:`MalformedMessage` on a value that is not a positive
    number (seconds, at most ``MAX_DURATION_S``); the caller keeps the rest of the sample."""
    best = math.inf
    for rank in ranks if isinstance(ranks, list) else ():
        value = rank.get(LOADS_RESIDENCE_FIELD) if isinstance(rank, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= MAX_DURATION_S:
            raise MalformedMessage(
                f"/v1/loads {LOADS_RESIDENCE_FIELD} must be seconds in (0, {MAX_DURATION_S:g}], got {value!r}"
            )
        best = min(best, float(value))
    return best
