"""Zero-shot tags at ingestion, end to end: the demo encoder, real demo pictures, the embedded store.

Tags are computed from the image vectors the indexer stores; a changed vocabulary re-tags products from their
stored vectors (payload updates, no re-embedding); filters on ``tags.<attribute>`` work through the store.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.wiring import load_tag_vocabulary
from common.settings import EmbedSettings, SearchSettings, Settings, load_settings
from common.vocabulary import load_vocabulary
from embed import Encoder, build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from indexer.state import ContentHashes
from indexer.tagging import Tagger
from search.query import SearchRequest
from search.service import SearchService
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT, Filter, Match, PointWrite, Range, StoredPoint, VectorStore
from tests.cli import cli_env, run_vitrine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
CLASSES = ("Sneaker", "Trouser", "Bag")  # the classes the demo encoder tells apart best (99 % precision)
PER_CLASS = 3

TYPE_ONLY = """
[attributes.type]
values = ["Sneaker", "Trouser", "Bag", "Dress"]
min_confidence = 0.0
"""
WITH_GROUP = TYPE_ONLY + """
[attributes.group]
values = ["shoe", "garment", "bag"]
min_confidence = 0.0
"""


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = build_encoder(EmbedSettings(), "demo")
    model.load()
    return model


def demo_rows() -> list[dict[str, Any]]:
    """``PER_CLASS`` demo products of each of `CLASSES`, in catalog order."""
    rows, taken = [], dict.fromkeys(CLASSES, 0)
    for line in (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if taken.get(row["category"], PER_CLASS) < PER_CLASS:
            taken[row["category"]] += 1
            rows.append(row)
    return rows


class Shop:
    """A catalog of demo products (images copied), a vocabulary file, settings and the embedded store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows = demo_rows()
        for row in self.rows:
            (root / "images").mkdir(exist_ok=True)
            shutil.copy(DEMO / row["image"], root / row["image"])
        self.rows.append({"id": "text-only", "title": "Gift card", "category": "Gift"})
        self.catalog = root / "catalog.jsonl"
        self.write_catalog()
        self.vocabulary = root / "vocabulary.toml"
        self.vocabulary.write_text(TYPE_ONLY, encoding="utf-8")
        self.settings = self.with_vocabulary(self.vocabulary)
        self.store: VectorStore = open_store(self.settings)

    def with_vocabulary(self, vocabulary: Path | None) -> Settings:
        return load_settings(home=self.root / "home", indexer={"workers": 0, "batch_size": 4},
                             tags={"vocabulary": vocabulary})

    def write_catalog(self) -> None:
        self.catalog.write_text("".join(json.dumps(row) + "\n" for row in self.rows), encoding="utf-8")

    def run(self, encoder: Encoder, **options: Any) -> IndexSummary:
        return index_catalog(self.catalog, settings=self.settings, encoder=encoder, store=self.store,
                             progress=False, **options)

    def points(self) -> dict[str, StoredPoint]:
        ids = [row["id"] for row in self.rows]
        return {p.product_id: p for p in self.store.retrieve("products", ids, with_vectors=True)}


@pytest.fixture()
def shop(tmp_path: Path) -> Iterator[Shop]:
    made = Shop(tmp_path)
    yield made
    made.store.close()


def counts(summary: IndexSummary) -> tuple[int, int, int, int]:
    return summary.indexed, summary.updated, summary.unchanged, summary.rejected


def check_tags_match_stored_vectors(shop: Shop, encoder: Encoder, vocabulary: Path) -> dict[str, StoredPoint]:
    """Every product with an image carries exactly the tags of its stored image vector; the others none."""
    tagger = Tagger(encoder, load_vocabulary(vocabulary))
    points = shop.points()
    for pid, point in points.items():
        state = ContentHashes.from_payload(point.payload[STATE_KEY])
        assert state is not None
        if IMAGE not in point.vectors:
            assert "tags" not in point.payload and "tag_confidence" not in point.payload
            assert state.tags is None
            continue
        [expected] = tagger.tag(point.vectors[IMAGE][None])
        assert point.payload["tags"] == expected["tags"], pid
        assert point.payload["tag_confidence"] == pytest.approx(expected["tag_confidence"], abs=1e-4)
        assert state.tags == tagger.fingerprint
    return points


def test_index_tags_filters_and_retags_without_embedding(shop: Shop, encoder: Encoder) -> None:
    assert counts(shop.run(encoder)) == (len(shop.rows), 0, 0, 0)
    points = check_tags_match_stored_vectors(shop, encoder, shop.vocabulary)
    assert shop.store.collection_info("products").tags == load_vocabulary(shop.vocabulary).as_dict()
    by_category = {row["id"]: row.get("category") for row in shop.rows}
    right = sum(point.payload["tags"]["type"] == by_category[pid] for pid, point in points.items()
                if IMAGE in point.vectors)
    assert right >= len(CLASSES) * PER_CLASS - 1  # the demo encoder gets these classes right

    # filters on the tag fields, through the store
    for value in ("Sneaker", "Trouser", "Bag"):
        want = {pid for pid, p in points.items() if p.payload.get("tags", {}).get("type") == value}
        flt = Filter(must=(Match("tags.type", value),))
        assert shop.store.count("products", flt) == len(want)
        hits = shop.store.search("products", vector=points[next(iter(points))].vectors[TEXT], using=TEXT,
                                 limit=50, filter=flt)
        assert {h.product_id for h in hits} == want
    sure = Filter(must=(Range("tag_confidence.type", gte=0.5),))
    assert shop.store.count("products", sure) == sum(
        1 for p in points.values() if p.payload.get("tag_confidence", {}).get("type", 0) >= 0.5)

    # nothing changed: nothing to do
    assert counts(shop.run(encoder)) == (0, 0, len(shop.rows), 0)

    # a new vocabulary re-tags from the stored vectors: payload updates, no embedding, vectors untouched
    shop.vocabulary.write_text(WITH_GROUP, encoding="utf-8")
    shop.settings = shop.with_vocabulary(shop.vocabulary)
    assert counts(shop.run(encoder)) == (0, len(shop.rows) - 1, 1, 0)
    again = check_tags_match_stored_vectors(shop, encoder, shop.vocabulary)
    assert all("group" in p.payload["tags"] for p in again.values() if IMAGE in p.vectors)
    for pid, point in again.items():
        for name, vector in points[pid].vectors.items():
            np.testing.assert_array_equal(point.vectors[name], vector)
    assert counts(shop.run(encoder)) == (0, 0, len(shop.rows), 0)

    # a payload change keeps the tags
    shop.rows[0]["price"] = 1234.0
    shop.write_catalog()
    assert counts(shop.run(encoder)) == (0, 1, len(shop.rows) - 1, 0)
    assert shop.points()[shop.rows[0]["id"]].payload["tags"] == again[shop.rows[0]["id"]].payload["tags"]

    # the collection remembers the vocabulary: a search service given no file boosts its tags all the same
    assert shop.store.collection_info("products").tags == load_vocabulary(shop.vocabulary).as_dict()
    untold = SearchService(encoder=encoder, store=shop.store, settings=SearchSettings(), collection="products",
                           vocabulary=load_tag_vocabulary(shop.with_vocabulary(None),
                                                          shop.store.collection_info("products")),
                           tag_boost=0.1)
    assert [(b.attribute, b.value) for b in untold.search(SearchRequest(q="comfy sneakers")).boosts] == [
        ("type", "Sneaker")]

    # tagging turned off: the tags go, the vectors stay
    shop.settings = shop.with_vocabulary(None)
    assert counts(shop.run(encoder)) == (0, len(shop.rows) - 1, 1, 0)
    assert shop.store.collection_info("products").tags is None
    for pid, point in shop.points().items():
        assert "tags" not in point.payload and "tag_confidence" not in point.payload
        assert ContentHashes.from_payload(point.payload[STATE_KEY]).tags is None  # type: ignore[union-attr]
        assert point.vectors.keys() == again[pid].vectors.keys()


def test_a_vanished_image_vector_is_embedded_again(shop: Shop, encoder: Encoder) -> None:
    shop.run(encoder)
    first = shop.points()
    victim = shop.rows[1]["id"]
    point = first[victim]
    shop.store.upsert("products", [PointWrite(victim, point.payload, {TEXT: point.vectors[TEXT]})])
    shop.vocabulary.write_text(WITH_GROUP, encoding="utf-8")
    shop.settings = shop.with_vocabulary(shop.vocabulary)
    assert counts(shop.run(encoder)) == (1, len(shop.rows) - 2, 1, 0)
    points = check_tags_match_stored_vectors(shop, encoder, shop.vocabulary)
    np.testing.assert_allclose(points[victim].vectors[IMAGE], first[victim].vectors[IMAGE], atol=1e-5)


def test_a_catalog_column_named_tags_is_refused_while_tagging(shop: Shop, encoder: Encoder) -> None:
    shop.rows[0]["tags"] = ["summer", "sale"]
    shop.write_catalog()
    summary = shop.run(encoder)
    assert counts(summary) == (len(shop.rows) - 1, 0, 0, 1)
    assert summary.report is not None
    [row] = [json.loads(line) for line in summary.report.read_text(encoding="utf-8").splitlines()]
    assert row["id"] == shop.rows[0]["id"] and "'tags'" in row["reason"] and "vocabulary" in row["reason"]
    shop.settings = shop.with_vocabulary(None)  # without a vocabulary the column is the catalog's own
    assert counts(shop.run(encoder)) == (1, len(shop.rows) - 2, 1, 0)  # the others lose their tags
    assert shop.points()[shop.rows[0]["id"]].payload["tags"] == ["summer", "sale"]


def test_bad_vocabulary_fails_before_the_model_loads(shop: Shop, encoder: Encoder) -> None:
    from common.errors import InvalidInput, NotFound

    shop.vocabulary.write_text('[attributes."bad name"]\nvalues = ["a", "b"]\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"vocabulary\.toml.*'bad name'"):
        shop.run(encoder)
    shop.settings = shop.with_vocabulary(shop.root / "missing.toml")
    with pytest.raises(NotFound, match=r"missing\.toml"):
        shop.run(encoder)


def test_cli_vocabulary_option(tmp_path: Path) -> None:
    shop = Shop(tmp_path)
    shop.store.close()
    home = tmp_path / "cli-home"
    env = cli_env(home, VITRINE_INDEXER__WORKERS="0")
    done = run_vitrine(home, "index", shop.catalog, "--model", "demo", "--vocabulary", shop.vocabulary,
                       "--no-progress", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == len(shop.rows)
    off = run_vitrine(home, "index", shop.catalog, "--model", "demo", "--vocabulary", "none", "--no-progress",
                      "--json", env={**env, "VITRINE_TAGS__VOCABULARY": str(shop.vocabulary)})
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["updated"] == len(shop.rows) - 1  # the tags were removed
    bad = run_vitrine(home, "index", shop.catalog, "--model", "demo", "--vocabulary", tmp_path / "nope.toml",
                      env=env)
    assert bad.returncode == 1 and "nope.toml" in bad.stderr
