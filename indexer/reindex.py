"""`reindex`: rebuild a catalog into a new version of its collection, check it, and swap it in atomically.

The steps, each visible through ``on_stage``:

1. **index**: the whole catalog goes into a new physical collection (`VectorStore.create_version`) that the
   alias does not point at, by `indexer.pipeline.index_catalog`; searches keep using the current version.
2. **canary** (`run_canary`) on the NEW version: its product count is at least ``min_ratio`` (90 %) of the
   current one's (unless ``allow_shrink``) and not zero; it was built by the current version's encoder (the
   running API queries it with that one; unless ``allow_encoder_change``); and each canary query finds its
   product in the top ``top_k`` (10). Queries come from a file, or are the titles of a few products of the
   new version that must find themselves. A query "finds" a product when the product is in the top ``top_k``
   of the dense text search or of the lexical (BM25) search, the two lists search fuses.
3. **switch**: only when every check passed, `VectorStore.switch_alias` points the alias at the new version in
   one atomic step (a Qdrant alias operation; the embedded store's aliases file), so a search sees either the
   old catalog or the new one, never an error.
4. **grace**: the old version stays for ``grace_s`` seconds (searches that resolved the alias just before the
   switch finish on it), then is dropped. If the process stops during the grace period, the next reindex of
   the alias drops the versions older than the current one before it starts (superseded versions).

When the canary fails, the alias is left untouched and the new version is dropped (``keep_failed`` keeps it for
inspection: its name is in the result; it is dropped as superseded by the first reindex after a newer
version was switched in, or at once by `VectorStore.drop_version`). When indexing fails, the new version is
dropped and the error raised.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidInput, NotFound, StoreLocked, VitrineError
from common.settings import Settings
from embed.protocol import Encoder
from indexer.pipeline import IndexSummary, index_catalog
from store.protocol import TEXT, CollectionInfo, VectorStore

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S = 300.0
"""Seconds the old version is kept after the switch (in-flight searches finish on it)."""
MAX_CANARY_QUERIES = 100


@dataclass(frozen=True)
class CanaryQuery:
    """A text query and the product it must find (None: it must find something)."""

    text: str
    expect: str | None = None


@dataclass(frozen=True)
class Canary:
    """What the new version must pass before the alias is switched to it."""

    queries: tuple[CanaryQuery, ...] = ()
    """Queries to run; none: the titles of ``sample`` products of the new version, each expecting itself."""
    sample: int = 5
    top_k: int = 10
    min_ratio: float = 0.9
    """Least product count of the new version, as a fraction of the current one's."""
    allow_shrink: bool = False
    """Skip the count check (a catalog that really lost many products)."""
    allow_encoder_change: bool = False
    """Accept a new version built by another encoder than the current one (the API must then be restarted)."""


@dataclass(frozen=True)
class CanaryCheck:
    """One check of the canary and what it found."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON-ready data."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class CanaryReport:
    """Every check the canary made on a version."""

    checks: tuple[CanaryCheck, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(check.passed for check in self.checks)

    def failures(self) -> list[CanaryCheck]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {"passed": self.passed, "checks": [check.as_dict() for check in self.checks]}

    def format(self) -> str:
        """One line per check: ``ok``/``FAILED``, its name and what it found."""
        return "\n".join(f"{'ok' if c.passed else 'FAILED':<6} {c.name}: {c.detail}" for c in self.checks)


@dataclass
class ReindexResult:
    """What a reindex did."""

    collection: str
    version: str
    """The new version (dropped again when the canary failed, unless kept)."""
    previous: str | None
    summary: IndexSummary
    canary: CanaryReport
    switched: bool
    dropped: list[str] = field(default_factory=list)
    """Versions removed: superseded ones found at the start, the old one after the grace period, or the new
    one when its canary failed."""
    kept_failed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {"collection": self.collection, "version": self.version, "previous": self.previous,
                "switched": self.switched, "dropped": list(self.dropped), "kept_failed": self.kept_failed,
                "canary": self.canary.as_dict(), "summary": self.summary.as_dict()}


def load_canary_queries(path: Path) -> tuple[CanaryQuery, ...]:
    """Canary queries from a file: one per line, either plain text (it must find something) or a JSON object
    ``{"query": "white sneakers", "expect": "sku-123"}`` (it must find that product); blank lines and ``#``
    comments are skipped.

    Raises:
        NotFound: no such file.
        InvalidInput: a malformed line, no query at all, or more than `MAX_CANARY_QUERIES`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise NotFound(f"canary queries file {str(path)!r} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"canary queries file {str(path)!r} cannot be read as UTF-8 text: {e}") from e
    queries: list[CanaryQuery] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{path}:{number}: not a JSON object ({e.msg}); expected "
                                   '{"query": "...", "expect": "product id"} or a plain text query') from e
            query, expect = data.get("query"), data.get("expect")
            if not isinstance(query, str) or not query.strip() or not (expect is None or isinstance(expect, str)):
                raise InvalidInput(f"{path}:{number}: {line[:80]!r} needs a non-empty string 'query' and an "
                                   "optional string 'expect' (a product id)")
            queries.append(CanaryQuery(query.strip(), expect))
        else:
            queries.append(CanaryQuery(line))
    if not queries:
        raise InvalidInput(f"canary queries file {str(path)!r} holds no query; expected one per line")
    if len(queries) > MAX_CANARY_QUERIES:
        raise InvalidInput(f"canary queries file {str(path)!r} holds {len(queries)} queries; at most "
                           f"{MAX_CANARY_QUERIES}")
    return tuple(queries)


def _sample_queries(store: VectorStore, physical: str, sample: int) -> list[CanaryQuery]:
    """The titles of the first ``sample`` products (in point id order: a pseudo-random sample) that have one."""
    queries: list[CanaryQuery] = []
    for point in store.scroll(physical, fields=["title"], batch=max(sample * 4, 16)):
        title = point.payload.get("title")
        if isinstance(title, str) and title.strip():
            queries.append(CanaryQuery(title.strip(), point.product_id))
            if len(queries) >= sample:
                break
    return queries


def run_canary(store: VectorStore, physical: str, *, current: CollectionInfo | None, encoder: Encoder,
               canary: Canary) -> CanaryReport:
    """Check the version ``physical`` before it is switched in (see the module's docstring).

    Args:
        store: the store holding it.
        physical: the new version.
        current: the version the alias points at now (None: the alias is new).
        encoder: the encoder that built the new version (loaded).
        canary: the checks' parameters.
    """
    checks: list[CanaryCheck] = []
    info = store.collection_info(physical)
    if current is None:
        checks.append(CanaryCheck("count", info.count > 0, f"{info.count} products (no current version)"))
    else:
        least = int(current.count * canary.min_ratio)
        ok = info.count > 0 and (canary.allow_shrink or info.count >= least)
        why = "shrinking allowed" if canary.allow_shrink else f"at least {least} = {canary.min_ratio:.0%} needed"
        checks.append(CanaryCheck("count", ok, f"{info.count} products, current version {current.count} ({why})"))
        same = (current.encoder, current.dim) == (info.encoder, info.dim)
        checks.append(CanaryCheck("encoder", same or canary.allow_encoder_change,
                                  f"{info.encoder} (dim {info.dim}); current version {current.encoder} (dim "
                                  f"{current.dim})" + ("" if same else "; a running API must be restarted")))
    queries = list(canary.queries) or _sample_queries(store, physical, canary.sample)
    if not queries:
        checks.append(CanaryCheck("queries", False, "no canary query: no file given and no product has a title"))
    for query in queries:
        checks.append(_query_check(store, physical, query, encoder=encoder, top_k=canary.top_k))
    return CanaryReport(tuple(checks))


def _query_check(store: VectorStore, physical: str, query: CanaryQuery, *, encoder: Encoder,
                 top_k: int) -> CanaryCheck:
    name = f"query {query.text[:60]!r}"
    try:
        vector = encoder.embed_texts([query.text])[0]
        dense = [p.product_id for p in store.search(physical, vector=vector, using=TEXT, limit=top_k)]
        words = [p.product_id for p in store.lexical_search(physical, text=query.text, limit=top_k)]
    except VitrineError as e:
        return CanaryCheck(name, False, f"failed: {e}")
    if query.expect is None:
        found = len(set(dense) | set(words))
        return CanaryCheck(name, found > 0, f"{found} products found" if found else "found nothing")
    for kind, ids in (("text vector", dense), ("words", words)):
        if query.expect in ids:
            return CanaryCheck(name, True, f"{query.expect!r} is #{ids.index(query.expect) + 1} by {kind}")
    return CanaryCheck(name, False, f"{query.expect!r} is not in the top {top_k} (text vector: {dense[:3]}..., "
                                    f"words: {words[:3]}...)")


def _current(store: VectorStore, alias: str) -> CollectionInfo | None:
    try:
        return store.collection_info(alias)
    except NotFound:
        return None


def drop_superseded(store: VectorStore, alias: str, current: str | None) -> list[str]:
    """Drop the versions of ``alias`` older than ``current`` (left by a reindex stopped in its grace period);
    one another process still holds open is skipped. Returns the names dropped."""
    dropped = []
    for version in store.list_versions(alias):
        if current is None or version >= current:
            continue
        try:
            store.drop_version(version)
        except (StoreLocked, InvalidInput) as e:
            logger.warning("superseded version %s of %r not dropped: %s", version, alias, e)
            continue
        logger.info("dropped superseded version %s of %r", version, alias)
        dropped.append(version)
    return dropped


def reindex(
    catalog: Path,
    *,
    settings: Settings,
    encoder: Encoder,
    store: VectorStore,
    collection: str | None = None,
    canary: Canary | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    keep_failed: bool = False,
    progress: bool = True,
    on_stage: Callable[[str, dict[str, Any]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReindexResult:
    """Rebuild ``catalog`` into a new version of ``collection``, check it, switch the alias, drop the old one.

    Args:
        catalog: the catalog file (as `index_catalog` reads it).
        settings: as for `index_catalog`.
        encoder: the model the new version is built with.
        store: where the versions live (the running API's own store handle, when the server does the work).
        collection: the alias (default ``settings.store.collection``).
        canary: the checks (default `Canary()`).
        grace_s: seconds to keep the old version after the switch before dropping it (negative: keep it).
        keep_failed: keep a new version that failed its canary, for inspection (default: drop it).
        progress: show the indexing progress bar.
        on_stage: told each stage as it starts: ``("index", {"version": ...})``, ``("canary", ...)``,
            ``("switched", ...)``, ``("grace", ...)``, ``("done", ...)``.
        sleep: waits the grace period (tests pass a fake).

    Returns:
        The result; ``switched`` is false when the canary failed (``canary`` says why).

    Raises:
        VitrineError: indexing failed (the new version is dropped; the alias is untouched), or as
            `index_catalog`.
    """
    alias = collection or settings.store.collection
    canary = canary or Canary()
    tell = on_stage or (lambda stage, data: None)
    encoder.load()
    current = _current(store, alias)
    dropped = drop_superseded(store, alias, current.physical if current is not None else None)
    version = store.create_version(alias, encoder=encoder.name, dim=encoder.dim, weights=encoder.weights_id)
    logger.info("reindexing %s into %s (a new version of %r, now %s)", catalog, version, alias,
                current.physical if current is not None else "absent")
    tell("index", {"version": version, "previous": current.physical if current is not None else None})
    try:
        summary = index_catalog(catalog, settings=settings, encoder=encoder, store=store, collection=version,
                                progress=progress)
        tell("canary", {"summary": summary.as_dict()})
        report = run_canary(store, version, current=current, encoder=encoder, canary=canary)
    except BaseException:
        _drop_quietly(store, version)
        raise
    result = ReindexResult(collection=alias, version=version, previous=None, summary=summary, canary=report,
                           switched=False, dropped=dropped)
    if not report.passed:
        logger.error("canary of %s failed; %r still points at %s:\n%s", version, alias,
                     current.physical if current is not None else "nothing", report.format())
        if keep_failed:
            result.kept_failed = True
        elif _drop_quietly(store, version):
            result.dropped.append(version)
        return result
    result.previous = store.switch_alias(alias, version)
    result.switched = True
    tell("switched", {"version": version, "previous": result.previous, "canary": report.as_dict()})
    if result.previous is not None and grace_s >= 0:
        tell("grace", {"seconds": grace_s})
        sleep(grace_s)
        if _drop_quietly(store, result.previous):
            result.dropped.append(result.previous)
    tell("done", {"dropped": list(result.dropped)})
    return result


def _drop_quietly(store: VectorStore, version: str) -> bool:
    """Drop a version; log (not raise) why not. Whether it was dropped."""
    try:
        store.drop_version(version)
    except VitrineError as e:
        logger.warning("version %s was not dropped: %s; drop it later", version, e)
        return False
    return True


__all__ = ["Canary", "CanaryCheck", "CanaryQuery", "CanaryReport", "ReindexResult", "drop_superseded",
           "load_canary_queries", "reindex", "run_canary"]
