"""The playground in a real browser: Debian's Chromium, driven by Selenium, against a real
`grounded serve` process with a small collection, an OpenAI-compatible fake LLM that streams
word by word, and a folder holding a ladder report.

Every test ends by asserting the console logged no error (JavaScript errors and failed loads
are SEVERE entries). Screenshots land in ``test-artifacts/browser/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from support.browser import browser_paths, chromium, console_errors, screenshot, wait_for
from support.cli_runner import grounded
from support.fake_llm import FakeLLM
from support.serve import serving

from eval.ladder import LadderRow, write_ladder_report
from eval.metrics import METRICS
from service.auth import KeyStore

pytestmark = pytest.mark.slow

REPLY = "Qdrant keeps BM25 as sparse vectors with the IDF modifier [1]."
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
CORPUS = {
    "bm25.md": "# BM25 in Qdrant\n\nQdrant stores BM25 as sparse vectors with the IDF modifier, "
    "so term weights are computed by the engine at query time.\n",
    "rivers.md": "# Rivers\n\nThe Danube flows through ten countries before it reaches the "
    "Black Sea.\n",
    "hostile.md": f"# Tea <b>brewing</b>\n\n{HOSTILE} Green tea steeps at eighty degrees for "
    "two minutes.\n",
}


@dataclass
class Site:
    url: str
    folder: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    browser_paths()  # skip (or fail in CI) before starting anything
    root = tmp_path_factory.mktemp("playground")
    docs = root / "docs"
    docs.mkdir()
    for name, text in CORPUS.items():
        (docs / name).write_text(text)
    data = root / "data"
    grounded("ingest", str(docs), "--collection", "demo", data_dir=data)
    reports = root / "reports"
    rows = [
        LadderRow("dense", "dense only", dict.fromkeys(METRICS, 0.61), 12.0, delta=0.0),
        LadderRow("hybrid", "dense + BM25, RRF", dict.fromkeys(METRICS, 0.66), 19.0, delta=0.05),
    ]
    write_ladder_report(rows, reports / "ladder-mini", "mini")
    with FakeLLM(reply=REPLY) as llm:
        env = {
            "GROUNDED_COLLECTION": "demo",
            "GROUNDED_LLM_BASE_URL": llm.url,
            "GROUNDED_REPORTS_DIR": str(reports),
        }
        with serving(data, env=env) as served:
            yield Site(served.url, root)


@pytest.fixture(scope="module")
def driver(site: Site) -> Iterator[Chrome]:
    with chromium() as browser:
        browser.get(site.url + "/")
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#collections li"), "list")
        yield browser


@pytest.fixture(autouse=True)
def no_console_errors(driver: Chrome) -> Iterator[None]:
    console_errors(driver)  # the log is read-and-clear: start this test from nothing
    yield
    assert console_errors(driver) == []


def text_of(driver: Chrome, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element_id}').textContent"))


def submit_question(driver: Chrome, question: str) -> None:
    box = driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question, Keys.ENTER)  # the keyboard, not a click


def stages(driver: Chrome) -> set[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#timings tr")
    return {str(row.get_attribute("data-stage")) for row in rows}


def run_search(driver: Chrome, question: str, mode: str) -> None:
    Select(driver.find_element(By.ID, "task")).select_by_value("search")
    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    driver.execute_script("document.getElementById('results').replaceChildren()")
    submit_question(driver, question)
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#results li"), "search results")


def test_page_shows_collections_defaults_and_reports(driver: Chrome) -> None:
    items = driver.find_elements(By.CSS_SELECTOR, "#collections li")
    assert [i.find_element(By.TAG_NAME, "button").text for i in items] == ["demo"]
    assert "chunks" in items[0].text and "all-minilm" in items[0].text.lower()
    assert Select(driver.find_element(By.ID, "collection")).first_selected_option.text == "demo"
    generators = [
        o.get_attribute("value") for o in Select(driver.find_element(By.ID, "generator")).options
    ]
    assert generators == ["llm", "extractive"]
    assert not driver.find_element(By.ID, "hyde").get_attribute("disabled")  # an LLM is there
    assert driver.find_element(By.ID, "rerank").get_attribute("disabled")  # no reranker is
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#reports li button"), "reports")
    screenshot(driver, "01-loaded")


def test_answer_streams_and_a_citation_shows_its_chunk(driver: Chrome) -> None:
    Select(driver.find_element(By.ID, "task")).select_by_value("answer")
    Select(driver.find_element(By.ID, "generator")).select_by_value("llm")
    # Count the text pieces the answer receives: a streamed answer arrives in several.
    driver.execute_script(
        "window.__pieces = 0; new MutationObserver(m => window.__pieces += m.length)"
        ".observe(document.getElementById('answer'), {childList: true});"
    )
    submit_question(driver, "How does Qdrant store BM25?")
    cite = wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#answer button.cite"), "a citation"
    )[0]
    assert text_of(driver, "answer") == REPLY
    assert driver.execute_script("return window.__pieces") >= len(REPLY.split())
    badges = text_of(driver, "badges")
    assert "llm" in badges and "fake-model" in badges and "abstained" not in badges
    assert {"embed_ms", "bm25_ms", "generate_ms", "total_ms"} <= stages(driver)

    cite.send_keys(Keys.ENTER)  # a citation is a button: reachable and usable by keyboard
    panel = driver.find_element(By.ID, "citation")
    wait_for(driver, lambda d: panel.is_displayed(), "the citation panel")
    highlighted = driver.find_element(By.CSS_SELECTOR, "#citation mark")
    assert "Qdrant stores BM25 as sparse vectors with the IDF modifier" in highlighted.text
    assert text_of(driver, "citation-doc").startswith("docs/bm25.md")
    assert text_of(driver, "citation-title") == "BM25 in Qdrant"
    start, end = text_of(driver, "citation-offsets").removeprefix("characters ").split("–")
    assert 0 <= int(start) < int(end)
    assert cite.get_attribute("aria-expanded") == "true"
    screenshot(driver, "02-answer-citation")

    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(driver, lambda d: not panel.is_displayed(), "the panel to close")
    assert driver.switch_to.active_element == cite  # focus returns where it came from


def test_search_only_lists_hits_and_timings_follow_the_mode(driver: Chrome) -> None:
    run_search(driver, "Which river reaches the Black Sea?", "dense")
    assert driver.find_element(By.ID, "answer-section").is_displayed() is False
    hits = driver.find_elements(By.CSS_SELECTOR, "#results li")
    assert hits[0].get_attribute("data-doc") == "docs/rivers.md"
    assert "score" in hits[0].text
    dense = stages(driver)
    assert "embed_ms" in dense and "bm25_ms" not in dense

    run_search(driver, "Which river reaches the Black Sea?", "sparse")
    sparse = stages(driver)
    assert "bm25_ms" in sparse and "embed_ms" not in sparse
    assert "sparse" in text_of(driver, "results-h")
    screenshot(driver, "03-search-sparse")
    Select(driver.find_element(By.ID, "mode")).select_by_value("hybrid")


def test_document_markup_renders_as_text(driver: Chrome) -> None:
    run_search(driver, "How long does green tea steep?", "hybrid")
    hit = driver.find_element(By.CSS_SELECTOR, "#results li[data-doc='docs/hostile.md']")
    assert HOSTILE in hit.text  # shown, as text
    assert "Tea <b>brewing</b>" in hit.text
    assert hit.find_elements(By.CSS_SELECTOR, "img, script, b") == []
    assert driver.execute_script("return window.__pwned") is None


def test_dropped_file_is_ingested_with_progress_and_becomes_searchable(
    driver: Chrome, site: Site
) -> None:
    # A real drop event carrying a File, as a drag from the desktop delivers it.
    driver.execute_script(
        "const t = new DataTransfer();"
        "t.items.add(new File([arguments[0]], 'okapi.md', {type: 'text/markdown'}));"
        "document.getElementById('dropzone').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true}));",
        "# Okapi\n\nThe okapi is a giraffid that lives in the Ituri rainforest.\n",
    )
    wait_for(driver, lambda d: "Ingest job succeeded" in text_of(d, "status"), "the job")
    progress = driver.find_element(By.ID, "upload-progress")
    wait_for(driver, lambda d: progress.get_attribute("value") == "100", "a full progress bar")
    row = driver.find_element(By.CSS_SELECTOR, "#upload-files li[data-file='okapi.md']")
    assert "1 document" in row.text and "file-ok" in str(row.get_attribute("class"))
    jobs = driver.find_element(By.ID, "jobs")
    wait_for(driver, lambda d: "succeeded" in jobs.text, "the job in the job list")

    # The file picker: one good file and one corrupt PDF, which fails alone.
    broken = site.folder / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nthis is not a PDF body")
    notes = site.folder / "notes.txt"
    notes.write_text("Capybaras are the largest living rodents.\n")
    driver.execute_script("document.getElementById('status').textContent = ''")
    driver.find_element(By.ID, "file-input").send_keys(f"{broken}\n{notes}")
    wait_for(driver, lambda d: "Ingest job" in text_of(d, "status"), "the second job")
    error = driver.find_element(By.CSS_SELECTOR, "#upload-files li[data-file='broken.pdf']")
    assert "file-error" in str(error.get_attribute("class")) and "broken.pdf:" in error.text
    ok = driver.find_element(By.CSS_SELECTOR, "#upload-files li[data-file='notes.txt']")
    assert "file-ok" in str(ok.get_attribute("class"))
    screenshot(driver, "04-upload")

    run_search(driver, "Where does the okapi live?", "hybrid")
    first = driver.find_elements(By.CSS_SELECTOR, "#results li")[0]
    assert first.get_attribute("data-doc") == "okapi.md"
    run_search(driver, "largest rodent", "hybrid")
    assert "notes.txt" in [
        h.get_attribute("data-doc") for h in driver.find_elements(By.CSS_SELECTOR, "#results li")
    ]


def _images_rendered(driver: Chrome) -> bool:
    return bool(
        driver.execute_script(
            "const imgs = [...document.images];"
            "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);"
        )
    )


def test_ladder_report_opens_with_its_chart(driver: Chrome, site: Site) -> None:
    button = driver.find_element(By.CSS_SELECTOR, "#reports li button")
    assert "mini" in button.text
    button.send_keys(Keys.ENTER)
    frame = driver.find_element(By.ID, "report-frame")
    wait_for(driver, lambda d: frame.is_displayed() and frame.get_attribute("srcdoc"), "the frame")
    driver.switch_to.frame(frame)
    try:
        wait_for(driver, _images_rendered, "the report's chart")
        assert "Retrieval ladder" in driver.find_element(By.TAG_NAME, "h1").text
        assert driver.find_elements(By.CSS_SELECTOR, "table tr")
    finally:
        driver.switch_to.default_content()
    screenshot(driver, "05-report")

    # The same report in a tab of its own: its CSP still lets the embedded chart show.
    href = str(driver.find_element(By.ID, "report-open").get_attribute("href"))
    driver.get(href)
    wait_for(driver, _images_rendered, "the report's chart in its own tab")
    driver.back()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#collections li"), "the page")


def test_with_auth_on_the_page_asks_for_a_key_and_sends_it(site: Site) -> None:
    data = site.folder / "auth-data"
    data.mkdir()
    store = KeyStore(data / "keys.sqlite")
    token, _record = store.create("acme", {"read", "ingest"}, name="browser")
    store.close()
    env = {"GROUNDED_AUTH": "on", "GROUNDED_COLLECTION": "kb"}
    with serving(data, env=env) as served, chromium() as browser:
        browser.get(served.url + "/")
        key_box = wait_for(browser, lambda d: d.find_element(By.ID, "api-key"), "the key box")
        wait_for(browser, lambda d: key_box.is_displayed(), "the key form")
        assert "needs an API key" in text_of(browser, "status")
        # The only console errors are the refused requests (401) that made the page ask.
        refused = console_errors(browser)
        assert refused and all("401" in message for message in refused), refused

        key_box.send_keys(token, Keys.ENTER)
        wait_for(browser, lambda d: "Key set" in text_of(d, "status"), "the key to be taken")
        browser.execute_script(
            "const t = new DataTransfer();"
            "t.items.add(new File(['Walruses haul out on sea ice.'], 'walrus.txt'));"
            "document.getElementById('dropzone').dispatchEvent("
            "  new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true}));"
        )
        wait_for(browser, lambda d: "Ingest job succeeded" in text_of(d, "status"), "the job")
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#collections li"), "kb")
        run_search(browser, "Where do walruses rest?", "hybrid")
        hit = browser.find_element(By.CSS_SELECTOR, "#results li")
        assert hit.get_attribute("data-doc") == "walrus.txt"
        assert console_errors(browser) == []
        assert browser.execute_script("return localStorage.length") == 0  # tab-scoped only
        screenshot(browser, "06-auth")
