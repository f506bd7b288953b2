"""Headless Chromium for the dashboard tests: Debian's own `chromium`, driven by Playwright through
``executable_path``. The suite never downloads a browser (no `playwright install`).

A missing browser skips these tests, saying why; under CI=true it fails them, like a missing service.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from config.settings import Settings
from tests.conftest import CI
from tests.stack import Stack
from vendors.alta.settings import AltaSettings
from vendors.callonalarm.settings import CallOnAlarmSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_MISSING = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
PLAYWRIGHT_MISSING = (
    "browser tests skipped: the playwright package is not installed (pip install -e '.[test]')"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}


def browser_unavailable(reason: str) -> None:
    """Skip locally, fail under CI: a missing browser is never silently fine in CI."""
    if CI:
        pytest.fail(f"browser tests cannot run: {reason}; CI=true requires them", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found is None:
        browser_unavailable(CHROMIUM_MISSING)
    assert found is not None
    return found


@pytest.fixture
def browser_context(chromium_executable: str, tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh headless Chromium profile at a laptop's viewport, closed after the test."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium_executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=LAPTOP,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: BrowserContext) -> Page:
    return browser_context.pages[0] if browser_context.pages else browser_context.new_page()


@pytest.fixture
def stack(
    chromium_executable: str,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    """The whole bridge (web over HTTP, worker, dispatcher, simulators), as the end-to-end tests run
    it; only started once the browser is known to be there."""
    settings = make_settings(
        AltaSettings(lookup_timeout_s=30, video_wait_s=20),
        CallOnAlarmSettings(poll_interval_s=2),
        database_url=postgres_url,
        redis_url=redis_url,
        broker_key_prefix=f"abbrowser:{uuid.uuid4().hex[:10]}:",
    )
    with Stack(settings, tmp_path).running() as running:
        yield running
