"""The playground's files as served, without a browser: headers, and the rules that keep
document text inert (the browser tests in test_playground_browser.py show the page working)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.routes import playground

FILES = resources.files("service.api").joinpath("playground")


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(playground.router)
    return TestClient(app)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.inline_scripts = 0
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if named.get("id"):
            self.ids.add(str(named["id"]))
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if tag == "script" and "src" not in named:
            self.inline_scripts += 1


def _page() -> _Tags:
    tags = _Tags()
    tags.feed(FILES.joinpath("index.html").read_text())
    return tags


def test_page_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    for path, kind in [
        ("/", "text/html"),
        ("/playground/playground.js", "text/javascript"),
        ("/playground/playground.css", "text/css"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "ask-form" in client.get("/").text


@pytest.mark.parametrize("name", ["index.html", "../routes/playground.py", "x.js", "%2e%2e"])
def test_only_the_two_assets_are_reachable(client: TestClient, name: str) -> None:
    assert client.get(f"/playground/{name}").status_code == 404


def test_the_page_runs_no_inline_script_and_sets_no_markup_from_data() -> None:
    tags = _page()
    assert tags.inline_scripts == 0 and tags.handlers == []
    script = FILES.joinpath("playground.js").read_text()
    # Text reaches the page through textContent and text nodes only.
    for sink in (
        r"innerHTML",
        r"outerHTML",
        r"insertAdjacentHTML",
        r"document\.write",
        r"\beval\(",
    ):
        assert not re.search(sink, script), sink


def test_every_element_the_script_looks_up_exists() -> None:
    ids = _page().ids
    script = FILES.joinpath("playground.js").read_text()
    wanted = set(re.findall(r"\$\(\"([\w-]+)\"\)", script))
    assert wanted and wanted <= ids, wanted - ids
