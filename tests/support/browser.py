"""Debian's Chromium driven by Selenium through Debian's chromedriver, for the playground tests.

``scripts/setup.sh test`` installs both packages when they are missing. Without them the tests
skip locally with the reason, and fail under ``GROUNDED_REQUIRE_BROWSER=1`` (``.ci/run`` sets
it), so CI can never pass by skipping them.

Screenshots go to ``test-artifacts/browser/`` (or ``$GROUNDED_TEST_ARTIFACTS/browser``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from .cli_runner import REPO

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "/usr/lib/chromium/chromedriver")
WAIT_S = 30.0

T = TypeVar("T")


def _first(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_paths() -> tuple[str, str]:
    """Chromium's and chromedriver's paths, or a skip (a failure when the browser is required)."""
    binary, driver = _first(BROWSERS), _first(DRIVERS)
    if binary and driver:
        return binary, driver
    reason = (
        "Chromium and chromedriver are needed for the browser tests: "
        "`apt-get install chromium chromium-driver` (scripts/setup.sh test does it as root)"
    )
    if os.environ.get("GROUNDED_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def artifacts_dir() -> Path:
    root = Path(os.environ.get("GROUNDED_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium that keeps its console log (``console_errors`` reads it)."""
    binary, driver_path = browser_paths()
    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Console entries of level SEVERE since the last call (JavaScript errors, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T], what: str) -> T:
    """``condition``'s first truthy value within ``WAIT_S``; the message says what never came."""
    result: Any = WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, what)
    return result


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
