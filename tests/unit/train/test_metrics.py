"""Retrieval metrics on handmade embeddings."""

from __future__ import annotations

import numpy as np

from train.metrics import image_precision, pair_recall, retrieval_report, text_precision, zero_shot_accuracy

AXES = np.eye(3, dtype=np.float32)


def test_perfect_and_wrong_rankings() -> None:
    images = np.repeat(AXES, 4, axis=0)  # 4 images per group, on the group's axis
    groups = np.repeat(np.arange(3), 4)
    assert text_precision(images, groups, AXES, np.arange(3), k=4) == 1.0
    assert text_precision(images, groups, AXES, np.array([1, 2, 0]), k=4) == 0.0
    assert image_precision(images, groups, k=3) == 1.0
    assert zero_shot_accuracy(images, groups, AXES) == 1.0
    assert pair_recall(images, images, k=12) == 1.0


def test_precision_counts_partial_hits() -> None:
    images = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.8, 0.2, 0]], np.float32)
    groups = np.array([0, 0, 1, 1])
    assert text_precision(images, groups, AXES[:1], np.array([0]), k=2) == 1.0
    assert text_precision(images, groups, AXES[:1], np.array([0]), k=4) == 0.5


def test_report_has_every_metric() -> None:
    images = np.repeat(AXES, 2, axis=0)
    groups = np.repeat(np.arange(3), 2)
    report = retrieval_report(images, groups, queries=AXES, query_groups=np.arange(3), names=AXES,
                              pair_texts=images, k=2)
    assert set(report) == {"text_p@2", "image_p@2", "zero_shot", "pair_r@2"}
