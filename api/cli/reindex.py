"""``vitrine reindex``: rebuild the collection into a new version and swap it in without downtime.

In-process (`indexer.reindex.reindex`) against a Qdrant server, or against the embedded store when no other
process holds it. When a running ``vitrine serve`` holds the embedded store (`common.errors.StoreLocked`), or
when ``--server`` is given, the command asks that server to do it (``POST /admin/reindex``, `api.routes.admin`)
and follows the job until the alias is switched or the canary fails.

Exit status: 0 when the alias was switched, 1 when the canary failed (the alias is untouched; the report is
printed) or the job failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from api.auth import API_KEY_HEADER, read_key_file
from api.wiring import explicit_model
from common.errors import BackendUnavailable, InvalidInput, NotFound, StoreLocked
from common.settings import Settings
from embed import build_encoder
from indexer.reindex import DEFAULT_GRACE_S, Canary, CanaryQuery, load_canary_queries, reindex
from store.factory import open_store

POLL_S = 0.5
FINISHED = ("switched", "done", "failed", "canary_failed")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``reindex`` subcommand."""
    parser = subparsers.add_parser(
        "reindex", help="rebuild the collection into a new version and switch to it without downtime",
        description="Index the whole catalog into a new version of the collection while searches go on "
                    "against the current one; check it (product count not below 90% of the current one, the "
                    "same encoder, canary queries finding their products in the top 10); only then switch the "
                    "collection's alias to it atomically, and drop the old version after a grace period. With "
                    "the embedded store held by a running `vitrine serve`, the server does it (POST "
                    "/admin/reindex; the catalog must be inside setting indexer.catalog_roots). Exit status 1 "
                    "when the canary fails (the collection is left as it was).",
    )
    parser.add_argument("catalog", type=Path, metavar="CATALOG", help="catalog file (as for `vitrine index`)")
    parser.add_argument("--collection", help="collection (alias) to rebuild (default: settings store.collection)")
    parser.add_argument("--model", help="encoder (default: the collection's)")
    parser.add_argument("--canary-queries", type=Path, metavar="FILE",
                        help="canary queries, one per line: plain text (must find something) or "
                             '{"query": "...", "expect": "PRODUCT_ID"} (must find it in the top 10); default: '
                             "the titles of 5 products of the new version must find themselves")
    parser.add_argument("--grace-s", type=float, default=DEFAULT_GRACE_S, metavar="N",
                        help=f"seconds to keep the old version after the switch (default {DEFAULT_GRACE_S:g})")
    parser.add_argument("--allow-shrink", action="store_true",
                        help="accept a new version with fewer than 90%% of the current version's products")
    parser.add_argument("--keep-failed", action="store_true",
                        help="keep a new version that fails its canary, for inspection (default: drop it)")
    parser.add_argument("--server", metavar="URL",
                        help="ask this running `vitrine serve` to do it (default: only when the embedded store "
                             "is held by a server, which is then reached at settings api.host and api.port)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="API key for the server (default: the first of settings auth.api_keys / "
                             "auth.api_keys_file, if any)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Reindex in-process, or through the server; print the result; 0 when switched."""
    if args.grace_s < 0:
        raise InvalidInput(f"--grace-s {args.grace_s!r} is negative; expected seconds >= 0")
    queries = load_canary_queries(args.canary_queries) if args.canary_queries is not None else ()
    if args.server:
        return through_server(args, settings, args.server, queries)
    alias = args.collection or settings.store.collection
    store = open_store(settings)
    try:
        try:
            current = store.collection_info(alias)
        except NotFound:
            current = None
        except StoreLocked:
            store.close()
            host = settings.api.host if settings.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
            url = f"http://{host if ':' not in host else f'[{host}]'}:{settings.api.port}"
            print(f"vitrine: the store is held by a running server; asking it at {url} to re-index",
                  file=sys.stderr)
            return through_server(args, settings, url, queries)
        model = explicit_model(settings, args.model) or (current.encoder if current is not None else None)
        encoder = build_encoder(settings.embed, model)
        canary = Canary(queries=queries, allow_shrink=args.allow_shrink)
        result = reindex(args.catalog, settings=settings, encoder=encoder, store=store, collection=alias,
                         canary=canary, grace_s=args.grace_s, keep_failed=args.keep_failed, progress=args.progress,
                         on_stage=_announce)
    finally:
        store.close()
    return _finish(result.as_dict(), switched=result.switched, as_json=args.json)


def _announce(stage: str, data: dict[str, Any]) -> None:
    if stage == "grace":
        print(f"switched; keeping the old version {data['seconds']:g} s before dropping it", file=sys.stderr)


def _api_key(args: argparse.Namespace, settings: Settings) -> str | None:
    if args.api_key:
        return str(args.api_key)
    if settings.auth.api_keys:
        return settings.auth.api_keys[0].get_secret_value()
    if settings.auth.api_keys_file is not None:
        return read_key_file(settings.auth.api_keys_file)[0]
    return None


def through_server(args: argparse.Namespace, settings: Settings, url: str, queries: tuple[CanaryQuery, ...]) -> int:
    """Start the job on the server and follow it until the alias is switched or it fails.

    Raises:
        BackendUnavailable: the server cannot be reached.
        InvalidInput: the server refused the request (the message is the server's).
    """
    body = {"catalog": str(args.catalog.resolve()), "grace_s": args.grace_s, "allow_shrink": args.allow_shrink,
            "keep_failed": args.keep_failed, "canary_queries": [{"query": q.text, "expect": q.expect}
                                                                for q in queries]}
    if args.collection:
        body["collection"] = args.collection
    if args.model:
        print(f"vitrine: --model {args.model!r} is ignored: the server re-indexes with the encoder it serves",
              file=sys.stderr)
    key = _api_key(args, settings)
    headers = {API_KEY_HEADER: key} if key else {}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0) as client:
            response = client.post("/admin/reindex", json=body)
            _raise_for(response, url)
            job: dict[str, Any] = response.json()
            stage = ""
            while job["state"] not in FINISHED:
                if job["stage"] != stage and args.progress:
                    stage = job["stage"]
                    print(f"server: {stage} {job.get('version') or ''}".rstrip(), file=sys.stderr)
                time.sleep(POLL_S)
                response = client.get(f"/admin/reindex/{job['id']}")
                _raise_for(response, url)
                job = response.json()
    except httpx.HTTPError as e:
        raise BackendUnavailable(f"cannot reach the server at {url} to re-index: {e}; is `vitrine serve` running "
                                 "there? (--server URL)") from e
    if job["state"] == "failed":
        print(f"vitrine: the re-index job failed on the server: {job['error']}", file=sys.stderr)
        return 1
    if job["state"] == "switched":  # the server drops the old version after the grace period
        result = {"collection": job["collection"], "version": job["version"], "previous": job["previous"],
                  "switched": True, "dropped": [], "job": job["id"],
                  "note": f"the server drops the old version after {args.grace_s:g} s"}
        return _finish(result, switched=True, as_json=args.json)
    result = dict(job["result"] or {})
    return _finish(result, switched=bool(result.get("switched")), as_json=args.json)


def _raise_for(response: httpx.Response, url: str) -> None:
    if response.status_code < 400:
        return
    try:
        message = str(response.json().get("message") or response.text)
    except ValueError:
        message = response.text
    text = f"the server at {url} answered {response.status_code}: {message[:500]}"
    if response.status_code in (401, 404, 409, 422, 429):
        raise InvalidInput(text)
    raise BackendUnavailable(text)


def _finish(result: dict[str, Any], *, switched: bool, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    if not switched:
        print(f"vitrine: the canary failed; collection {result.get('collection')!r} still points at "
              f"{result.get('previous') or 'its current version'}", file=sys.stderr)
        return 1
    return 0


def format_result(result: dict[str, Any]) -> str:
    """A reindex result (`indexer.reindex.ReindexResult.as_dict`, or the server's job) as lines."""
    summary = result.get("summary") or {}
    rows = [("collection", result.get("collection")), ("version", result.get("version")),
            ("previous", result.get("previous") or "-"),
            ("switched", "yes" if result.get("switched") else "NO (canary failed)"),
            ("dropped", ", ".join(result.get("dropped") or []) or "-")]
    if summary:
        rows.append(("rows", f"{summary.get('rows')} ({summary.get('indexed')} indexed, "
                             f"{summary.get('rejected')} rejected)"))
    if result.get("note"):
        rows.append(("note", result["note"]))
    lines = [f"{key:<10}  {value}" for key, value in rows]
    for check in (result.get("canary") or {}).get("checks", []):
        lines.append(f"canary {'ok' if check['passed'] else 'FAILED'}: {check['name']}: {check['detail']}")
    return "\n".join(lines)
