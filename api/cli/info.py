"""``vitrine info``: what is indexed, with which encoder, where, and how the last index job went."""

from __future__ import annotations

import argparse
import json
from typing import Any

from api.wiring import open_collection, store_location
from common.settings import Settings
from indexer.report import last_job
from store.factory import open_store

_COUNTS = ("rows", "indexed", "updated", "unchanged", "rejected", "pruned")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser("info", help="describe the index",
                                   description="Describe the collection: product count, encoder, dim, store "
                                               "and the last index job.")
    parser.add_argument("--collection", help="collection to describe (default: settings store.collection)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def describe(settings: Settings, collection: str | None = None) -> dict[str, Any]:
    """Everything ``vitrine info`` shows, as JSON-ready data.

    ``last_job`` is the indexer's record of the newest index job (any collection), or None.

    Raises:
        NotFound: the collection does not exist (the message says to run ``vitrine index``).
        StoreLocked: the embedded store is held by another process.
    """
    store = open_store(settings)
    try:
        info = open_collection(store, settings, collection)
        collections = store.list_collections()
    finally:
        store.close()
    return {
        "collection": info.name,
        "physical": info.physical,
        "count": info.count,
        "model": info.encoder,
        "weights": info.weights or None,
        "dim": info.dim,
        "store": store_location(settings),
        "collections": sorted(collections),
        "last_job": last_job(settings.jobs_dir),
    }


def _job_line(job: dict[str, Any]) -> str:
    counts = ", ".join(f"{job[key]} {key}" for key in _COUNTS if key in job)
    seconds = job.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    when = job.get("written") or job.get("started") or "?"
    what = f"{job.get('status', '?')} at {when}, collection {job.get('collection', '?')!r}"
    return f"{what}: {counts}{took}" if counts else what


def format_info(data: dict[str, Any]) -> str:
    """The description as aligned ``key  value`` lines."""
    rows = [
        ("collection", f"{data['collection']} (physical {data['physical']})"),
        ("products", str(data["count"])),
        ("model", data["model"]),
        ("weights", data["weights"] or "pinned by the model's name"),
        ("dim", str(data["dim"])),
        ("store", f"{data['store']['backend']} at {data['store']['location']}"),
        ("collections", ", ".join(data["collections"])),
        ("last index", _job_line(data["last_job"]) if data["last_job"] else "no index job recorded"),
    ]
    return "\n".join(f"{key:<12} {value}" for key, value in rows)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the description."""
    data = describe(settings, args.collection)
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0
