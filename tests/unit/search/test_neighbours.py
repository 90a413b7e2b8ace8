"""Catalog-wide jobs (`search.neighbours`) through the real engines: duplicates planted, neighbours checked
against brute-force numpy."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from common.errors import InvalidInput, NotFound
from common.settings import StoreSettings
from search._faiss import openblas_coretype
from search.neighbours import (
    FIRST_K,
    _write_similar,
    build_index,
    connected_components,
    find_duplicates,
    gpu_id,
    live_similar,
    load_vectors,
    precompute_similar,
    similar_of,
)
from search.service import public_payload
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, SIMILAR_KEY, STATE_KEY, TEXT, PointWrite, VectorStore
from store.qdrant_backend import QdrantServerStore

DIM = 16
ENC = "tiny-encoder"


def unit(x: NDArray[Any]) -> NDArray[np.float32]:
    x = np.asarray(x, dtype=np.float32)
    out: NDArray[np.float32] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return out


def planted(n: int = 40, *, seed: int = 0) -> dict[str, NDArray[np.float32]]:
    """``n`` random image vectors (p000...), with near-duplicates planted:
    p001 = p000 exactly, p002 = p000 + a little noise (cosine about 0.99), p011 = p010 exactly (those that
    fit in ``n``)."""
    rng = np.random.default_rng(seed)
    vectors = unit(rng.standard_normal((n, DIM)))
    if n > 2:
        vectors[1] = vectors[0]
        vectors[2] = unit(vectors[0] + 0.02 * rng.standard_normal(DIM))
    if n > 11:
        vectors[11] = vectors[10]
    return {f"p{i:03d}": vectors[i] for i in range(n)}


def write(store: VectorStore, images: dict[str, NDArray[np.float32]], *, name: str = "products",
          text_only: tuple[str, ...] = ("t-only",)) -> None:
    """A collection with a product per image vector (and a text vector), plus products with no image vector."""
    store.ensure_collection(name, encoder=ENC, dim=DIM)
    rng = np.random.default_rng(99)
    points = [PointWrite(pid, {"title": f"product {pid}", STATE_KEY: {"hash": pid}},
                         {IMAGE: vector, TEXT: unit(rng.standard_normal(DIM))})
              for pid, vector in images.items()]
    points += [PointWrite(pid, {"title": "no picture"}, {TEXT: unit(rng.standard_normal(DIM))}) for pid in text_only]
    store.upsert(name, points)


def brute_force(images: dict[str, NDArray[np.float32]], pid: str, k: int) -> list[str]:
    scored = sorted(((float(np.dot(images[pid], v)), other) for other, v in images.items() if other != pid),
                    reverse=True)
    return [other for _, other in scored[:k]]


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """The embedded engine and qdrant-client's local mode."""
    s: VectorStore = (EdgeStore(tmp_path / "store", settings=StoreSettings()) if request.param == "edge"
                      else QdrantServerStore(":memory:", settings=StoreSettings()))
    yield s
    s.close()


def test_load_vectors_reads_every_image_vector(store: VectorStore) -> None:
    images = planted(30)
    write(store, images, text_only=("t1", "t2"))
    catalog = load_vectors(store, "products", batch=7)
    assert sorted(catalog.ids) == sorted(images) and catalog.skipped == 2
    assert catalog.vectors.dtype == np.float32 and catalog.vectors.shape == (30, DIM)
    np.testing.assert_allclose(np.linalg.norm(catalog.vectors, axis=1), 1.0, atol=1e-5)
    for row, pid in enumerate(catalog.ids):
        np.testing.assert_allclose(catalog.vectors[row], images[pid], atol=1e-5)
    with pytest.raises(InvalidInput, match="sparse"):
        load_vectors(store, "products", using="sparse")
    with pytest.raises(NotFound):
        load_vectors(store, "absent")


def test_find_duplicates_reports_the_planted_clusters(store: VectorStore, tmp_path: Path) -> None:
    write(store, planted())
    report = tmp_path / "dups.jsonl"
    clusters, summary = find_duplicates(store, "products", report=report)
    lines = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert lines == clusters
    assert [(c["cluster"], c["size"], c["product_ids"]) for c in clusters] == [
        (1, 3, ["p000", "p001", "p002"]), (2, 2, ["p010", "p011"])]
    assert 0.97 < clusters[0]["min_similarity"] < 1.0 and clusters[1]["min_similarity"] == pytest.approx(1.0)
    assert (summary.products, summary.skipped, summary.clusters, summary.duplicates, summary.pairs) == \
        (40, 1, 2, 5, 4)
    assert summary.report == str(report) and set(summary.timings) == {"load", "index", "search", "write"}
    # a looser threshold finds at least as much; a threshold of exactly-the-same finds the copies only
    looser, _ = find_duplicates(store, "products", threshold=0.9)
    assert all(any(set(c["product_ids"]) <= set(wide["product_ids"]) for wide in looser) for c in clusters)
    exact, _ = find_duplicates(store, "products", threshold=0.99999)
    assert [c["product_ids"] for c in exact] == [["p000", "p001"], ["p010", "p011"]]


def test_duplicates_join_through_chains_and_beyond_the_first_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = planted(20)
    # a chain: a-b and b-c above 0.97, a-c below it; one cluster, whose min similarity says so
    a = unit(rng.standard_normal(DIM))
    r = rng.standard_normal(DIM)
    side = unit(r - np.dot(r, a) * a)  # orthogonal to a
    for name, angle in (("chain-a", 0.0), ("chain-b", 0.2), ("chain-c", 0.4)):
        images[name] = unit(np.cos(angle) * a + np.sin(angle) * side)
    # more copies of one picture than the first search asks for
    copy = unit(rng.standard_normal(DIM))
    for i in range(FIRST_K * 2 + 3):
        images[f"copy{i:02d}"] = copy
    store = EdgeStore(tmp_path / "store", settings=StoreSettings())
    try:
        write(store, images, text_only=())
        clusters, summary = find_duplicates(store, "products", report=None, batch=5)
    finally:
        store.close()
    by_first = {c["product_ids"][0]: c for c in clusters}
    assert by_first["copy00"]["size"] == FIRST_K * 2 + 3 and clusters[0]["product_ids"][0] == "copy00"
    assert by_first["chain-a"]["product_ids"] == ["chain-a", "chain-b", "chain-c"]
    assert by_first["chain-a"]["min_similarity"] == pytest.approx(float(np.cos(0.4)), abs=1e-3)
    assert by_first["chain-a"]["min_similarity"] < 0.97
    assert summary.report is None


def test_connected_components_matches_a_plain_union_find() -> None:
    rng = np.random.default_rng(5)
    n = 300
    left, right = rng.integers(0, n, 250), rng.integers(0, n, 250)
    labels = connected_components(n, left, right)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    assert labels.tolist() == [find(i) for i in range(n)]
    assert connected_components(4, np.empty(0, np.int64), np.empty(0, np.int64)).tolist() == [0, 1, 2, 3]


def test_precompute_similar_stores_each_products_neighbours(store: VectorStore) -> None:
    images = planted(30)
    write(store, images)
    summary = precompute_similar(store, "products", k=5, batch=7, write_batch=4)
    assert (summary.products, summary.skipped, summary.vanished, summary.k) == (30, 1, 0, 5)
    for pid in images:
        stored = similar_of(store, "products", pid)
        assert stored is not None and len(stored) == 5
        ids = [other for other, _ in stored]
        assert pid not in ids
        expected = brute_force(images, pid, 6)
        assert set(ids) <= set(expected) and set(expected[:4]) <= set(ids)  # ties among exact copies aside
        scores = [score for _, score in stored]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(np.dot(images[pid], images[ids[0]])), abs=1e-5)
    assert {other for other, _ in similar_of(store, "products", "p000") or []} >= {"p001", "p002"}
    point = store.retrieve("products", ["p003"])[0]
    assert point.payload["title"] == "product p003" and point.payload[STATE_KEY] == {"hash": "p003"}
    assert point.payload[SIMILAR_KEY]["k"] == 5 and "built" in point.payload[SIMILAR_KEY]
    assert SIMILAR_KEY not in public_payload(point.payload) and STATE_KEY not in public_payload(point.payload)
    assert similar_of(store, "products", "t-only") is None  # no image vector: none stored
    assert similar_of(store, "products", "p003", limit=2) == (similar_of(store, "products", "p003") or [])[:2]
    with pytest.raises(NotFound, match="ghost"):
        similar_of(store, "products", "ghost")


def test_k_larger_than_the_catalog_lists_every_other_product(store: VectorStore) -> None:
    images = planted(6)
    write(store, images, text_only=())
    precompute_similar(store, "products", k=50)
    for pid in images:
        stored = similar_of(store, "products", pid)
        assert stored is not None and sorted(i for i, _ in stored) == sorted(set(images) - {pid})


def test_empty_and_tiny_collections(store: VectorStore, tmp_path: Path) -> None:
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    clusters, summary = find_duplicates(store, "products", report=tmp_path / "r.jsonl")
    assert clusters == [] and summary.products == 0 and (tmp_path / "r.jsonl").read_text() == ""
    assert precompute_similar(store, "products", k=3).products == 0
    write(store, {}, text_only=("t-only",))  # only a product without an image vector
    assert precompute_similar(store, "products", k=3).skipped == 1
    write(store, planted(1), text_only=())
    assert precompute_similar(store, "products", k=3).products == 1
    assert similar_of(store, "products", "p000") == []


def test_a_product_deleted_meanwhile_is_skipped(store: VectorStore) -> None:
    write(store, planted(4), text_only=())
    entry = {SIMILAR_KEY: {"ids": ["p001"], "scores": [0.5], "k": 1, "built": "now"}}
    assert _write_similar(store, "products", {"p000": entry, "gone": entry}) == 1
    assert similar_of(store, "products", "p000") == [("p001", 0.5)]


def test_live_similar_agrees_with_the_precomputed_ones(store: VectorStore) -> None:
    images = planted(25)
    write(store, images)
    precompute_similar(store, "products", k=4)
    live = live_similar(store, "products", "p005", k=4)
    assert [i for i, _ in live] == [i for i, _ in similar_of(store, "products", "p005") or []]
    assert [s for _, s in live] == pytest.approx([s for _, s in similar_of(store, "products", "p005") or []],
                                                 abs=1e-4)
    by_text = live_similar(store, "products", "t-only", k=3)  # no image: its text vector is searched
    assert by_text and "t-only" not in [i for i, _ in by_text]
    with pytest.raises(NotFound):
        live_similar(store, "products", "ghost")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_planted_clusters(store: VectorStore, kind: str) -> None:
    write(store, planted(60))
    clusters, _ = find_duplicates(store, "products", kind=kind)
    assert [c["product_ids"] for c in clusters] == [["p000", "p001", "p002"], ["p010", "p011"]]
    precompute_similar(store, "products", k=3, kind=kind)
    assert len(similar_of(store, "products", "p030") or []) == 3


def test_bad_arguments_are_refused(store: VectorStore) -> None:
    write(store, planted(5))
    for threshold in (0, 1.5, -0.2, True):
        with pytest.raises(InvalidInput, match="threshold"):
            find_duplicates(store, "products", threshold=threshold)
    for k in (0, -1, 1001):
        with pytest.raises(InvalidInput, match=r"\bk\b"):
            precompute_similar(store, "products", k=k)
    with pytest.raises(InvalidInput, match="lsh"):
        find_duplicates(store, "products", kind="lsh")
    with pytest.raises(InvalidInput, match="batch"):
        precompute_similar(store, "products", batch=0)


def test_cuda_without_a_gpu_runs_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    assert gpu_id("cpu") is None
    with caplog.at_level(logging.WARNING, logger="search.neighbours"):
        assert gpu_id("cuda:0") is None
    assert "running on the CPU" in caplog.text
    vectors = unit(np.random.default_rng(0).standard_normal((10, DIM)))
    index = build_index(vectors, device="cuda")
    scores, rows = index.search(vectors[:2], 3)
    assert index.gpu is None and rows[:, 0].tolist() == [0, 1] and scores[:, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse3 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16", "SkylakeX"),
    ("fpu sse3 avx avx2 fma", "Haswell"),
    ("fpu sse3 avx", None),
])
def test_openblas_coretype_follows_the_cpu_flags(flags: str, expected: str | None) -> None:
    assert openblas_coretype(f"processor\t: 0\nmodel\t\t: 207\nflags\t\t: {flags}\n") == expected
    assert openblas_coretype("processor : 0\n") is None
