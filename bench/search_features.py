"""What the richer queries cost: search latency on the demo index, each feature against plain fused search.

Runs the demo's text queries (``data/demo/queries.jsonl``) through the search service in-process, with the
query embeddings cached first (so only the search itself is timed, not the model), in these modes:

- ``fused``: image and text indices, no lexical match, no tag boosts (the baseline of the ratios);
- ``hybrid``: plus the lexical (BM25) match and the all-words bonus;
- ``+tags``: hybrid plus tag boosts from the vocabulary (formula queries in the engine): the default;
and, all with tags:

- ``composed``: the query plus a negative part ("..., not leather"), relevance judged by the positive part;
- ``facets``: hybrid, counting category and tags.type among the results;
- ``min_score``: hybrid, dropping results under relevance 0.99.

Prints p50 and p99 per mode and the ratio of each p50 to the baseline's. Needs the demo index, tagged
(``make index-demo``)::

    .venv/bin/python bench/search_features.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from api.wiring import open_search
from common.settings import load_settings
from search.query import QueryPart, SearchRequest
from search.service import SearchService

ROOT = Path(__file__).resolve().parents[1]


def timed(service: SearchService, requests: list[SearchRequest], rounds: int) -> list[float]:
    """Milliseconds of each search, ``rounds`` times over the requests."""
    out = []
    for _ in range(rounds):
        for request in requests:
            start = time.perf_counter()
            service.search(request)
            out.append((time.perf_counter() - start) * 1000.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=Path, default=ROOT / "data" / "demo" / "queries.jsonl")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = [line["query"] for line in map(json.loads, args.queries.read_text().splitlines())
             if "query" in line and not line.get("parts") and line.get("kind") is None]
    settings = load_settings()
    components = open_search(settings)
    service = components.service
    if not service.info.tags and settings.tags.vocabulary is None:
        components.close()
        raise SystemExit("the collection was not tagged: index it with a vocabulary (make index-demo)")
    untagged = SearchService(encoder=service.encoder, store=components.store, settings=settings.search,
                             collection=service.collection, calibration=service.calibration)
    modes: dict[str, dict[str, Any]] = {
        "fused": {"w_lexical": 0.0},
        "hybrid": {},
        "+tags": {},
        "composed": {"query": [QueryPart(text="leather", weight=-0.5)]},
        "facets": {"facets": ["category", "tags.type"]},
        "min_score": {"min_score": 0.99},
    }
    try:
        for text in [*texts, "leather"]:  # fill the caches: time the search, not the model
            service.search(SearchRequest(q=text))
            untagged.search(SearchRequest(q=text))
        rows = []
        for mode, extra in modes.items():
            runner = untagged if mode in {"fused", "hybrid"} else service
            times = timed(runner, [SearchRequest(q=text, **extra) for text in texts], args.rounds)
            rows.append((mode, statistics.median(times), statistics.quantiles(times, n=100)[98]))
    finally:
        components.close()
    base = rows[0][1]
    print(f"{len(texts)} queries x {args.rounds} rounds on collection {service.collection!r}")
    print(f"{'mode':<10} {'p50 ms':>8} {'p99 ms':>8} {'p50 / fused':>12}")
    for mode, p50, p99 in rows:
        print(f"{mode:<10} {p50:>8.2f} {p99:>8.2f} {p50 / base:>12.2f}")


if __name__ == "__main__":
    main()
