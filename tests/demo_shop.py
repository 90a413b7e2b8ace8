"""Part of the bundled demo catalog indexed as ``make demo`` does it (demo model, demo vocabulary, thumbnails and
previews), for tests that need real products with real pictures: the browser tests, generation over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api.enrich import ProductImages, enrich_catalog
from common.settings import EmbedSettings, Settings, load_settings
from embed import build_encoder
from indexer.pipeline import index_catalog
from rerank import build_describer
from store.factory import open_store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
PRODUCTS = 600
"""Demo products indexed by default: enough for calibration (no-good-match), facets and a few pages of results."""


def demo_subset(folder: Path, count: int = PRODUCTS) -> Path:
    """The first ``count`` demo products as a catalog in ``folder``, pointing at the demo's own images."""
    lines = (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row["image"] = str(DEMO / row["image"])
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return catalog


def index_demo_subset(folder: Path, *, count: int = PRODUCTS, **groups: dict[str, Any]) -> Settings:
    """Index `demo_subset` into ``folder/home`` as ``make demo`` does (demo model, demo vocabulary); the
    settings returned also hold the other settings ``groups`` given (``rerank={...}``, ``generate={...}``)."""
    settings = load_settings(home=folder / "home", indexer={"workers": 0, "image_roots": [str(DEMO / "images")]},
                             tags={"vocabulary": DEMO / "vocabulary.toml"}, **groups)
    encoder = build_encoder(EmbedSettings(), "demo")
    store = open_store(settings)
    try:
        summary = index_catalog(demo_subset(folder, count), settings=settings, encoder=encoder, store=store,
                                progress=False)
    finally:
        store.close()
    assert summary.indexed == count, summary
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
