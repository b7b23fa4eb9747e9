"""What a real SGLang worker received, read from its own request log (``--log-requests`` in JSON)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

_PAYLOAD = re.compile(
    r"action_type='saga\.aeg', action_version='[^']*', payload=(\{.*?\})\)(?:, KvHintAction|\]\))"
)
_ACTION_TYPE = re.compile(r"action_type='([\w.]+)'")


def received_requests(log_path: Path) -> list[dict[str, Any]]:
    """Every ``request.received`` record of the worker's log: rid, routing_key, headers, the kv_hints
    action types (``saga.aeg`` from the frontend, ``saga.reuse`` from the saga router) and the
    ``saga.aeg`` payload (SGLang logs the decoded envelope as a repr; we read its payload dict)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"event": "request.received"' not in line:
            continue
        record = json.loads(line[line.index("{") :])
        obj = record["obj"]
        hints = obj.get("kv_hints")
        if isinstance(hints, list):  # a batch: one envelope per item, all the same here
            hints = hints[0] if hints else None
        payload = None
        if isinstance(hints, str) and "saga.aeg" in hints:
            match = _PAYLOAD.search(hints)
            payload = ast.literal_eval(match.group(1)) if match else None
        out.append(
            {
                "actions": _ACTION_TYPE.findall(hints) if isinstance(hints, str) else [],
                "rid": obj.get("rid"),
                "routing_key": obj.get("routing_key"),
                "header": (record.get("headers") or {}).get("x-smg-routing-key"),
                "aeg": payload,
            }
        )
    return out
