"""Query latency: the embedded store vs qdrant-client's local mode, HNSW recall, and search end to end.

What it measures, on synthetic catalogs of ``--dim``-d vectors (384, like the demo encoder) with a
realistic payload (category, brand, price, in_stock):

1. the store-level query that `search.service.SearchService` runs ("search + score()"): the top-100
   candidates from the ``image`` index and from the ``text`` index, then ``score()`` for the candidates
   one index did not return (exact fusion over the union); beside it, the alternative of both searches
   returning vectors. With and without a filter (category + in_stock + price range), on qdrant-edge (HNSW
   built by ``optimize``) and on qdrant-client local mode (``:memory:``; only up to 50k, it is slow and
   warns above 20k);
2. recall@10 of the HNSW search against exact search (``exact=True``), at the HNSW settings of
   ``common.settings.StoreSettings`` (``--ef`` sweeps other search-time ``hnsw_ef`` values);
3. end to end: a text query through ``SearchService`` in-process and through ``GET /search`` (uvicorn on
   loopback, in a child process), with an encoder that looks the query vector up (no model time); the
   demo encoder's own time for one text is measured separately when it is installed.

Vectors: ``--data clustered`` (default) draws them around 200 centres in a 48-d subspace plus noise, as real
embeddings are (low intrinsic dimension; nearest cosine about 0.7); ``--data uniform`` draws uniform random
unit vectors, the worst case for any ANN index: at 384-d all neighbours are almost equally far.

Run:
    .venv/bin/python bench/query.py                                   # all of it (about 10 min on 2 cores)
    .venv/bin/python bench/query.py --sizes 10000 --local-sizes 10000 --no-e2e    # a quick look
    .venv/bin/python bench/query.py --data uniform --sizes 100000 --local-sizes '' --no-e2e --ef 128,512

Prints tables and ratios; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.settings import Settings, StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, TEXT, Filter, Match, PointWrite, Range, StoredPoint, VectorStore
from store.qdrant_backend import QdrantServerStore

COLLECTION = "bench"
ENCODER = "bench-lookup"
CANDIDATES = 100
CATEGORIES = 20
LATENT, CENTRES = 48, 200
EDGE, LOCAL = "edge (qdrant-edge, HNSW)", "qdrant-client local mode"
FILTER = Filter(must=(Match("category", "c03"), Match("in_stock", True), Range("price", lte=250.0)))


def log(message: str) -> None:
    """Progress, on stderr (tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------------------

@dataclass
class Space:
    """Where vectors are drawn from: cluster centres and a projection to ``dim`` (or uniform)."""

    dim: int
    data: str
    seed: int

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.centres = rng.standard_normal((CENTRES, LATENT)) * 1.0
        self.projection = np.linalg.qr(rng.standard_normal((self.dim, LATENT)))[0].T  # (LATENT, dim)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``n`` unit vectors and the cluster each came from (random clusters when uniform)."""
        cluster = rng.integers(0, CENTRES, n)
        if self.data == "uniform":
            x = rng.standard_normal((n, self.dim))
        else:
            z = self.centres[cluster] + 0.8 * rng.standard_normal((n, LATENT))
            x = z @ self.projection + 0.15 * rng.standard_normal((n, self.dim))
        x = x.astype(np.float32)
        unit: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return unit, cluster

    def queries(self, n: int) -> NDArray[np.float32]:
        """``n`` query vectors from the same distribution (fixed for a given seed)."""
        return self.draw(n, np.random.default_rng(self.seed + 1))[0]


def catalog(space: Space, n: int, *, batch: int = 1000) -> Any:
    """Batches of `PointWrite` for ``n`` products (generated lazily, the same for a given seed)."""
    rng = np.random.default_rng(space.seed + 2)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        image, cluster = space.draw(count, rng)
        text = image + 0.5 * space.draw(count, rng)[0]  # a product's text lies near its image
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        prices = np.round(rng.lognormal(4.0, 0.8, count), 2)
        stock = rng.random(count) < 0.7
        brands = rng.integers(0, 50, count)
        yield [PointWrite(f"p{start + i}", {
            "title": f"product {start + i}", "category": f"c{cluster[i] % CATEGORIES:02d}",
            "brand": f"brand{brands[i]:02d}", "price": float(prices[i]), "currency": "EUR",
            "in_stock": bool(stock[i]), "attributes": {"color": ("red", "blue", "black")[i % 3]},
        }, {IMAGE: image[i], TEXT: text[i]}) for i in range(count)]


def load(store: VectorStore, space: Space, n: int) -> float:
    """Create the collection and write ``n`` products; returns seconds."""
    store.ensure_collection(COLLECTION, encoder=ENCODER, dim=space.dim)
    started = time.perf_counter()
    for points in catalog(space, n):
        store.upsert(COLLECTION, points)
    return time.perf_counter() - started


# -- measurements --------------------------------------------------------------------------------------

def store_query(store: VectorStore, q: NDArray[np.float32], flt: Filter | None,
                exact: bool = False) -> list[list[StoredPoint]]:
    """The alternative to `store_query_scored`: candidates from both indices with their vectors."""
    return [store.search(COLLECTION, vector=q, using=using, limit=CANDIDATES, filter=flt, with_vectors=True,
                         exact=exact) for using in (IMAGE, TEXT)]


def store_query_scored(store: VectorStore, q: NDArray[np.float32], flt: Filter | None) -> object:
    """What search asks of the store (`search.service.SearchService`): both searches without vectors, then
    the exact score of each candidate on the index that did not return it."""
    lists = [store.search(COLLECTION, vector=q, using=using, limit=CANDIDATES, filter=flt)
             for using in (IMAGE, TEXT)]
    found = [{p.product_id for p in hits} for hits in lists]
    return [store.score(COLLECTION, vector=q, using=using, product_ids=sorted(found[1 - k] - found[k]))
            for k, using in enumerate((IMAGE, TEXT))]


def timed(call: Callable[[int], object], n: int, warmup: int = 5) -> NDArray[np.float64]:
    """Milliseconds of ``call(i)`` for i in range(n), after ``warmup`` untimed calls."""
    for i in range(min(warmup, n)):
        call(i)
    out = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        call(i)
        out[i] = (time.perf_counter() - started) * 1000.0
    return out


def recall(store: VectorStore, queries: NDArray[np.float32], flt: Filter | None, limit: int) -> float:
    """Mean recall@10 of the HNSW search (``limit`` results, first 10 kept) against exact search."""
    hits = total = 0
    for q in queries:
        for using in (IMAGE, TEXT):
            exact = {p.product_id for p in store.search(COLLECTION, vector=q, using=using, limit=10,
                                                         filter=flt, exact=True)}
            approx = [p.product_id for p in store.search(COLLECTION, vector=q, using=using, limit=limit,
                                                          filter=flt)][:10]
            hits += len(exact.intersection(approx))
            total += len(exact)
    return hits / max(total, 1)


@dataclass
class Row:
    """One line of the latency table."""

    what: str
    size: int
    filtered: bool
    ms: NDArray[np.float64]

    def cells(self) -> list[str]:
        """The printed cells."""
        p50, p99 = np.percentile(self.ms, [50, 99])
        return [self.what, f"{self.size:,}", "yes" if self.filtered else "no", str(len(self.ms)),
                f"{p50:.2f}", f"{p99:.2f}", f"{1000.0 / self.ms.mean():.0f}"]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print an aligned table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def p50(rows: Sequence[Row], what: str, size: int, filtered: bool) -> float | None:
    """The p50 of a row, if measured."""
    for r in rows:
        if r.what == what and r.size == size and r.filtered == filtered:
            return float(np.percentile(r.ms, 50))
    return None


# -- end to end ----------------------------------------------------------------------------------------

class LookupEncoder:
    """An `embed.protocol.Encoder` whose text query ``"q<i>"`` embeds to query vector ``i``: no model time."""

    def __init__(self, queries: NDArray[np.float32]) -> None:
        """Serve ``queries`` by index."""
        self._queries = queries

    name = ENCODER
    image_size = 32
    weights_id = ""

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self._queries.shape[1])

    @property
    def image_transform(self) -> Callable[[Image.Image], NDArray[np.float32]]:
        """Unused here."""
        return lambda image: np.zeros((3, 32, 32), np.float32)

    def load(self) -> None:
        """Nothing to load."""

    def embed_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The query vectors of texts ``q<i>``."""
        return self._queries[[int(t[1:]) for t in texts]]

    def embed_pixels(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Unsupported: the bench searches by text."""
        raise NotImplementedError("the bench encoder embeds texts only")

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Unsupported: the bench searches by text."""
        raise NotImplementedError("the bench encoder embeds texts only")


def e2e_in_process(store: VectorStore, queries: NDArray[np.float32], n: int) -> NDArray[np.float64]:
    """Milliseconds of ``SearchService.search`` for a text query (lookup encoder), top 10 of 100 + 100."""
    from common.settings import SearchSettings
    from search.query import SearchRequest
    from search.service import SearchService

    service = SearchService(encoder=LookupEncoder(queries), store=store, settings=SearchSettings(),
                            collection=COLLECTION)
    return timed(lambda i: service.search(SearchRequest(q=f"q{i % len(queries)}", limit=10)), n)


def serve(args: argparse.Namespace) -> None:
    """Child process: serve the store in ``args.store`` over HTTP with the lookup encoder."""
    import uvicorn

    from api.app import create_app
    from api.wiring import Components
    from common.settings import SearchSettings
    from search.service import SearchService

    queries = Space(args.dim, args.data, args.seed).queries(args.queries)

    def loader(settings: Settings) -> Components:
        store = EdgeStore(Path(args.store), settings=StoreSettings())
        return Components(store=store, service=SearchService(
            encoder=LookupEncoder(queries), store=store, settings=SearchSettings(), collection=COLLECTION))

    app = create_app(Settings(home=Path(args.store).parent), loader=loader)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def e2e_http(folder: Path, args: argparse.Namespace, n: int) -> NDArray[np.float64]:
    """Milliseconds of ``GET /search?q=...`` against a uvicorn child serving ``folder``."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(folder), "--port", str(port),
                              "--dim", str(args.dim), "--data", args.data, "--seed", str(args.seed),
                              "--queries", str(args.queries)])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the bench server did not become ready")
                time.sleep(0.2)

            def call(i: int) -> None:
                response = client.get("/search", params={"q": f"q{i % args.queries}", "limit": 10})
                response.raise_for_status()

            return timed(call, n)
    finally:
        child.terminate()
        child.wait(timeout=30)


def demo_encoder_ms(n: int = 30) -> str:
    """p50/p99 of the demo encoder embedding one short text, or why it could not run."""
    try:
        from common.settings import EmbedSettings
        from embed import build_encoder

        encoder = build_encoder(EmbedSettings(), "demo")
        encoder.load()
    except Exception as e:
        return f"not measured ({type(e).__name__}: {e})"
    ms = timed(lambda i: encoder.embed_texts([f"white running shoes {i}"]), n)
    return f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms (one text, CPU)"


# -- main ----------------------------------------------------------------------------------------------

def sizes(text: str) -> list[int]:
    """``"10000,100000"`` as a list of ints (empty text: none)."""
    return sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes, default=sizes("10000,50000,100000"),
                        help="catalog sizes for the embedded store (default 10000,50000,100000)")
    parser.add_argument("--local-sizes", type=sizes, default=sizes("10000,50000"),
                        help="catalog sizes for qdrant-client local mode (default 10000,50000; '' for none)")
    parser.add_argument("--e2e-sizes", type=sizes, default=sizes("10000,100000"),
                        help="sizes (among --sizes) measured end to end (default 10000,100000)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end measurements")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per embedded measurement")
    parser.add_argument("--local-queries", type=int, default=30,
                        help="timed queries per local-mode measurement")
    parser.add_argument("--recall-queries", type=int, default=100, help="queries for recall@10")
    parser.add_argument("--ef", type=sizes, default=[], help="extra hnsw_ef values to sweep for recall")
    parser.add_argument("--dim", type=int, default=384, help="vector width (default 384, the demo encoder's)")
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered",
                        help="vector distribution (default clustered, like real embeddings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build the stores (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built stores")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


@dataclass
class Results:
    """Everything measured, as table rows."""

    rows: list[Row]
    builds: list[list[str]]
    recalls: list[list[str]]
    e2e: list[list[str]]


def latency(store: VectorStore, queries: NDArray[np.float32], *, what: str, size: int, n: int,
            warmup: int) -> list[Row]:
    """Rows of the store-level query, without and with the filter; and the same with ``score``."""
    rows = []
    for query, label in ((store_query, what), (store_query_scored, f"{what}, search + score()")):
        for flt in (None, FILTER):
            def call(i: int, flt: Filter | None = flt, query: Any = query) -> object:
                return query(store, queries[i % len(queries)], flt)
            rows.append(Row(label, size, flt is not None, timed(call, n, warmup)))
    return rows


def bench_edge(size: int, space: Space, queries: NDArray[np.float32], args: argparse.Namespace,
               out: Results) -> None:
    """Build an embedded store of ``size`` products and measure it."""
    base = StoreSettings()
    folder = args.workdir / f"edge-{args.data}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    store = EdgeStore(folder, settings=base)
    log(f"edge {size:,}: loading")
    seconds = load(store, space, size)
    log(f"edge {size:,}: optimize (HNSW build)")
    started = time.perf_counter()
    store.optimize(COLLECTION)
    built = time.perf_counter() - started
    out.builds.append(["edge", f"{size:,}", f"{seconds:.1f}", f"{size / seconds:,.0f}", f"{built:.1f}"])
    log(f"edge {size:,}: latency")
    out.rows += latency(store, queries, what=EDGE, size=size, n=args.queries, warmup=10)
    e2e = not args.no_e2e and size in args.e2e_sizes
    if e2e:
        log(f"edge {size:,}: end to end, in-process")
        ms = e2e_in_process(store, queries[:args.queries], args.queries)
        out.e2e.append(["SearchService.search (in-process)", f"{size:,}", *_pcts(ms)])
    store.close()
    for ef in [*sorted({base.hnsw_ef, *args.ef}), 0]:  # 0: exact search, for its latency
        log(f"edge {size:,}: recall at hnsw_ef={ef}" if ef else f"edge {size:,}: exact search latency")
        tuned = EdgeStore(folder, settings=base.model_copy(update={"hnsw_ef": ef or base.hnsw_ef}))
        rq = queries[:args.recall_queries]
        cells = ["exact"] * 4
        if ef:
            cells = [f"{recall(tuned, rq, flt, limit):.3f}"
                     for flt in (None, FILTER) for limit in (10, CANDIDATES)]

        def call(i: int, store: VectorStore = tuned, exact: bool = not ef) -> object:
            return store_query(store, queries[i % len(queries)], None, exact)
        ms = timed(call, min(args.queries, 100))
        out.recalls.append([f"{size:,}", str(ef or "exact"), *cells, f"{np.percentile(ms, 50):.2f}"])
        tuned.close()
    if e2e:
        log(f"edge {size:,}: end to end, HTTP")
        ms = e2e_http(folder, args, args.queries)
        out.e2e.append(["GET /search (HTTP, uvicorn child process)", f"{size:,}", *_pcts(ms)])
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


def bench_local(size: int, space: Space, queries: NDArray[np.float32], args: argparse.Namespace,
                out: Results) -> None:
    """Load qdrant-client local mode (in memory) with ``size`` products and measure it."""
    log(f"local {size:,}: loading")
    local = QdrantServerStore(":memory:", settings=StoreSettings())
    seconds = load(local, space, size)
    out.builds.append(["qdrant-client :memory:", f"{size:,}", f"{seconds:.1f}", f"{size / seconds:,.0f}",
                       "-"])
    log(f"local {size:,}: latency")
    out.rows += latency(local, queries, what=LOCAL, size=size, n=args.local_queries, warmup=2)
    local.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    args = parse_args(argv)
    if args.serve:
        args.store = args.serve
        serve(args)
        return 0
    temporary = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    space = Space(args.dim, args.data, args.seed)
    queries = space.queries(max(args.queries, args.recall_queries))
    base = StoreSettings()
    print(f"bench/query.py: dim {args.dim}, data {args.data}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; HNSW m={base.hnsw_m} ef_construct={base.hnsw_ef_construct} "
          f"ef={base.hnsw_ef}; filter = category c03 + in_stock + price <= 250")
    out = Results([], [], [], [])
    for size in args.sizes:
        bench_edge(size, space, queries, args, out)
    for size in args.local_sizes:
        bench_local(size, space, queries, args, out)
    report(out, args)
    if temporary and not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


def _pcts(ms: NDArray[np.float64]) -> list[str]:
    p50_, p99_ = np.percentile(ms, [50, 99])
    return [str(len(ms)), f"{p50_:.2f}", f"{p99_:.2f}"]


def report(out: Results, args: argparse.Namespace) -> None:
    """Print every table, the ratios and the targets."""
    rows, builds, recalls, e2e = out.rows, out.builds, out.recalls, out.e2e
    table("Loading (upsert in batches of 1000) and index build (optimize)",
          ["backend", "products", "upsert s", "products/s", "optimize s"], builds)
    table(f"Store-level query: top-{CANDIDATES} from image + top-{CANDIDATES} from text, vectors returned "
          "(ms per query)", ["backend", "products", "filter", "n", "p50", "p99", "qps"],
          [r.cells() for r in rows])
    ratios = []
    for size in sorted(set(args.sizes) & set(args.local_sizes)):
        for variant in ("", ", search + score()"):
            for filtered in (False, True):
                edge = p50(rows, f"{EDGE}{variant}", size, filtered)
                local = p50(rows, f"{LOCAL}{variant}", size, filtered)
                if edge and local:
                    target = "  (target >= 20x)" if size == 50_000 else ""
                    ratios.append([f"{size:,}", variant.strip(", ") or "searches with vectors",
                                   "yes" if filtered else "no", f"{local / edge:.0f}x{target}"])
    if ratios:
        table("Speed-up of the embedded store over qdrant-client local mode (p50 local / p50 edge)",
              ["products", "query", "filter", "speed-up"], ratios)
    for r in rows:
        if r.what.startswith(EDGE) and r.size == 100_000:
            p99_ = float(np.percentile(r.ms, 99))
            verdict = "meets" if p99_ < 30 else "MISSES"
            print(f"p99 at 100,000 in-process, {r.what}, filter {'yes' if r.filtered else 'no'}: "
                  f"{p99_:.2f} ms ({verdict} the 30 ms target)")
    if recalls:
        table("recall@10 of HNSW against exact search (image and text queries pooled)",
              ["products", "hnsw_ef", "limit 10", "top-100 -> 10", "filtered, limit 10", "filtered, top-100",
               "p50 ms (store query, no filter)"], recalls)
    if e2e:
        table("End to end, text query, top 10 after fusion (lookup encoder: no model time)",
              ["path", "products", "n", "p50 ms", "p99 ms"], e2e)
        print(f"\ndemo encoder, one text query: {demo_encoder_ms()}")


if __name__ == "__main__":
    sys.exit(main())
