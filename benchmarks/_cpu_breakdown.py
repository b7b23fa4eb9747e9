"""Where a router process spends its CPU: py-spy samples grouped into the router's components.

py-spy (a sampling profiler outside the process, so the router runs at full speed) records the
Python stacks of the busy router; each sample goes to the component of the deepest frame that
belongs to one (frames of asyncio, aiohttp's helpers, multidict and the like are shared plumbing
and skipped). Time in C code (uvloop, the HTTP parsers, msgspec, the kernel under a syscall) counts
for the Python frame that called it: a sample whose deepest owned frame is the event loop itself is
socket I/O and callback dispatch in uvloop, kernel time included. A line that calls the JSON codec
counts as JSON whoever calls it.
"""

from __future__ import annotations

import linecache
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

COMPONENTS = (
    "HTTP server (aiohttp web: parse, request, response)",
    "upstream client (pooled connections to the workers)",
    "JSON decode/encode (msgspec)",
    "request checks (prompt, token ids)",
    "identity extraction",
    "scheduler (handle, placement, kv_hints, epochs)",
    "telemetry (prometheus-client)",
    "logging",
    "router glue (forwarding code)",
    "event loop + socket I/O (uvloop, kernel)",
    "background (load polling, health, epochs when idle)",
    "other",
)
(SERVER, CLIENT, JSON, CHECKS, IDENTITY, SCHEDULER, TELEMETRY, LOGGING, GLUE, LOOP, BACKGROUND, OTHER) = (
    COMPONENTS
)

_FILE_RULES: tuple[tuple[str, str], ...] = (
    ("prometheus_client/", TELEMETRY),
    ("/logging/", LOGGING),
    ("router/upstream.py", CLIENT),
    ("aiohttp/client", CLIENT),
    ("aiohttp/connector.py", CLIENT),
    ("aiohttp/tracing.py", CLIENT),
    ("aiohttp/cookiejar.py", CLIENT),
    ("aiohttp/web_", SERVER),
    ("aiohttp/http_writer.py", SERVER),
    ("aiohttp/base_protocol.py", SERVER),
    ("router/inbound.py", CHECKS),
    ("router/identity.py", IDENTITY),
    ("router/hosts.py", SCHEDULER),
    ("router/kv_index.py", SCHEDULER),
    ("router/idle.py", SCHEDULER),
    ("saga_sgl/", SCHEDULER),
    ("router/service.py", GLUE),
    ("router/app.py", GLUE),
    ("router/telemetry.py", TELEMETRY),
)
_LOOP_FILES = ("asyncio/", "<frozen runpy>", "router/cli.py", "router/__main__.py")
_BACKGROUND_METHODS = frozenset({"_poll_loads", "_poll_one", "_epochs", "_admit", "_health_changed"})
_BACKGROUND_FUNCTIONS = frozenset({"HealthMonitor.run", "KvEventSubscriber.run"})
_JSON_CALL = re.compile(r"_encoder\.encode|_decoder\.decode|msgspec\.json|json\.(dumps|loads)|decode_body\(")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def py_spy() -> str | None:
    """The py-spy executable (pinned in requirements/test.txt), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 400) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); wait() on the result."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy not installed (it is pinned in requirements/test.txt)")
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--output",
        str(out),
        "--rate",
        str(rate),
        "--duration",
        str(max(1, round(seconds))),
        "--nonblocking",
        "--full-filenames",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def classify(stack: list[str], root: Path) -> str:
    """The component a sample belongs to; ``stack`` runs from the outermost frame to the innermost."""
    frames = [m for m in (_FRAME.match(f) for f in stack) if m is not None]
    if any(
        m["func"] in _BACKGROUND_FUNCTIONS or m["func"].rpartition(".")[2] in _BACKGROUND_METHODS
        for m in frames
    ):
        return BACKGROUND
    for m in reversed(frames):
        path = m["file"]
        if path.startswith(str(root)) or "site-packages" in path:
            line = linecache.getline(path, int(m["line"]))
            if _JSON_CALL.search(line):
                return JSON
        for fragment, component in _FILE_RULES:
            if fragment in path:
                return component
        if any(fragment in path for fragment in _LOOP_FILES):
            return LOOP
    return OTHER


def sample_counts(collapsed: Path, root: Path) -> Counter[str]:
    """Samples per component in a py-spy ``--format raw`` file."""
    counts: Counter[str] = Counter()
    for raw in collapsed.read_text().splitlines():
        stack_text, _, n = raw.rpartition(" ")
        if stack_text and n.isdigit():
            counts[classify(stack_text.split(";"), root)] += int(n)
    return counts


def per_request_us(
    counts: Counter[str], rate_hz: float, requests: int, cpu_us_per_request: float, background_us: float
) -> dict[str, float]:
    """CPU us per request of each component; sums to ``cpu_us_per_request``.

    A sample with Python code on the stack is that code running: ``1 / rate_hz`` seconds of it. A
    sample whose only frame is the loop is either uvloop working in C or the loop waiting in
    ``epoll`` (py-spy cannot always tell the two apart without pausing the process), so the loop's
    share is not counted but is what remains of the measured CPU per request. Background work is
    not sampled per request either: it is the router's idle CPU rate over the request rate.
    """
    out = {
        c: 1e6 * counts[c] / rate_hz / requests
        for c in COMPONENTS
        if counts[c] and c not in (LOOP, BACKGROUND)
    }
    out[BACKGROUND] = background_us
    out[LOOP] = max(0.0, cpu_us_per_request - sum(out.values()))
    return out
