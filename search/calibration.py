"""Score calibration: how far a similarity stands above the similarities of unrelated products.

Raw cosine similarities mean different things for different encoders (a CLIP text-to-image cosine of
0.30 is a strong match, a text-to-text cosine of 0.30 is noise) and for different catalogs. So each
collection is calibrated from its own products when the search service starts (`calibrate`):

1. take a sample of products with their vectors (the first `SAMPLE` in the store's order, which is the
   order of their UUID point ids: effectively random);
2. form random pairs of *unrelated* products: two different products whose ``category`` differs (when
   both have one; catalogs without categories use any two different products, which in a varied catalog
   are nearly always unrelated);
3. for each kind of query (a text query is stood in for by a product's text vector, an image query by its
   image vector) and each index, record the cosine similarities of those pairs: the scores of unrelated
   products, the "noise" distribution.

A result's relevance on one index is the fraction of unrelated pairs scoring below it (its percentile in
the noise distribution): 0.5 is a typical unrelated product, 0.999 is above all but one in a thousand. A
query mixing text and image parts uses the mixture of the two noise distributions, by the parts' weights.
The relevance of a result is the mean of its per-index relevances, weighted by the search's index weights.
The search service drops results under ``min_score`` and answers ``no_good_match`` when even the best result
is under ``search.no_match_below``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from store.protocol import IMAGE, TEXT, VectorStore

logger = logging.getLogger(__name__)

SAMPLE = 2048
"""Products read to calibrate a collection."""
PAIRS = 50_000
"""Unrelated pairs scored per (query kind, index)."""
MIN_PRODUCTS = 20
"""Fewer products than this give no calibration (relevance is then null and nothing is dropped)."""
QUERY_KINDS = ("text", "image")


@dataclass(frozen=True)
class Calibration:
    """The noise distributions of one collection: sorted cosines of unrelated pairs per (query kind, index)."""

    products: int
    """Products sampled."""
    noise: dict[tuple[str, str], NDArray[np.float32]] = field(default_factory=dict)
    by_category: bool = False
    """Whether pairs were made unrelated by their differing categories."""

    def percentile(self, score: float, *, index: str, text_share: float) -> float | None:
        """Fraction of unrelated pairs scoring below ``score`` on ``index``, for a query whose weight is
        ``text_share`` text (0: an image query, 1: a text query); None when not calibrated."""
        values = self.percentiles(np.array([score], dtype=np.float64), index=index, text_share=text_share)
        return None if values is None else float(values[0])

    def percentiles(self, scores: NDArray[np.float64], *, index: str, text_share: float
                    ) -> NDArray[np.float64] | None:
        """`percentile` of many scores at once (NaN in, NaN out); None when not calibrated."""
        total = np.zeros(scores.shape, dtype=np.float64)
        weight = 0.0
        for kind, share in (("text", text_share), ("image", 1.0 - text_share)):
            noise = self.noise.get((kind, index))
            if share <= 0 or noise is None or not noise.size:
                continue
            total += share * np.searchsorted(noise, scores, side="left") / noise.size
            weight += share
        if not weight:
            return None
        out: NDArray[np.float64] = np.where(np.isnan(scores), np.nan, total / weight)
        return out

    def describe(self) -> dict[str, object]:
        """Median and 99th/99.9th percentiles of each noise distribution, for `vitrine info` and the stats."""
        out: dict[str, object] = {"products": self.products, "unrelated_by": "category" if self.by_category
                                  else "any two products"}
        for (kind, index), noise in sorted(self.noise.items()):
            if noise.size:
                out[f"{kind}->{index}"] = {q: round(float(np.quantile(noise, p)), 4)
                                           for q, p in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
        return out


def calibrate(store: VectorStore, collection: str, *, sample: int = SAMPLE, pairs: int = PAIRS,
              seed: int = 0) -> Calibration:
    """Measure the noise distributions of a collection (see the module docstring)."""
    ids: list[str] = []
    categories: list[str | None] = []
    vectors: dict[str, list[NDArray[np.float32] | None]] = {IMAGE: [], TEXT: []}
    for point in store.scroll(collection, fields=["category"], with_vectors=True, batch=min(sample, 1024)):
        ids.append(point.product_id)
        category = point.payload.get("category")
        categories.append(category if isinstance(category, str) else None)
        for name in (IMAGE, TEXT):
            vectors[name].append(point.vectors.get(name))
        if len(ids) >= sample:
            break
    if len(ids) < MIN_PRODUCTS:
        return Calibration(products=len(ids))
    rng = np.random.default_rng(seed)
    left = rng.integers(0, len(ids), size=pairs * 2)
    right = rng.integers(0, len(ids), size=pairs * 2)
    keep = left != right
    by_category = sum(c is not None for c in categories) >= len(ids) // 2 and len(set(categories) - {None}) > 1
    if by_category:
        codes = {c: i for i, c in enumerate(sorted({c for c in categories if c is not None}))}
        code = np.array([codes.get(c, -1) if c is not None else -1 for c in categories])
        keep &= (code[left] != code[right]) | (code[left] < 0) | (code[right] < 0)
    left, right = left[keep][:pairs], right[keep][:pairs]
    noise: dict[tuple[str, str], NDArray[np.float32]] = {}
    for kind, query_vectors in (("text", vectors[TEXT]), ("image", vectors[IMAGE])):
        for index in (IMAGE, TEXT):
            scores = _pair_scores(query_vectors, vectors[index], left, right)
            if scores.size:
                noise[(kind, index)] = np.sort(scores)
    logger.info("calibrated %r on %d products (%d unrelated pairs%s)", collection, len(ids), len(left),
                ", by category" if by_category else "")
    return Calibration(products=len(ids), noise=noise, by_category=by_category)


def _pair_scores(queries: list[NDArray[np.float32] | None], targets: list[NDArray[np.float32] | None],
                 left: NDArray[np.int64], right: NDArray[np.int64]) -> NDArray[np.float32]:
    """Cosines of ``queries[left[i]]`` with ``targets[right[i]]`` where both vectors exist."""
    dim = next((v.size for v in (*queries, *targets) if v is not None), 0)
    if not dim:
        return np.zeros(0, dtype=np.float32)
    q_ok = np.array([v is not None for v in queries])
    t_ok = np.array([v is not None for v in targets])
    q = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in queries])
    t = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in targets])
    keep = q_ok[left] & t_ok[right]
    li, ri = left[keep], right[keep]
    scores: NDArray[np.float32] = np.einsum("ij,ij->i", q[li], t[ri]).astype(np.float32)
    return scores
