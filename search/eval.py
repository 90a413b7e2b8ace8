"""Search quality against a query set: nDCG@k, recall@k, precision@k and MRR@k per index and fused.

A query set is JSON Lines, one query per line::

    {"id": "q1", "query": "running shoes", "relevant_where": {"category": "Sneaker"}}
    {"image": "queries/boot.png", "relevant": ["sku-1", "sku-7"]}
    {"query": "in black", "image": "queries/boot.png", "relevant_where": {"attributes.colour": "black"}}
    {"query": "shoes", "parts": [{"text": "sneakers", "weight": -0.5}], "relevant_where": {"category": "Sandal"}}

``query`` (text) and/or ``image`` (a path relative to the query file), and optionally ``parts``, more parts of a
composed query (``{"text": ...}`` or ``{"product_id": ...}``, each with an optional ``weight``); the relevant
products either listed by id (``relevant``) or described by payload equalities (``relevant_where``, dotted
paths reach nested fields; every condition must hold). Relevance is binary.

Every query runs through `search.service.SearchService` four times (`MODES`): against the image index alone
(``w_text = 0``), the text index alone (``w_image = 0``), both fused with the default weights, and fused
with the lexical (BM25) match added (``hybrid``); the first three leave the lexical match out. The query's
embeddings are computed once (the service's query cache keeps them). A weight sweep runs the fused search over
a grid of weights.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from common.errors import InvalidInput
from common.images import decode_image
from common.settings import SearchSettings
from search.query import QueryPart, SearchRequest, describe_validation_error
from search.service import SearchService
from store.protocol import VectorStore, payload_value

logger = logging.getLogger(__name__)

METRICS = ("ndcg", "recall", "precision", "mrr")
MODES: dict[str, dict[str, float]] = {
    "image": {"w_image": 1.0, "w_text": 0.0, "w_lexical": 0.0},
    "text": {"w_image": 0.0, "w_text": 1.0, "w_lexical": 0.0},
    "fused": {"w_lexical": 0.0},
    "hybrid": {},
}
"""Retrieval modes: the weights each overrides (the rest are the service's defaults)."""
SWEEP_STEPS = 10
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True)
class EvalQuery:
    """One line of a query set."""

    line: int
    id: str
    text: str | None
    image: Path | None
    relevant: frozenset[str] | None
    relevant_where: Mapping[str, Any] | None
    parts: tuple[QueryPart, ...] = ()
    label: str | None = None
    """The line's own ``kind`` (e.g. "identifier"), reported instead of the derived one."""

    @property
    def kind(self) -> str:
        """The line's ``kind`` if it gives one, else ``composed`` (with parts), ``text``, ``image`` or
        ``text+image``."""
        if self.label:
            return self.label
        if self.parts:
            return "composed"
        if self.text and self.image:
            return "text+image"
        return "image" if self.image else "text"


def _parse(line_no: int, data: Any, folder: Path) -> EvalQuery:
    where = f"query line {line_no}"
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - {"id", "kind", "query", "image", "parts", "relevant", "relevant_where"}
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {sorted(unknown)}; expected query, image, parts, relevant, "
                           "relevant_where, id, kind")
    label = data.get("kind")
    if label is not None and (not isinstance(label, str) or not label.strip() or label == "all"):
        raise InvalidInput(f"{where}: 'kind' must be a non-empty label other than 'all', got {label!r}")
    parts = data.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(p, dict) and "image_url" not in p for p in parts):
        raise InvalidInput(f"{where}: 'parts' must be a list of {{\"text\" or \"product_id\": ..., \"weight\": w}}, "
                           f"got {parts!r}")
    try:
        checked_parts = tuple(QueryPart(**p) for p in parts)
    except ValidationError as e:
        raise InvalidInput(f"{where}: parts: {describe_validation_error(e)}") from e
    text, image = data.get("query"), data.get("image")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InvalidInput(f"{where}: 'query' must be a non-empty string, got {text!r}")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise InvalidInput(f"{where}: 'image' must be a path (relative to the query file), got {image!r}")
    if text is None and image is None and not checked_parts:
        raise InvalidInput(f"{where}: give 'query' (text), 'image' (a path) or 'parts'")
    relevant, conditions = data.get("relevant"), data.get("relevant_where")
    if (relevant is None) == (conditions is None):
        raise InvalidInput(f"{where}: give exactly one of 'relevant' (product ids) and 'relevant_where' "
                           "({field: value})")
    if relevant is not None and (not isinstance(relevant, list) or not relevant
                                 or not all(isinstance(r, str | int) for r in relevant)):
        raise InvalidInput(f"{where}: 'relevant' must be a non-empty list of product ids, got {relevant!r}")
    if conditions is not None and (not isinstance(conditions, dict) or not conditions
                                   or not all(isinstance(v, _SCALAR) for v in conditions.values())):
        raise InvalidInput(f"{where}: 'relevant_where' must be a non-empty object of field: scalar value, "
                           f"got {conditions!r}")
    path = (folder / image) if image else None
    if path is not None and not path.is_file():
        raise InvalidInput(f"{where}: image {image!r} not found (looked at {str(path)!r})")
    return EvalQuery(line=line_no, id=str(data.get("id") or f"line{line_no}"), text=text, image=path,
                     relevant=frozenset(str(r) for r in relevant) if relevant is not None else None,
                     relevant_where=conditions, parts=checked_parts, label=label)


def read_queries(path: Path) -> list[EvalQuery]:
    """Read and check a query set.

    Raises:
        InvalidInput: the file is missing, empty, or a line is malformed (named by its number).
    """
    if not path.is_file():
        raise InvalidInput(f"query set {str(path)!r} is not a file; expected JSON Lines of queries")
    queries = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"query line {line_no}: invalid JSON ({e.msg} at column {e.colno})") from e
        queries.append(_parse(line_no, data, path.parent))
    if not queries:
        raise InvalidInput(f"query set {str(path)!r} holds no queries")
    return queries


def _matches(payload: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
    for name, wanted in conditions.items():
        value = payload_value(payload, name)
        if not (value == wanted or (isinstance(value, list) and wanted in value)):
            return False
    return True


def relevant_sets(queries: Sequence[EvalQuery], *, store: VectorStore,
                  collection: str) -> list[frozenset[str]]:
    """The relevant product ids of each query (``relevant_where`` resolved over the whole collection).

    Raises:
        InvalidInput: a query has no relevant product in the collection.
    """
    wheres = [q.relevant_where for q in queries if q.relevant_where is not None]
    fields = sorted({name.split(".", 1)[0] for conditions in wheres for name in conditions})
    payloads = [(p.product_id, p.payload) for p in store.scroll(collection, fields=fields)] if wheres else []
    out = []
    for query in queries:
        if query.relevant is not None:
            found = query.relevant
        else:
            assert query.relevant_where is not None
            found = frozenset(pid for pid, payload in payloads if _matches(payload, query.relevant_where))
        if not found:
            wanted = query.relevant_where or "empty list"
            raise InvalidInput(f"query line {query.line} ({query.id}): no product of collection "
                               f"{collection!r} is relevant ({wanted}); fix the query set")
        out.append(found)
    return out


def ranking_metrics(ranked: Sequence[str], relevant: frozenset[str], k: int) -> dict[str, float]:
    """Binary-relevance nDCG@k, recall@k, precision@k and MRR@k of one ranked list."""
    top = list(ranked[:k])
    gains = [1.0 if pid in relevant else 0.0 for pid in top]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    first = next((i for i, g in enumerate(gains) if g), None)
    return {"ndcg": dcg / ideal if ideal else 0.0, "recall": sum(gains) / len(relevant),
            "precision": sum(gains) / k, "mrr": 0.0 if first is None else 1.0 / (first + 1)}


@dataclass
class EvalReport:
    """Mean metrics by query kind and retrieval mode, and the weights used."""

    k: int
    weights: dict[str, float]
    counts: dict[str, int]
    table: dict[str, dict[str, dict[str, float]]]
    """kind ("all", "text", "image", ...) -> mode ("image", "text", "fused") -> metric -> mean."""
    per_query: list[dict[str, Any]] = field(default_factory=list)
    """Each query's id, kind and metrics by mode."""
    sweep: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """``{"fused": {"ndcg@10": ...}, "image": {...}, "text": {...}, "queries": N, ...}`` (all queries)."""
        out: dict[str, Any] = {mode: self.table["all"][mode] for mode in MODES}
        out |= {"queries": self.counts["all"], "k": self.k, "weights": self.weights,
                "by_kind": {kind: modes for kind, modes in self.table.items() if kind != "all"},
                "counts": self.counts, "per_query": self.per_query}
        if self.sweep:
            out["sweep"] = self.sweep
        return out


def _mean(rows: Iterable[dict[str, float]], k: int) -> dict[str, float]:
    rows = list(rows)
    return {f"{name}@{k}": round(float(np.mean([r[name] for r in rows])), 4) for name in METRICS}


class Evaluator:
    """Runs a query set through a `SearchService`; queries are encoded once and reused for every weighting.

    Args:
        service: the search service over the collection.
        store: the store holding it (to resolve ``relevant_where``).
        queries: the query set.
        settings: the search settings the service runs with (its default fusion weights).
        k: the cut-off.
        max_pixels: image decoding limit (settings indexer.max_image_pixels).
    """

    def __init__(self, *, service: SearchService, store: VectorStore, queries: Sequence[EvalQuery],
                 settings: SearchSettings, k: int = 10, max_pixels: int = 50_000_000) -> None:
        if not 1 <= k <= settings.max_limit:
            raise InvalidInput(f"k {k} must be between 1 and {settings.max_limit} (setting search.max_limit)")
        self.service = service
        self.settings = settings
        self.queries = list(queries)
        self.k = k
        self.relevant = relevant_sets(self.queries, store=store, collection=service.collection)
        self.images = [None if q.image is None else
                       decode_image(q.image.read_bytes(), max_pixels=max_pixels, source=str(q.image))
                       for q in self.queries]

    def _run(self, weights: Mapping[str, float]) -> list[dict[str, float]]:
        out = []
        for query, image, relevant in zip(self.queries, self.images, self.relevant, strict=True):
            request = SearchRequest(q=query.text, image=image, query=list(query.parts) or None, limit=self.k,
                                    group=False, **weights)
            response = self.service.search(request)
            out.append(ranking_metrics([hit.id for hit in response.results], relevant, self.k))
        return out

    def _by_kind(self, rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
        kinds = sorted({q.kind for q in self.queries})
        out = {"all": _mean(rows, self.k)}
        for kind in kinds:
            out[kind] = _mean((r for r, q in zip(rows, self.queries, strict=True) if q.kind == kind), self.k)
        return out

    def report(self, *, sweep: bool = False) -> EvalReport:
        """Metrics for every mode (and, with ``sweep``, fused over a grid of weights)."""
        table: dict[str, dict[str, dict[str, float]]] = {}
        per_query: list[dict[str, Any]] = [{"id": q.id, "kind": q.kind} for q in self.queries]
        for mode, weights in MODES.items():
            rows = self._run(weights)
            for kind, means in self._by_kind(rows).items():
                table.setdefault(kind, {})[mode] = means
            for entry, row in zip(per_query, rows, strict=True):
                entry[mode] = {f"{name}@{self.k}": round(row[name], 4) for name in METRICS}
        settings = self.settings
        counts = {"all": len(self.queries)} | {kind: sum(q.kind == kind for q in self.queries)
                                               for kind in sorted({q.kind for q in self.queries})}
        report = EvalReport(k=self.k, weights={"image": settings.w_image, "text": settings.w_text,
                                               "lexical": settings.w_lexical},
                            counts=counts, table=table, per_query=per_query)
        if sweep:
            for step in range(SWEEP_STEPS + 1):
                w_image = round(step / SWEEP_STEPS, 2)
                by_kind = self._by_kind(self._run({"w_image": w_image, "w_text": round(1 - w_image, 2),
                                                   "w_lexical": 0.0}))
                report.sweep.append({"w_image": w_image, "w_text": round(1 - w_image, 2), **by_kind})
        return report


def best_weights(report: EvalReport, *, kind: str = "all") -> dict[str, Any]:
    """The sweep point with the highest nDCG@k for ``kind`` queries."""
    if not report.sweep:
        raise ValueError("the report has no weight sweep")
    key = f"ndcg@{report.k}"
    return max(report.sweep, key=lambda point: point[kind][key])
