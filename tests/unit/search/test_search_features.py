"""The search service's richer queries over the real stores: composed queries, the lexical match, tag boosts,
variant grouping, facets, calibrated relevance, more-like-this, recommendations and the query cache.

Vectors are hand-made (random unit vectors, or vectors at a known cosine to the tiny encoder's query vector), so
every expected score is computed here with numpy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.errors import InvalidQuery, NotFound
from common.settings import EmbedSettings, SearchSettings, Settings
from common.vocabulary import parse_vocabulary
from embed import Encoder, build_encoder
from search.calibration import MIN_PRODUCTS, calibrate
from search.encode import Part, combine
from search.query import QueryFields, QueryPart, SearchRequest, build_request
from search.service import SearchService
from store.factory import open_store
from store.protocol import IMAGE, SIMILAR_KEY, TEXT, PointWrite, VectorStore

COLLECTION = "products"
BACKENDS = ["embedded", "qdrant-client"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    built = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    built.load()
    return built


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    url = None if request.param == "embedded" else ":memory:"
    opened = open_store(Settings(home=tmp_path, store={"url": url}))
    yield opened
    opened.close()


def unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def random_units(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim))
    out: np.ndarray = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return out


def near(q: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to ``q``."""
    q = unit(q)
    other = np.random.default_rng(seed).normal(size=q.shape)
    other -= (other @ q) * q
    return unit(cosine * q + np.sqrt(1 - cosine**2) * unit(other))


def fill(store: VectorStore, encoder: Encoder, rows: list[tuple[str, dict[str, Any], np.ndarray, np.ndarray | None]]
         ) -> None:
    store.ensure_collection(COLLECTION, encoder=encoder.name, dim=encoder.dim)
    store.upsert(COLLECTION, [PointWrite(pid, {"id": pid, **payload},
                                         {IMAGE: image, TEXT: text} if text is not None else {IMAGE: image})
                              for pid, payload, image, text in rows])


def make_service(store: VectorStore, encoder: Encoder, **settings: Any) -> SearchService:
    options = settings.pop("service", {})
    return SearchService(encoder=encoder, store=store, settings=SearchSettings(**settings), collection=COLLECTION,
                         **options)


def text_vector(encoder: Encoder, text: str) -> np.ndarray:
    return unit(encoder.embed_texts([text])[0])


# -- composed queries ---------------------------------------------------------------------------------

def test_composed_parts_add_up_by_weight(store: VectorStore, encoder: Encoder) -> None:
    rows = [(f"p{i}", {"title": f"thing {i}"}, v, None) for i, v in enumerate(random_units(12, encoder.dim, 1))]
    fill(store, encoder, rows)
    service = make_service(store, encoder, w_lexical=0.0)
    request = build_request({"query": [{"text": "sneakers"}, {"text": "leather", "weight": -0.5},
                                       {"product_id": "p3", "weight": 2}], "w_text": 0},
                            settings=SearchSettings())
    response = service.search(request)
    expected = unit(text_vector(encoder, "sneakers") - 0.5 * text_vector(encoder, "leather") + 2 * rows[3][2])
    assert len(response.results) == 10
    for hit in response.results:
        image = next(r[2] for r in rows if r[0] == hit.id)
        assert hit.scores.image == pytest.approx(float(image @ expected), abs=1e-4)
    assert response.results[0].id == "p3"  # weight 2 on its own vector dominates
    same = service.search(build_request({"q": "sneakers", "query": [{"text": "leather", "weight": -0.5},
                                                                    {"product_id": "p3", "weight": 2}],
                                         "w_text": 0}, settings=SearchSettings()))
    assert [h.id for h in same.results] == [h.id for h in response.results]  # q is a part of weight 1


def test_bad_parts_are_refused_with_their_reason(store: VectorStore, encoder: Encoder) -> None:
    fill(store, encoder, [("p0", {}, random_units(1, encoder.dim, 2)[0], None)])
    service = make_service(store, encoder)
    with pytest.raises(InvalidQuery, match=r"part 1: product 'nope' is not in collection"):
        service.search(SearchRequest(query=[QueryPart(product_id="nope")]))
    with pytest.raises(InvalidQuery, match="positive weight"):
        service.search(SearchRequest(query=[QueryPart(text="leather", weight=-1)]))
    with pytest.raises(InvalidQuery, match="cancel out"):
        service.search(SearchRequest(query=[QueryPart(text="red"), QueryPart(text="red", weight=-1)]))
    with pytest.raises(InvalidQuery, match="image_url parts are not enabled"):
        service.search(SearchRequest(query=[QueryPart(image_url="https://example.com/a.jpg")]))
    for bad, message in (({"text": "a", "product_id": "b"}, "exactly one"), ({"text": "a", "weight": 0}, "weight"),
                         ({}, "exactly one"), ({"text": "a", "weight": 11}, "less than or equal")):
        with pytest.raises(InvalidQuery, match=message):
            build_request({"query": [bad]}, settings=SearchSettings())
    with pytest.raises(InvalidQuery, match="positive weight"):
        combine([Part(np.ones(3, np.float32), -1.0, "text")])


def test_a_search_on_the_event_loop_answers_as_one_in_a_thread(store: VectorStore, encoder: Encoder) -> None:
    """`SearchService.asearch_on_loop` (the API's path with the embedded store) ranks as `search` does: plain and
    composed text queries, a product part, an image_url part (fetched in a worker thread), filters and pages;
    a bad part is refused with the same error."""
    rows = [(f"p{i}", {"title": f"thing {i} {'red' if i % 2 else 'blue'}", "category": ("a", "b")[i % 2]}, v,
             unit(v + 0.1)) for i, v in enumerate(random_units(16, encoder.dim, 4))]
    fill(store, encoder, rows)
    service = make_service(store, encoder, cache_size=0, service={
        "image_loader": lambda url: Image.new("RGB", (32, 32), (200, 30, 30))})
    assert service.ranks_on_loop
    requests = [{"q": "red thing"}, {"q": "thing", "category": "a", "limit": 3, "offset": 2},
                {"query": [{"text": "red"}, {"text": "blue", "weight": -0.5}, {"product_id": "p3"}]},
                {"q": "red", "query": [{"text": "red", "weight": 0.5}]},
                {"query": [{"image_url": "https://cdn.example/red.png"}, {"text": "thing"}]}]
    for fields in requests:
        request = build_request(fields, settings=SearchSettings())
        in_thread, on_loop = service.search(request), asyncio.run(service.asearch_on_loop(request))
        assert on_loop.results and [h.id for h in on_loop.results] == [h.id for h in in_thread.results], fields
        # the same up to float noise: texts awaited together are encoded in one batch (search.batching)
        assert [h.score for h in on_loop.results] == pytest.approx([h.score for h in in_thread.results], abs=1e-5)
        assert on_loop.model_dump(exclude={"took_ms", "results"}) == in_thread.model_dump(
            exclude={"took_ms", "results"})
    with pytest.raises(InvalidQuery, match=r"part 1: product 'nope' is not in collection"):
        asyncio.run(service.asearch_on_loop(SearchRequest(query=[QueryPart(product_id="nope")])))
    assert not make_service(store, encoder, rank_on_loop=False).ranks_on_loop


def test_image_url_parts_go_through_the_loader(store: VectorStore, encoder: Encoder) -> None:
    fill(store, encoder, [(f"p{i}", {}, v, None) for i, v in enumerate(random_units(5, encoder.dim, 3))])
    fetched: list[str] = []

    def loader(url: str) -> Image.Image:
        fetched.append(url)
        return Image.new("RGB", (32, 32), (200, 30, 30))

    service = make_service(store, encoder, service={"image_loader": loader})
    response = service.search(SearchRequest(query=[QueryPart(image_url="https://cdn.example/red.png")]))
    query = unit(encoder.embed_images([Image.new("RGB", (32, 32), (200, 30, 30))])[0])
    top = response.results[0]
    image = next(v for i, v in enumerate(random_units(5, encoder.dim, 3)) if f"p{i}" == top.id)
    assert fetched == ["https://cdn.example/red.png"]
    assert top.scores.image == pytest.approx(float(image @ query), abs=1e-4)


def test_the_query_cache_counts_hits_and_misses(store: VectorStore, encoder: Encoder) -> None:
    fill(store, encoder, [("p0", {}, random_units(1, encoder.dim, 4)[0], None)])
    service = make_service(store, encoder, cache_size=2)
    for text in ("red", "red", "blue", "red", "green", "blue"):
        service.search(SearchRequest(q=text))
    stats = service.cache_stats()
    assert (stats.hits, stats.misses, stats.size, stats.capacity) == (2, 4, 2, 2)
    off = make_service(store, encoder, cache_size=0)
    off.search(SearchRequest(q="red"))
    off.search(SearchRequest(q="red"))
    assert (off.cache_stats().hits, off.cache_stats().size) == (0, 0)
    assert service.stats()["cache"]["hits"] == 2


# -- lexical match, tag boosts ---------------------------------------------------------------------

def test_an_exact_model_number_wins_over_dense_look_alikes(store: VectorStore, encoder: Encoder) -> None:
    q = text_vector(encoder, "Acme AC-900123")
    rows = [("target", {"title": "Acme trail shoe", "attributes": {"model_number": "AC-900123"}},
             near(q, 0.1, 1), near(q, 0.4, 2))]
    rows += [(f"look{i}", {"title": f"AC-90012{i + 4}", "brand": "Acme"}, near(q, 0.3, 10 + i), near(q, 0.7, 20 + i))
             for i in range(4)]
    rows += [(f"far{i}", {"title": "plain"}, v, v) for i, v in enumerate(random_units(200, encoder.dim, 5))]
    fill(store, encoder, rows)
    dense = make_service(store, encoder, w_lexical=0.0, candidates=3).search(SearchRequest(q="Acme AC-900123"))
    assert "target" not in [h.id for h in dense.results]  # not even a candidate of the dense indices
    hybrid = make_service(store, encoder, candidates=3).search(SearchRequest(q="Acme AC-900123"))
    top = hybrid.results[0]
    assert top.id == "target" and top.scores.all_words and top.scores.lexical == 1.0 and top.relevance == 1.0
    assert top.score == pytest.approx(0.6 * 0.1 + 0.4 * 0.4 + 0.2 * 1.0 + 0.2, abs=1e-4)
    others = hybrid.results[1:5]
    assert {h.id for h in others} == {f"look{i}" for i in range(4)}
    assert all(h.scores.lexical is not None and 0 < h.scores.lexical < 1 and not h.scores.all_words for h in others)
    assert hybrid.weights.lexical == 0.2


def test_tag_boosts_raise_products_tagged_with_a_named_value(store: VectorStore, encoder: Encoder) -> None:
    vocabulary = parse_vocabulary({"attributes": {"colour": {"values": ["red", "blue"]}}})
    q = text_vector(encoder, "dress in red")
    rows = [("red-far", {"tags": {"colour": "red"}}, near(q, 0.30, 1), near(q, 0.30, 2)),
            ("blue-near", {"tags": {"colour": "blue"}}, near(q, 0.35, 3), near(q, 0.35, 4)),
            ("untagged", {}, near(q, 0.32, 5), near(q, 0.32, 6))]
    fill(store, encoder, rows)
    plain = make_service(store, encoder, w_lexical=0.0).search(SearchRequest(q="dress in red"))
    assert [h.id for h in plain.results] == ["blue-near", "untagged", "red-far"]
    boosted = make_service(store, encoder, w_lexical=0.0,
                           service={"vocabulary": vocabulary, "tag_boost": 0.1}).search(SearchRequest(q="dress in red"))
    assert [h.id for h in boosted.results] == ["red-far", "blue-near", "untagged"]
    assert [(b.attribute, b.value, b.weight) for b in boosted.boosts] == [("colour", "red", 0.1)]
    red = boosted.results[0]
    assert red.scores.boost == 0.1 and red.scores.image == pytest.approx(0.30, abs=1e-4)  # plain cosine kept
    assert red.score == pytest.approx(0.30 + 0.1, abs=1e-4)
    pushed = make_service(store, encoder, w_lexical=0.0, service={"vocabulary": vocabulary, "tag_boost": 0.1}
                          ).search(SearchRequest(q="dress", query=[QueryPart(text="blue", weight=-0.5)]))
    assert [(b.value, b.weight) for b in pushed.boosts] == [("blue", -0.1)]
    blue = next(h for h in pushed.results if h.id == "blue-near")
    assert blue.scores.boost == -0.1 and blue.scores.image is not None and blue.scores.text is not None
    assert blue.score == pytest.approx(0.6 * blue.scores.image + 0.4 * blue.scores.text - 0.1, abs=1e-5)
    assert all(h.scores.boost == 0 for h in pushed.results if h.id != "blue-near")


# -- grouping, facets ------------------------------------------------------------------------------

def test_variants_come_back_as_one_result_and_pages_walk_groups(store: VectorStore, encoder: Encoder) -> None:
    q = text_vector(encoder, "shirt")
    rows = []
    cosines = iter(np.linspace(0.9, 0.1, 12))
    for pid, group in (("a1", "A"), ("b1", "B"), ("a2", "A"), ("c1", None), ("b2", "B"), ("a3", "A"),
                       ("d1", "D"), ("e1", None), ("d2", "D"), ("f1", "F"), ("g1", None), ("f2", "F")):
        c = float(next(cosines))
        payload = {"category": "shirts" if pid[0] in "abc" else "tops", **({"group_id": group} if group else {})}
        rows.append((pid, payload, near(q, c, len(rows)), near(q, c, 100 + len(rows))))
    fill(store, encoder, rows)
    service = make_service(store, encoder, w_lexical=0.0)
    full = service.search(SearchRequest(q="shirt", limit=20))
    assert [h.id for h in full.results] == ["a1", "b1", "c1", "d1", "e1", "f1", "g1"]
    assert [v.id for v in full.results[0].variants] == ["a2", "a3"]
    assert [v.id for v in full.results[1].variants] == ["b2"] and full.results[2].variants == []
    pages = [service.search(SearchRequest(q="shirt", limit=3, offset=o)).results for o in (0, 3, 6)]
    assert [[h.id for h in page] for page in pages] == [["a1", "b1", "c1"], ["d1", "e1", "f1"], ["g1"]]
    flat = service.search(SearchRequest(q="shirt", limit=20, group=False))
    assert len(flat.results) == 12 and all(not h.variants for h in flat.results)
    counted = service.search(SearchRequest(q="shirt", limit=2, facets=["category", "group_id"]))
    assert counted.facets is not None
    assert [(f.value, f.count) for f in counted.facets["category"]] == [("shirts", 6), ("tops", 6)]
    assert [(f.value, f.count) for f in counted.facets["group_id"]] == [("A", 3), ("B", 2), ("D", 2), ("F", 2)]
    assert [(f.value, f.count) for f in service.facets("category")] == [("shirts", 6), ("tops", 6)]
    tops = service.facets("group_id", request=QueryFields(category="tops"))
    assert [(f.value, f.count) for f in tops] == [("D", 2), ("F", 2)]


# -- calibration, no good match ----------------------------------------------------------------------

def test_relevance_is_measured_against_unrelated_products(store: VectorStore, encoder: Encoder) -> None:
    n = 3 * MIN_PRODUCTS
    images, texts = random_units(n, encoder.dim, 7), random_units(n, encoder.dim, 8)
    q = text_vector(encoder, "green wool hat")
    images[0], texts[0] = near(q, 0.95, 1), near(q, 0.95, 2)  # the one product that matches
    fill(store, encoder, [(f"p{i:02d}", {"category": f"c{i % 5}"}, images[i], texts[i]) for i in range(n)])
    calibration = calibrate(store, COLLECTION)
    assert calibration.products == n and calibration.by_category
    assert calibration.percentile(0.95, index=IMAGE, text_share=1.0) == 1.0
    assert calibration.percentile(-1.0, index=IMAGE, text_share=1.0) == 0.0
    service = make_service(store, encoder, w_lexical=0.0, no_match_below=0.99)
    found = service.search(SearchRequest(q="green wool hat", limit=5))
    assert not found.no_good_match and found.results[0].id == "p00" and found.results[0].relevance == 1.0
    kept = service.search(SearchRequest(q="green wool hat", limit=20, min_score=0.99))
    assert [h.id for h in kept.results] == ["p00"]  # the rest are as close as unrelated products are
    images[0], texts[0] = random_units(2, encoder.dim, 9)
    store.upsert(COLLECTION, [PointWrite("p00", {"id": "p00", "category": "c0"}, {IMAGE: images[0], TEXT: texts[0]})])
    nothing = service.search(SearchRequest(q="green wool hat", limit=5))
    assert nothing.no_good_match and nothing.results == []
    assert "text->image" in service.stats()["calibration"]


def test_a_tiny_collection_is_not_calibrated(store: VectorStore, encoder: Encoder) -> None:
    fill(store, encoder, [(f"p{i}", {}, v, v) for i, v in enumerate(random_units(5, encoder.dim, 3))])
    response = make_service(store, encoder).search(SearchRequest(q="anything", min_score=0.9))
    assert not response.no_good_match and len(response.results) == 5
    assert all(h.relevance is None for h in response.results)


# -- more like this, recommendations -----------------------------------------------------------------

def test_similar_leaves_the_product_out_and_uses_stored_neighbours(store: VectorStore, encoder: Encoder) -> None:
    images = random_units(30, encoder.dim, 11)
    fill(store, encoder, [(f"p{i:02d}", {}, images[i], None) for i in range(30)])
    service = make_service(store, encoder)
    live = service.similar("p05", limit=5)
    expected = sorted((i for i in range(30) if i != 5), key=lambda i: -float(images[i] @ images[5]))[:5]
    assert live.source == "search" and [h.id for h in live.results] == [f"p{i:02d}" for i in expected]
    assert live.results[0].score == pytest.approx(float(images[expected[0]] @ images[5]), abs=1e-4)
    store.update_payload(COLLECTION, {"p05": {SIMILAR_KEY: {"ids": ["p09", "p01", "p02"], "scores": [0.9, 0.8, 0.7],
                                                             "k": 3}}})
    stored = service.similar("p05", limit=2)
    assert stored.source == "precomputed" and [(h.id, h.score) for h in stored.results] == [("p09", 0.9),
                                                                                           ("p01", 0.8)]
    assert service.similar("p05", limit=5).source == "search"  # fewer stored than asked: searched instead
    assert SIMILAR_KEY not in service.get_product("p05")
    with pytest.raises(NotFound, match="p99"):
        service.similar("p99", limit=5)
    with pytest.raises(InvalidQuery, match="limit"):
        service.similar("p05", limit=0)


def test_recommend_leaves_the_examples_out(store: VectorStore, encoder: Encoder) -> None:
    images = random_units(30, encoder.dim, 12)
    fill(store, encoder, [(f"p{i:02d}", {"category": "x" if i % 2 else "y"}, images[i], None) for i in range(30)])
    service = make_service(store, encoder)
    answer = service.recommend(positive=["p01"], negative=["p02"], limit=28)
    ids = [h.id for h in answer.results]
    assert "p01" not in ids and "p02" not in ids and answer.source == "recommend"
    assert len(ids) == 28
    only_x = service.recommend(positive=["p01"], limit=5, request=QueryFields(category="x"))
    assert all(int(h.id[1:]) % 2 == 1 for h in only_x.results)
    for kwargs, message in ((dict(positive=[]), "at least one"), (dict(positive=["p01"], negative=["p01"]), "both"),
                            (dict(positive=["zz"]), "zz")):
        with pytest.raises(InvalidQuery, match=message):
            service.recommend(limit=5, **kwargs)  # type: ignore[arg-type]
