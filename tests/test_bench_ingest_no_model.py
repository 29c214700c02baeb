"""``bench/ingest_no_model.py`` runs end to end on a few documents (its figures are the
bench's, not asserted here: speed is never a test)."""

from pathlib import Path

import pytest
from support.bench_runner import SCIFACT, run_bench


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs ../shared/datasets/scifact")
def test_every_configuration_writes_every_chunk(tmp_path: Path) -> None:
    args = ("--docs", "30", "--chunk-workers", "1", "--feed-us", "5")
    result = run_bench("ingest_no_model", *args, out=tmp_path)
    assert result["documents"] == 30 and result["chunks"] >= 30
    names = {
        f"writes_{writes}_chunk_workers_{workers}_feed_{feed}us"
        for writes in ("in_process", "process")
        for workers in (0, 1)
        for feed in (0, 5)
    }
    assert set(result["chunks_per_s"]) == names
    assert all(rate > 0 for rate in result["chunks_per_s"].values())
    assert result["ratios_to_first"]["writes_in_process_chunk_workers_0_feed_0us"] == 1.0
    assert set(result["this_process_cpu_us_per_chunk"]) == set(result["graph_build_s"]) == names
