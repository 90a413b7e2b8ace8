"""`index_catalog`: index a catalog file into a collection, incrementally, resumably, with a report.

The job runs the stages of `indexer.stages` with a window of batches in flight: while the model embeds
batch *i* in this process, worker processes fetch, decode and preprocess the images of batches *i+1* and
*i+2*. Per-batch read/image-wait/inference/write times are logged at DEBUG; their totals are in the summary,
and so are seconds, counts and rates of each finer stage (``IndexSummary.stages``).

Where JPEGs are decoded (``settings.indexer.decode``, `indexer.gpu_decode.choose_decode`): by Pillow in the
workers (``cpu``; reduced-size ``Image.draft`` decoding when the model input is small), or, with an encoder
on a GPU (``auto``) or when asked (``gpu``), in one batch per job batch on the encoder's device: the workers
then only fetch, hash and check headers.

Crash safety (``kill -9`` at any moment, then the same command again):

* a product is written by one idempotent upsert (point id = UUID5 of the product id) that carries its
  vectors, its payload and the hashes of what the vectors were embedded from; a payload-only change is
  one payload write that keeps the vectors and their hashes. So whatever was written before the crash is
  complete and consistent, and is found ``unchanged`` on the re-run; the rest is indexed then. Nothing is
  duplicated (same point ids) and nothing is lost (nothing is deleted before the whole catalog is done).
* ``prune`` runs only after every row was read and written without a fatal error, and never deletes an
  id that a rejected row names; if some rejected rows have no readable id at all, pruning is skipped (a
  mangled line may be a product that still exists), and the summary says so.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

from tqdm import tqdm

from common.errors import VitrineError
from common.metrics import INGEST_OUTCOMES, INGEST_ROWS
from common.settings import Settings
from common.thumbnails import ThumbnailStore
from common.vocabulary import Vocabulary, load_vocabulary
from embed.protocol import Encoder
from indexer.fetch import FetchConfig
from indexer.gpu_decode import DeviceDecoder, choose_decode
from indexer.readers import catalog_format
from indexer.report import IndexSummary, JobRecord, RejectReport
from indexer.space import check_free_space
from indexer.stages import STAGES, CatalogReader, Embedder, PendingBatch, Writer
from indexer.state import load_state
from indexer.tagging import Tagger
from indexer.worker import ImagePreparer, WorkerConfig
from store.protocol import VectorStore

__all__ = ["IndexSummary", "index_catalog"]

logger = logging.getLogger(__name__)

PREFETCH_BATCHES = 2
"""Batches whose images are prepared ahead of the one the model is working on."""
PRUNE_CHUNK = 1000


def _count_rows(catalog: Path) -> int | None:
    """A quick estimate of the number of rows, for the progress bar (None when unknown)."""
    try:
        kind = catalog_format(catalog)
        if kind == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(catalog).metadata.num_rows)
        if catalog.name.endswith(".gz"):
            return None
        with catalog.open("rb") as file:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
        return max(0, lines - 1) if kind == "csv" else lines
    except (OSError, VitrineError, ValueError):
        return None


def index_catalog(
    catalog: Path,
    *,
    settings: Settings,
    encoder: Encoder,
    store: VectorStore,
    collection: str | None = None,
    report: Path | None = None,
    prune: bool = False,
    progress: bool = True,
) -> IndexSummary:
    """Index ``catalog`` (JSON Lines, CSV or Parquet) into ``collection``.

    Args:
        catalog: the catalog file; relative image paths start from its folder.
        settings: indexer limits and workers, jobs folder, default collection, tag vocabulary
            (``settings.tags.vocabulary``: products are tagged with it, see `indexer.tagging`).
        encoder: the model; the collection must have been built by the same one (or be new).
        store: where the products go.
        collection: the collection alias (default ``settings.store.collection``).
        report: where to write rejected rows (default: a file under ``settings.jobs_dir``, written only when
            some row is rejected). An explicit file is always (re)written.
        prune: delete stored products whose id is not in the catalog, once the whole catalog is done.
        progress: show a progress bar on stderr.

    Returns:
        The counts, times and report path of the job.

    Raises:
        NotFound: the catalog (or the vocabulary file) does not exist.
        InvalidInput: the catalog cannot be read at all (unsupported type, bad CSV header, not Parquet), or
            the vocabulary file is invalid.
        EncoderMismatch: the collection was built by another encoder.
        VitrineError: the store or the model failed; the job stops (re-run it to resume).
    """
    started = time.perf_counter()
    catalog = catalog.resolve()
    name = collection or settings.store.collection
    catalog_format(catalog)  # unsupported suffix: fail before loading the model
    vocabulary = load_vocabulary(settings.tags.vocabulary) if settings.tags.vocabulary is not None else None
    job = JobRecord(settings.jobs_dir, collection=name, catalog=catalog)
    report_path = report or settings.jobs_dir / f"index-{name}-{job.stamp}.rejected.jsonl"
    job.write("running")
    try:
        summary = _run(catalog, name=name, settings=settings, encoder=encoder, store=store, job=job,
                       report=RejectReport(report_path, eager=report is not None), prune=prune,
                       progress=progress, started=started, vocabulary=vocabulary)
    except BaseException as e:
        job.write("failed", error=f"{type(e).__name__}: {e}", seconds=round(time.perf_counter() - started, 3))
        raise
    job.write("done", **summary.as_dict())
    logger.info("indexed %s into %r: %d rows, %d indexed, %d updated, %d unchanged, %d rejected, %d pruned, "
                "%d thumbnails made in %.1f s (%.1f rows/s)", catalog.name, name, summary.rows, summary.indexed,
                summary.updated, summary.unchanged, summary.rejected, summary.pruned, summary.thumbnails,
                summary.seconds, summary.rate)
    return summary


def _run(catalog: Path, *, name: str, settings: Settings, encoder: Encoder, store: VectorStore,
         job: JobRecord, report: RejectReport, prune: bool, progress: bool, started: float,
         vocabulary: Vocabulary | None = None) -> IndexSummary:
    timings = dict.fromkeys(("setup", "state", "read", "images", "inference", "write", "prune", "optimize"), 0.0)
    stage_s = dict.fromkeys(STAGES, 0.0)
    stage_n = dict.fromkeys(STAGES, 0)
    options = settings.indexer
    with report, ImagePreparer(workers=options.workers, priority=options.worker_priority) as preparer, \
            tqdm(total=_count_rows(catalog), unit="row", desc=f"indexing {catalog.name}",
                 disable=not progress, dynamic_ncols=True) as bar:
        start = time.perf_counter()  # the workers start meanwhile
        encoder.load()
        embedded_store = settings.store_dir if settings.store.url is None else None
        if embedded_store is not None:  # a full disk kills the embedded engine (SIGBUS): stop before, clearly
            check_free_space(embedded_store)
        store.ensure_collection(name, encoder=encoder.name, dim=encoder.dim, weights=encoder.weights_id)
        tagger = None
        if vocabulary is not None:
            tagger = Tagger(encoder, vocabulary, logit_scale=settings.tags.logit_scale)
            for field, kind in tagger.index_fields().items():
                store.ensure_payload_index(name, field, kind)
        # the collection remembers its vocabulary, so search boosts the same tags without being told the file
        store.record_tags(name, vocabulary.as_dict() if vocabulary is not None else None)
        timings["setup"] = time.perf_counter() - start
        start = time.perf_counter()
        state = load_state(store, name)
        timings["state"] = time.perf_counter() - start
        reader = CatalogReader(catalog, encoder=encoder.name, state=state, batch_size=options.batch_size,
                               tags=tagger.fingerprint if tagger is not None else None)
        on_device = choose_decode(options.decode, encoder)
        decoder = (DeviceDecoder.for_encoder(on_device, max_pixels=options.max_image_pixels)
                   if on_device is not None else None)
        if decoder is not None:
            logger.info("decoding JPEGs in batches on %s (indexer.decode=%s)", decoder.device, options.decode)
        preparer.configure(WorkerConfig(fetch=FetchConfig.from_settings(settings, base_dir=catalog.parent),
                                        transform=encoder.image_transform, encoder=encoder.name,
                                        max_pixels=options.max_image_pixels, draft_size=encoder.image_size,
                                        thumbnails=ThumbnailStore.from_settings(settings)
                                        if settings.images.thumbnails else None, raw_jpeg=decoder is not None))
        embedder = Embedder(encoder=encoder, store=store, collection=name, preparer=preparer,
                            chunks=options.workers, tagger=tagger, decoder=decoder)
        writer = Writer(store=store, collection=name, report=report)
        batches = reader.batches()
        pending: deque[PendingBatch] = deque()

        def fill() -> None:
            while len(pending) <= PREFETCH_BATCHES:
                start = time.perf_counter()
                batch = next(batches, None)
                timings["read"] += time.perf_counter() - start
                if batch is None:
                    return
                stage_n["read"] += batch.rows
                pending.append(embedder.submit(batch))

        fill()
        while pending:
            current = pending.popleft()
            fill()
            embedded = embedder.finish(current)
            if embedded_store is not None and (embedded.points or embedded.payloads):
                check_free_space(embedded_store)
            writer.write(embedded)
            for key in ("images", "inference", "write"):
                timings[key] += embedded.timings.get(key, 0.0)
            for key in STAGES:
                stage_s[key] += embedded.timings.get(key, 0.0)
                stage_n[key] += embedded.counts.get(key, 0)
            logger.debug("batch %d: %d rows (read %.3f s), %d embedded, %d payload updates, %d unchanged, "
                         "%d rejected; waited %.3f s for images, inference %.3f s, write %.3f s",
                         embedded.index, embedded.rows, current.batch.read_s, len(embedded.points),
                         len(embedded.payloads), embedded.unchanged, len(embedded.rejected),
                         embedded.timings["images"], embedded.timings["inference"], embedded.timings["write"])
            bar.update(embedded.rows)
            bar.set_postfix(indexed=writer.indexed, rejected=writer.rejected, refresh=False)
        if not bar.disable and bar.total != bar.n:  # the estimate counted blank lines or CSV record lines
            bar.total = bar.n
            bar.refresh()

    notes: list[str] = []
    pruned = finish_job(store, name, notes=notes, timings=timings, wrote=bool(writer.indexed),
                        thumbnail_failures=writer.thumbnail_failures,
                        thumbnail_hint=f"see the warnings above: disk full? folder {str(settings.images_dir)!r} "
                        "not writable?",
                        stale=[pid for pid in state if pid not in reader.seen] if prune else None,
                        anonymous=reader.anonymous_rejects)
    summary = IndexSummary(collection=name, rows=writer.rows, indexed=writer.indexed, updated=writer.updated,
                           unchanged=writer.unchanged, rejected=writer.rejected, pruned=pruned,
                           seconds=time.perf_counter() - started, report=report.path if report.written else None,
                           timings=timings, notes=tuple(notes), thumbnails=writer.thumbnails,
                           thumbnail_failures=writer.thumbnail_failures,
                           stages=stage_table({**stage_s, "read": timings["read"]}, stage_n))
    for outcome in INGEST_OUTCOMES:
        INGEST_ROWS.labels(outcome).inc(getattr(summary, outcome))
    return summary


def stage_table(seconds: dict[str, float], counts: dict[str, int]) -> dict[str, dict[str, object]]:
    """`IndexSummary.stages` from seconds and counts per stage of `indexer.stages.STAGES`."""
    table: dict[str, dict[str, object]] = {}
    for name, (where, unit) in STAGES.items():
        spent, count = seconds.get(name, 0.0), counts.get(name, 0)
        table[name] = {"seconds": spent, "count": count, "unit": unit,
                       "per_s": count / spent if spent > 0 else 0.0, "where": where}
    return table


def finish_job(store: VectorStore, name: str, *, notes: list[str], timings: dict[str, float], wrote: bool,
               thumbnail_failures: int, thumbnail_hint: str, stale: list[str] | None, anonymous: int) -> int:
    """The end of an index job, whichever engine ran it: note the missing thumbnails, prune the products the
    catalog no longer has (``stale``; None: no pruning asked), and build the vector indexes when anything was
    written or pruned, so the first searches don't. Adds to ``notes`` and ``timings``; returns the count pruned."""
    if thumbnail_failures:
        note = (f"{thumbnail_failures} image(s) got no thumbnail and preview ({thumbnail_hint}); the next run "
                "tries again")
        logger.warning(note)
        notes.append(note)
    pruned = 0
    if stale is not None:
        start = time.perf_counter()
        pruned = _prune(store, name, stale=stale, anonymous=anonymous, notes=notes)
        timings["prune"] = time.perf_counter() - start
    if wrote or pruned:
        start = time.perf_counter()
        store.optimize(name)
        timings["optimize"] = time.perf_counter() - start
    return pruned


def _prune(store: VectorStore, name: str, *, stale: list[str], anonymous: int, notes: list[str]) -> int:
    if anonymous:
        note = (f"pruning skipped: {anonymous} rejected row(s) have no readable id, so products that may "
                f"still be in the catalog cannot be told from removed ones ({len(stale)} stored product(s) "
                "are not in the catalog); fix those rows and run again")
        logger.warning(note)
        notes.append(note)
        return 0
    for start in range(0, len(stale), PRUNE_CHUNK):
        store.delete(name, stale[start : start + PRUNE_CHUNK])
    if stale:
        logger.info("pruned %d products no longer in the catalog from %r", len(stale), name)
    return len(stale)
