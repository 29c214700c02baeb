"""Run a ``bench/`` script end to end, as a user would, and read the result file it writes.
Its figures are the bench's, never asserted by a test: speed is not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .paths import REPO, SHARED

SCIFACT = SHARED / "scifact"


def run_bench(script: str, *args: str, out: Path) -> dict[str, Any]:
    """The JSON result of ``bench/<script>.py ARGS --out OUT``, which must exit 0."""
    command = [sys.executable, str(REPO / "bench" / f"{script}.py"), *args, "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (result_file,) = out.glob(f"{script}-*.json")
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result
