"""Fusion: exact scores over the union of both indices' candidates, ties, missing vectors, no mutation."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from search.fusion import (
    Candidate,
    Fused,
    candidate_count,
    fuse,
    merge_candidates,
    missing_scores,
    paginate,
    rank,
    with_scores,
)
from store.protocol import IMAGE, TEXT, Boost, Match, StoredPoint, boost_of


def hit(pid: str, score: float) -> StoredPoint:
    return StoredPoint(product_id=pid, payload={"id": pid}, score=score)


def snapshot(points: list[StoredPoint]) -> list[tuple[str, dict[str, object], float | None]]:
    return [(p.product_id, copy.deepcopy(p.payload), p.score) for p in points]


def test_merge_keeps_first_seen_order_and_gathers_scores_without_touching_inputs() -> None:
    image_hits = [hit("b", 0.9), hit("a", 0.5)]
    text_hits = [hit("c", 0.8), hit("a", 0.7)]
    before = (snapshot(image_hits), snapshot(text_hits))

    merged = merge_candidates((IMAGE, image_hits), (TEXT, text_hits))

    assert [c.product_id for c in merged] == ["b", "a", "c"]
    assert dict(merged[1].scores) == {IMAGE: 0.5, TEXT: 0.7}
    assert dict(merged[0].scores) == {IMAGE: 0.9}
    assert (snapshot(image_hits), snapshot(text_hits)) == before


def test_merge_refuses_a_result_without_score() -> None:
    with pytest.raises(ValueError, match="'x' from index 'image' has no score"):
        merge_candidates((IMAGE, [StoredPoint(product_id="x", payload={})]))


def test_missing_scores_are_filled_without_mutation() -> None:
    merged = merge_candidates((IMAGE, [hit("i", 1.0)]), (TEXT, [hit("t", 1.0)]))
    assert missing_scores(merged, TEXT) == ["i"]
    assert missing_scores(merged, IMAGE) == ["t"]

    filled = with_scores(merged, TEXT, {"i": 0.25, "t": -5.0})  # "t" already known: kept as it was

    assert dict(filled[0].scores) == {IMAGE: 1.0, TEXT: 0.25}
    assert dict(filled[1].scores) == {TEXT: 1.0}
    assert dict(merged[0].scores) == {IMAGE: 1.0}
    assert missing_scores(filled, TEXT) == []


def test_a_product_found_by_one_index_gets_its_real_score_on_the_other() -> None:
    merged = merge_candidates((IMAGE, [hit("i", 1.0)]), (TEXT, [hit("t", 1.0)]))
    merged = with_scores(with_scores(merged, TEXT, {"i": 0.0}), IMAGE, {"t": 0.7})
    fused = {f.product_id: f for f in fuse(merged, w_image=0.6, w_text=0.4)}

    assert fused["t"].image == pytest.approx(0.7)  # not zero, not absent
    assert fused["t"].score == pytest.approx(0.6 * 0.7 + 0.4)
    assert fused["i"].text == pytest.approx(0.0)
    assert fused["i"].score == pytest.approx(0.6)


def test_a_product_without_an_image_vector_scores_its_text_part_only() -> None:
    merged = with_scores(merge_candidates((TEXT, [hit("n", 0.5)])), IMAGE, {})
    fused = fuse(merged, w_image=0.6, w_text=0.4)
    assert fused[0].image is None
    assert fused[0].text == pytest.approx(0.5)
    assert fused[0].score == pytest.approx(0.2)


def test_fusion_is_exact_over_the_union_of_two_top_k_lists() -> None:
    rng = np.random.default_rng(1)
    n, dim, k = 60, 16, 10
    images = rng.normal(size=(n, dim)).astype(np.float32)
    texts = rng.normal(size=(n, dim)).astype(np.float32)
    q = rng.normal(size=dim).astype(np.float32)
    ids = [f"p{i:02d}" for i in range(n)]

    def cos(m: np.ndarray) -> np.ndarray:
        out: np.ndarray = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
        return out

    image_cos, text_cos = cos(images), cos(texts)
    top_image = [hit(ids[i], float(image_cos[i])) for i in np.argsort(-image_cos)[:k]]
    top_text = [hit(ids[i], float(text_cos[i])) for i in np.argsort(-text_cos)[:k]]
    merged = merge_candidates((IMAGE, top_image), (TEXT, top_text))
    for name, table in ((IMAGE, image_cos), (TEXT, text_cos)):
        merged = with_scores(merged, name, {pid: float(table[ids.index(pid)]) for pid in missing_scores(merged, name)})

    ranked = rank(fuse(merged, w_image=0.7, w_text=0.3))

    union = {p.product_id for p in top_image} | {p.product_id for p in top_text}
    assert {f.product_id for f in ranked} == union
    expected = sorted(
        ((0.7 * image_cos[i] + 0.3 * text_cos[i], ids[i]) for i in range(n) if ids[i] in union),
        key=lambda item: (-item[0], item[1]),
    )
    assert [f.product_id for f in ranked] == [pid for _, pid in expected]
    for item, (score, _) in zip(ranked, expected, strict=True):
        assert item.score == pytest.approx(float(score), abs=1e-6)


def test_weights_change_the_order() -> None:
    cands = [
        Candidate(product_id="img", payload={}, scores={IMAGE: 1.0, TEXT: 0.0}),
        Candidate(product_id="txt", payload={}, scores={IMAGE: 0.0, TEXT: 1.0}),
    ]
    assert [f.product_id for f in rank(fuse(cands, w_image=1.0, w_text=0.0))] == ["img", "txt"]
    assert [f.product_id for f in rank(fuse(cands, w_image=0.0, w_text=1.0))] == ["txt", "img"]
    with pytest.raises(ValueError, match="w_image=-1"):
        fuse(cands, w_image=-1.0, w_text=1.0)


def test_rank_breaks_ties_by_id_and_returns_a_new_list() -> None:
    items = [
        Fused(product_id=pid, score=s, image=None, text=s, payload={})
        for pid, s in (("b", 0.5), ("c", 0.9), ("a", 0.5), ("d", 0.1))
    ]
    original = list(items)
    ranked = rank(items)
    assert [f.product_id for f in ranked] == ["c", "a", "b", "d"]
    assert items == original
    assert ranked is not items


def test_fuse_keeps_candidate_order_and_does_not_mutate_candidates() -> None:
    cands = [
        Candidate(product_id="x", payload={"id": "x"}, scores={TEXT: 0.1}),
        Candidate(product_id="y", payload={"id": "y"}, scores={TEXT: 0.9}),
    ]
    before = [dict(c.scores) for c in cands]
    fused = fuse(cands, w_image=0.5, w_text=0.5)
    assert [f.product_id for f in fused] == ["x", "y"]
    assert [dict(c.scores) for c in cands] == before


def test_paginate_and_candidate_count() -> None:
    items = list(range(10))
    assert paginate(items, offset=0, limit=3) == [0, 1, 2]
    assert paginate(items, offset=8, limit=5) == [8, 9]
    assert paginate(items, offset=20, limit=5) == []
    assert items == list(range(10))
    with pytest.raises(ValueError, match="limit=0"):
        paginate(items, offset=0, limit=0)
    assert candidate_count(candidates=100, offset=0, limit=10) == 100
    assert candidate_count(candidates=100, offset=95, limit=20) == 115


def test_fuse_takes_the_boosts_worked_out_by_the_caller() -> None:
    """``boosted`` (by product id) gives what ``boosts`` would give each candidate from its payload, without
    reading the payloads again; the result is the same."""
    boosts = [Boost(Match("tags.colour", "red"), 0.1), Boost(Match("brand", "Acme"), -0.05)]
    payloads = {"a": {"id": "a", "tags": {"colour": "red"}, "brand": "Acme"},
                "b": {"id": "b", "tags": {"colour": "blue"}},
                "c": {"id": "c", "brand": "Zeta", "tags": {"colour": "red"}}}
    candidates = [Candidate(pid, payload, {IMAGE: 0.5 + 0.1 * n, TEXT: 0.3}) for n, (pid, payload)
                  in enumerate(payloads.items())]
    boosted = {pid: boost_of(payload, boosts) for pid, payload in payloads.items()}
    assert boosted == pytest.approx({"a": 0.05, "b": 0.0, "c": 0.1})
    plain = fuse(candidates, w_image=0.6, w_text=0.4, boosts=boosts)
    given = fuse(candidates, w_image=0.6, w_text=0.4, boosts=boosts, boosted=boosted)
    assert given == plain
    assert [f.boost for f in given] == pytest.approx([0.05, 0.0, 0.1])
    told = fuse(candidates, w_image=0.6, w_text=0.4, boosts=boosts, boosted={"b": 0.3})  # the caller's word is used
    assert [f.boost for f in told] == [0.0, 0.3, 0.0]
