"""``vitrine enrich``: describe thin products with the re-rank model and store the descriptions (`api.enrich`).

Exit status 0 when every product it tried was enriched (or there was nothing to do), 1 when some failed or the
job stopped early (re-run it: it resumes), 2 for bad usage or settings (no re-rank backend configured).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.enrich import EnrichSummary, ProductImages, enrich_catalog
from api.wiring import collection_encoder, open_collection
from common.settings import Settings
from rerank.registry import build_describer
from store.factory import open_store

EXIT_FAILURE = 1
EXIT_USAGE = 2
SHOWN_FAILURES = 10


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``enrich`` subcommand."""
    parser = subparsers.add_parser(
        "enrich", help="describe thin products with the re-rank model",
        description="Ask the re-rank model (VITRINE_RERANK__BACKEND, __MODEL) for a short factual description "
                    "and attributes of every product with an image whose description is missing or shorter "
                    "than --min-chars; store them in the payload field 'generated' (catalog fields are never "
                    "changed) and embed the product's text again with them. Products already enriched by the "
                    "same model are skipped, so an interrupted run resumes. Exit status 1 when some products "
                    "failed.",
    )
    parser.add_argument("--min-chars", type=int, metavar="N",
                        help="a description shorter than N characters is thin (default: settings "
                             "rerank.enrich_min_chars, 40)")
    parser.add_argument("--limit", type=int, metavar="N", help="enrich at most N products in this run")
    parser.add_argument("--dry-run", action="store_true", help="list the products that would be enriched")
    parser.add_argument("--category", help="only products of this category")
    parser.add_argument("--brand", help="only products of this brand")
    parser.add_argument("--id", action="append", dest="ids", metavar="PRODUCT_ID",
                        help="only this product (repeatable)")
    parser.add_argument("--images-from", type=Path, metavar="DIR",
                        help="folder relative image paths start from, when a product has no stored preview "
                             "(default: the current folder; use the catalog's folder)")
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="products described at once (default: settings rerank.max_concurrency for the "
                             "openai backend, 1 for transformers)")
    parser.add_argument("--collection", help="collection (default: settings store.collection)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def format_summary(summary: EnrichSummary, collection: str) -> str:
    """The summary as a small table, then the first failures and why the job stopped (if it did)."""
    rows = [
        ("collection", collection),
        ("model", summary.model),
        ("products", str(summary.products)),
        ("thin", str(summary.thin)),
        ("enriched", str(summary.enriched)),
        ("skipped", f"{summary.skipped} (already enriched by this model)"),
        ("failed", str(summary.failed)),
        ("remaining", str(summary.remaining)),
        ("seconds", f"{summary.seconds:.1f}"),
        ("rate", f"{summary.rate:.2f} products/s"),
    ]
    if summary.no_image:
        rows.insert(4, ("no image", f"{summary.no_image} (thin, not enriched)"))
    if summary.conflicts:
        rows.insert(4, ("conflicts", f"{summary.conflicts} (the catalog has a 'generated' field)"))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    for pid, reason in summary.failures[:SHOWN_FAILURES]:
        lines.append(f"failed: {pid}: {reason}")
    if len(summary.failures) > SHOWN_FAILURES:
        lines.append(f"... and {summary.failed - SHOWN_FAILURES} more failures (--json lists them)")
    if summary.stopped:
        lines.append(f"stopped: {summary.stopped}")
    return "\n".join(lines)


def format_plan(summary: EnrichSummary, collection: str) -> str:
    """A dry run: the ids that would be enriched, then one line of counts."""
    lines = list(summary.planned)
    lines.append(f"{len(summary.planned)} product(s) of {collection!r} would be enriched by {summary.model!r} "
                 f"({summary.products} looked at, {summary.thin} thin with an image, {summary.skipped} already "
                 f"enriched by this model, {summary.no_image} thin without an image)")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Enrich the collection's thin products; print the summary; 0, or 1 when some failed."""
    for name in ("min_chars", "limit", "concurrency"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "concurrency" else 0):
            print(f"vitrine enrich: --{name.replace('_', '-')} must be at least "
                  f"{1 if name == 'concurrency' else 0}, got {value}", file=sys.stderr)
            return EXIT_USAGE
    describer = build_describer(settings.rerank)
    if describer is None:
        print("vitrine enrich: no model to describe products with; set VITRINE_RERANK__BACKEND (transformers or "
              "openai) and VITRINE_RERANK__MODEL (docs/rerank.md)", file=sys.stderr)
        return EXIT_USAGE
    concurrency = args.concurrency or (settings.rerank.max_concurrency if settings.rerank.backend == "openai" else 1)
    min_chars = settings.rerank.enrich_min_chars if args.min_chars is None else args.min_chars
    where = {name: getattr(args, name) for name in ("category", "brand") if getattr(args, name) is not None}
    store = open_store(settings)
    images: ProductImages | None = None
    try:
        info = open_collection(store, settings, args.collection)
        encoder = None
        if not args.dry_run:
            encoder = collection_encoder(info, settings)
            encoder.load()
            images = ProductImages(settings, base_dir=args.images_from)
        summary = enrich_catalog(store, info.name, describer=describer, encoder=encoder, images=images,
                                 min_chars=min_chars, limit=args.limit, where=where, product_ids=args.ids,
                                 dry_run=args.dry_run, concurrency=concurrency, progress=args.progress)
    finally:
        if images is not None:
            images.close()
        store.close()
    if args.json:
        print(json.dumps({"collection": info.name, **summary.as_dict()}, indent=2, ensure_ascii=False))
    elif args.dry_run:
        print(format_plan(summary, info.name))
    else:
        print(format_summary(summary, info.name))
    return EXIT_FAILURE if summary.failed or summary.stopped else 0
