"""SearchService over the real stores (embedded qdrant-edge and qdrant-client local mode).

Points are written directly with hand-made vectors at known cosines to the encoder's query vector, so the
expected order and scores are known exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from common.errors import EncoderMismatch, NotFound
from common.settings import EmbedSettings, SearchSettings, Settings
from embed import Encoder, build_encoder
from search.encode import QueryEncoder
from search.query import SearchRequest
from search.service import SearchService
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT, PointWrite, VectorStore

COLLECTION = "products"
QUERY = "red running shoe"
# product -> (image cosine or None, text cosine, payload)
PRODUCTS: dict[str, tuple[float | None, float, dict[str, object]]] = {
    "a": (
        0.9,
        0.1,
        {
            "title": "A",
            "category": "shoes",
            "brand": "Acme",
            "price": 50.0,
            "in_stock": True,
            "currency": "EUR",
        },
    ),
    "b": (0.2, 0.95, {"title": "B", "category": "shoes", "brand": "Bolt", "price": 80.0, "in_stock": False}),
    "c": (0.45, 0.45, {"title": "C", "category": "bags", "brand": "Acme", "price": 20.0, "in_stock": True}),
    "d": (
        None,
        0.9,
        {
            "title": "D",
            "category": "bags",
            "brand": "Bolt",
            "price": 35.0,
            "in_stock": True,
            "attributes": {"color": "red"},
        },
    ),
    "e": (-0.3, -0.2, {"title": "E", "category": "shoes", "brand": "Acme", "price": 10.0, "in_stock": True}),
}
DEFAULT_ORDER = ["a", "b", "c", "d", "e"]  # 0.58, 0.50, 0.45, 0.36, -0.26 with weights 0.6 / 0.4


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    built = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    built.load()
    return built


def at_cosine(query: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine to ``query`` is exactly ``cosine``."""
    q = query / np.linalg.norm(query)
    other = np.random.default_rng(seed).normal(size=q.shape)
    other -= (other @ q) * q
    other /= np.linalg.norm(other)
    out: np.ndarray = (cosine * q + np.sqrt(1 - cosine**2) * other).astype(np.float32)
    return out


BACKENDS = ["embedded", "qdrant-client"]


def open_backend(kind: str, home: Path) -> VectorStore:
    return open_store(Settings(home=home, store={"url": None if kind == "embedded" else ":memory:"}))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """An empty store of each backend."""
    opened = open_backend(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture(scope="module", params=BACKENDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, encoder: Encoder
) -> Iterator[VectorStore]:
    """A store of each backend holding `PRODUCTS` (read-only: shared by the module's tests)."""
    store = open_backend(request.param, tmp_path_factory.mktemp("filled"))
    store.ensure_collection(COLLECTION, encoder=encoder.name, dim=encoder.dim)
    q = QueryEncoder(encoder, cache_size=0).text(QUERY)
    points = []
    for n, (pid, (image, text, payload)) in enumerate(PRODUCTS.items()):
        vectors = {TEXT: at_cosine(q, text, seed=2 * n)}
        if image is not None:
            vectors[IMAGE] = at_cosine(q, image, seed=2 * n + 1)
        points.append(
            PointWrite(product_id=pid, payload={"id": pid, **payload, STATE_KEY: {"h": "x"}}, vectors=vectors)
        )
    store.upsert(COLLECTION, points)
    yield store
    store.close()


def service(store: VectorStore, encoder: Encoder, **settings: object) -> SearchService:
    """A service over the test collection; the lexical match is off unless asked (these tests check the dense
    fusion's exact scores)."""
    return SearchService(
        encoder=encoder, store=store, settings=SearchSettings(**{"w_lexical": 0.0, **settings}),
        collection=COLLECTION
    )


def test_text_search_fuses_both_indices_with_exact_scores(filled: VectorStore, encoder: Encoder) -> None:
    response = service(filled, encoder).search(SearchRequest(q=QUERY))
    assert [hit.id for hit in response.results] == DEFAULT_ORDER
    for hit in response.results:
        image, text, _ = PRODUCTS[hit.id]
        assert hit.scores.text == pytest.approx(text, abs=1e-4)
        if image is None:
            assert hit.scores.image is None
            assert hit.score == pytest.approx(0.4 * text, abs=1e-4)
        else:
            assert hit.scores.image == pytest.approx(image, abs=1e-4)
            assert hit.score == pytest.approx(0.6 * image + 0.4 * text, abs=1e-4)
    assert response.total_candidates == 5
    assert response.weights.image == 0.6 and response.weights.text == 0.4
    assert response.took_ms >= 0


def test_a_product_outside_one_top_k_still_gets_its_real_score_there(
    filled: VectorStore, encoder: Encoder
) -> None:
    response = service(filled, encoder, candidates=2).search(SearchRequest(q=QUERY, limit=2))
    # K = 2: image top 2 is {a, c}, text top 2 is {b, d}; e is in neither
    assert response.total_candidates == 4
    assert [hit.id for hit in response.results] == ["a", "b"]
    a, b = response.results
    assert b.scores.image == pytest.approx(0.2, abs=1e-4)  # b was found by the text index only
    assert a.scores.text == pytest.approx(0.1, abs=1e-4)  # a was found by the image index only
    assert b.score == pytest.approx(0.6 * 0.2 + 0.4 * 0.95, abs=1e-4)


def test_per_request_weights(filled: VectorStore, encoder: Encoder) -> None:
    svc = service(filled, encoder)
    text_only = svc.search(SearchRequest(q=QUERY, w_image=0, w_text=1))
    assert [hit.id for hit in text_only.results] == ["b", "d", "c", "a", "e"]
    image_only = svc.search(SearchRequest(q=QUERY, w_image=1, w_text=0))
    assert [hit.id for hit in image_only.results] == ["a", "c", "b", "e"]  # d has no image vector


def test_pages_reach_past_the_candidate_count(filled: VectorStore, encoder: Encoder) -> None:
    svc = service(filled, encoder, candidates=2)
    assert [hit.id for hit in svc.search(SearchRequest(q=QUERY, offset=1, limit=2)).results] == ["b", "c"]
    deep = svc.search(SearchRequest(q=QUERY, offset=3, limit=2))  # K = offset + limit = 5
    assert [hit.id for hit in deep.results] == ["d", "e"]
    assert deep.offset == 3 and deep.limit == 2
    assert svc.search(SearchRequest(q=QUERY, offset=10, limit=2)).results == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"category": "shoes"}, ["a", "b", "e"]),
        ({"brand": "Acme", "in_stock": True}, ["a", "c", "e"]),
        ({"in_stock": False}, ["b"]),
        ({"min_price": 20, "max_price": 50}, ["a", "c", "d"]),
        ({"filters": {"currency": "EUR"}}, ["a"]),
        ({"filters": {"attributes.color": "red"}}, ["d"]),
        ({"filters": {"price": 80}}, ["b"]),
        ({"category": "shoes", "filters": {"category": "bags"}}, []),
    ],
)
def test_filters(
    filled: VectorStore, encoder: Encoder, fields: dict[str, object], expected: list[str]
) -> None:
    response = service(filled, encoder).search(SearchRequest(q=QUERY, **fields))
    assert [hit.id for hit in response.results] == expected


def test_results_and_products_hide_bookkeeping(filled: VectorStore, encoder: Encoder) -> None:
    svc = service(filled, encoder)
    hit = svc.search(SearchRequest(q=QUERY, limit=1)).results[0]
    assert hit.product.model_dump(exclude_unset=True) == {"id": "a", **PRODUCTS["a"][2]}
    product = svc.get_product("d")
    assert product == {"id": "d", **PRODUCTS["d"][2]}
    assert STATE_KEY not in product
    with pytest.raises(NotFound, match="product 'zzz' is not in collection 'products'"):
        svc.get_product("zzz")


def test_a_collection_built_by_another_encoder_is_refused(store: VectorStore, encoder: Encoder) -> None:
    store.ensure_collection(COLLECTION, encoder="open_clip:ViT-B-32/laion2b_s34b_b79k", dim=encoder.dim)
    with pytest.raises(EncoderMismatch) as caught:
        service(store, encoder)
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in str(caught.value)
    assert encoder.name in str(caught.value)


def test_a_missing_collection_is_not_found(store: VectorStore, encoder: Encoder) -> None:
    with pytest.raises(NotFound):
        service(store, encoder)


class SlowReads:
    """``store`` with each read taking ``seconds`` longer; counts the reads in progress at once (most seen)."""

    READS = ("search", "lexical_search", "score", "lexical_score")

    def __init__(self, store: VectorStore, seconds: float) -> None:
        self._store, self._seconds = store, seconds
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in self.READS:
            return attribute

        def read(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(self._seconds)
                return attribute(*args, **kwargs)
            finally:
                with self._lock:
                    self.now -= 1

        return read


@pytest.mark.parametrize(("slots", "gate_reads"), [(1, True), (2, True), (1, False)])
def test_parallel_searches_bounds_the_searches_ranking_at_once(
        filled: VectorStore, encoder: Encoder, slots: int, gate_reads: bool) -> None:
    """8 threads search at once through a store whose reads take 20 ms. With the embedded store's reads gated
    (``gate_reads``), at most ``parallel_searches`` searches read at once; a server's reads are not gated."""
    slow = SlowReads(filled, 0.02)
    searcher = SearchService(encoder=encoder, store=cast(VectorStore, slow), collection=COLLECTION,
                             settings=SearchSettings(w_lexical=0.0, parallel_searches=slots, cache_size=100),
                             gate_reads=gate_reads)
    want = [hit.id for hit in searcher.search(SearchRequest(q=QUERY)).results]  # encodes once (cached after)
    slow.most = 0
    barrier = threading.Barrier(8)

    def one() -> list[str]:
        barrier.wait()
        return [hit.id for hit in searcher.search(SearchRequest(q=QUERY)).results]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: one(), range(8)))
    assert got == [want] * 8
    if gate_reads:  # each search reads one after the other, and holds its slot throughout
        assert slow.most == slots
    else:  # reads of different searches overlap (8 threads, 20 ms each: they cannot all miss each other)
        assert slow.most > slots


def test_refresh_takes_up_the_switched_version_and_refuses_another_encoder(store: VectorStore,
                                                                           encoder: Encoder) -> None:
    """After the alias moves to a new version, `refresh` reads its description and calibration; a version built
    by another encoder is refused and leaves the service as it was."""
    store.ensure_collection(COLLECTION, encoder=encoder.name, dim=encoder.dim)
    rng = np.random.default_rng(3)

    def products(n: int) -> list[PointWrite]:
        return [PointWrite(f"q{i}", {"id": f"q{i}", "title": f"item {i}", "category": ("a", "b")[i % 2]},
                           {IMAGE: rng.normal(size=encoder.dim).astype(np.float32),
                            TEXT: rng.normal(size=encoder.dim).astype(np.float32)}) for i in range(n)]

    store.upsert(COLLECTION, products(12))
    searcher = service(store, encoder)
    assert searcher.stats()["calibration"]["products"] == 12
    version = store.create_version(COLLECTION, encoder=encoder.name, dim=encoder.dim)
    store.upsert(version, products(20))
    store.switch_alias(COLLECTION, version)
    searcher.refresh(vocabulary=None)
    assert searcher.stats()["calibration"]["products"] == 20 and searcher.info.physical == version
    other = store.create_version(COLLECTION, encoder="another-encoder", dim=encoder.dim)
    store.switch_alias(COLLECTION, other)
    with pytest.raises(EncoderMismatch, match="another-encoder"):
        searcher.refresh(vocabulary=None)
    assert searcher.info.physical == version  # unchanged
