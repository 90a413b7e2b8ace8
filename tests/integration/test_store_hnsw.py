"""The embedded store's HNSW index (built by `optimize`) finds what exact search finds.

Small collections are searched exhaustively, so this one is just big enough for qdrant-edge to build an
HNSW graph (its indexing threshold is about 10 MB of vectors), with clustered vectors like real
embeddings. Recall at the default HNSW settings is measured at scale by ``bench/query.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, Filter, Match, PointWrite

N, DIM = 7500, 384


def clustered(n: int, *, rng: np.random.Generator, centres: NDArray[np.float64]) -> NDArray[np.float32]:
    """Unit vectors around ``centres`` in a 32-d subspace, plus a little full-rank noise."""
    z = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.standard_normal((n, centres.shape[1]))
    x = (z @ np.eye(centres.shape[1], DIM) + 0.1 * rng.standard_normal((n, DIM))).astype(np.float32)
    unit: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


@pytest.mark.slow
def test_hnsw_search_agrees_with_exact_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    vectors = clustered(N, rng=rng, centres=centres)
    store = EdgeStore(tmp_path, settings=StoreSettings())
    try:
        store.ensure_collection("products", encoder="enc", dim=DIM)
        for start in range(0, N, 1000):
            store.upsert("products", [PointWrite(f"p{i}", {"category": f"c{i % 5}"}, {IMAGE: vectors[i]})
                                      for i in range(start, min(N, start + 1000))])
        store.optimize("products")
        # white-box: prove the searches below run on an HNSW graph, not on a plain segment (the count holds the
        # image vectors and the lexical vectors built from each product's category)
        assert store._collections.get("products").shard.info().indexed_vectors_count == 2 * N
        hits = total = 0
        for query in clustered(20, rng=rng, centres=centres):
            for flt in (None, Filter(must=(Match("category", "c1"),))):
                exact = [p.product_id for p in store.search("products", vector=query, using=IMAGE, limit=10,
                                                            filter=flt, exact=True)]
                approx = [p.product_id for p in store.search("products", vector=query, using=IMAGE, limit=10,
                                                             filter=flt)]
                hits += len(set(exact) & set(approx))
                total += len(exact)
        assert hits / total >= 0.95
        assert store.count("products") == N
    finally:
        store.close()
