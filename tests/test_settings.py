from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.settings import Settings


def test_defaults() -> None:
    s = Settings()
    assert (
        s.embedding_model == "all-MiniLM-L6-v2" and s.search_mode == "hybrid" and not s.uses_server
    )


def test_env_then_config_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('data_dir = "/srv/g"\nchunk_size = 200\nfusion = "dbsf"\n')
    monkeypatch.setenv("GROUNDED_CONFIG", str(config))
    monkeypatch.setenv("GROUNDED_CHUNK_SIZE", "128")
    monkeypatch.setenv("GROUNDED_QDRANT_URL", "http://qdrant:6333")
    s = Settings()
    assert s.chunk_size == 128  # env beats file
    assert s.data_dir == Path("/srv/g") and s.fusion == "dbsf"  # file beats defaults
    assert s.uses_server
    assert Settings(chunk_size=96).chunk_size == 96  # flags beat env


def test_grounded_toml_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "grounded.toml").write_text('collection = "papers"\n')
    assert Settings().collection == "papers"


@pytest.mark.parametrize(
    "bad",
    [{"chunk_overlap": 200}, {"top_k": 500}, {"search_mode": "fuzzy"}, {"collection": "../etc"}],
)
def test_invalid_settings_fail_at_once(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROUNDED_CONFIG", "/nonexistent/grounded.toml")
    with pytest.raises(FileNotFoundError):
        Settings()
