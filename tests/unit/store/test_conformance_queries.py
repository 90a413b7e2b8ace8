"""Conformance of the richer queries on every backend: lexical (BM25) search, boosts, recommendations, facets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidQuery, NotFound
from store.lexical import lexical_text
from store.protocol import IMAGE, TEXT, Boost, FacetCount, Filter, Match, PointWrite, VectorStore, boost_of
from tests.unit.store.conftest import Opener, make_opener, unit_vectors
from tests.unit.store.test_conformance import DIM, ENC, brute_force, catalog, loaded


def shop(store: VectorStore) -> list[PointWrite]:
    """Four products with distinctive words, identifiers and brands."""
    store.ensure_collection("shop", encoder=ENC, dim=DIM)
    vectors = unit_vectors(4, DIM, seed=7)
    rows = [
        {"title": "Acme trail running shoe", "brand": "Acme", "category": "Sneaker",
         "description": "Light trail shoe.", "attributes": {"model_number": "AC-900123"}},
        {"title": "Acme leather sandal", "brand": "Acme", "category": "Sandal",
         "description": "Leather straps.", "attributes": {"model_number": "AC-900124"}},
        {"title": "Zeta running shoe", "brand": "Zeta", "category": "Sneaker",
         "description": "Road running shoe with a soft sole.", "attributes": {"colour": "white"}},
        {"title": "Zeta summer dress", "brand": "Zeta", "category": "Dress", "description": "Linen dress."},
    ]
    points = [PointWrite(f"s{i}", {"id": f"s{i}", **row}, {IMAGE: vectors[i], TEXT: vectors[i]})
              for i, row in enumerate(rows)]
    store.upsert("shop", points)
    return points


def test_lexical_text_covers_fields_and_identifiers() -> None:
    text = lexical_text({"title": "T", "brand": "B", "category": "C", "description": "D", "price": 3,
                         "attributes": {"model_number": "M-1", "sku": 42, "colour": "red", "source": "x"}})
    assert text.split() == ["T", "B", "C", "D", "T", "M-1", "42"]


def test_lexical_search_finds_identifiers_and_words(store: VectorStore) -> None:
    shop(store)
    assert store.collection_info("shop").lexical
    hits = store.lexical_search("shop", text="Acme AC-900123", limit=10)
    assert [h.product_id for h in hits][:2] == ["s0", "s1"]
    assert hits[0].score is not None and hits[1].score is not None and hits[0].score > hits[1].score
    assert [h.product_id for h in store.lexical_search("shop", text="runs", limit=10)] == ["s2", "s0"]
    assert store.lexical_search("shop", text="umbrella", limit=10) == []
    assert store.lexical_search("shop", text="?!", limit=10) == []
    filtered = store.lexical_search("shop", text="shoe", limit=10, filter=Filter(must=(Match("brand", "Zeta"),)))
    assert [h.product_id for h in filtered] == ["s2"]
    with pytest.raises(InvalidQuery, match="limit"):
        store.lexical_search("shop", text="shoe", limit=0)


def test_lexical_score_matches_search_scores(store: VectorStore) -> None:
    shop(store)
    hits = {h.product_id: h.score for h in store.lexical_search("shop", text="running shoe", limit=10)}
    scores = store.lexical_score("shop", text="running shoe", product_ids=["s0", "s2", "s3", "absent"])
    assert set(scores) == {"s0", "s2"}
    assert scores == pytest.approx({pid: hits[pid] for pid in scores})
    assert store.lexical_score("shop", text="", product_ids=["s0"]) == {}


def test_payload_rewrite_rebuilds_the_lexical_vector(store: VectorStore) -> None:
    points = shop(store)
    store.set_payload("shop", {"s3": {**points[3].payload, "title": "Zeta umbrella", "description": ""}})
    assert [h.product_id for h in store.lexical_search("shop", text="umbrella", limit=5)] == ["s3"]
    assert store.lexical_search("shop", text="linen", limit=5) == []
    store.set_payload("shop", {"s3": {"id": "s3"}})  # no text left: no lexical vector, still retrievable
    assert store.lexical_search("shop", text="umbrella", limit=5) == []
    assert [p.product_id for p in store.retrieve("shop", ["s3"])] == ["s3"]


def test_boosts_rank_matching_products_up_and_report_their_part(store: VectorStore) -> None:
    points = loaded(store)
    query = unit_vectors(1, DIM, seed=99)[0]
    plain = brute_force(points, query, IMAGE)
    boost = Boost(Match("attributes.color", "green"), 0.5)
    hits = store.search("products", vector=query, using=IMAGE, limit=10, boosts=[boost])
    cosine = {p.product_id: float(np.dot(p.vectors[IMAGE], query)) for p in points}
    green = brute_force(points, query, IMAGE, keep=lambda payload: payload["attributes"]["color"] == "green")
    pool = set(plain[:10]) | set(green[:10])  # the plain top 10 and the boosted products' top 10
    expected = sorted(pool, key=lambda pid: -(cosine[pid] + (0.5 if pid in green else 0.0)))[:10]
    assert [h.product_id for h in hits] == expected != plain[:10]
    for hit in hits:
        assert hit.score is not None
        assert hit.score - boost_of(hit.payload, [boost]) == pytest.approx(cosine[hit.product_id], abs=1e-5)
    negative = store.search("products", vector=query, using=IMAGE, limit=5, boosts=[Boost(Match("brand", "acme"),
                                                                                           -2.0)])
    assert all(h.payload["brand"] != "acme" for h in negative)
    filtered = store.search("products", vector=query, using=IMAGE, limit=5, boosts=[boost],
                            filter=Filter(must=(Match("category", "shoes"),)))
    assert filtered and all(h.payload["category"] == "shoes" for h in filtered)


def test_boosted_products_beyond_the_plain_top_k_still_compete(store: VectorStore) -> None:
    points = loaded(store)
    query = unit_vectors(1, DIM, seed=3)[0]
    plain = brute_force(points, query, IMAGE)
    far = plain[-1]  # the least similar product: never in a plain top 5
    hits = store.search("products", vector=query, using=IMAGE, limit=5, boosts=[Boost(Match("id", far), 10.0)])
    assert hits[0].product_id == far


def test_bad_boosts_are_refused(store: VectorStore) -> None:
    loaded(store, n=5)
    query = unit_vectors(1, DIM, seed=3)[0]
    for bad in (Boost(Match("price", 5.0), 1.0), Boost(Match("brand", "acme"), float("nan"))):
        with pytest.raises(InvalidQuery):
            store.search("products", vector=query, using=IMAGE, limit=5, boosts=[bad])


def test_recommend_follows_positives_and_avoids_negatives(store: VectorStore) -> None:
    points = loaded(store)
    liked, disliked = points[0].vectors[IMAGE], points[1].vectors[IMAGE]
    hits = store.recommend("products", positive=[liked], using=IMAGE, limit=5)
    assert hits[0].product_id == "p000"
    assert [h.product_id for h in hits] == brute_force(points, liked, IMAGE)[:5]
    pushed = store.recommend("products", positive=[liked], negative=[disliked], using=IMAGE, limit=60,
                             filter=Filter(must_not=(Match("id", "p000"),)))
    ids = [h.product_id for h in pushed]
    assert "p000" not in ids
    closer_to_negative = [p.product_id for p in points if IMAGE in p.vectors and p.product_id != "p000"
                          and np.dot(p.vectors[IMAGE], disliked) > np.dot(p.vectors[IMAGE], liked)]
    scores = {h.product_id: h.score for h in pushed}
    assert closer_to_negative and all(scores[pid] is not None and scores[pid] < 0  # type: ignore[operator]
                                      for pid in closer_to_negative if pid in scores)
    with pytest.raises(InvalidQuery, match="positive"):
        store.recommend("products", positive=[], using=IMAGE, limit=5)
    with pytest.raises(InvalidQuery, match="shape"):
        store.recommend("products", positive=[liked], negative=[np.ones(3, np.float32)], using=IMAGE, limit=5)


def test_facets_count_values_overall_and_under_a_filter(store: VectorStore, opener: Opener) -> None:
    loaded(store)
    assert store.facet("products", "category") == [FacetCount("bags", 20), FacetCount("hats", 20),
                                                   FacetCount("shoes", 20)]
    assert store.facet("products", "brand", limit=2) == [FacetCount("acme", 15), FacetCount("nova", 15)]
    in_stock = store.facet("products", "category", filter=Filter(must=(Match("in_stock", True),)))
    assert sum(c.count for c in in_stock) == 30
    assert in_stock == sorted(in_stock, key=lambda c: (-c.count, str(c.value)))
    if opener.kind in ("edge", "rest", "grpc"):  # local mode keeps no payload indexes, counts any field
        with pytest.raises(InvalidQuery, match=r"attributes\.color"):
            store.facet("products", "attributes.color")
    with pytest.raises(InvalidQuery, match="limit"):
        store.facet("products", "category", limit=0)


def test_an_old_embedded_collection_gets_the_lexical_index_when_indexed_again(tmp_path: Path) -> None:
    opener = make_opener("edge", tmp_path / "store")
    store = opener()
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    store.close()
    record_file = next((tmp_path / "store" / "collections").glob("*/vitrine.json"))
    record = json.loads(record_file.read_text())
    record.pop("lexical")
    record_file.write_text(json.dumps(record))
    store = opener()
    assert not store.collection_info("products").lexical  # reading alone changes nothing
    assert store.lexical_search("products", text="product", limit=5) == []
    store.close()
    store = opener()
    assert store.ensure_collection("products", encoder=ENC, dim=DIM).lexical
    store.upsert("products", catalog(3))
    assert [h.product_id for h in store.lexical_search("products", text="product 2", limit=1)] == ["p002"]
    assert json.loads(record_file.read_text())["lexical"] is True
    store.close()



def test_the_record_remembers_the_tag_vocabulary(opener: Opener) -> None:
    store = opener()
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    assert store.collection_info("products").tags is None
    vocabulary = {"attributes": {"colour": {"values": ["red", "blue"], "templates": ["a {value} thing"],
                                            "min_confidence": 0.5, "synonyms": {}}}}
    store.record_tags("products", vocabulary)
    assert store.collection_info("products").tags == vocabulary
    assert store.ensure_collection("products", encoder=ENC, dim=DIM).tags == vocabulary
    if opener.persistent:
        store.close()
        store = opener()
        assert store.collection_info("products").tags == vocabulary
    store.record_tags("products", None)
    assert store.collection_info("products").tags is None
    with pytest.raises(NotFound):
        store.record_tags("nope", vocabulary)
    store.close()


def test_a_payload_update_of_words_rebuilds_the_lexical_vector(store: VectorStore) -> None:
    """update_payload of a key the lexical text reads (title, description, attributes, ...) rebuilds the
    product's lexical vector from its whole new payload; other keys leave it as it was."""
    shop(store)
    store.update_payload("shop", {"s3": {"title": "Zeta umbrella"}, "s1": {"similar": {"ids": ["s0"]}}})
    assert [h.product_id for h in store.lexical_search("shop", text="umbrella", limit=5)] == ["s3"]
    assert store.lexical_search("shop", text="summer", limit=5) == []  # the old title's word is gone
    assert [h.product_id for h in store.lexical_search("shop", text="linen", limit=5)] == ["s3"]  # kept description
    store.update_payload("shop", {"s0": {"attributes": {"model_number": "XQ-777001"}}})
    assert [h.product_id for h in store.lexical_search("shop", text="XQ-777001", limit=5)] == ["s0"]
    assert store.lexical_search("shop", text="900123", limit=5) == []  # s0's old model number
    store.update_payload("shop", {"s3": {"title": "", "description": "", "brand": "", "category": ""}})
    assert store.lexical_search("shop", text="umbrella", limit=5) == []  # no text left: no lexical vector
    assert [p.product_id for p in store.retrieve("shop", ["s3"])] == ["s3"]
