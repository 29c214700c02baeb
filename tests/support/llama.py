"""A real OpenAI-compatible server for the end-to-end tests: llama.cpp with a GGUF model."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def llama_server(model: Path, n_ctx: int = 4096) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real OpenAI-compatible server: ``python -m llama_cpp.server`` on a free port.

    Yields its base URL (``http://127.0.0.1:PORT/v1``) and the process.
    """
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_ctx", str(n_ctx), "--n_threads", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.5)
        yield f"{url}/v1", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
