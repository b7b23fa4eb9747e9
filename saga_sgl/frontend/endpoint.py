"""``SagaEndpoint``: an SGLang DSL backend that tags every call with its place in the workflow.

A ``RuntimeEndpoint`` (SGLang 0.5.23) subclass; programs run on it unchanged, against a plain SGLang
worker, the stock sglang-router 0.3.2 or the saga router. Per ``/generate`` it adds:

* ``rid = "<workflow>:<step>"`` (``protocol.request_id``): the one carrier that survives the stock
  router, echoed as ``meta_info.id``. Sub-requests: ``<rid>:c_<i>`` (select choices), ``<rid>:u_<i>``
  (unconditional likelihoods), ``saga-prefix-<uuid>`` (``run_batch`` prefix pre-cache).
* ``routing_key = <workflow>`` and the header ``X-SMG-Routing-Key`` (the routers' session key).
* ``kv_hints`` with a ``saga.aeg`` action (:class:`~saga_sgl.protocol.CallTag`): workflow, node,
  step, parent edges, the tool gap before the call. The client claims no reuse probabilities.

Out of band it posts tool started / finished, workflow finished and the recorded graph (an AEG
submission with token counts from the responses) to ``/saga/events`` (``frontend.events``).

It also fixes, on the client side, what breaks in 0.5.23's ``RuntimeEndpoint`` against a real worker
(research/sglang-frontend-0.5.23.md section 2):

* ``join(mode="concate_and_append")``: the server has no ``/concate_and_append_request`` (404, then
  the program hangs): ``support_concate_and_append = False`` selects the interpreter's text join.
* ``select`` greedy / unconditional methods: 0.5.23 puts ``None`` first in every
  ``input_token_logprobs``; we ask from ``prompt_len - 3`` and drop that entry, then apply upstream's
  token-healing rule unchanged; the unconditional request asks ``logprob_start_len = 0``.
* batched ``select`` through sglang-router 0.3.2 (422 on ``text: [...]``): one request per choice
  after the first 400/422, remembered for the endpoint's lifetime.
* streaming: each chunk is detected as incremental (``--incremental-streaming-output``) or
  cumulative; cumulative logprobs are turned into the deltas the interpreter merges.
* ``get_server_info`` uses ``/get_server_info`` (the router has no ``/server_info``); ``is_chat_model``
  and ``token_usage`` exist, as on the OpenAI backend.

Where a call sits (workflow, executor path, parents) lives on the StreamExecutor itself
(``s.__dict__["_saga"]``): forks and ``run_batch`` run on other threads, so no thread-locals. The
only patch is ``StreamExecutor.fork`` (class-wide, idempotent, see ``frontend.forks``), because the
interpreter never tells a backend about forks.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint, compute_normalized_prompt_logprobs
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod
from sglang.lang.global_config import global_config
from sglang.lang.interpreter import StreamExecutor
from sglang.lang.ir import SglSamplingParams

from saga_sgl.frontend.context import current_scope
from saga_sgl.frontend.events import EventSink
from saga_sgl.frontend.forks import install_fork_hook
from saga_sgl.frontend.recorder import DEFAULT_MAX_FINISHED, NodeRecord, Recorder, WorkflowRecord
from saga_sgl.protocol import (
    MAX_ID_LEN,
    CallTag,
    ClientEvent,
    ClientToolFinished,
    ClientToolStarted,
    ClientWorkflowFinished,
    encode_call_tag,
    request_id,
)

log = logging.getLogger(__name__)

ROUTING_KEY_HEADER = "X-SMG-Routing-Key"
"""Header the routers read as the session/routing key (sglang-router 0.3.2, saga router)."""
STATE_ATTR = "_saga"
"""Attribute of a StreamExecutor holding its ``ExecState``."""
TOOL_EVENT_ORDER_TIMEOUT_S = 2.0
"""How long the call after a tool waits for the tool's events to reach the router (they are sent in
order; a router that does not answer in time is not waited on longer: the call goes)."""

_STREAM_DELTA_KEYS = ("output_token_logprobs", "output_top_logprobs", "output_token_ids_logprobs")
"""Meta-info lists the interpreter merges as per-chunk deltas (its _INCREMENTAL_STREAMING_META_INFO_KEYS)."""


@dataclass(slots=True)
class TokenUsage:
    """Tokens used by this backend's calls (the OpenAI backend's interface)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def reset(self) -> None:
        self.prompt_tokens = self.completion_tokens = 0


class ExecState:
    """Where one StreamExecutor's calls sit in its workflow's graph. Mutated under the recorder lock."""

    __slots__ = (
        "branched_from",
        "calls",
        "context_tokens",
        "ended",
        "fork_prefix_tokens",
        "forks",
        "last_node_id",
        "next_parents",
        "parent",
        "path",
        "pending_shared_prefix",
        "pending_tool",
        "record",
    )

    def __init__(self, record: WorkflowRecord, path: str, parent: ExecState | None = None) -> None:
        self.record = record
        self.path = path
        self.parent = parent
        self.calls = 0
        self.forks = 0
        self.last_node_id: str | None = None
        self.next_parents: list[tuple[str, str]] | None = None
        """Explicit parents of the next call; None = a ``next`` edge from ``last_node_id``."""
        self.pending_shared_prefix: int | None = None
        self.pending_tool: tuple[str, float] | None = None
        self.branched_from: str | None = None
        """The node the executor's latest fork branched from, until its next call."""
        self.context_tokens = 0
        """Tokens of the executor's text after its latest call (prompt + completion)."""
        self.ended = False
        self.fork_prefix_tokens: int | None = None
        """Branches only: tokens of the parent's context at the fork (shared with parent and siblings)."""


@dataclass(slots=True)
class _Call:
    """One tagged backend call in flight."""

    state: ExecState
    node: NodeRecord
    rid: str
    extras: dict[str, Any]


@dataclass(slots=True)
class ToolHandle:
    state: ExecState
    tool: str
    node_id: str


def workflow_id_from_args(arguments: dict[str, Any]) -> str | None:
    """A program argument ``workflow_id`` (a non-empty string) names the workflow."""
    value = arguments.get("workflow_id") if isinstance(arguments, dict) else None
    return value if isinstance(value, str) and value else None


class SagaEndpoint(RuntimeEndpoint):  # type: ignore[misc]
    """SGLang DSL backend for a SGLang worker or router that tags calls with workflow structure."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        verify: str | None = None,
        chat_template_name: str | None = None,
        *,
        send_events: bool = True,
        events_url: str | None = None,
        workflow_prefix: str = "wf",
        agent_type: str = "",
        tenant_id: str = "",
        slo_class: str = "",
        max_finished_workflows: int = DEFAULT_MAX_FINISHED,
        timeout_s: float | None = None,
    ) -> None:
        """``agent_type``/``tenant_id``/``slo_class``: defaults for workflows started outside a
        ``saga.workflow`` block. ``send_events=False`` keeps the tags and records but posts nothing
        out of band; ``events_url`` sends the events to another server than ``base_url``.
        ``timeout_s``: per-request HTTP timeout (None waits as long as the server takes)."""
        super().__init__(base_url, api_key=api_key, verify=verify, chat_template_name=chat_template_name)
        self.base_url = base_url.rstrip("/")
        self.support_concate_and_append = False
        self.is_chat_model = False
        self.token_usage = TokenUsage()
        self.workflow_prefix = workflow_prefix
        self.defaults = {"agent_type": agent_type, "tenant_id": tenant_id, "slo_class": slo_class}
        self.timeout_s = timeout_s
        self.recorder = Recorder(max_finished=max_finished_workflows)
        self.events: EventSink | None = (
            EventSink(events_url or self.base_url, api_key=api_key) if send_events else None
        )
        self.batched_text_ok: bool | None = None
        """None until a batched ``select`` was tried; False after the server refused one (stock router)."""
        self._usage_lock = threading.Lock()
        self._ssl = ssl.create_default_context(cafile=verify) if verify else None
        install_fork_hook()

    # -- sgl.Runtime compatibility ------------------------------------------------------------------

    @property
    def endpoint(self) -> SagaEndpoint:
        return self

    def get_server_info(self) -> Any:
        status, body = self._request("GET", "/get_server_info", None, routing_key=None)
        return self._json_or_raise(status, body)

    # -- where a call sits ----------------------------------------------------------------------

    def _state(self, s: StreamExecutor) -> ExecState:
        """The executor's state; a root executor gets one (and its workflow) on first use."""
        with self.recorder.lock:
            state: ExecState | None = s.__dict__.get(STATE_ATTR)
            if state is not None:
                return state
            scope = current_scope()
            if scope is not None:
                with scope.lock:
                    entry = scope.records.get(id(self))
                    if entry is None:
                        record = self.recorder.open(
                            scope.workflow_id,
                            explicit=True,
                            agent_type=scope.agent_type,
                            tenant_id=scope.tenant_id,
                            slo_class=scope.slo_class,
                        )
                        scope.records[id(self)] = (self, record)
                    else:
                        record = entry[1]
                    scope.executors.append(s)
            else:
                wid = workflow_id_from_args(s.arguments) or f"{self.workflow_prefix}-{uuid.uuid4().hex[:16]}"
                if len(wid) > MAX_ID_LEN:
                    raise ValueError(f"workflow_id longer than {MAX_ID_LEN} characters: {wid[:40]}...")
                record = self.recorder.open(wid, explicit=False, **self.defaults)
            state = ExecState(record, f"r{record.programs}")
            record.programs += 1
            record.open_roots += 1
            if record.last_node_id is not None:
                state.next_parents = [(record.last_node_id, "next")]
            s.__dict__[STATE_ATTR] = state
            return state

    def on_fork(self, parent: StreamExecutor, children: list[StreamExecutor]) -> None:
        """Called by the fork hook right after ``StreamExecutor.fork`` (its prefill is done)."""
        pstate = self._state(parent)
        with self.recorder.lock:
            fork_index = pstate.forks
            pstate.forks += 1
            src = pstate.last_node_id
            pstate.branched_from = src
            for i, child in enumerate(children):
                cstate = ExecState(pstate.record, f"{pstate.path}.f{fork_index}.{i}", parent=pstate)
                cstate.context_tokens = pstate.context_tokens
                cstate.fork_prefix_tokens = pstate.context_tokens
                cstate.pending_tool = pstate.pending_tool
                if src is not None:
                    cstate.next_parents = [(src, "branch")]
                    cstate.pending_shared_prefix = pstate.context_tokens
                elif pstate.next_parents:
                    cstate.next_parents = list(pstate.next_parents)
                child.__dict__[STATE_ATTR] = cstate

    def _begin(self, s: StreamExecutor, call: str) -> _Call:
        state = self._state(s)
        rec = state.record
        with self.recorder.lock:
            step = self.recorder.next_step(rec)
            node_id = f"{state.path}/{state.calls}"
            state.calls += 1
            if state.next_parents is not None:
                parents = state.next_parents
            else:
                parents = [(state.last_node_id, "next")] if state.last_node_id is not None else []
            tool_before, tool_latency = state.pending_tool or ("", None)
            node = NodeRecord(
                node_id=node_id,
                step=step,
                call=call,
                parents=parents,
                shared_prefix_tokens=state.pending_shared_prefix,
                tool_before=tool_before,
                tool_latency_s=tool_latency,
                started_at_s=time.monotonic(),
            )
            state.next_parents = None
            state.pending_shared_prefix = None
            state.pending_tool = None
            state.branched_from = None
            state.last_node_id = node_id
            rec.last_node_id = node_id
            self.recorder.add_node(rec, node)
        if tool_latency is not None and self.events is not None:
            # Events go out on a background thread: without this the call that follows a tool could
            # overtake its ToolFinished, and the router would end the gap without telling the worker.
            self.events.flush(TOOL_EVENT_ORDER_TIMEOUT_S)
        rid = request_id(rec.workflow_id, step)
        tag = CallTag(
            workflow_id=rec.workflow_id,
            node_id=node_id,
            step=step,
            call=call,
            parents=[p for p, _ in parents],
            edge_kinds=[k for _, k in parents],
            tool_before=tool_before,
            tool_latency_s=tool_latency,
            agent_type=rec.agent_type,
            tenant_id=rec.tenant_id,
            slo_class=rec.slo_class,
        )
        extras = {
            "rid": rid,
            "routing_key": rec.workflow_id,
            "kv_hints": encode_call_tag(tag, message_id=rid),
        }
        return _Call(state, node, rid, extras)

    def _done(self, call: _Call, meta: dict[str, Any], *, output_tokens: int | None = None) -> None:
        prompt = int(meta.get("prompt_tokens") or 0)
        completion = int(meta.get("completion_tokens") or 0) if output_tokens is None else output_tokens
        with self.recorder.lock:
            call.node.prompt_tokens = prompt
            call.node.output_tokens = completion
            call.node.cached_tokens = int(meta.get("cached_tokens") or 0)
            call.node.finished_at_s = time.monotonic()
            call.node.worker_e2e_s = _seconds(meta.get("e2e_latency"))
            call.node.worker_queue_s = _seconds(meta.get("queue_time"))
            call.state.context_tokens = prompt + completion
        with self._usage_lock:
            self.token_usage.prompt_tokens += prompt
            self.token_usage.completion_tokens += completion

    # -- program and workflow ends --------------------------------------------------------------

    def begin_program(self, s: StreamExecutor) -> None:
        """Never called by the 0.5.23 interpreter; root state is created on first use instead."""

    def end_program(self, s: StreamExecutor | list[StreamExecutor]) -> None:
        """A fork branch ended (``join``) or a program ended. Idempotent (also runs from ``__del__``)."""
        for executor in s if isinstance(s, list) else [s]:
            if executor.__dict__.get("_saga_end_seen"):
                continue
            executor.__dict__["_saga_end_seen"] = True
            state: ExecState | None = executor.__dict__.get(STATE_ATTR)
            if state is not None and state.parent is not None:
                self._branch_joined(state)
            elif (
                executor.use_thread
                and executor.worker.is_alive()
                and threading.current_thread() is not executor.worker
            ):
                # end() is called before the queued calls ran: finish once the worker thread is done.
                threading.Thread(
                    target=self._finish_root_after, args=(executor,), daemon=True, name="saga-program-end"
                ).start()
            else:
                self._finish_root(executor)

    def _branch_joined(self, state: ExecState) -> None:
        parent = state.parent
        assert parent is not None
        with self.recorder.lock:
            if state.ended or state.last_node_id is None:
                state.ended = True
                return
            state.ended = True
            if parent.next_parents is None:
                # No call on the parent since the fork: the branches alone lead to its next call.
                own = parent.last_node_id
                parent.next_parents = [] if own is None or own == parent.branched_from else [(own, "next")]
            parent.next_parents.append((state.last_node_id, "join"))
            parent.pending_shared_prefix = state.fork_prefix_tokens

    def _finish_root_after(self, executor: StreamExecutor) -> None:
        executor.worker.join()
        self._finish_root(executor)

    def _finish_root(self, executor: StreamExecutor) -> None:
        state: ExecState | None = executor.__dict__.get(STATE_ATTR)
        if state is None:
            return
        with self.recorder.lock:
            rec = state.record
            rec.open_roots -= 1
            done = not rec.explicit and rec.open_roots <= 0
        if done:
            self.finish_workflow(rec, ok=executor.error_ is None)

    def finish_workflow(self, record: WorkflowRecord, *, ok: bool) -> None:
        """End ``record``: final AEG submission, workflow-finished event, bounded retention."""
        if not self.recorder.finish(record, ok=ok):
            return
        with self.recorder.lock:
            record.revision += 1
            submission = record.to_submission(complete=True) if record.nodes else None
            duration = (record.finished_at_s or time.monotonic()) - record.started_at_s
        if submission is not None:
            self._emit(submission)
        self._emit(
            ClientWorkflowFinished(
                workflow_id=record.workflow_id, calls=record.calls, duration_s=duration, ok=ok
            )
        )

    # -- tools ------------------------------------------------------------------------------------

    def tool_started(self, s: StreamExecutor, tool: str) -> ToolHandle:
        """``saga.tool`` entered on executor ``s`` (already synced: its last call is the producer)."""
        state = self._state(s)
        with self.recorder.lock:
            node_id = state.last_node_id or ""
            node = state.record.nodes.get(node_id)
            if node is not None:
                node.tool_after = tool
            state.record.revision += 1
            submission = state.record.to_submission(complete=False) if state.record.nodes else None
        self._emit(ClientToolStarted(workflow_id=state.record.workflow_id, tool=tool, node_id=node_id))
        if submission is not None:
            self._emit(submission)
        return ToolHandle(state, tool, node_id)

    def tool_finished(self, handle: ToolHandle, latency_s: float, *, ok: bool) -> None:
        with self.recorder.lock:
            handle.state.pending_tool = (handle.tool, latency_s)
        self._emit(
            ClientToolFinished(
                workflow_id=handle.state.record.workflow_id,
                tool=handle.tool,
                node_id=handle.node_id,
                latency_s=latency_s,
                ok=ok,
            )
        )

    def _emit(self, event: ClientEvent) -> None:
        if self.events is not None:
            self.events.emit(event)

    def recorded(self, workflow_id: str) -> WorkflowRecord | None:
        """The recorded graph of a live or recently finished workflow."""
        return self.recorder.get(workflow_id)

    # -- HTTP -------------------------------------------------------------------------------------

    def _headers(self, routing_key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if routing_key:
            headers[ROUTING_KEY_HEADER] = routing_key
        return headers

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, *, routing_key: str | None
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, headers=self._headers(routing_key), method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ssl) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    @staticmethod
    def _json_or_raise(status: int, body: bytes) -> Any:
        try:
            content: Any = json.loads(body)
        except json.JSONDecodeError:
            content = body.decode(errors="replace")
        if status != 200:
            raise RuntimeError(content)  # the same error RuntimeEndpoint raises
        return content

    def _generate(self, body: dict[str, Any], call: _Call | None, routing_key: str | None = None) -> Any:
        if call is not None:
            body = {**body, **call.extras}
            routing_key = call.state.record.workflow_id
        status, raw = self._request("POST", "/generate", body, routing_key=routing_key)
        return self._json_or_raise(status, raw)

    def _sampling_body(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> dict[str, Any]:
        self._handle_dtype_to_regex(sampling_params)
        data: dict[str, Any] = {
            "text": s.text_,
            "sampling_params": {
                "skip_special_tokens": global_config.skip_special_tokens_in_output,
                "spaces_between_special_tokens": global_config.spaces_between_special_tokens_in_out,
                **sampling_params.to_srt_kwargs(),
            },
        }
        for item in ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs"):
            value = getattr(sampling_params, item, None)
            if value is not None:
                data[item] = value
        self._add_images(s, data)
        return data

    # -- the backend interface ----------------------------------------------------------------------

    def cache_prefix(self, prefix_str: str) -> None:
        """``run_batch`` pre-caches the traced common prefix: shared, so it is its own one-call tag."""
        rid = f"saga-prefix-{uuid.uuid4().hex[:16]}"
        tag = CallTag(workflow_id=rid, node_id="prefix/0", call="cache_prefix")
        body = {
            "text": prefix_str,
            "sampling_params": {"max_new_tokens": 0},
            "rid": rid,
            "routing_key": rid,
            "kv_hints": encode_call_tag(tag, message_id=rid),
        }
        self._generate(body, None, routing_key=rid)

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        """The prefill a ``fork(n > 1)`` sends on the parent: the KV its branches start from."""
        self._prefill(s)

    def fill_image(self, s: StreamExecutor) -> None:
        self._prefill(s)

    def _prefill(self, s: StreamExecutor) -> None:
        call = self._begin(s, "prefill")
        data: dict[str, Any] = {"text": s.text_, "sampling_params": {"max_new_tokens": 0}}
        self._add_images(s, data)
        obj = self._generate(data, call)
        self._done(call, obj["meta_info"])

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> tuple[Any, dict[str, Any]]:
        data = self._sampling_body(s, sampling_params)
        call = self._begin(s, "gen")
        obj = self._generate(data, call)
        self._done(call, obj["meta_info"])
        return obj["text"], obj["meta_info"]

    def generate_stream(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        data = self._sampling_body(s, sampling_params)
        data["stream"] = True
        call = self._begin(s, "gen")
        data.update(call.extras)
        res = requests.post(
            self.base_url + "/generate",
            json=data,
            stream=True,
            headers=self._headers(call.state.record.workflow_id),
            timeout=self.timeout_s,
            verify=self.verify if self.verify else True,
        )
        if res.status_code != 200:
            self._json_or_raise(res.status_code, res.content)
        pos = 0
        seen: dict[str, int] = {}
        last_meta: dict[str, Any] = {}
        for line in res.iter_lines(decode_unicode=False):
            chunk = line.decode("utf-8")
            if not chunk.startswith("data:"):
                continue
            if chunk == "data: [DONE]":
                break
            payload = json.loads(chunk[5:].strip("\n"))
            text, meta = payload["text"], payload["meta_info"]
            output_ids = payload.get("output_ids")
            completion = meta.get("completion_tokens")
            incremental = output_ids is not None and completion is not None and len(output_ids) < completion
            if incremental:
                chunk_text = text
            else:
                chunk_text = text[pos:]
                pos = len(text)
                for key in _STREAM_DELTA_KEYS:
                    values = meta.get(key)
                    if isinstance(values, list):
                        meta[key] = values[seen.get(key, 0) :]
                        seen[key] = len(values)
            last_meta = meta
            yield chunk_text, meta
        self._done(call, last_meta)

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        assert temperature <= 1e-5
        call = self._begin(s, "select")
        # The common prefix first (cached for the choices); its length anchors token healing.
        obj = self._generate({"text": s.text_, "sampling_params": {"max_new_tokens": 0}}, call)
        prompt_len = int(obj["meta_info"]["prompt_tokens"])
        # 0.5.23 reports None for the first returned position whatever the start: ask one earlier
        # and drop it, which gives upstream's list (from prompt_len - 2) with real values only.
        body = {
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "return_text_in_logprobs": True,
            "logprob_start_len": max(prompt_len - 3, 0),
        }
        objs = self._batched(call, "c", "text", [s.text_ + c for c in choices], body)
        input_token_logprobs = [_drop_leading_none(r["meta_info"]["input_token_logprobs"]) for r in objs]
        output_token_logprobs = [r["meta_info"]["output_token_logprobs"] for r in objs]
        normalized = [compute_normalized_prompt_logprobs(itl) for itl in input_token_logprobs]
        # Upstream's token-healing rule, unchanged: drop the extra prompt token if no healing occurred.
        for i in range(len(input_token_logprobs)):
            itl = input_token_logprobs[i]
            if len(itl) > 1 and s.text_.endswith(itl[0][-1]):
                normalized[i] = (normalized[i] * len(itl) - itl[0][0]) / (len(itl) - 1)
                input_token_logprobs[i] = itl[1:]
        unconditional = None
        if choices_method.requires_unconditional_logprobs:
            ids = [[entry[1] for entry in itl] for itl in input_token_logprobs]
            objs_u = self._batched(
                call,
                "u",
                "input_ids",
                ids,
                {"sampling_params": {"max_new_tokens": 0}, "return_logprob": True, "logprob_start_len": 0},
            )
            unconditional = [r["meta_info"]["input_token_logprobs"] for r in objs_u]
        decision: ChoicesDecision = choices_method(
            choices=choices,
            normalized_prompt_logprobs=normalized,
            input_token_logprobs=input_token_logprobs,
            output_token_logprobs=output_token_logprobs,
            unconditional_token_logprobs=unconditional,
        )
        chosen = choices.index(decision.decision) if decision.decision in choices else 0
        self._done(call, obj["meta_info"], output_tokens=len(input_token_logprobs[chosen]))
        return decision

    def _batched(
        self, call: _Call, suffix: str, key: str, items: list[Any], body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One batched ``/generate`` (rids ``<rid>:<suffix>_<i>``), or one request per item where the
        server refuses batches (sglang-router 0.3.2 answers 422 to ``text: [...]``)."""
        rids = [f"{call.rid}:{suffix}_{i}" for i in range(len(items))]
        headers_key = call.state.record.workflow_id
        shared = {k: v for k, v in call.extras.items() if k != "rid"}
        if self.batched_text_ok is not False or key != "text":
            # One rid string: the server names item i "<rid>_<i>" (the stock router refuses rid lists).
            status, raw = self._request(
                "POST",
                "/generate",
                {**body, **shared, key: items, "rid": f"{call.rid}:{suffix}"},
                routing_key=headers_key,
            )
            if status == 200 or key != "text" or status not in (400, 422):
                result = self._json_or_raise(status, raw)
                if key == "text":
                    self.batched_text_ok = True
                return list(result)
            if self.batched_text_ok is None:
                log.info(
                    "%s refused a batched select (%d): one request per choice from now on",
                    self.base_url,
                    status,
                )
            self.batched_text_ok = False
        out = []
        for rid, item in zip(rids, items, strict=True):
            status, raw = self._request(
                "POST", "/generate", {**body, **shared, key: item, "rid": rid}, routing_key=headers_key
            )
            out.append(self._json_or_raise(status, raw))
        return out


def _drop_leading_none(entries: list[list[Any]]) -> list[list[Any]]:
    return entries[1:] if entries and entries[0][0] is None else entries


def _seconds(value: Any) -> float | None:
    """A latency field of ``meta_info`` as seconds, or None when the worker did not report it."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
