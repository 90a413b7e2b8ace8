"""Retrieval metrics of a trained encoder on a held-out split (exact search over normalised embeddings).

- ``text_p@k``: precision@k of text queries (each group's name and captions) against the held-out images,
  relevant = images of the query's group;
- ``image_p@k``: precision@k of each held-out image against the others (itself left out), same group;
- ``zero_shot``: accuracy of labelling each image with the group whose name embedding is nearest;
- ``pair_r@k``: recall@k of the exact pair (an item's own caption finds its own image), for catalogs whose
  items carry their own texts.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]


def _top_k(scores: Matrix, k: int) -> NDArray[np.int64]:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def text_precision(images: Matrix, groups: NDArray[np.int64], queries: Matrix,
                   query_groups: NDArray[np.int64], *, k: int = 10) -> float:
    """Mean precision@k of text queries over images; relevant = same group."""
    if not len(queries) or not len(images):
        return float("nan")
    top = _top_k(queries @ images.T, k)
    return float((groups[top] == query_groups[:, None]).mean())


def image_precision(images: Matrix, groups: NDArray[np.int64], *, k: int = 10, max_queries: int = 2000,
                    seed: int = 0) -> float:
    """Mean precision@k of images as queries against the other images; relevant = same group."""
    if len(images) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(images))[:max_queries]
    scores = images[picked] @ images.T
    scores[np.arange(len(picked)), picked] = -np.inf
    top = _top_k(scores, min(k, len(images) - 1))
    return float((groups[top] == groups[picked][:, None]).mean())


def zero_shot_accuracy(images: Matrix, groups: NDArray[np.int64], names: Matrix) -> float:
    """Share of images whose nearest group-name embedding is their own group's (``names`` row g = group g)."""
    if not len(images) or not len(names):
        return float("nan")
    return float(((images @ names.T).argmax(axis=1) == groups).mean())


def pair_recall(images: Matrix, texts: Matrix, *, k: int = 10) -> float:
    """Recall@k of each item's own text finding its own image (row i of both)."""
    if not len(images):
        return float("nan")
    top = _top_k(texts @ images.T, k)
    return float((top == np.arange(len(images))[:, None]).any(axis=1).mean())


def retrieval_report(images: Matrix, groups: NDArray[np.int64], *, queries: Matrix,
                     query_groups: NDArray[np.int64], names: Matrix, pair_texts: Matrix | None = None,
                     k: int = 10) -> dict[str, float]:
    """All metrics above in one dict, rounded to 4 digits."""
    report = {
        f"text_p@{k}": text_precision(images, groups, queries, query_groups, k=k),
        f"image_p@{k}": image_precision(images, groups, k=k),
        "zero_shot": zero_shot_accuracy(images, groups, names),
    }
    if pair_texts is not None:
        report[f"pair_r@{k}"] = pair_recall(images, pair_texts, k=k)
    return {key: round(value, 4) for key, value in report.items()}
