"""``bench/harness.py``: a server started with another switch interval runs the real CLI with
that interval set first."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402


def test_the_switched_cli_sets_the_interval_then_runs_grounded(tmp_path: Path) -> None:
    probe = harness._SWITCHED_CLI.replace(
        "from service.cli import main; main()",
        "print(sys.getswitchinterval(), sys.argv[1:]); from service.cli import main; main()",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "0.0005", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("0.0005 ['--help']")
    assert "serve" in done.stdout  # grounded's own help followed
    server = harness.start_server(tmp_path, "docs", harness.free_port(), tmp_path / "log", 500)
    try:
        command = server.args
        assert isinstance(command, list)
        assert command[1:5] == ["-c", harness._SWITCHED_CLI, "0.0005", "serve"]
    finally:
        server.kill()
        server.wait()
