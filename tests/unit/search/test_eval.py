"""Ranking metrics and query-set parsing of ``vitrine eval`` (search.eval)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.errors import InvalidInput
from search.eval import ranking_metrics, read_queries


def test_metrics_of_a_perfect_and_an_empty_ranking() -> None:
    relevant = frozenset({"a", "b"})
    assert ranking_metrics(["a", "b", "c"], relevant, 3) == {"ndcg": 1.0, "recall": 1.0, "precision": 2 / 3,
                                                              "mrr": 1.0}
    assert ranking_metrics(["x", "y", "z"], relevant, 3) == {"ndcg": 0.0, "recall": 0.0, "precision": 0.0,
                                                              "mrr": 0.0}


def test_metrics_count_ranks() -> None:
    result = ranking_metrics(["x", "a", "y", "b"], frozenset({"a", "b", "c"}), 4)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert result["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["precision"] == 0.5
    assert result["mrr"] == 0.5
    assert ranking_metrics(["x", "a"], frozenset({"a"}), 1)["recall"] == 0.0  # beyond k does not count


def write(path: Path, *lines: object) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def test_queries_parse_with_images_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "boot.png").write_bytes(b"png")
    queries = read_queries(write(tmp_path / "queries.jsonl",
                                 {"id": "t1", "query": "running shoes",
                                  "relevant_where": {"category": "Sneaker"}},
                                 "",
                                 {"image": "q/boot.png", "relevant": ["a", 7]},
                                 {"query": "in black", "image": "q/boot.png", "relevant": ["b"]}))
    assert [q.kind for q in queries] == ["text", "image", "text+image"]
    assert queries[0].id == "t1" and queries[1].id == "line3"
    assert queries[1].image == tmp_path / "q" / "boot.png"
    assert queries[1].relevant == frozenset({"a", "7"})


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "query line 1: invalid JSON"),
    ({"relevant": ["a"]}, "give 'query'"),
    ({"query": "x"}, "exactly one of 'relevant'"),
    ({"query": "x", "relevant": ["a"], "relevant_where": {"c": 1}}, "exactly one of 'relevant'"),
    ({"query": "x", "relevant": []}, "non-empty list of product ids"),
    ({"query": "x", "relevant_where": {"c": [1]}}, "field: scalar value"),
    ({"query": "  ", "relevant": ["a"]}, "'query' must be a non-empty string"),
    ({"image": "missing.png", "relevant": ["a"]}, "image 'missing.png' not found"),
    ({"query": "x", "relevant": ["a"], "weight": 2}, r"unknown field\(s\) \['weight'\]"),
])
def test_bad_lines_are_named(tmp_path: Path, line: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_queries(write(tmp_path / "queries.jsonl", line))


def test_a_missing_or_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a file"):
        read_queries(tmp_path / "nope.jsonl")
    with pytest.raises(InvalidInput, match="holds no queries"):
        read_queries(write(tmp_path / "empty.jsonl", ""))
