"""Parse and check an inbound request before any worker sees it.

Everything here is a client error (4xx) with a message that names the problem: malformed JSON, no
prompt, token ids outside the model's vocabulary (one such id kills an SGLang 0.5.23 worker: the
scheduler raises IndexError and the process exits), bad ``saga`` fields. Oversized bodies are
refused by aiohttp itself (``client_max_size``), before the body is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()


class BadRequest(Exception):
    """A client error; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def vocab_size_of(model_path: str | Path) -> int | None:
    """``vocab_size`` from a model directory's config.json (None when absent or not a directory)."""
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    for holder in (data, data.get("text_config") or {}):
        value = holder.get("vocab_size")
        if isinstance(value, int) and value > 0:
            return value
    return None


def decode_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("empty request body: expected a JSON object")
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object, got {type(body).__name__}")
    return body


def check_token_ids(ids: Any, vocab_size: int | None, field: str = "input_ids") -> list[int] | None:
    """Validate ``input_ids`` (one prompt; a batch is checked prompt by prompt).

    Returns the ids of a single prompt (for prefix matching), None for a batch.
    """
    if not isinstance(ids, list) or not ids:
        raise BadRequest(f"{field} must be a non-empty list of token ids")
    if isinstance(ids[0], list):
        for i, one in enumerate(ids):
            check_token_ids(one, vocab_size, f"{field}[{i}]")
        return None
    for i, tok in enumerate(ids):
        if type(tok) is not int:
            raise BadRequest(f"{field}[{i}] is not an integer token id: {tok!r}")
    low, high = min(ids), max(ids)
    if low < 0:
        raise BadRequest(f"{field} has a negative token id ({low})")
    if vocab_size is not None and high >= vocab_size:
        raise BadRequest(f"{field} has token id {high}, outside the model's vocabulary of {vocab_size}")
    return ids


Prompt = tuple[list[int] | None, str | None]
"""(token ids, text) of a request's prompt; at most one is set (both None: a batch of texts)."""


def prompt_of_generate(body: Mapping[str, Any], vocab_size: int | None) -> Prompt:
    """(token ids, text) of a ``/generate`` body; raises BadRequest when it has neither."""
    ids = body.get("input_ids")
    if ids is not None:
        return check_token_ids(ids, vocab_size), None
    text = body.get("text")
    if isinstance(text, str) and text:
        return None, text
    if isinstance(text, list) and text and all(isinstance(t, str) for t in text):
        return None, None
    if body.get("input_embeds") is not None:
        return None, None
    raise BadRequest("missing prompt: /generate needs 'text' or 'input_ids'")


def prompt_of_completion(body: Mapping[str, Any], vocab_size: int | None) -> Prompt:
    """(token ids, text) of an OpenAI ``/v1/completions`` body."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return None, prompt
    if isinstance(prompt, list) and prompt:
        if isinstance(prompt[0], int | list):
            return check_token_ids(prompt, vocab_size, "prompt"), None
        if all(isinstance(p, str) for p in prompt):
            return None, prompt[0] if len(prompt) == 1 else None
    raise BadRequest("missing prompt: /v1/completions needs a non-empty 'prompt'")


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The request's cap on generated tokens, if it states a positive one (``sampling_params.
    max_new_tokens`` of ``/generate``, ``max_tokens``/``max_completion_tokens`` of the OpenAI
    routes); what the scheduler prices a call's decode at until it has learned output lengths."""
    params = body.get("sampling_params")
    candidates = [params.get("max_new_tokens")] if isinstance(params, Mapping) else []
    candidates += [body.get("max_tokens"), body.get("max_completion_tokens")]
    for v in candidates:
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def prompt_of_chat(body: Mapping[str, Any]) -> str:
    """The concatenated message texts of a chat body (sglang-router's routing text)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("missing prompt: /v1/chat/completions needs a non-empty 'messages' list")
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise BadRequest(f"messages[{i}] must be an object with a 'role'")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "".join(parts)
