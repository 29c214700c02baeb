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


def test_llm_settings_honour_openai_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Settings().llm_configured
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert not Settings().llm_configured  # a key alone does not switch the LLM on
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8080/v1")
    s = Settings()
    assert s.llm_configured and s.llm_base_url == "http://localhost:8080/v1"
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-test"
    monkeypatch.setenv("GROUNDED_LLM_BASE_URL", "http://vllm:8000/v1")
    assert Settings().llm_base_url == "http://vllm:8000/v1"  # ours beat OpenAI's


def test_llm_features_without_an_llm_are_refused() -> None:
    for option in ({"hyde": True}, {"multi_query": 2}, {"reranker": "llm"}, {"generator": "llm"}):
        with pytest.raises(ValidationError, match="need\\(s\\) an LLM"):
            Settings(**option)


def test_routes_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "grounded.toml"
    config.write_text(
        'route_min_score = 0.4\n[[routes]]\nname = "billing"\ndescription = "Invoices"\n'
        'collection = "bills"\nexamples = ["why was I charged twice?"]\n'
        '[[routes]]\nname = "billing"\ndescription = "again"\n'
    )
    monkeypatch.setenv("GROUNDED_CONFIG", str(config))
    with pytest.raises(ValidationError, match="unique"):
        Settings()
    config.write_text(
        config.read_text().replace(
            '"billing"\ndescription = "again"', '"docs"\ndescription = "Manuals"'
        )
    )
    s = Settings()
    assert [r.name for r in s.routes] == ["billing", "docs"] and s.route_min_score == 0.4
    assert s.routes[0].collection == "bills" and s.routes[0].examples
