"""``vitrine index``: index a catalog file (JSON Lines, CSV or Parquet) into the store.

A thin wrapper over `indexer.pipeline.index_catalog`; exit status 0 when every row was indexed, updated or
unchanged, 3 when some rows were rejected (they are in the report), 1 or 2 for a fatal error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import InvalidInput
from common.settings import Settings
from embed import build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from indexer.ray_engine import ENGINES, index_catalog_ray
from store.factory import open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``index`` subcommand."""
    parser = subparsers.add_parser(
        "index", help="index a catalog (JSONL, CSV or Parquet)",
        description="Index a catalog into the collection: embeds each product's image and text, skips "
                    "products whose text and image are unchanged since the last run, and reports rejected "
                    "rows (one JSON object per line: line, id, reason). Exit status 3 when some rows were "
                    "rejected. Safe to interrupt and re-run.",
    )
    parser.add_argument("catalog", type=Path, metavar="CATALOG",
                        help="catalog file: .jsonl/.ndjson, .csv/.tsv (optionally .gz) or .parquet")
    parser.add_argument("--model", help="encoder name (default: settings embed.model)")
    parser.add_argument("--collection", help="collection to write (default: settings store.collection)")
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="where to write rejected rows (default: a file in VITRINE_HOME/jobs)")
    parser.add_argument("--vocabulary", type=Path, metavar="FILE",
                        help="tag products with the attributes of this vocabulary file (TOML or JSON; see "
                             "docs/tags.md) (default: settings tags.vocabulary; 'none': no tagging)")
    parser.add_argument("--prune", action="store_true",
                        help="delete products of the collection that are no longer in the catalog")
    parser.add_argument("--engine", choices=ENGINES, default="in-process",
                        help="in-process (default): this machine's cores and GPU, incremental; ray: Ray Data "
                             "across a Ray cluster, every row embedded again (needs pip install 'vitrine[ray]'; "
                             "see docs/deployment.md)")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="with --engine ray: the cluster, auto (the running one) or ray://HOST:10001 "
                             "(default: settings ray.address; unset: a local cluster for the job)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def format_stages(summary: IndexSummary) -> list[str]:
    """The per-stage timings (stages that handled something), one line each; ``workers`` stages are summed
    over the worker processes."""
    busy = {name: stage for name, stage in summary.stages.items() if stage.get("count")}
    if not busy:
        return []
    lines = ["stages (seconds, rate; workers: summed over the worker processes):"]
    for name, stage in busy.items():
        where = " (workers)" if stage.get("where") == "workers" else ""
        lines.append(f"  {name:<18}{stage['seconds']:8.2f} s {stage['per_s']:10.1f} {stage['unit']}/s{where}")
    return lines


def format_summary(summary: IndexSummary) -> str:
    """The summary as a small table."""
    rows = [
        ("collection", summary.collection),
        ("rows", str(summary.rows)),
        ("indexed", str(summary.indexed)),
        ("updated", str(summary.updated)),
        ("unchanged", str(summary.unchanged)),
        ("rejected", str(summary.rejected)),
        ("pruned", str(summary.pruned)),
        ("thumbnails", str(summary.thumbnails) + (f" ({summary.thumbnail_failures} failed)"
                                                  if summary.thumbnail_failures else "")),
        ("seconds", f"{summary.seconds:.1f}"),
        ("rate", f"{summary.rate:.1f} rows/s"),
    ]
    if summary.report is not None:
        rows.append(("report", str(summary.report)))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines += [f"note: {note}" for note in summary.notes]
    lines += format_stages(summary)
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Index ``args.catalog``; print the summary; return its exit code."""
    if args.vocabulary is not None:
        vocabulary = None if str(args.vocabulary).lower() == "none" else args.vocabulary
        settings = settings.model_copy(update={"tags": settings.tags.model_copy(update={"vocabulary": vocabulary})})
    if args.engine == "ray":
        summary = index_catalog_ray(args.catalog, settings, address=args.address, model=args.model,
                                    collection=args.collection, report=args.report, prune=args.prune,
                                    progress=args.progress)
    else:
        if args.address is not None:
            raise InvalidInput(f"--address {args.address!r} is for --engine ray; expected no --address with "
                               "--engine in-process")
        encoder = build_encoder(settings.embed, args.model)
        store = open_store(settings)
        try:
            summary = index_catalog(args.catalog, settings=settings, encoder=encoder, store=store,
                                    collection=args.collection, report=args.report, prune=args.prune,
                                    progress=args.progress)
        finally:
            store.close()
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(format_summary(summary))
        if summary.rejected:
            print(f"{summary.rejected} row(s) rejected: see {summary.report}", file=sys.stderr)
    return summary.exit_code
