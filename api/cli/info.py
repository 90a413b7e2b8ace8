"""``vitrine info``: what is indexed, with which encoder, where, how the last index job went, and the essentials
of the server's set-up that a scrape of ``/metrics`` would not show: auth, limits, log format."""

from __future__ import annotations

import argparse
import json
from typing import Any

from api.wiring import open_collection, store_location
from common.errors import ConfigError
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
        "quantization": str(info.quantization),
        "store": store_location(settings),
        "collections": sorted(collections),
        "last_job": last_job(settings.jobs_dir),
        "auth": auth_summary(settings),
        "limits": limits_of(settings),
        "log_format": settings.log_format,
        "metrics_path": _metrics_path(),
    }


def _metrics_path() -> str:
    from api.routes.metrics import METRICS_PATH  # here: FastAPI is imported only by the commands that need it

    return METRICS_PATH


def auth_summary(settings: Settings) -> dict[str, Any]:
    """Whether auth is on, how many keys (never a key) and which endpoints answer without one.

    ``error`` says why the keys cannot be read (the server would refuse to start); auth then shows as on.
    """
    from api.auth import KeyRing  # here: FastAPI is imported only by the commands that need it

    auth = settings.auth
    try:
        keys, error = len(KeyRing.from_settings(auth)), None
    except ConfigError as e:  # the message names the setting and the file, never a key
        keys, error = None, str(e)
    on = error is not None or bool(keys)
    return {"enabled": on, "keys": keys, **({"error": error} if error else {}),
            "public_search": auth.public_search, "public_rerank": auth.public_rerank,
            "public_metrics": auth.public_metrics, "cors_origins": list(auth.cors_origins)}


def limits_of(settings: Settings) -> dict[str, int]:
    """The request and work limits, by their settings' names."""
    return {
        "api.max_upload_bytes": settings.api.max_upload_bytes,
        "api.max_body_bytes": settings.api.max_body_bytes,
        "api.max_json_depth": settings.api.max_json_depth,
        "search.max_limit": settings.search.max_limit,
        "search.max_offset": settings.search.max_offset,
        "indexer.max_image_pixels": settings.indexer.max_image_pixels,
        "generate.max_concurrency": settings.generate.max_concurrency,
    }


def _auth_line(auth: dict[str, Any]) -> str:
    if "error" in auth:
        return f"keys unreadable: {auth['error']}"
    if not auth["enabled"]:
        return "off (no API keys set)"
    public = [name for name in ("search", "rerank", "metrics") if auth[f"public_{name}"]]
    return f"on, {auth['keys']} key(s); without a key: {', '.join(public) or 'health only'}"


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
        ("quantization", data.get("quantization") or "unknown"),
        ("store", f"{data['store']['backend']} at {data['store']['location']}"),
        ("collections", ", ".join(data["collections"])),
        ("last index", _job_line(data["last_job"]) if data["last_job"] else "no index job recorded"),
        ("auth", _auth_line(data["auth"])),
        ("cors", ", ".join(data["auth"]["cors_origins"]) or "same origin only"),
        ("limits", ", ".join(f"{key} {value}" for key, value in data["limits"].items())),
        ("logs", f"{data['log_format']} (settings log_format)"),
        ("metrics", f"GET {data['metrics_path']}" + ("" if data["auth"]["public_metrics"] or not
                                                     data["auth"]["enabled"] else " (with an API key)")),
    ]
    return "\n".join(f"{key:<12} {value}" for key, value in rows)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the description."""
    data = describe(settings, args.collection)
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0
