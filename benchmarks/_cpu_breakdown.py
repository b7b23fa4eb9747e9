"""Where a router process spends its CPU: py-spy samples grouped into the router's components.

py-spy (a sampling profiler outside the process) records the router's Python *and* native stacks
(``--native``), idle or not; a sample whose innermost frame is ``epoll_wait`` is the loop waiting
and is dropped. Each busy sample goes to the component of the innermost frame that belongs to one:
frames of asyncio, aiohttp's helpers, multidict, uvloop's C and the like are shared plumbing and
skipped, so C code (the HTTP parsers, uvloop's transport code) counts for the Python code that
called it, with three exceptions: the cyclic garbage collector (wherever an allocation set it off),
a sample inside a socket system call (``write``, ``read``,
``sendmsg``... in libc: on loopback the sender's ``write`` also runs the receiver's TCP stack) is
kernel socket I/O, and a busy sample with no Python frame at all is uvloop's own loop work. A line
that calls the JSON codec counts as JSON whoever calls it; msgspec's C frames too.
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
    "scheduler (handle, placement, prefix index, kv_hints)",
    "telemetry (prometheus-client)",
    "logging",
    "router glue (forwarding code)",
    "kernel socket I/O (syscalls)",
    "event loop (uvloop, asyncio tasks and futures)",
    "garbage collector",
    "background (load polling, health, epochs)",
    "other",
)
(SERVER, CLIENT, JSON, CHECKS, IDENTITY, SCHEDULER, TELEMETRY, LOGGING, GLUE, KERNEL, LOOP, GC,
 BACKGROUND, OTHER) = COMPONENTS  # fmt: skip

_FILE_RULES: tuple[tuple[str, str], ...] = (
    ("prometheus_client/", TELEMETRY),
    ("/logging/", LOGGING),
    ("msgspec", JSON),
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
    ("asyncio/", LOOP),
)
_BACKGROUND_METHODS = frozenset({"_poll_loads", "_poll_one", "_epochs", "_admit", "_health_changed"})
_BACKGROUND_FUNCTIONS = frozenset({"HealthMonitor.run", "KvEventSubscriber.run"})
_SOCKET_CALLS = frozenset({
    "write", "writev", "send", "sendto", "sendmsg", "read", "readv", "recv", "recvfrom", "recvmsg",
    "epoll_ctl", "close", "shutdown", "accept4", "connect", "__libc_write", "__libc_read",
})  # fmt: skip
_GC_CALLS = frozenset({"gc_collect_main", "gc_collect_with_callback", "gc_collect_generations"})
_IDLE_CALLS = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2"})
_JSON_CALL = re.compile(r"_encoder\.encode|_decoder\.decode|msgspec\.json|json\.(dumps|loads)|decode_body\(")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """The py-spy executable (pinned in requirements/test.txt), or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    """Sample ``pid`` for ``seconds`` into ``out`` (collapsed Python + native stacks, idle included).

    Each sample pauses the process for a moment (native stacks need it), so stacks are consistent.
    """
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy not installed (it is pinned in requirements/test.txt)")
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", str(rate),
           "--duration", str(seconds), "--native", "--idle", "--full-filenames"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def classify(stack: list[str], root: Path) -> str | None:
    """The component of one sample (None: idle); ``stack`` runs from the outermost frame inwards."""
    frames = [m for m in (_FRAME.match(f) for f in stack) if m is not None]
    if not frames:
        return OTHER
    leaf = frames[-1]
    if leaf["func"] in _IDLE_CALLS:
        return None
    if any(
        m["func"] in _BACKGROUND_FUNCTIONS or m["func"].rpartition(".")[2] in _BACKGROUND_METHODS
        for m in frames
    ):
        return BACKGROUND
    if leaf["func"] in _SOCKET_CALLS and "libc" in leaf["file"]:
        return KERNEL
    if any(m["func"] in _GC_CALLS for m in frames):
        return GC
    python_seen = False
    for m in reversed(frames):
        path = m["file"]
        if not path.endswith(".py"):
            if "msgspec" in path or "_core.cpython" in path:
                return JSON
            continue
        python_seen = True
        owned = path.startswith(str(root)) or "site-packages" in path
        if m["line"] and owned and _JSON_CALL.search(linecache.getline(path, int(m["line"]))):
            return JSON
        for fragment, component in _FILE_RULES:
            if fragment in path:
                return component
    return OTHER if python_seen else LOOP


def sample_counts(collapsed: Path, root: Path) -> tuple[Counter[str], int]:
    """(busy samples per component, idle samples) of a py-spy ``--format raw`` file."""
    counts: Counter[str] = Counter()
    idle = 0
    for raw in collapsed.read_text().splitlines():
        stack_text, _, n = raw.rpartition(" ")
        if not stack_text or not n.isdigit():
            continue
        component = classify(stack_text.split(";"), root)
        if component is None:
            idle += int(n)
        else:
            counts[component] += int(n)
    return counts, idle
