"""What re-ranking costs: candidates/s against batch size, and the latency it adds to a search.

1. Throughput: the transformers re-ranker (`rerank.hf_backend.TransformersReranker`) on the tiny random LLaVA
   of ``tests/tiny_vlm.py`` (width 32, 2 layers per tower, 32 px images: 17 image tokens), CPU, fp32, scoring
   ``--candidates`` demo products (title, brand, category, description; the product photo) for one query, at
   batch sizes 1, 2, 4, 8, 16. Prints candidates/s and the ratio to batch 1. With a model this small the
   time is the processor (chat template, tokenizer, image resize) and Python per forward pass, so the ratio
   shows what batching saves in overhead, not what it does for a 7B model on a GPU (docs/benchmarks.md).
2. Latency added to a search: the demo index (``make index-demo``) with the demo encoder, the demo's text
   queries, through `api.reranking.Reranking.search` (the path of ``GET /search?rerank=true`` and ``vitrine
   search --rerank``: the first ``top_n`` results, their previews, one ``score`` call) at top_n 10 and 20,
   against the same search without re-ranking, in the same process. Query embeddings are cached first and the
   re-ranker has no score cache, so each re-ranked search runs the model on all ``top_n`` candidates.

(Not ``bench/rerank.py``: run as a script, its folder comes first on ``sys.path`` and that name would hide the
``rerank`` package.)

The store is copied to a temporary folder first (so a running ``vitrine serve`` on ``.vitrine`` does not lock
it out); previews are read where the index made them.

Run::

    .venv/bin/python bench/reranking.py                         # both parts (about 2 min on 2 cores)
    .venv/bin/python bench/reranking.py --no-search --rounds 5  # throughput only

Prints tables and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from api.reranking import Reranking, product_text
from api.wiring import open_search
from common.settings import load_settings
from common.thumbnails import ThumbnailStore
from rerank.hf_backend import TransformersReranker
from rerank.protocol import Candidate, RerankQuery
from search.query import ProductView, SearchRequest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
BATCH_SIZES = (1, 2, 4, 8, 16)
TOP_NS = (10, 20)


def log(message: str) -> None:
    """Progress, on stderr (tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tiny_llava() -> tuple[Any, Any]:
    """The tiny random LLaVA of the tests (one builder for tests and bench: ``tests/tiny_vlm.py``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    builder: Callable[[], tuple[Any, Any]] = importlib.import_module("tests.tiny_vlm").tiny_llava
    return builder()


def demo_candidates(count: int) -> list[Candidate]:
    """The first ``count`` demo products with their photos, as the search path shows them to the re-ranker."""
    out = []
    for line in (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines()[:count]:
        row = json.loads(line)
        view = ProductView.model_validate({k: v for k, v in row.items() if k != "attributes"})
        with Image.open(DEMO / row["image"]) as image:
            out.append(Candidate(row["id"], product_text(view), image.convert("RGB")))
    return out


def throughput(count: int, rounds: int) -> list[tuple[int, float, float]]:
    """(batch size, median seconds to score ``count`` candidates, candidates/s) per batch size."""
    model, processor = tiny_llava()
    candidates = demo_candidates(count)
    query = RerankQuery(text="white sneakers for running")
    rows = []
    for batch in BATCH_SIZES:
        reranker = TransformersReranker("tiny-llava", model=model, processor=processor, batch_size=batch)
        reranker.score(query, candidates)  # warm-up: the first passes at new shapes are several times slower
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            reranker.score(query, candidates)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rows.append((batch, seconds, count / seconds))
        log(f"batch {batch}: {count / seconds:.1f} candidates/s")
    return rows


def search_latency(rounds: int, batch: int, queries: int) -> list[tuple[str, float, float]]:
    """(mode, p50 ms, p99 ms): search alone, and search + re-rank at each of `TOP_NS`."""
    source = load_settings()
    texts = [row["query"] for row in map(json.loads, (DEMO / "queries.jsonl").read_text().splitlines())
             if "query" in row and not row.get("parts") and row.get("kind") is None][:queries]
    model, processor = tiny_llava()
    reranker = TransformersReranker("tiny-llava", model=model, processor=processor, batch_size=batch)
    with tempfile.TemporaryDirectory(prefix="vitrine-bench-") as folder:
        shutil.copytree(source.store_dir, Path(folder) / "store")
        settings = load_settings(home=Path(folder), images={"dir": source.images_dir})
        components = open_search(settings)
        reranking = Reranking(reranker, settings.rerank, thumbnails=ThumbnailStore.from_settings(settings))
        service = components.service
        try:
            for text in texts:  # fill the embedding cache: time the search and the re-ranker, not the encoder
                service.search(SearchRequest(q=text))
                reranking.search(service, SearchRequest(q=text), top_n=max(TOP_NS), budget_s=600)
            modes: list[tuple[str, Callable[[SearchRequest], Any]]] = [("search", service.search)]
            for top_n in TOP_NS:
                modes.append((f"+ rerank top {top_n}",
                               lambda request, n=top_n: reranking.search(service, request, top_n=n, budget_s=600)))
            rows = []
            for mode, run in modes:
                times = []
                for _ in range(rounds):
                    for text in texts:
                        start = time.perf_counter()
                        response = run(SearchRequest(q=text, limit=10))
                        times.append((time.perf_counter() - start) * 1000.0)
                        assert mode == "search" or response.reranked, response.rerank
                rows.append((mode, statistics.median(times), statistics.quantiles(times, n=100)[98]))
                log(f"{mode}: p50 {rows[-1][1]:.1f} ms")
        finally:
            reranking.close()
            components.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=32, help="candidates scored per call (part 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="re-ranker batch size in part 2 (the default setting)")
    parser.add_argument("--queries", type=int, default=20, help="demo queries timed in part 2")
    parser.add_argument("--no-search", dest="search", action="store_false", help="skip part 2")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a tiny model on a busy machine is slower and erratic with more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU fp32, tiny random LLaVA")
    rows = throughput(args.candidates, args.rounds)
    base = rows[0][2]
    print(f"\n1. {args.candidates} candidates per score() call, median of {args.rounds} rounds")
    print(f"{'batch':>5} {'seconds':>8} {'cand/s':>8} {'vs batch 1':>11}")
    for batch, seconds, rate in rows:
        print(f"{batch:>5} {seconds:>8.3f} {rate:>8.1f} {rate / base:>11.2f}")
    if not args.search:
        return
    latency = search_latency(args.rounds, args.batch, args.queries)
    alone = latency[0][1]
    print(f"\n2. {args.queries} demo queries x {args.rounds} rounds, limit 10, re-ranker batch {args.batch}")
    print(f"{'mode':<16} {'p50 ms':>8} {'p99 ms':>8} {'added p50 ms':>13} {'p50 / search':>13}")
    for mode, p50, p99 in latency:
        print(f"{mode:<16} {p50:>8.1f} {p99:>8.1f} {p50 - alone:>13.1f} {p50 / alone:>13.2f}")


if __name__ == "__main__":
    main()
