"""``vitrine dedup``: find near-duplicate products (the same or nearly the same image under different ids)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.wiring import open_collection
from common.settings import Settings
from search.neighbours import INDEX_KINDS, DedupSummary, find_duplicates
from store.factory import open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dedup`` subcommand."""
    parser = subparsers.add_parser(
        "dedup", help="find near-duplicate products by image",
        description="Compare every product's image vector with every other (faiss; on a GPU when "
                    "VITRINE_EMBED__DEVICE is cuda and faiss-gpu is installed), join the pairs at cosine >= "
                    "THRESHOLD into clusters, and write one cluster per line as JSON: "
                    '{"cluster": 1, "size": 3, "product_ids": [...], "min_similarity": 0.98}, largest first.',
    )
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="JSONL file to write the clusters to (default: print them on stdout)")
    parser.add_argument("--threshold", type=float, metavar="COSINE",
                        help="image cosine similarity at or above which two products are near-duplicates "
                             "(default: settings search.dedup_threshold, 0.97)")
    parser.add_argument("--index", choices=INDEX_KINDS, default="flat",
                        help="faiss index: flat (exact, default), ivf or hnsw (approximate, for large catalogs)")
    parser.add_argument("--collection", help="collection to scan (default: settings store.collection)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(func=run)


def format_summary(summary: DedupSummary, collection: str) -> str:
    """One line: what was compared, what was found, where it went, how long it took."""
    where = f"; report: {summary.report}" if summary.report else ""
    return (f"{summary.clusters} cluster(s) of near-duplicates holding {summary.duplicates} products "
            f"({summary.pairs} pairs at cosine >= {summary.threshold:g}) among {summary.products} products of "
            f"{collection!r} ({summary.skipped} without an image vector) in {summary.seconds:.1f} s{where}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Find the clusters, write or print them, and print the summary."""
    threshold = settings.search.dedup_threshold if args.threshold is None else args.threshold
    store = open_store(settings)
    try:
        info = open_collection(store, settings, args.collection)
        clusters, summary = find_duplicates(store, info.name, report=args.report, threshold=threshold,
                                            kind=args.index, device=settings.embed.device,
                                            progress=args.progress)
    finally:
        store.close()
    if args.report is None:
        for cluster in clusters:
            print(json.dumps(cluster, ensure_ascii=False))
        print(format_summary(summary, info.name), file=sys.stderr)
    else:
        print(format_summary(summary, info.name))
    return 0
