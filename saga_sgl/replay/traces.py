"""Traces for the eviction replay: Mooncake JSON Lines in, and SWE-agent trajectories converted to it.

Mooncake format (FAST'25 traces): one request per line, ``timestamp`` (ms), ``input_length``,
``output_length``, ``hash_ids`` (one id per 512-token prefix block; equal id <=> equal prefix up to
the end of that block). Optional fields of the project's superset (``saga_sgl.sim.workloads.jsonl``)
are used when present: ``task_id`` (the session; otherwise sessions are found from prefix chains),
``agent_type``, ``step``, ``tool``. Nothing else is read.

``swe_agent_requests`` turns SWE-agent ``.traj`` files into the same rows at run time (the files are
read from where they lie, never copied): one session per trajectory copy, one request per assistant
turn whose prompt is every message before it, tokens estimated as characters / ``chars_per_token``,
block ids from the prompt text so equal prefixes (the shared system prompt) share ids. Between turns
the agent runs the action's tool: ``execution_time`` when the file records it, else a draw from the
tool-latency prior of the action's tool type (paper Table 1). Copies of a trajectory start at Poisson
arrivals and get distinct ids after the system prompt, so they share only what real sessions share.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from saga_sgl.aeg.tool_latency import ToolLatencyModel, tool_type_of
from saga_sgl.errors import InvalidSettings

BLOCK_TOKENS = 512
"""Mooncake's prefix-block size."""


class TraceError(ValueError):
    """A trace line is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace."""

    timestamp_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    session: str | None = None
    """Session (workflow) id when the trace names it; None = find it from prefix chains."""
    agent_type: str = ""
    step: int | None = None
    tool: str = ""
    """Tool the agent runs after this request, when the trace names it."""
    block_size: int = BLOCK_TOKENS
    """Tokens per hash block (Mooncake: 512; a converted trace may use smaller blocks)."""

    def block_tokens(self, j: int) -> int:
        """Tokens of block ``j`` (the last block holds the remainder)."""
        return min(self.block_size, self.input_length - self.block_size * j)


def _int_field(row: dict[str, Any], name: str, where: str, *, minimum: int = 0) -> int:
    value = row.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TraceError(f"{where}: field {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_row(row: Any, where: str) -> TraceRequest:
    """One Mooncake row (a decoded JSON object) -> ``TraceRequest``; ``TraceError`` if malformed."""
    if not isinstance(row, dict):
        raise TraceError(f"{where}: expected a JSON object, got {type(row).__name__}")
    ts = row.get("timestamp")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0:
        raise TraceError(f"{where}: field 'timestamp' must be a number of ms >= 0, got {ts!r}")
    input_length = _int_field(row, "input_length", where, minimum=1)
    output_length = _int_field(row, "output_length", where)
    ids = row.get("hash_ids")
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        raise TraceError(f"{where}: field 'hash_ids' must be a non-empty list of integers")
    need = -(-input_length // BLOCK_TOKENS)
    if len(ids) != need:
        raise TraceError(
            f"{where}: {len(ids)} hash_ids for input_length {input_length}; Mooncake has one per "
            f"{BLOCK_TOKENS}-token block ({need})"
        )
    session = row.get("task_id")
    step = row.get("step")
    return TraceRequest(
        timestamp_s=float(ts) / 1000.0,
        input_length=input_length,
        output_length=output_length,
        hash_ids=tuple(ids),
        session=None if session is None else str(session),
        agent_type=str(row.get("agent_type") or ""),
        step=step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None,
        tool=str(row.get("tool") or ""),
    )


def _jsonl_lines(p: Path) -> Iterator[tuple[str, str]]:
    """The non-blank lines of a JSONL trace, each with its ``file:line`` for error messages."""
    if not p.is_file():
        raise TraceError(f"{p}: no such trace file")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield f"{p}:{n}", line


def load_mooncake(path: str | Path, *, limit: int | None = None) -> list[TraceRequest]:
    """Read a Mooncake-format JSONL trace, sorted by timestamp (stable)."""
    p = Path(path)
    out: list[TraceRequest] = []
    for where, line in _jsonl_lines(p):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not JSON ({exc.msg})") from None
        out.append(parse_row(row, where))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise TraceError(f"{p}: the trace has no requests")
    out.sort(key=lambda r: r.timestamp_s)
    return out


# -- SWE-agent trajectories ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SweAgentSettings:
    """How ``swe_agent_requests`` turns trajectories into a trace."""

    copies: int = 20
    """Sessions per trajectory file."""
    mean_interarrival_s: float = 20.0
    """Mean of the exponential gaps between session starts, seconds."""
    chars_per_token: float = 4.0
    """Characters per token for the length estimate (no tokenizer is needed for block ids)."""
    llm_s_per_output_token: float = 0.02
    """Decode time per output token, seconds: the time from a request to its tool call."""
    seed: int = 0
    """Seed of arrivals and tool-latency draws."""
    block_tokens: int = BLOCK_TOKENS
    """Tokens per hash block. Mooncake's 512 leaves every prompt a partial last block that no
    continuation matches (dead KV a predictor can learn); SGLang's radix cache matches tokens, so
    small blocks (e.g. 16, vLLM's) are closer to it [I]."""

    def __post_init__(self) -> None:
        if (
            self.copies < 1
            or self.mean_interarrival_s <= 0
            or self.chars_per_token <= 0
            or self.block_tokens < 1
        ):
            raise InvalidSettings(
                "SweAgentSettings: copies >= 1, mean_interarrival_s > 0, chars_per_token > 0, "
                "block_tokens >= 1"
            )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts
        return "".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)
    return "" if content is None else str(content)


def _tool_name(action: Any) -> str:
    words = str(action or "").strip().split()
    return words[0] if words else ""


def _trajectory_turns(data: dict[str, Any], where: str) -> list[tuple[list[str], str, str, float | None]]:
    """(prompt messages, assistant reply, tool name, execution time) per assistant turn."""
    history = data.get("history")
    if not isinstance(history, list) or not history:
        raise TraceError(f"{where}: no 'history' list")
    raw_steps = data.get("trajectory")
    steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
    exec_times = [s.get("execution_time") for s in steps if isinstance(s, dict)]
    turns = []
    texts: list[str] = []
    k = 0
    for msg in history:
        if not isinstance(msg, dict):
            raise TraceError(f"{where}: a history entry is not an object")
        text = _content_text(msg.get("content"))
        if msg.get("role") == "assistant" and texts:
            action = msg.get("action")
            if action is None and isinstance(msg.get("tool_calls"), list) and msg["tool_calls"]:
                fn = (
                    msg["tool_calls"][0].get("function", {}) if isinstance(msg["tool_calls"][0], dict) else {}
                )
                action = fn.get("name", "")
            t = exec_times[k] if k < len(exec_times) else None
            turns.append(
                (list(texts), text, _tool_name(action), float(t) if isinstance(t, (int, float)) else None)
            )
            k += 1
        texts.append(f"<{msg.get('role')}>{text}")
    return turns


def swe_agent_requests(root: str | Path, settings: SweAgentSettings | None = None) -> list[TraceRequest]:
    """Convert every ``*.traj`` under ``root`` into a Mooncake-format trace (sorted by time)."""
    s = settings or SweAgentSettings()
    files = sorted(Path(root).rglob("*.traj"))
    if not files:
        raise TraceError(f"{root}: no *.traj files")
    rng = random.Random(s.seed)
    latency = ToolLatencyModel()
    ids: dict[bytes, int] = {}
    out: list[TraceRequest] = []
    block_chars = int(s.block_tokens * s.chars_per_token)
    convs = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceError(f"{f}: cannot read a trajectory ({exc})") from None
        turns = _trajectory_turns(data, str(f))
        if turns:
            convs.append((f, turns))
    t0 = 0.0
    for copy in range(s.copies):
        for f, turns in convs:
            t0 += rng.expovariate(1.0 / s.mean_interarrival_s)
            session = f"{f.relative_to(root)}#{copy}"
            system_chars = len(turns[0][0][0])
            now = t0
            for step, (prompt, reply, tool, exec_s) in enumerate(turns):
                text = "".join(prompt)
                hash_ids = []
                for end in range(block_chars, len(text) + block_chars, block_chars):
                    end = min(end, len(text))
                    # Blocks inside the shared system prompt are common to every copy.
                    salt = b"" if end <= system_chars else f"{copy}".encode()
                    digest = hashlib.blake2b(salt + b"\0" + text[:end].encode(), digest_size=12).digest()
                    hash_ids.append(ids.setdefault(digest, len(ids)))
                input_length = max(1, math.ceil(len(text) / s.chars_per_token))
                # Keep Mooncake's invariant (one id per block) after rounding.
                need = -(-input_length // s.block_tokens)
                hash_ids = (hash_ids + hash_ids[-1:] * need)[:need]
                output_length = max(1, math.ceil(len(reply) / s.chars_per_token))
                tool_type = tool_type_of(tool) if tool else ""
                out.append(
                    TraceRequest(
                        timestamp_s=now,
                        input_length=input_length,
                        output_length=output_length,
                        hash_ids=tuple(hash_ids),
                        session=session,
                        agent_type="swe-agent",
                        step=step,
                        tool=tool_type,
                        block_size=s.block_tokens,
                    )
                )
                gap = exec_s if exec_s is not None else _draw_latency(latency, tool_type, rng)
                now += output_length * s.llm_s_per_output_token + gap
    out.sort(key=lambda r: r.timestamp_s)
    return out


def _draw_latency(latency: ToolLatencyModel, tool: str, rng: random.Random) -> float:
    from saga_sgl.policy.views import ToolType

    return latency.quantile_s(ToolType(tool), min(max(rng.random(), 1e-6), 1 - 1e-6))


def tracelab_requests(path: str | Path) -> list[TraceRequest]:
    """TraceLab's sanitized round trace (``round_trace.jsonl``) as trace requests.

    One request per round, at its first timing event; session = ``session_id``, agent type =
    ``provider``, step = ``round_index``, tool = the first tool the round calls. TraceLab has no
    content hashes, only the provider-reported cached prefix (``prefix_tokens``): a round's first
    min(prefix, previous round's input) tokens, in whole blocks, are taken to be the previous round's
    blocks, and the rest are new blocks (an assumption: the conversation grows by appending).
    """
    rows: list[tuple[float, str, int, dict[str, Any]]] = []
    for where, line in _jsonl_lines(Path(path)):
        try:
            row = json.loads(line)
            events = row["timing_events"]
            start = min(datetime.fromisoformat(e["timestamp"]).timestamp() for e in events)
            key = (start, str(row["session_id"]), int(row["round_index"]), row)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{where}: not a TraceLab round ({exc})") from None
        _int_field(row, "input_tokens_total", where, minimum=1)
        _int_field(row, "prefix_tokens", where)
        _int_field(row, "output_tokens", where)
        rows.append(key)
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0] if rows else 0.0
    fresh = 0
    last: dict[str, tuple[int, tuple[int, ...]]] = {}
    out: list[TraceRequest] = []
    for start, sid, step, row in rows:
        length = row["input_tokens_total"]
        prev_len, prev_ids = last.get(sid, (0, ()))
        shared = min(row["prefix_tokens"], prev_len) // BLOCK_TOKENS
        need = -(-length // BLOCK_TOKENS)
        ids = list(prev_ids[: min(shared, need)])
        while len(ids) < need:
            fresh += 1
            ids.append(fresh)
        tools = row.get("tools") or []
        out.append(
            TraceRequest(
                timestamp_s=start - t0,
                input_length=length,
                output_length=row["output_tokens"],
                hash_ids=tuple(ids),
                session=sid,
                agent_type=str(row.get("provider") or ""),
                step=step,
                tool=str(tools[0].get("tool_name") or "") if tools else "",
            )
        )
        last[sid] = (length, tuple(ids))
    return out


def iter_rows(requests: Sequence[TraceRequest]) -> Iterator[dict[str, Any]]:
    """Mooncake rows (with the superset's optional fields) of converted requests, for ``--dump``."""
    for r in requests:
        if r.block_size != BLOCK_TOKENS:
            raise TraceError(f"Mooncake rows need {BLOCK_TOKENS}-token blocks, a request has {r.block_size}")
        yield {
            "timestamp": round(r.timestamp_s * 1000.0, 3),
            "input_length": r.input_length,
            "output_length": r.output_length,
            "hash_ids": list(r.hash_ids),
            "task_id": r.session,
            "agent_type": r.agent_type,
            "step": r.step,
            "tool": r.tool,
        }
