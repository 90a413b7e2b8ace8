"""Catalog enrichment end to end: demo products indexed by the real pipeline (demo encoder, embedded store), the
openai describer against the loopback chat-completions server, then search and re-indexing.

Thin products (no or a short description, with an image) get ``generated`` in their payload and a text vector
that embeds it; nothing else changes. A second run skips them; a limited run resumes; ``vitrine index`` of an
unchanged catalog keeps the enrichment, and a changed row drops it (text embedded again from the catalog).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.enrich import EnrichSummary, ProductImages, enrich_catalog, enriched_text, is_thin, product_text
from common.product import GENERATED_FIELD
from common.settings import EmbedSettings, SearchSettings, Settings, load_settings
from embed import Encoder, build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from indexer.state import ContentHashes
from rerank.openai_backend import OpenAIReranker
from search.query import SearchRequest
from search.service import SearchService
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT, StoredPoint, VectorStore
from tests.cli import cli_env, run_vitrine
from tests.unit.rerank.describe_server import MARKER, DescribingServer, description_of

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
THIN = {"fm-00000": None, "fm-00001": "Warm.", "fm-00002": None}  # id -> thin description (None: none)
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = build_encoder(EmbedSettings(), "demo")
    model.load()
    return model


@pytest.fixture(scope="module")
def server() -> Iterator[DescribingServer]:
    with DescribingServer().running() as running:
        yield running


class Shop:
    """Six demo products with descriptions, three of them made thin, and a thin gift card without an image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        lines = (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines[:200]]
        rich = [row for row in rows[3:] if len(row.get("description", "")) >= 40][:3]
        self.rows: list[dict[str, Any]] = rows[:3] + rich
        (root / "images").mkdir()
        for row in self.rows:
            shutil.copy(DEMO / row["image"], root / row["image"])
            if row["id"] in THIN:
                row.pop("description")
                if THIN[row["id"]] is not None:
                    row["description"] = THIN[row["id"]]
        self.rows.append({"id": "gift", "title": "Gift card", "category": "Gift"})
        self.catalog = root / "catalog.jsonl"
        self.write_catalog()
        self.settings: Settings = load_settings(home=root / "home", indexer={"workers": 0, "batch_size": 4})
        self.store: VectorStore = open_store(self.settings)

    def write_catalog(self) -> None:
        self.catalog.write_text("".join(json.dumps(row) + "\n" for row in self.rows), encoding="utf-8")

    def index(self, encoder: Encoder) -> IndexSummary:
        return index_catalog(self.catalog, settings=self.settings, encoder=encoder, store=self.store,
                             progress=False)

    def enrich(self, server: DescribingServer, encoder: Encoder, **options: Any) -> EnrichSummary:
        describer = OpenAIReranker("fake-vlm", base_url=server.url, retries=0)
        images = ProductImages(self.settings, base_dir=self.root)
        try:
            return enrich_catalog(self.store, "products", describer=describer, encoder=encoder, images=images,
                                  min_chars=40, progress=False, clock=lambda: AT, **options)
        finally:
            images.close()

    def points(self) -> dict[str, StoredPoint]:
        ids = [row["id"] for row in self.rows]
        return {p.product_id: p for p in self.store.retrieve("products", ids, with_vectors=True)}


@pytest.fixture()
def shop(tmp_path: Path, encoder: Encoder) -> Iterator[Shop]:
    made = Shop(tmp_path)
    assert made.index(encoder).indexed == len(made.rows)
    yield made
    made.store.close()


def catalog_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != GENERATED_FIELD and not k.startswith(STATE_KEY)}


def test_thin_rule() -> None:
    assert is_thin({}, 40) and is_thin({"description": "  Warm.  "}, 40)
    assert not is_thin({"description": "x" * 40}, 40) and not is_thin({}, 0)


def test_thin_products_are_enriched_and_nothing_else_changes(shop: Shop, encoder: Encoder,
                                                              server: DescribingServer) -> None:
    before = shop.points()
    summary = shop.enrich(server, encoder)
    assert (summary.products, summary.thin, summary.enriched, summary.skipped, summary.failed) == (7, 3, 3, 0, 0)
    assert summary.no_image == 1 and summary.model == "fake-vlm" and summary.stopped is None
    after = shop.points()
    for pid, point in after.items():
        old = before[pid]
        assert catalog_fields(point.payload) == catalog_fields(old.payload), "catalog fields never change"
        if IMAGE in old.vectors:
            np.testing.assert_array_equal(point.vectors[IMAGE], old.vectors[IMAGE])
        if pid not in THIN:
            assert point.payload == old.payload
            np.testing.assert_array_equal(point.vectors[TEXT], old.vectors[TEXT])
            continue
        generated = point.payload[GENERATED_FIELD]
        expected = description_of(product_text(old.payload))
        assert generated == {"description": expected["description"],
                             "attributes": {"colour": "white", "pattern": MARKER, "style": "casual"},
                             "model": "fake-vlm", "at": "2025-01-02T03:04:05+00:00", "source": "enrich"}
        text = enriched_text(old.payload, generated["description"])
        assert not np.allclose(point.vectors[TEXT], old.vectors[TEXT])
        np.testing.assert_allclose(point.vectors[TEXT], encoder.embed_texts([text])[0], atol=1e-5)
        state = ContentHashes.from_payload(point.payload[STATE_KEY])
        assert state is not None and state.generated is not None
        assert state.text == ContentHashes.from_payload(old.payload[STATE_KEY]).text  # type: ignore[union-attr]

    service = SearchService(encoder=encoder, store=shop.store, settings=SearchSettings(), collection="products")
    hits = service.search(SearchRequest(q=f"{MARKER} pattern", limit=10)).results
    shown = {hit.id: hit.product.model_dump(exclude_unset=True) for hit in hits}
    assert set(THIN) <= set(shown)
    assert all(shown[pid]["generated"]["source"] == "enrich" for pid in THIN)
    assert all(GENERATED_FIELD not in view for pid, view in shown.items() if pid not in THIN)
    lexical = shop.store.lexical_search("products", text=MARKER, limit=10)
    assert {point.product_id for point in lexical} == set(THIN), "the generated words are in the lexical index"

    again = shop.enrich(server, encoder)
    assert (again.enriched, again.skipped, again.failed) == (0, 3, 0)


def test_limited_run_resumes_and_dry_run_writes_nothing(shop: Shop, encoder: Encoder,
                                                         server: DescribingServer) -> None:
    plan = shop.enrich(server, encoder, dry_run=True)
    assert plan.planned == sorted(THIN, key=plan.planned.index) and set(plan.planned) == set(THIN)
    assert all(GENERATED_FIELD not in p.payload for p in shop.points().values())
    first = shop.enrich(server, encoder, limit=1)
    assert (first.enriched, first.remaining) == (1, 2)
    rest = shop.enrich(server, encoder)
    assert (rest.enriched, rest.skipped, rest.remaining) == (2, 1, 0)
    assert all(GENERATED_FIELD in shop.points()[pid].payload for pid in THIN)


def test_a_failing_product_is_reported_and_the_job_goes_on(shop: Shop, encoder: Encoder,
                                                           server: DescribingServer) -> None:
    shop.rows[0]["title"] = "garbage boots"
    shop.write_catalog()
    shop.index(encoder)
    summary = shop.enrich(server, encoder)
    assert (summary.enriched, summary.failed) == (2, 1)
    assert summary.failures[0][0] == "fm-00000" and "no usable description" in summary.failures[0][1]
    assert GENERATED_FIELD not in shop.points()["fm-00000"].payload


def test_reindexing_keeps_the_enrichment_until_the_row_changes(shop: Shop, encoder: Encoder,
                                                                server: DescribingServer) -> None:
    shop.enrich(server, encoder)
    enriched = shop.points()
    unchanged = shop.index(encoder)
    assert (unchanged.indexed, unchanged.updated, unchanged.unchanged) == (0, 0, len(shop.rows))
    kept = shop.points()
    for pid in THIN:
        assert kept[pid].payload == enriched[pid].payload
        np.testing.assert_array_equal(kept[pid].vectors[TEXT], enriched[pid].vectors[TEXT])

    shop.rows[0]["price"] = 1.0  # only the price: the payload is rewritten, the enriched text vector too
    shop.rows[1]["description"] = "A long catalog description of a warm black hoodie in cotton knit."
    shop.write_catalog()
    changed = shop.index(encoder)
    assert (changed.indexed, changed.unchanged) == (2, len(shop.rows) - 2)
    points = shop.points()
    for pid in ("fm-00000", "fm-00001"):
        assert GENERATED_FIELD not in points[pid].payload
        state = ContentHashes.from_payload(points[pid].payload[STATE_KEY])
        assert state is not None and state.generated is None
        plain = encoder.embed_texts([product_text(points[pid].payload)])[0]
        np.testing.assert_allclose(points[pid].vectors[TEXT], plain, atol=1e-5)
        np.testing.assert_array_equal(points[pid].vectors[IMAGE], enriched[pid].vectors[IMAGE])
    assert points["fm-00002"].payload == enriched["fm-00002"].payload
    redo = shop.enrich(server, encoder)
    assert (redo.enriched, redo.skipped) == (1, 1), "fm-00000 is thin again; fm-00001 no longer is"


def test_vitrine_enrich_command(shop: Shop, server: DescribingServer) -> None:
    shop.store.close()
    env = cli_env(shop.root / "home", VITRINE_RERANK__BACKEND="openai", VITRINE_RERANK__MODEL="fake-vlm",
                  VITRINE_RERANK__BASE_URL=server.url, VITRINE_RERANK__RETRIES="0")
    plan = run_vitrine(shop.root / "home", "enrich", "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[:3] == sorted(THIN, key=plan.stdout.index)
    assert "3 product(s) of 'products' would be enriched by 'fake-vlm'" in plan.stdout
    done = run_vitrine(shop.root / "home", "enrich", "--no-progress", "--images-from", shop.root,
                       "--category", "Ankle boot", env=env)
    assert done.returncode == 0, done.stderr
    assert "enriched    1" in done.stdout and "skipped     0" in done.stdout
    as_json = run_vitrine(shop.root / "home", "enrich", "--json", "--no-progress", env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["enriched"] == 2
    shown = run_vitrine(shop.root / "home", "search", "boots", "--limit", "20", env=cli_env(shop.root / "home"))
    assert shown.returncode == 0, shown.stderr
    assert "* description generated by fake-vlm (vitrine enrich)" in shown.stdout
    starred = [line for line in shown.stdout.splitlines() if line.split()[0].isdigit() and "*  " in line]
    assert {line.split()[6] for line in starred} <= set(THIN) and starred
    missing = run_vitrine(shop.root / "home", "enrich", env=cli_env(shop.root / "home"))
    assert missing.returncode == 2 and "VITRINE_RERANK__BACKEND" in missing.stderr
