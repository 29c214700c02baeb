"""``grounded serve`` as a real process on a free port, for tests that go through HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .cli_runner import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))  # free on every interface, since a server may bind them all
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    stderr: Path
    process: subprocess.Popen[str]

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when the machine dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


@contextmanager
def serving(data: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``grounded serve ARGS`` over ``data`` until the block ends (or it is killed)."""
    port = free_port()
    stderr = data.parent / f"serve-{port}.stderr"
    environ = {**os.environ, "GROUNDED_DATA_DIR": str(data), "COLUMNS": "200", **(env or {})}
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args]
    with stderr.open("w") as sink:
        proc = subprocess.Popen(
            command, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=sink, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, stderr.read_text()
                assert time.monotonic() < deadline, "grounded serve did not come up"
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield Served(url, stderr, proc)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
