"""Recall cost of int8 scalar quantization: recall@10 of the store's search against exact search.

Builds one collection with the store's quantization settings (int8 by default: ``StoreSettings.quantization``)
on the embedded engine (qdrant-edge), builds its HNSW and quantized indexes (``optimize``), then asks the same
queries with ``exact=True`` (every original vector; no HNSW, no quantization: the reference) and with the
approximate search under several settings, each reopening the store with other search settings:

- int8 + rescoring by the original vectors at several ``oversampling`` values (the default: 2.0);
- int8 without rescoring (scores and ranks from the int8 vectors alone).

Recall@10 = |approximate top 10 ∩ exact top 10| / 10, averaged over the queries; the time column is the p50
per query, and the ratio is exact p50 / that p50 (above 1: faster than exact).

Data (``--data``):

- ``clustered`` (default 50,000 x 512): normalised random vectors drawn around ``--centres`` centres in a
  64-d subspace plus noise, as real embeddings are (low intrinsic dimension); queries from the same law;
- ``demo``: the bundled demo encoder's image and text embeddings of the demo catalog (5,000 products, 384-d),
  queried with the demo's text evaluation queries and 100 product titles (both indexes searched). At 5,000 x 384
  the vectors stay below the engine's indexing threshold (about 10 MB per vector): the engine scans the
  originals, so quantization is not used and recall is 1 by construction; the table says so.

qdrant-client's local mode is not measured: it stores the quantization config but always searches exactly
(brute force over the originals; it warns that search params have no effect), so its recall is 1 by
construction. A Qdrant server quantizes exactly as the embedded engine does (same segment code).

Run:
    .venv/bin/python bench/recall.py                              # clustered 50k x 512, 300 queries (~5 min, 2 cores)
    .venv/bin/python bench/recall.py --data demo
    .venv/bin/python bench/recall.py --n 20000 --queries 200 --oversampling 1,2,4

Prints a table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, TEXT, PointWrite

COLLECTION = "recall"
ENCODER = "bench-recall"
K = 10
LATENT = 64
DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


def log(message: str) -> None:
    """Progress, on stderr (tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Vectors by index name, and queries (each searched on ``using``)."""

    name: str
    vectors: dict[str, NDArray[np.float32]]
    queries: list[tuple[str, NDArray[np.float32]]]

    @property
    def size(self) -> int:
        """Products."""
        return len(next(iter(self.vectors.values())))

    @property
    def dim(self) -> int:
        """Vector size."""
        return int(next(iter(self.vectors.values())).shape[1])


def _unit(x: NDArray[np.floating]) -> NDArray[np.float32]:
    y = x.astype(np.float32)
    unit: NDArray[np.float32] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return unit


def clustered(n: int, dim: int, centres: int, queries: int, seed: int) -> Dataset:
    """``n`` unit vectors around ``centres`` centres in a ``LATENT``-d subspace plus noise (one ``image`` index)."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, LATENT))
    projection = np.linalg.qr(rng.standard_normal((dim, LATENT)))[0].T

    def draw(count: int) -> NDArray[np.float32]:
        z = middle[rng.integers(0, centres, count)] + 0.8 * rng.standard_normal((count, LATENT))
        return _unit(z @ projection + 0.15 * rng.standard_normal((count, dim)))

    data = np.concatenate([draw(min(10_000, n - i)) for i in range(0, n, 10_000)])
    return Dataset(f"clustered {n:,} x {dim}, {centres} centres", {IMAGE: data},
                   [(IMAGE, q) for q in draw(queries)])


def demo(queries: int) -> Dataset:
    """The demo encoder's embeddings of the demo catalog (image and text) and of queries."""
    from PIL import Image

    from common.settings import EmbedSettings
    from embed.registry import build_encoder

    rows = [json.loads(line) for line in (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines() if line]
    demo_queries = [json.loads(line) for line in (DEMO / "queries.jsonl").read_text(encoding="utf-8").splitlines()
                    if line]
    asked = [str(q["query"]) for q in demo_queries if "query" in q]  # the text ones (others are pictures)
    asked += [str(r["title"]) for r in rows[:: max(1, len(rows) // 100)][:100]]
    encoder = build_encoder(EmbedSettings(), "demo")
    encoder.load()
    log(f"embedding {len(rows)} demo products and {len(asked)} queries with the demo encoder")
    texts = encoder.embed_texts([f"{r['title']}. {r.get('description', '')}" for r in rows])
    images = []
    for start in range(0, len(rows), 256):
        batch = [Image.open(DEMO / r["image"]).convert("RGB") for r in rows[start:start + 256]]
        images.append(encoder.embed_images(batch))
    q = encoder.embed_texts(asked)[:queries]
    return Dataset(f"demo catalog {len(rows):,} x {encoder.dim} (demo encoder)",
                   {IMAGE: np.concatenate(images), TEXT: texts}, [(u, v) for v in q for u in (IMAGE, TEXT)])


def points(data: Dataset, batch: int = 1000) -> Iterator[list[PointWrite]]:
    """The products to write, in batches."""
    for start in range(0, data.size, batch):
        stop = min(data.size, start + batch)
        yield [PointWrite(f"p{i}", {"title": f"product {i}"}, {k: v[i] for k, v in data.vectors.items()})
               for i in range(start, stop)]


# -- measurement ---------------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table."""

    what: str
    recall: float
    worst: float
    p50_ms: float


def run_queries(store: EdgeStore, data: Dataset, *, exact: bool) -> tuple[list[list[str]], NDArray[np.float64]]:
    """The top-``K`` ids of every query and the milliseconds each took."""
    for using, q in data.queries[:5]:  # warm-up
        store.search(COLLECTION, vector=q, using=using, limit=K, exact=exact)
    found, ms = [], np.empty(len(data.queries))
    for i, (using, q) in enumerate(data.queries):
        started = time.perf_counter()
        hits = store.search(COLLECTION, vector=q, using=using, limit=K, exact=exact)
        ms[i] = (time.perf_counter() - started) * 1000.0
        found.append([h.product_id for h in hits])
    return found, ms


def measure(folder: Path, data: Dataset, settings: StoreSettings, what: str,
            truth: list[list[str]]) -> Row:
    """Reopen the store with ``settings`` and compare its search with the exact ``truth``."""
    store = EdgeStore(folder, settings=settings)
    try:
        found, ms = run_queries(store, data, exact=False)
    finally:
        store.close()
    recalls = [len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]
    return Row(what, float(np.mean(recalls)), float(np.min(recalls)), float(np.percentile(ms, 50)))


def bench(data: Dataset, base: StoreSettings, oversampling: Sequence[float], folder: Path) -> None:
    """Build, optimize, measure and print."""
    store = EdgeStore(folder, settings=base)
    store.ensure_collection(COLLECTION, encoder=ENCODER, dim=data.dim)
    started = time.perf_counter()
    for batch in points(data):
        store.upsert(COLLECTION, batch)
    loaded = time.perf_counter() - started
    log(f"{data.name}: wrote {data.size:,} products in {loaded:.1f} s; building the indexes (optimize)")
    started = time.perf_counter()
    store.optimize(COLLECTION)
    built = time.perf_counter() - started
    info = store.collection_info(COLLECTION)
    log(f"indexes built in {built:.1f} s; quantization: {info.quantization}")
    truth, exact_ms = run_queries(store, data, exact=True)
    store.close()
    exact_p50 = float(np.percentile(exact_ms, 50))

    rows = [Row("exact (reference: originals, no HNSW, no quantization)", 1.0, 1.0, exact_p50)]
    for factor in oversampling:
        settings = base.model_copy(update={"rescore": True, "oversampling": factor})
        default = " (default)" if factor == StoreSettings().oversampling and base.rescore else ""
        rows.append(measure(folder, data, settings, f"int8 + rescore, oversampling {factor:g}{default}", truth))
        log(f"{rows[-1].what}: recall@10 {rows[-1].recall:.4f}")
    rows.append(measure(folder, data, base.model_copy(update={"rescore": False, "oversampling": 1.0}),
                        "int8, no rescoring", truth))
    log(f"{rows[-1].what}: recall@10 {rows[-1].recall:.4f}")

    print(f"\n{data.name}: {len(data.queries)} queries, recall@{K} against exact search; "
          f"quantization {info.quantization}; hnsw m={base.hnsw_m} ef_construct={base.hnsw_ef_construct} "
          f"ef={base.hnsw_ef}; load {loaded:.1f} s, optimize {built:.1f} s")
    header = ("search", f"recall@{K}", "worst query", "p50 ms", "vs exact")
    cells = [(r.what, f"{r.recall:.4f}", f"{r.worst:.1f}", f"{r.p50_ms:.2f}", f"{exact_p50 / r.p50_ms:.1f}x")
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    if rows[-1].recall == 1.0 and all(r.recall == 1.0 for r in rows):
        print("(every search equals exact: the vectors are below the engine's indexing threshold, so it scans "
              "the originals and quantization is not used)")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=("clustered", "demo"), default="clustered")
    parser.add_argument("--n", type=int, default=50_000, help="clustered: products (default 50,000)")
    parser.add_argument("--dim", type=int, default=512, help="clustered: vector size (default 512)")
    parser.add_argument("--centres", type=int, default=300, help="clustered: cluster centres (default 300)")
    parser.add_argument("--queries", type=int, default=300, help="queries (default 300; demo: up to 220)")
    parser.add_argument("--oversampling", default="1,1.5,2,3", help="oversampling values with rescoring")
    parser.add_argument("--quantile", type=float, default=StoreSettings().quantization_quantile)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    base = StoreSettings(quantization="int8", quantization_quantile=args.quantile)
    data = (demo(args.queries) if args.data == "demo"
            else clustered(args.n, args.dim, args.centres, args.queries, args.seed))
    with tempfile.TemporaryDirectory(prefix="vitrine-recall-") as tmp:
        bench(data, base, [float(v) for v in args.oversampling.split(",") if v], Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
