"""``bench/edge_writes.py`` runs end to end on a few points (its figures are the bench's, not
asserted here: speed is never a test)."""

from pathlib import Path

import pytest
from support.bench_runner import SCIFACT, run_bench


@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/datasets/scifact")
def test_edge_writes_bench_writes_every_point_in_each_phase(tmp_path: Path) -> None:
    result = run_bench(
        "edge_writes", "--points", "48", "--switch-us", "100", "--switch-us", "1000", out=tmp_path
    )
    assert result["points"] == 48
    assert set(result["points_per_s"]) == {
        "a_alone",
        "b_busy",
        "c_busy_switch_100us",
        "c_busy_switch_1000us",
        "d_process_alone",
        "d_process_busy",
    }
    assert all(rate > 0 for rate in result["points_per_s"].values())
    assert result["ratios_to_alone"]["a_alone"] == 1.0
    assert set(result["points_built_per_s"]) == {"build_payload", "build_payload_keys_none"}
    assert all(rate > 0 for rate in result["points_built_per_s"].values())
