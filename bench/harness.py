"""What the bench scripts share: the machine line, percentiles, and ``grounded serve`` on loopback.

Example::

    port = free_port()
    server = start_server(data_dir, "bench", port, log=work / "server.log")
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}") as client:
            startup_s = wait_ready(client, server, work / "server.log")
            ...
    finally:
        stop_server(server)
"""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from ingest.index import VectorIndex

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 300.0


def machine() -> str:
    """``16 cores, <CPU model>, Python 3.x.y``: printed and stored with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def percentile(values: Sequence[float], q: float | None) -> float:
    """The q-th percentile (linear interpolation); ``None`` = the maximum; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    if q is None:
        return ordered[-1]
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(
    data_dir: Path, collection: str, port: int, log: Path, switch_us: int | None = None
) -> subprocess.Popen[bytes]:
    """``grounded serve`` on ``HOST:port`` over ``data_dir``; its output goes to ``log``.
    ``switch_us``: the server's ``sys.setswitchinterval``, in µs (default: Python's 5 ms)."""
    command = [sys.executable, "-m", "service.cli"]
    if switch_us is not None:
        command[1:] = ["-c", _SWITCHED_CLI, str(switch_us / 1e6)]
    command += ["serve", "--host", HOST, "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--collection", collection]
    with log.open("wb") as fh:
        return subprocess.Popen(command, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)


# `python -m service.cli` with the switch interval (argv[1], seconds) set first.
_SWITCHED_CLI = (
    "import sys; sys.setswitchinterval(float(sys.argv.pop(1))); "
    "from service.cli import main; main()"
)


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds until ``/healthz`` answers 200; exits with the log's tail if the server dies."""
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT_S:
        if server.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the server exited with {server.returncode}:\n{tail}")
        try:
            if client.get("/healthz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {STARTUP_TIMEOUT_S:.0f} s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Terminate, and kill if it has not exited 30 s later."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


@contextmanager
def switch_interval(seconds: float | None) -> Iterator[None]:
    """``sys.setswitchinterval(seconds)`` for the block (``None``: left as it is)."""
    previous = sys.getswitchinterval()
    if seconds is not None:
        sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def edge_index(folder: Path, process: bool) -> VectorIndex:
    """An embedded Qdrant Edge index in ``folder``: in this process, or served from a process
    of its own (:class:`~ingest.index.process.ProcessIndex`, as ``grounded ingest`` writes on a
    GPU)."""
    from ingest.index import EdgeIndex
    from ingest.index.process import ProcessIndex

    return ProcessIndex(partial(EdgeIndex, folder)) if process else EdgeIndex(folder)
