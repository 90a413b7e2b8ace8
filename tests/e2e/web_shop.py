"""What the browser tests run against: part of the demo catalog indexed with the demo model and vocabulary
(thumbnails included), served by the real app under uvicorn, and Debian's chromium driven by playwright.

Screenshots go to ``artifacts/screenshots/`` (``VITRINE_TEST_ARTIFACTS`` overrides the folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, Request

from api.enrich import ProductImages, enrich_catalog
from common.settings import EmbedSettings, Settings, load_settings
from embed import build_encoder
from indexer.pipeline import index_catalog
from rerank import build_describer
from store.factory import open_store

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
PRODUCTS = 600
"""Demo products indexed: enough for calibration (no-good-match), facets and a few pages of results."""
CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("VITRINE_TEST_ARTIFACTS", ROOT / "artifacts")) / "screenshots"


def demo_subset(folder: Path, count: int = PRODUCTS) -> Path:
    """The first ``count`` demo products as a catalog in ``folder``, pointing at the demo's own images."""
    lines = (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["image"] = str(DEMO / row["image"])
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return catalog


def index_demo_subset(folder: Path, *, rerank: dict[str, Any] | None = None) -> Settings:
    """Index `demo_subset` into ``folder/home`` as ``make demo`` does (demo model, demo vocabulary); the
    settings returned also hold ``rerank`` (the re-ranker group) when given."""
    settings = load_settings(home=folder / "home", indexer={"workers": 0, "image_roots": [str(DEMO / "images")]},
                             tags={"vocabulary": DEMO / "vocabulary.toml"}, rerank=rerank or {})
    encoder = build_encoder(EmbedSettings(), "demo")
    store = open_store(settings)
    try:
        summary = index_catalog(demo_subset(folder), settings=settings, encoder=encoder, store=store,
                                progress=False)
    finally:
        store.close()
    assert summary.indexed == PRODUCTS, summary
    return settings


def enrich(settings: Settings, product_ids: list[str]) -> None:
    """Run the enrichment job (`api.enrich`) on these products with the re-ranker's model of ``settings``."""
    describer = build_describer(settings.rerank)
    assert describer is not None
    store = open_store(settings)
    encoder = build_encoder(EmbedSettings(), "demo")
    encoder.load()
    images = ProductImages(settings)
    try:
        summary = enrich_catalog(store, settings.store.collection, describer=describer, encoder=encoder,
                                 images=images, min_chars=10_000, product_ids=product_ids, progress=False)
    finally:
        images.close()
        store.close()
    assert summary.enriched == len(product_ids), summary


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
