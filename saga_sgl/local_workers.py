"""Start and stop real SGLang worker processes on this machine (the CPU demo and the live tests).

Each worker is a plain ``python -m sglang.launch_server`` on a loopback port, with our plugin active
through its entry point. On CPU it serves the tiny Llama config shipped in ``saga_sgl/assets`` with
dummy weights; the import-only CPU shims are put on ``PYTHONPATH`` only when ``device == "cpu"``.
Two CPU modes: id-only (``--skip-tokenizer-init``; requests carry ``input_ids``; the default, lighter)
and text-serving (``serve_text=True``; the byte-level tokenizer committed beside the tiny config is
loaded, so text prompts, chat, grammars and SGLang DSL programs work).

Processes are started in their own session (process group) so that stopping a worker also stops the
scheduler and detokenizer children SGLang spawns: no orphans, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from saga_sgl import _cpu_shims

log = logging.getLogger(__name__)

TINY_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "tiny-llama"
"""A 2-layer, 64-wide Llama config (vocab 512) served with ``--load-format dummy``."""

TINY_VOCAB_SIZE = 512
"""Also the size of the committed tokenizer (``scripts/build_tiny_tokenizer.py``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """How to start one SGLang worker."""

    port: int
    host: str = "127.0.0.1"
    """Address the worker binds and is reached at (a node's IP for multi-node clusters)."""
    model_path: str = str(TINY_MODEL_DIR)
    device: str = "cpu"
    max_total_tokens: int | None = 4096
    """KV capacity in tokens; small on CPU so that eviction actually happens."""
    eviction_policy: str | None = None
    """``--radix-eviction-policy``; None keeps SGLang's default (lru)."""
    enable_metrics: bool = True
    sleep_on_idle: bool = True
    """``--sleep-on-idle``: an idle scheduler blocks on its sockets (woken at once by a request)
    instead of spinning. SGLang's default spins, which costs a core per idle worker: measured on the
    2-core live benchmark, two idle workers burned 40 CPU-seconds in a 55 s row that their two busy
    neighbours needed (benchmarks/results/live_s3.md)."""
    serve_text: bool = False
    """CPU only: load the model directory's tokenizer so the worker accepts text (DSL programs);
    False starts it with ``--skip-tokenizer-init`` (requests must carry ``input_ids``)."""
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            self.model_path,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--device",
            self.device,
        ]
        if self.device == "cpu":
            # Dummy weights, and a fixed sampling seed so that the demo model's generations repeat
            # from run to run (SGLang draws a random seed per launch otherwise).
            cmd += ["--load-format", "dummy", "--random-seed", "0"]
            if not self.serve_text:
                # No tokenizer: requests carry input_ids below the vocabulary size.
                cmd.append("--skip-tokenizer-init")
        if self.max_total_tokens is not None:
            cmd += ["--max-total-tokens", str(self.max_total_tokens)]
        if self.eviction_policy is not None:
            cmd += ["--radix-eviction-policy", self.eviction_policy]
        if self.enable_metrics:
            cmd.append("--enable-metrics")
        if self.sleep_on_idle:
            cmd.append("--sleep-on-idle")
        cmd += list(self.extra_args)
        return cmd


class WorkerStartError(RuntimeError):
    """A worker exited or did not become healthy in time; carries the tail of its log."""


@dataclass(slots=True)
class WorkerProcess:
    spec: WorkerSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at_s: float
    ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    def log_tail(self, num_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-num_lines:])

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Poll ``/health`` until 200 (SGLang answers 503 while starting)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerStartError(
                    f"SGLang worker on port {self.spec.port} exited with {self.process.returncode}:\n"
                    + self.log_tail()
                )
            if _healthy(self.url):
                self.ready_after_s = time.monotonic() - self.started_at_s
                log.info("worker %s ready after %.1f s", self.url, self.ready_after_s)
                return
            time.sleep(0.5)
        raise WorkerStartError(
            f"SGLang worker on port {self.spec.port} not healthy after {timeout_s:.0f} s:\n" + self.log_tail()
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        stop_group(self.process, timeout_s, name=f"worker {self.url}")


def child_preexec() -> None:
    """In the child before exec (Linux): receive SIGTERM when the launching process dies, so that a
    launcher killed with SIGKILL still takes its children with it. No-op elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def spawn_in_group(
    command: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session (process group) of its own, output to ``log_path``, stdin
    closed, with ``PR_SET_PDEATHSIG`` (see ``child_preexec``): ``stop_group`` then stops it and every
    child it spawned."""
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            list(command),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=child_preexec,
        )


def stop_group(process: subprocess.Popen[bytes], timeout_s: float, *, name: str = "child") -> None:
    """SIGTERM the process group of a ``spawn_in_group`` child, wait up to ``timeout_s``, then
    SIGKILL the group whatever happened: the leader may be gone while its children linger."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing its process group", name)
    _signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# Listening ports are drawn below the kernel's ephemeral range: a port the kernel hands out with
# bind(0) is also handed to outgoing connections (Ray opens hundreds), so a port picked that way can
# be taken by the time the worker binds it (seen in CI: "Address already in use" on a worker's
# control socket). 20000 keeps clear of Ray's worker ports (10002-19999 by default).
_PORT_FLOOR = 20000
_ports_given: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, outside the ephemeral range, never given twice by this process.

    Pass the address the port will be bound on (a node's IP in a multi-node cluster): a port free on
    loopback may be taken on another address."""
    if not _local_address(host):
        host = "127.0.0.1"  # another machine's address (a spec built for a remote node): probe here
    ceiling = _ephemeral_floor()
    rng = random.Random()
    if ceiling - _PORT_FLOOR >= 1000:
        for _ in range(200):
            port = rng.randrange(_PORT_FLOOR, ceiling)
            if port not in _ports_given and _bindable(host, port):
                _ports_given.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # odd port ranges: the kernel picks
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _ports_given.add(port)
    return port


def _local_address(host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def start_worker(spec: WorkerSpec, log_dir: Path) -> WorkerProcess:
    """Start one worker (does not wait for readiness)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = spec.log_path or log_dir / f"sglang-worker-{spec.port}.log"
    env = _cpu_shims.worker_env() if spec.device == "cpu" else dict(os.environ)
    env.update(spec.env)
    log.info("starting SGLang worker: %s", " ".join(spec.command()))
    process = spawn_in_group(spec.command(), log_path, env)
    return WorkerProcess(spec=spec, process=process, log_path=log_path, started_at_s=time.monotonic())


@contextlib.contextmanager
def running_workers(
    specs: Sequence[WorkerSpec], log_dir: Path, *, ready_timeout_s: float = 180.0
) -> Iterator[list[WorkerProcess]]:
    """Start all workers, wait until each is healthy, yield them, and always stop them."""
    workers: list[WorkerProcess] = []
    try:
        for spec in specs:
            workers.append(start_worker(spec, log_dir))
        for worker in workers:
            worker.wait_ready(ready_timeout_s)
        yield workers
    finally:
        for worker in workers:
            worker.stop()
