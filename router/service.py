"""The router's state and its I/O: workers, their live state, forwarding, and the scheduling host.

Decisions come from the :class:`~saga_router.scheduling.SchedulingHost`; this module only keeps
the facts fresh (health, ``/v1/loads``, KV events, idle times), forwards calls where the host says,
and carries out the host's actions (control messages, pre-fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from saga_sgl.clock import Clock, SystemClock
from saga_sgl.policy.views import WorkerId, WorkerView, WorkflowId
from saga_sgl.protocol import ControlMessage

from . import kv_events
from .health import HealthMonitor, HealthSettings
from .identity import ROUTING_KEY_HEADER, identify
from .idle import IdleTracker
from .inbound import (
    BadRequest,
    decode_body,
    max_output_tokens,
    prompt_of_chat,
    prompt_of_completion,
    prompt_of_generate,
    vocab_size_of,
)
from .kv_index import PrefixCatalog
from .plugin_channel import PluginChannels
from .router_config import RouterConfig
from .running import RunningCalls
from .scheduling import Call, Dispatch, NoEligibleWorker, SchedulingHost
from .telemetry import RouterMetrics
from .text_tokens import TextTokens
from .upstream import UpstreamClient, UpstreamResponse
from .workers import WorkerLoad, WorkerRecord, WorkerRegistry, kv_event_endpoint_of

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

RETRYABLE_STATUS = frozenset({502, 503, 504})
"""Worker answers that mean "not this worker, not now": the call is retried elsewhere once."""
WORKER_STARTUP_TIMEOUT_S = 600.0
KV_CATCH_UP_TIMEOUT_S = 10.0
"""A new worker takes traffic once its KV-event history is replayed into the router's index, or
after this long (seconds) at most."""
MAX_REMEMBERED_CONTEXTS = 10_000
"""Workflows whose last context (prompt + output ids) the router keeps for steal pre-fills."""
STREAM_TAIL_BYTES = 65536
WORKER_HEADER = "X-Saga-Worker"
"""Response header naming the worker that served the call (sglang-router sends none; clients ignore it)."""


@dataclass(frozen=True, slots=True)
class WorkflowContext:
    """A workflow's last call as the worker cached it: what a steal pre-fills elsewhere."""

    tokens: list[int]
    """Prompt + output[:-1] (what SGLang inserts into its radix cache when the call finishes)."""
    prompt_tokens: int
    """The prompt part: in the worker's cache (and KV events) before the answer reaches the router."""
    placed: dict[str, float] = field(default_factory=dict)
    """Workers known to hold ``tokens`` -> wall-clock time (``time.time()``) they got it: the answer
    came from there, or a steal's pre-fill there finished. Compared with the worker's KV-event
    stamps to tell "not yet published" from "evicted" (see ``SchedulerHost.holds_workflow_kv``)."""


class UpstreamFailed(Exception):
    """A worker could not serve the call and nothing had been sent to the client yet."""


class Preempted(Exception):
    """The router aborted the call at its worker for a preemption; nothing was sent to the client."""


MAX_PREEMPTIONS_PER_CALL = 3
"""The router's own bound on aborts of one call, whatever the scheduler asks (no preemption loop)."""
PREEMPT_RESEND_WAIT_S = 2.0
"""A preempted call is re-sent once its beneficiary runs, or after this long at most (then it queues
behind it at the worker anyway, on SGLang's FCFS schedule)."""


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One forward of a call to a worker, as preemption needs to know it."""

    call: Call
    worker: WorkerId
    rid: str | None
    """The rid the router set (None: SGLang picks one, and the call cannot be aborted)."""
    stream: bool
    preempting: bool = False
    beneficiary: WorkflowId | None = None


class RouterService:
    def __init__(self, config: RouterConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.registry = WorkerRegistry()
        self.metrics = RouterMetrics()
        self.prefixes = PrefixCatalog(overlay=config.routed_overlay)
        self.idle = IdleTracker()
        self.channels = PluginChannels()
        self.tokens = TextTokens(config.model_path)
        vocab = config.vocab_size
        if vocab is None and config.model_path is not None:
            vocab = vocab_size_of(config.model_path)
        self.vocab_size = vocab
        if vocab is None:
            log.warning(
                "vocabulary size unknown (no --model-path config.json, no --vocab-size): out-of-range "
                "token ids are NOT refused here, and one such id kills an SGLang 0.5.23 worker"
            )
        self.contexts: OrderedDict[str, WorkflowContext] = OrderedDict()
        self.session: aiohttp.ClientSession | None = None
        self.upstream = UpstreamClient()
        """Forwarded calls go through this lean pooled client; probes and pre-fills use ``session``."""
        self.health: HealthMonitor | None = None
        self.host: SchedulingHost = _make_host(self)
        self._tasks: list[asyncio.Task[Any]] = []
        self._kv_tasks: dict[str, asyncio.Task[Any]] = {}
        self._admit_tasks: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._prefills: dict[tuple[str, str], asyncio.Task[Any]] = {}
        """Pre-fills in flight, by (workflow, worker): that workflow's next call there waits for it."""
        self._call_seq = itertools.count()
        self.running = RunningCalls()
        self._attempts: dict[str, Attempt] = {}
        """Calls forwarded and not yet answered, by call id (what a preemption aborts)."""
        self._live_calls: set[str] = set()
        self._gate: asyncio.Semaphore | None = None
        self._waiting = 0
        if config.max_concurrent_requests > 0:
            self._gate = asyncio.Semaphore(config.max_concurrent_requests)
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout_secs)
        self._probe_timeout = aiohttp.ClientTimeout(total=config.health_check_timeout_secs)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        c = self.config
        self.health = HealthMonitor(
            self.registry,
            self.session,
            HealthSettings(
                failure_threshold=c.health_failure_threshold,
                success_threshold=c.health_success_threshold,
                timeout_s=c.health_check_timeout_secs,
                interval_s=c.health_check_interval_secs,
                endpoint=c.health_check_endpoint,
                disabled=c.disable_health_check,
            ),
            self.clock,
            self._health_changed,
        )
        log.info("policy %s; %d worker url(s) given", self.host.name, len(c.worker_urls))
        for url in c.worker_urls:
            self.add_worker(url)
        self._tasks = [
            asyncio.ensure_future(self.health.run()),
            asyncio.ensure_future(self._epochs()),
        ]
        if self.host.needs_worker_loads:
            self._tasks.append(asyncio.ensure_future(self._poll_loads()))
        else:
            log.info("policy %s does not read worker loads: /v1/loads is not polled", self.host.name)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._kv_tasks.values(), *self._admit_tasks.values(), *self._background]:
            await kv_events.cancel(task)
        self.channels.close_all()
        await self.upstream.close()
        if self.session is not None:
            await self.session.close()

    # -- workers -----------------------------------------------------------------------------------

    def add_worker(self, url: str, **fields: Any) -> WorkerRecord:
        record = self.registry.add(url, **fields)
        self._admit_tasks[record.id] = asyncio.ensure_future(self._admit(record))
        return record

    async def remove_worker(self, worker_id: str) -> WorkerRecord | None:
        record = self.registry.remove(worker_id)
        if record is None:
            return None
        await kv_events.cancel(self._admit_tasks.pop(record.id, None))
        await kv_events.cancel(self._kv_tasks.pop(record.url, None))
        self.channels.close(record.url)
        self.prefixes.forget(record.worker_id)
        self.idle.forget(record.worker_id)
        self.metrics.worker_healthy.labels(record.url).set(0)
        self.host.worker_down(record.worker_id, self.clock.now_s())
        log.info("worker %s removed", record.url)
        return record

    async def _admit(self, record: WorkerRecord) -> None:
        """Wait until the worker is healthy, discover its extras, then let it take traffic."""
        assert self.health is not None
        deadline = self.clock.now_s() + WORKER_STARTUP_TIMEOUT_S
        while not await self.health.probe(record):
            if self.clock.now_s() > deadline:
                log.error("worker %s not healthy after %.0f s; left out", record.url,
                          WORKER_STARTUP_TIMEOUT_S)
                return
            await asyncio.sleep(0.5)
        info = await self._get_json(record.url, "/server_info") or {}
        record.adopt_server_info(info)
        model = await self._get_json(record.url, "/model_info") or {}
        record.model_id = str(model.get("model_path") or info.get("model_path") or record.model_id)
        if record.control_address is not None:
            self.channels.open(record.url, record.control_address)
        else:
            log.info("worker %s: no saga plugin control channel (plain SGLang worker)", record.url)
        subscriber = self._subscribe_kv_events(record)
        if subscriber is not None:
            try:
                await asyncio.wait_for(subscriber.caught_up.wait(), KV_CATCH_UP_TIMEOUT_S)
            except TimeoutError:
                log.warning("worker %s: KV-event history not replayed within %.0f s; it takes traffic "
                            "with a partial prefix index", record.url, KV_CATCH_UP_TIMEOUT_S)
        record.ready = True
        record.healthy = True
        record.next_check_s = self.clock.now_s() + self.config.health_check_interval_secs
        self.metrics.worker_healthy.labels(record.url).set(1)
        self.host.worker_up(record.worker_id, self.clock.now_s())
        log.info("worker %s admitted (model %s)", record.url, record.model_id)

    def _subscribe_kv_events(self, record: WorkerRecord) -> kv_events.KvEventSubscriber | None:
        found = kv_event_endpoint_of(record.server_info, record.url) if self.config.kv_events else None
        if found is None:
            self.prefixes.use_approximate(record.worker_id)
            log.warning(
                "worker %s publishes no KV events: its prefix index is approximate (what was routed "
                "there, blind to its evictions)", record.url,
            )
            return None
        endpoint, topic, block_size, replay = found
        index = self.prefixes.use_exact(record.worker_id, block_size)
        record.kv_events_exact = True
        subscriber = kv_events.KvEventSubscriber(
            worker=record.url,
            endpoint=endpoint,
            topic=topic,
            index=index,
            replay_endpoint=replay,
            on_gap=lambda w: self.metrics.kv_event_gaps.labels(w).inc(),
            on_batch=lambda: self.prefixes.published(record.worker_id),
        )
        old = self._kv_tasks.pop(record.url, None)
        if old is not None:
            old.cancel()
        self._kv_tasks[record.url] = asyncio.ensure_future(subscriber.run())
        return subscriber

    async def _health_changed(self, record: WorkerRecord, healthy: bool) -> None:
        self.metrics.worker_healthy.labels(record.url).set(1 if healthy else 0)
        now = self.clock.now_s()
        if healthy:
            # A restarted worker has a new cache, maybe new ports: discover again.
            info = await self._get_json(record.url, "/server_info")
            if info is not None:
                record.adopt_server_info(info)
                if record.control_address is not None:
                    self.channels.open(record.url, record.control_address)
                self._subscribe_kv_events(record)
            self.host.worker_up(record.worker_id, now)
        else:
            self.host.worker_down(record.worker_id, now)

    async def _get_json(self, base: str, path: str) -> dict[str, Any] | None:
        # Through the lean client: /v1/loads is polled every 50 ms per worker, even when idle.
        try:
            resp = await self.upstream.get(base, path, self.config.health_check_timeout_secs)
            try:
                raw = await resp.read()
            finally:
                resp.release()
            data = _decoder.decode(raw) if resp.status == 200 else None
            return data if isinstance(data, dict) else None
        except (TimeoutError, OSError, ValueError, msgspec.DecodeError):
            return None

    async def _poll_loads(self) -> None:
        interval = self.config.load_poll_interval_secs
        while True:
            records = [r for r in self.registry if r.takes_traffic]
            if records:
                await asyncio.gather(*(self._poll_one(r) for r in records))
                self.host.observe_loads(self.worker_views(), self.clock.now_s())
            await asyncio.sleep(interval)

    async def _poll_one(self, record: WorkerRecord) -> None:
        data = await self._get_json(record.url, "/v1/loads?include=core")
        now = self.clock.now_s()
        if data is None:
            return
        try:
            load = WorkerLoad.from_loads(data, now)
        except (ValueError, TypeError) as exc:
            log.debug("worker %s: unusable /v1/loads answer: %s", record.url, exc)
            return
        first_rate = record.prefill_tokens_per_s is None
        if record.observe_load(load) and first_rate:
            # The steal guards take no steal until a worker's pre-fill rate is measured.
            log.info("worker %s: pre-fill throughput measured from its /v1/loads counters: %.0f tokens/s",
                     record.url, record.prefill_tokens_per_s or 0.0)
        busy = load.num_waiting_reqs > 0 or record.prefilling > 0
        record.idle_since_s = self.idle.observe(record.worker_id, busy, now)
        for call in self.running.observe(record.worker_id, load.num_running_reqs, load.num_waiting_reqs):
            self.host.call_admitted(call.call_id, call.workflow_id, record.worker_id, call.preemptible)

    async def _epochs(self) -> None:
        interval = self.config.epoch_interval_secs
        while True:
            await asyncio.sleep(interval)
            try:
                self.host.epoch(self.clock.now_s())
            except Exception:  # an epoch bug must not stop the router; it is logged loudly
                log.exception("scheduler epoch failed")
            self.metrics.queue_depth.set(self.host.queue_depth())
            self.metrics.admissions_held.set(self.host.held())

    # -- Executor (what the scheduling host asks the router to do) --------------------------------

    def worker_views(self) -> list[WorkerView]:
        return self.registry.views()

    def prefix_matches(self, tokens: Sequence[int]) -> dict[WorkerId, int]:
        return self.prefixes.match(tokens)

    def send_control(self, worker: WorkerId, message: ControlMessage) -> None:
        if self.channels.send(worker, message):
            self.metrics.control_messages.labels(type(message).__name__).inc()

    def prefill(self, worker: WorkerId, workflow_id: WorkflowId, token_ids: Sequence[int]) -> None:
        task = asyncio.ensure_future(self._prefill(worker, workflow_id, list(token_ids)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        key = (str(workflow_id), str(worker))
        self._prefills[key] = task
        record = self.registry.by_url(worker)
        if record is not None:
            # Busy from now on (not from the next /v1/loads sample): the next epoch must not see
            # this thief idle and steal onto it again while it re-builds this context.
            record.prefilling += 1
            record.idle_since_s = self.idle.observe(record.worker_id, True, self.clock.now_s())

        def forget(done: asyncio.Task[Any]) -> None:
            if self._prefills.get(key) is done:
                del self._prefills[key]
            if record is not None:
                record.prefilling -= 1

        task.add_done_callback(forget)

    async def _await_prefill(self, workflow_id: str, worker: str) -> None:
        """Hold a call bound for ``worker`` until its workflow's pre-fill there has finished.

        A stolen workflow's next call can arrive (its tool gap ended) while the router's pre-fill
        of its context on the thief is still running; sent at once, it would be scheduled beside the
        pre-fill rather than after it and find nothing of its context in the thief's cache. The wait
        is bounded by the request timeout; a failed pre-fill only costs the cache hit.
        """
        task = self._prefills.get((workflow_id, worker))
        if task is None or task.done():
            return
        log.info("call of %s waits for its pre-fill on %s", workflow_id, worker)
        await asyncio.wait({task}, timeout=self.config.request_timeout_secs)

    async def _prefill(self, worker: WorkerId, workflow_id: WorkflowId, token_ids: list[int]) -> None:
        record = self.registry.by_url(worker)
        if record is None or not record.takes_traffic or self.session is None or not token_ids:
            self.metrics.prefills.labels("skipped").inc()
            return
        rid = f"{workflow_id}:prefill-{self.clock.now_s():.6f}"
        body = {
            "input_ids": token_ids,
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "rid": rid,
            "routing_key": workflow_id,
        }
        started = self.clock.now_s()
        data = b""
        self.prefixes.routed(worker, token_ids, rid)
        try:
            async with self.session.post(record.url + "/generate", data=_encoder.encode(body),
                                         headers=_JSON, timeout=self._timeout) as resp:
                data = await resp.read()
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        finally:
            self.prefixes.ended(worker, rid)
        if ok:
            # The steal guards' re-prefill time comes from these: a pure pre-fill's throughput.
            answer: Any = None
            with contextlib.suppress(msgspec.DecodeError):
                answer = _decoder.decode(data)
            meta = answer.get("meta_info") if isinstance(answer, dict) else None
            meta = meta if isinstance(meta, dict) else {}
            cached = int(meta.get("cached_tokens") or 0)
            seconds = float(meta.get("e2e_latency") or (self.clock.now_s() - started))
            record.observe_prefill(len(token_ids) - cached, seconds)
        self.metrics.prefills.labels("ok" if ok else "failed").inc()
        context = self.contexts.get(str(workflow_id))
        if ok and context is not None and context.tokens[: len(token_ids)] == token_ids:
            context.placed[str(worker)] = time.time()
        log.info("pre-fill of %s (%d tokens) on %s: %s (throughput there now %s tokens/s)", workflow_id,
                 len(token_ids), worker, "done" if ok else "failed",
                 f"{record.prefill_tokens_per_s:.0f}" if record.prefill_tokens_per_s else "unmeasured")

    def count(self, what: str, label: str = "", amount: float = 1.0) -> None:
        m = self.metrics
        if what == "placement":
            m.placements.labels(label).inc(amount)
        elif what == "steal":
            m.steals.inc(amount)
        elif what == "afs":
            m.afs.labels(label).set(amount)
        elif what == "task_seconds":
            m.task_seconds.labels(label).observe(amount)
        elif what == "slo_met":
            m.slo.labels(label, "true").inc()
        elif what == "slo_missed":
            m.slo.labels(label, "false").inc()

    def preempt(self, call_id: str, worker: WorkerId, beneficiary: WorkflowId, why: str) -> str:
        """Carry out a scheduler ``Preempt``: abort the call at ``worker`` (its answer is then
        re-sent, see ``_forward_live``). Returns the outcome (a metric label)."""
        attempt = self._attempts.get(call_id)
        if attempt is None or attempt.worker != worker:
            outcome = "gone"  # answered (or failed over) before the decision could be carried out
        elif attempt.stream:
            outcome = "refused_streaming"
        elif attempt.rid is None:
            outcome = "refused_no_rid"
        elif attempt.preempting:
            outcome = "refused_pending"
        elif attempt.call.preemptions >= MAX_PREEMPTIONS_PER_CALL:
            outcome = "refused_bound"
        else:
            outcome = "applied"
            attempt.preempting = True
            attempt.beneficiary = beneficiary
            task = asyncio.ensure_future(self._abort(worker, attempt.rid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        self.metrics.preemptions.labels(outcome).inc()
        log.info("preemption of call %s on %s for workflow %s: %s; %s", call_id, worker, beneficiary, outcome,
                 why)
        return outcome

    async def _abort(self, worker: WorkerId, rid: str) -> None:
        try:
            body = _encoder.encode({"rid": rid})
            resp = await self.upstream.post(str(worker), "/abort_request", body, _JSON,
                                            self.config.health_check_timeout_secs)
            try:
                await resp.read()
            finally:
                resp.release()
            if resp.status != 200:
                log.warning("abort of %s on %s answered HTTP %d", rid, worker, resp.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("abort of %s on %s failed (%s): the call runs on", rid, worker, type(exc).__name__)

    async def _await_beneficiary(self, worker: WorkerId, beneficiary: WorkflowId | None) -> None:
        """Wait (bounded) until the preemption's beneficiary runs on ``worker`` or has no call there."""
        if beneficiary is None:
            return
        deadline = self.clock.now_s() + PREEMPT_RESEND_WAIT_S
        while self.clock.now_s() < deadline:
            if self.running.is_running(worker, beneficiary) or not self.running.has_call(worker, beneficiary):
                return
            await asyncio.sleep(self.config.load_poll_interval_secs)
        log.info("beneficiary %s not seen running on %s after %.1f s: re-sending the preempted call anyway",
                 beneficiary, worker, PREEMPT_RESEND_WAIT_S)

    # -- forwarding ---------------------------------------------------------------------------------

    def parse_call(self, route: str, raw: bytes, headers: Mapping[str, str]) -> tuple[Call, dict[str, Any]]:
        """The call and the body to forward; raises BadRequest for anything a worker must not see."""
        body = decode_body(raw)
        if route == "/generate":
            ids, text = prompt_of_generate(body, self.vocab_size)
        elif route == "/v1/completions":
            ids, text = prompt_of_completion(body, self.vocab_size)
        else:
            ids, text = None, prompt_of_chat(body)
        if ids is not None:
            routing, n_tokens = ids, len(ids)
        elif text:
            routing, n_tokens = self.tokens.routing_ids(text)
        else:
            routing, n_tokens = [], 1
        ident = identify(body, headers)
        rid = body.get("rid")
        client_rid = rid if isinstance(rid, str) and rid else None
        if ident.step is not None and not ident.is_own:
            call_id = f"{ident.workflow_id}:{ident.step}"
        else:
            call_id = ident.workflow_id if ident.is_own else f"{ident.workflow_id}:r{next(self._call_seq)}"
        if call_id in self._live_calls:
            call_id = f"{call_id}~{next(self._call_seq)}"  # the same step sent twice at once
        call = Call(
            call_id=call_id,
            rid=client_rid,
            identity=ident,
            prompt_ids=routing,
            prompt_tokens=max(1, n_tokens),
            arrived_s=self.clock.now_s(),
            path=route,
            max_output_tokens=max_output_tokens(body),
        )
        return call, body

    async def forward(self, request: web.Request, route: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            call, body = self.parse_call(route, raw, request.headers)
        except BadRequest as exc:
            self.metrics.bad_requests.labels(route).inc()
            return _error(exc.status, str(exc))
        if self._gate is None:
            return await self._forward(request, route, call, body)
        if self._gate.locked() and self._waiting >= self.config.queue_size:
            return _error(429, "too many concurrent requests and the router queue is full")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._gate.acquire(), self.config.queue_timeout_secs)
        except TimeoutError:
            return _error(408, f"queued longer than {self.config.queue_timeout_secs:.0f} s")
        finally:
            self._waiting -= 1
        try:
            return await self._forward(request, route, call, body)
        finally:
            self._gate.release()

    async def _forward(
        self, request: web.Request, route: str, call: Call, body: dict[str, Any]
    ) -> web.StreamResponse:
        self._live_calls.add(call.call_id)
        try:
            return await self._forward_live(request, route, call, body)
        finally:
            self._live_calls.discard(call.call_id)

    async def _forward_live(
        self, request: web.Request, route: str, call: Call, body: dict[str, Any]
    ) -> web.StreamResponse:
        stream = bool(body.get("stream"))
        retries_left = self.config.retries
        tenant = call.identity.tenant_id or "default"
        resend: Dispatch | None = None
        while True:
            try:
                # A preempted call goes back to the same worker: the scheduler's bookkeeping has it
                # waiting there since the preemption (no new placement).
                dispatch = resend if resend is not None else await self.host.dispatch(call)
            except NoEligibleWorker as exc:
                return _error(503, f"no healthy worker: {exc}")
            resend = None
            record = self.registry.by_url(dispatch.worker)
            if record is None:
                return _error(503, f"scheduler chose unknown worker {dispatch.worker}")
            log.debug("call %s of %s -> %s (%s)", call.call_id, call.workflow_id, record.url, dispatch.reason)
            self.metrics.child(self.metrics.placements, dispatch.reason).inc()
            if call.prompt_ids:
                self.prefixes.routed(record.worker_id, call.prompt_ids, call.call_id)
            await self._await_prefill(call.identity.workflow_id, str(dispatch.worker))
            try:
                response = await self._send(request, route, call, body, dispatch, record, stream)
            except Preempted as exc:
                call.preemptions += 1
                try:
                    await self._await_beneficiary(record.worker_id, exc.args[0] if exc.args else None)
                except asyncio.CancelledError:  # the client left while its call waited to be re-sent
                    self.host.finished(call, record.worker_id, None, False, self.clock.now_s())
                    raise
                log.info("call %s re-sent to %s after its preemption (%d so far)", call.call_id, record.url,
                         call.preemptions)
                resend = dispatch
                continue
            except UpstreamFailed as exc:
                call.tried.add(record.worker_id)
                if retries_left > 0:
                    retries_left -= 1
                    self.metrics.retries.inc()
                    log.warning("call %s failed on %s before streaming (%s); retrying elsewhere",
                                call.call_id, record.url, exc)
                    continue
                return _error(502, f"worker {record.url} failed: {exc}")
            m = self.metrics
            m.child(m.requests, route, str(response.status)).inc()
            m.child(m.request_seconds, tenant).observe(self.clock.now_s() - call.arrived_s)
            return response

    async def _send(
        self,
        request: web.Request,
        route: str,
        call: Call,
        body: dict[str, Any],
        dispatch: Dispatch,
        record: WorkerRecord,
        stream: bool,
    ) -> web.StreamResponse:
        assert self.session is not None
        headers = dict(_JSON)
        out = body
        if dispatch.fields:
            out = _with_fields(body, dispatch.fields, route)
            key = dispatch.fields.get("routing_key")
            if key and route != "/generate":
                headers[ROUTING_KEY_HEADER] = str(key)
        record.inflight += 1
        worker = record.worker_id
        ok = False
        preempted = False
        meta: dict[str, Any] | None = None
        rid = out.get("rid") if isinstance(out.get("rid"), str) else None
        attempt = Attempt(call=call, worker=worker, rid=rid, stream=stream)
        self._attempts[call.call_id] = attempt
        self.running.forwarded(worker, call.call_id, call.workflow_id,
                               preemptible=not stream and rid is not None)
        try:
            try:
                upstream = await self.upstream.post(
                    record.url, route, _encoder.encode(out), headers, self.config.request_timeout_secs
                )
            except (aiohttp.ClientConnectionError, OSError) as exc:
                await self._suspect(record, exc)
                raise UpstreamFailed(type(exc).__name__) from exc
            except TimeoutError as exc:
                raise UpstreamFailed(f"no answer in {self.config.request_timeout_secs:.0f} s") from exc
            try:
                if upstream.status in RETRYABLE_STATUS:
                    await self._suspect(record, RuntimeError(f"HTTP {upstream.status}"))
                    raise UpstreamFailed(f"HTTP {upstream.status}")
                if not stream:
                    try:
                        data = await upstream.read()
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        await self._suspect(record, exc)
                        raise UpstreamFailed(f"{type(exc).__name__} while reading the answer") from exc
                    if attempt.preempting and _was_aborted(data):
                        preempted = True
                        raise Preempted(attempt.beneficiary)
                    ok = upstream.status == 200
                    if ok:
                        meta = self._meta_of(call, data, worker)
                    return web.Response(body=data, status=upstream.status,
                                        content_type=upstream.content_type,
                                        headers={WORKER_HEADER: record.url})
                response, ok, meta = await self._relay_stream(request, call, upstream, record)
                return response
            finally:
                upstream.release()
        finally:
            record.inflight -= 1
            self.prefixes.ended(worker, call.call_id)
            self.running.ended(worker, call.call_id)
            if self._attempts.get(call.call_id) is attempt:
                del self._attempts[call.call_id]
            if not preempted:  # a preempted call is still the scheduler's, waiting at this worker
                self.host.finished(call, worker, meta, ok, self.clock.now_s())
            if meta is not None:
                self._account(meta)

    async def _relay_stream(
        self, request: web.Request, call: Call, upstream: UpstreamResponse, record: WorkerRecord
    ) -> tuple[web.StreamResponse, bool, dict[str, Any] | None]:
        """Pass SSE chunks through as they come; nothing is buffered beyond a small tail."""
        content = upstream.content
        try:
            first = await content.readany()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._suspect(record, exc)
            raise UpstreamFailed(f"{type(exc).__name__} before the first chunk") from exc
        if not first and upstream.status == 200:
            raise UpstreamFailed("stream closed before the first chunk")
        response = web.StreamResponse(status=upstream.status, headers={WORKER_HEADER: record.url})
        response.content_type = upstream.content_type or "text/event-stream"
        await response.prepare(request)
        tail = first[-STREAM_TAIL_BYTES:]
        await response.write(first)
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                await response.write(chunk)
                tail = (tail + chunk)[-STREAM_TAIL_BYTES:]
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # Streaming had started: no retry (the client has partial output); say so in-band.
            await self._suspect(record, exc)
            message = {"error": {"message": f"worker {record.url} failed mid-stream: {type(exc).__name__}",
                                 "code": 502}}
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write(b"data: " + _encoder.encode(message) + b"\n\n")
                await response.write_eof()
            return response, False, None
        await response.write_eof()
        ok = upstream.status == 200
        return response, ok, self._meta_of_stream(call, tail, record.worker_id) if ok else None

    async def _suspect(self, record: WorkerRecord, exc: BaseException) -> None:
        if self.health is not None:
            await self.health.take_out(record, f"request failed: {type(exc).__name__}")

    def _meta_of(self, call: Call, data: bytes, worker: WorkerId) -> dict[str, Any] | None:
        """The ``meta_info`` of a worker's 200 answer (and its proof of life for health checks)."""
        record = self.registry.by_url(worker)
        if record is not None:
            record.last_answer_s = self.clock.now_s()
        try:
            answer = _decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if isinstance(answer, list):
            answer = answer[0] if answer and isinstance(answer[0], dict) else {}
        if not isinstance(answer, dict):
            return None
        self._remember_context(call, answer, worker)
        meta = answer.get("meta_info")
        if isinstance(meta, dict):
            return meta
        usage = answer.get("usage")
        if isinstance(usage, dict):  # OpenAI routes
            details = usage.get("prompt_tokens_details") or {}
            return {
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "cached_tokens": details.get("cached_tokens", 0) if isinstance(details, dict) else 0,
            }
        return None

    def _meta_of_stream(self, call: Call, tail: bytes, worker: WorkerId) -> dict[str, Any] | None:
        for line in reversed(tail.split(b"\n")):
            if line.startswith(b"data: {"):
                return self._meta_of(call, line[6:], worker)
        return None

    def _remember_context(self, call: Call, answer: dict[str, Any], worker: WorkerId) -> None:
        """Keep the workflow's last context (prompt + output ids): what a steal pre-fills."""
        if call.identity.is_own or call.path != "/generate":
            return
        output = answer.get("output_ids")
        if not isinstance(output, list):
            return
        # SGLang caches prompt + output[:-1]; the next call's prompt starts with the whole of it.
        self.contexts[call.identity.workflow_id] = WorkflowContext(
            tokens=[*call.prompt_ids, *output[:-1]],
            prompt_tokens=len(call.prompt_ids),
            placed={str(worker): time.time()},
        )
        self.contexts.move_to_end(call.identity.workflow_id)
        while len(self.contexts) > MAX_REMEMBERED_CONTEXTS:
            self.contexts.popitem(last=False)

    def _account(self, meta: Mapping[str, Any]) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self.metrics.call_tokens(int(meta.get("prompt_tokens") or 0), int(meta.get("cached_tokens") or 0))


_JSON = {"Content-Type": "application/json"}


def _was_aborted(data: bytes) -> bool:
    """The worker's answer says the request was aborted (SGLang 0.5.23: HTTP 200 with the output so
    far and ``meta_info.finish_reason.type == "abort"``; an error body naming an abort)."""
    try:
        answer = _decoder.decode(data)
    except msgspec.DecodeError:
        return False
    if isinstance(answer, list):
        answer = answer[0] if answer and isinstance(answer[0], dict) else {}
    if not isinstance(answer, dict):
        return False
    meta = answer.get("meta_info")
    if isinstance(meta, dict):
        reason = meta.get("finish_reason")
        return isinstance(reason, dict) and reason.get("type") == "abort"
    error = answer.get("error") or answer.get("detail")
    return "abort" in str(error).lower() if error else False


def _with_fields(body: dict[str, Any], fields: Mapping[str, Any], route: str) -> dict[str, Any]:
    """The forwarded body: the client's, plus what the scheduler attaches.

    Our ``saga.reuse`` action joins any actions the client sent in ``kv_hints`` (the frontend's
    ``saga.aeg``), in the client's envelope. The OpenAI routes take ``rid`` and ``priority`` only
    (their routing key travels as a header; SGLang's chat schema has no kv_hints).
    """
    out = dict(body)
    for key, value in fields.items():
        if route != "/generate" and key not in ("rid", "priority"):
            continue
        if key == "kv_hints" and isinstance(out.get("kv_hints"), dict):
            mine = value
            theirs = out["kv_hints"]
            actions = list(theirs.get("actions") or []) + list(mine.get("actions") or [])
            out["kv_hints"] = {**theirs, "actions": actions}
        else:
            out[key] = value
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


def _make_host(service: RouterService) -> SchedulingHost:
    from .hosts import make_host

    return make_host(service)
