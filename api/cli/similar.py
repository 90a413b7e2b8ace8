"""``vitrine similar``: precompute every product's nearest neighbours (``--all``), or show one product's."""

from __future__ import annotations

import argparse
import json
import sys

from api.wiring import open_collection
from common.settings import Settings
from search.neighbours import INDEX_KINDS, SimilarSummary, live_similar, precompute_similar, similar_of
from store.factory import open_store
from store.protocol import VectorStore

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``similar`` subcommand."""
    parser = subparsers.add_parser(
        "similar", help="precompute or show similar products",
        description="--all: find every product's K nearest products by image (faiss; on a GPU when "
                    "VITRINE_EMBED__DEVICE is cuda and faiss-gpu is installed) and store them with the product, "
                    "so more-like-this is one lookup. PRODUCT_ID: show that product's similar products "
                    "(precomputed ones when there are, otherwise searched now).",
    )
    parser.add_argument("product_id", nargs="?", metavar="PRODUCT_ID", help="the product to show neighbours of")
    parser.add_argument("--all", action="store_true", help="precompute the neighbours of every product")
    parser.add_argument("--k", type=int, help="neighbours per product (default: settings search.similar_k, 20)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="flat",
                        help="faiss index for --all: flat (exact, default), ivf or hnsw (approximate)")
    parser.add_argument("--collection", help="collection (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="PRODUCT_ID: print JSON")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def format_summary(summary: SimilarSummary, collection: str) -> str:
    """One line: how many products got neighbours, how long each step took."""
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.timings.items())
    return (f"top-{summary.k} similar products stored for {summary.products} products of {collection!r} "
            f"({summary.skipped} without an image vector, {summary.vanished} deleted meanwhile) in "
            f"{summary.seconds:.1f} s ({summary.rate:.0f} products/s; {steps})")


def _show(store: VectorStore, collection: str, product_id: str, k: int, as_json: bool) -> None:
    precomputed = similar_of(store, collection, product_id, limit=k)
    source = "precomputed"
    if precomputed is None:
        neighbours, source = live_similar(store, collection, product_id, k=k), "searched now"
    else:
        neighbours = precomputed
    found = {p.product_id: p.payload for p in store.retrieve(collection, [pid for pid, _ in neighbours])}
    neighbours = [(pid, score) for pid, score in neighbours if pid in found]  # deleted since: left out
    if as_json:
        print(json.dumps({"id": product_id, "source": source, "similar": [
            {"id": pid, "score": score, "title": found[pid].get("title")} for pid, score in neighbours]},
            indent=2, ensure_ascii=False))
        return
    if not neighbours:
        print(f"no similar products of {product_id!r} ({source})")
        return
    lines = [f"{'#':>3}  {'score':>7}  {'id':<20}  title"]
    for rank, (pid, score) in enumerate(neighbours, start=1):
        title = found[pid].get("title")
        lines.append(f"{rank:>3}  {score:>7.4f}  {pid:<20}  {'' if title is None else title}")
    lines.append(f"{len(neighbours)} similar product(s) of {product_id!r} ({source})")
    print("\n".join(lines))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Precompute every product's neighbours (``--all``) or show one product's; exit 2 for bad usage."""
    if args.all == (args.product_id is not None):
        print("vitrine similar: give either --all or one PRODUCT_ID", file=sys.stderr)
        return EXIT_USAGE
    k = settings.search.similar_k if args.k is None else args.k
    store = open_store(settings)
    try:
        info = open_collection(store, settings, args.collection)
        if args.product_id is not None:
            _show(store, info.name, args.product_id, k, args.json)
            return 0
        summary = precompute_similar(store, info.name, k=k, kind=args.index, device=settings.embed.device,
                                     progress=args.progress)
    finally:
        store.close()
    print(format_summary(summary, info.name))
    return 0
