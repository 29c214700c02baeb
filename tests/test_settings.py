import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest import settings_docs
from ingest.index.base import Fusion, Mode
from ingest.settings import FusionMethod, Route, SearchMode, Settings


def test_defaults() -> None:
    s = Settings()
    assert (
        s.embedding_model == "all-MiniLM-L6-v2" and s.search_mode == "hybrid" and not s.uses_server
    )


def test_env_then_config_file_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('data_dir = "/srv/g"\nchunk_size = 200\nfusion = "rrf"\n')
    monkeypatch.setenv("GROUNDED_CONFIG", str(config))
    monkeypatch.setenv("GROUNDED_CHUNK_SIZE", "128")
    monkeypatch.setenv("GROUNDED_QDRANT_URL", "http://qdrant:6333")
    s = Settings()
    assert s.chunk_size == 128  # env beats file
    assert s.data_dir == Path("/srv/g") and s.fusion == "rrf"  # file beats defaults (dbsf)
    assert s.uses_server
    assert Settings(chunk_size=96).chunk_size == 96  # flags beat env


def test_the_default_overlap_follows_a_smaller_chunk_size() -> None:
    assert Settings().chunk_overlap == 64
    # Setting only the size stays valid: the unset overlap is a quarter of it, at most 64.
    assert [Settings(chunk_size=n).chunk_overlap for n in (512, 128, 96, 16)] == [64, 32, 24, 4]
    assert Settings(chunk_size=128, chunk_overlap=10).chunk_overlap == 10  # a set one is kept
    with pytest.raises(ValidationError, match="chunk_overlap"):
        Settings(chunk_size=128, chunk_overlap=64)


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


def test_openai_variables_come_after_flags_grounded_variables_and_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("GROUNDED_LLM_BASE_URL", "http://grounded/v1")
    monkeypatch.setenv("GROUNDED_LLM_API_KEY", "sk-grounded")
    s = Settings()
    assert s.llm_base_url == "http://grounded/v1"  # GROUNDED_ beats OPENAI_
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-grounded"
    s = Settings(llm_base_url="http://flag/v1", llm_api_key="sk-flag")
    assert s.llm_base_url == "http://flag/v1"  # flags beat both
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-flag"
    monkeypatch.delenv("GROUNDED_LLM_BASE_URL")
    monkeypatch.delenv("GROUNDED_LLM_API_KEY")
    config = tmp_path / "conf.toml"
    config.write_text('llm_base_url = "http://toml/v1"\n')
    monkeypatch.setenv("GROUNDED_CONFIG", str(config))
    s = Settings()
    assert s.llm_base_url == "http://toml/v1"  # the config file beats OPENAI_
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "sk-openai"
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert Settings().llm_api_key is None  # an empty OPENAI_ variable is unset


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


def test_search_mode_and_fusion_are_the_index_types() -> None:
    assert SearchMode is Mode and FusionMethod is Fusion
    for first in ("ingest.settings", "ingest.index"):  # no import cycle either way
        subprocess.run([sys.executable, "-c", f"import {first}"], check=True)


@pytest.mark.parametrize("model", [Settings, Route])
def test_every_field_has_a_description(model: type[Settings] | type[Route]) -> None:
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__name__} fields without a description: {missing}"


def test_configuration_docs_are_generated_from_the_settings() -> None:
    page = settings_docs.DOCS_PATH.read_text(encoding="utf-8")
    assert page == settings_docs.render_page(page), (
        f"docs/configuration.md is out of date: run `{settings_docs.REGENERATE}`"
    )
    for name in Settings.model_fields:
        assert f"\n| {name} | GROUNDED_{name.upper()}" in page
    assert "| qdrant_api_key | GROUNDED_QDRANT_API_KEY | unset |" in page  # secrets stay unset


def test_a_settings_error_does_not_print_secrets() -> None:
    with pytest.raises(ValueError) as refused:
        Settings(
            qdrant_api_key="qkey-very-secret",
            llm_api_key="sk-very-secret",
            task_time_limit=100,
            broker_visibility_timeout=50,
        )
    assert "broker_visibility_timeout" in str(refused.value)
    assert "very-secret" not in str(refused.value)
