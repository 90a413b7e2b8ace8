"""What the browser tests run against: Debian's chromium driven by playwright, watched for console errors and
requests that leave the API (the app runs on part of the demo catalog, `tests.demo_shop`).

Screenshots go to ``artifacts/screenshots/`` (``VITRINE_TEST_ARTIFACTS`` overrides the folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from tests.demo_shop import ROOT

CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("VITRINE_TEST_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


@dataclass
class Watch:
    """Everything a page did that a test may object to: console errors, uncaught exceptions, requests."""

    base_url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def page_error(self, error: Any) -> None:
        self.errors.append(f"exception: {error}")

    def request(self, request: Request) -> None:
        self.requests.append(request.url)

    def outside(self) -> list[str]:
        """Requests that left the API's origin (data: and blob: URLs stay in the page)."""
        return [url for url in self.requests
                if not url.startswith((self.base_url + "/", "data:", "blob:")) and url != self.base_url]

    def searches(self) -> list[str]:
        return [url for url in self.requests if "/search" in url]


@contextmanager
def open_page(browser: Browser, base_url: str, *, phone: bool = False) -> Iterator[tuple[Page, Watch]]:
    """A new page (desktop, or a phone-sized touch screen) watched by a `Watch`."""
    options: dict[str, Any] = {"viewport": {"width": 1280, "height": 900}}
    if phone:
        options = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                   "has_touch": True}
    context = browser.new_context(**options)
    page = context.new_page()
    watch = Watch(base_url)
    page.on("console", watch.console)
    page.on("pageerror", watch.page_error)
    page.on("request", watch.request)
    try:
        yield page, watch
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
