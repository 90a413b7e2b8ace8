"""`index_catalog_ray`: index a catalog with Ray Data, across the CPUs and GPUs of a Ray cluster.

``vitrine index CATALOG --engine ray [--address auto]``. The stages and the code of each are those of the
in-process engine (`indexer.pipeline`, `indexer.stages`); only where they run changes::

    driver     CatalogReader: read, validate, refuse repeated ids and rows with nothing to embed
               -> blocks of ``ray.block_rows`` valid rows in the object store (a Ray Dataset)
    CPU tasks  map_batches(prepare_images): fetch, hash, decode, preprocess, thumbnails (`indexer.worker`)
    actors     map_batches(EmbedActor, concurrency=ray.actors): one model load per actor, one GPU each when
               embed.device is cuda; `indexer.stages.Embedder` embeds texts and images, tags, builds payloads
    write      a Qdrant server: `store_datasink` (a ``ray.data.Datasink``), ``ray.writers`` write tasks in
               parallel; the embedded store (one process only): the driver iterates the output and upserts.

Every write is a batched upsert whose point ids are UUID5 of the product ids, so a re-run (after a crash or
not) overwrites and never duplicates. Reading stays in the driver: validation and the refusal of repeated ids
walk the whole file in order, at tens of thousands of rows per second, far faster than the work the cluster
does; the rows then live in Ray's object store (spilled to disk when large), not in the driver's memory.

The driver also loads the model once, on its CPU: the collection's width, the image transform the CPU tasks
run and the fingerprint of the tags come from it.

Not done by this engine: incremental indexing. Every valid row is embedded and written again (the summary
says so in its notes); ``unchanged`` and ``updated`` are always 0. Use the in-process engine for nightly
updates of a catalog that mostly did not change, and this one to build or rebuild a large collection.

Ray is an optional extra (``pip install 'vitrine[ray]'``), imported only inside the functions that use it.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from common.errors import BackendNotInstalled, BackendUnavailable, NotFound
from common.metrics import INGEST_OUTCOMES, INGEST_ROWS
from common.settings import Settings
from common.thumbnails import ThumbnailStore
from common.vocabulary import Vocabulary, load_vocabulary
from embed import build_encoder
from indexer.fetch import FetchConfig
from indexer.pipeline import finish_job
from indexer.readers import catalog_format
from indexer.report import IndexSummary, JobRecord, RejectReport
from indexer.space import check_free_space
from indexer.stages import CatalogReader, Embedder, PendingBatch, Planned, ReadBatch, Rejection
from indexer.state import load_state
from indexer.tagging import Tagger
from indexer.worker import ImagePreparer, ImageResult, ImageTask, WorkerConfig, prepare_chunk
from store.factory import open_store
from store.protocol import PointWrite, VectorStore

if TYPE_CHECKING:
    from embed.protocol import Encoder

__all__ = ["ENGINES", "EmbedActor", "RayWriteResult", "StoreWriter", "actor_device", "actor_resources",
           "import_ray", "index_catalog_ray", "prepare_images", "store_datasink"]

logger = logging.getLogger(__name__)

ENGINES = ("in-process", "ray")
"""The ingestion engines of ``vitrine index --engine``."""
INSTALL_HINT = "pip install 'vitrine[ray]'"
NOTE_NOT_INCREMENTAL = ("ray engine: incremental state is not used; every valid row was embedded and written "
                        "again (idempotent upserts, nothing duplicated)")

Batch = dict[str, NDArray[Any]]
"""A Ray Data batch in the ``numpy`` format: column name -> array."""


def import_ray() -> ModuleType:
    """The ``ray`` module, with ``ray.data`` loaded.

    Raises:
        BackendNotInstalled: Ray Data is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise BackendNotInstalled(f"the ray ingestion engine needs Ray Data, which is not installed ({e}); "
                                  f"install it with: {INSTALL_HINT} (or use --engine in-process)") from e
    return ray


def _dumps(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _column(values: list[bytes]) -> NDArray[Any]:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def prepare_images(batch: Batch, *, config: WorkerConfig) -> Batch:
    """CPU stage: fetch, hash, decode and preprocess the images of a batch of planned products.

    Args:
        batch: column ``planned`` (pickled `indexer.stages.Planned`).
        config: what `indexer.worker.prepare_chunk` needs (fetch limits, transform, thumbnails).

    Returns:
        The batch with a column ``image``: the pickled `ImageResult` of each product (empty bytes when it has
        no image).
    """
    items: list[Planned] = [pickle.loads(blob) for blob in batch["planned"]]
    tasks = [ImageTask(key, item.image_ref) for key, item in enumerate(items) if item.image_ref]
    results = {result.key: result for result in prepare_chunk(config, tasks)} if tasks else {}
    images = [_dumps(results[key]) if key in results else b"" for key in range(len(items))]
    return {"planned": batch["planned"], "image": _column(images)}


class _Ready:
    """An `indexer.worker.ImageFuture` whose images are already prepared (by the CPU stage)."""

    def __init__(self, results: list[ImageResult]) -> None:
        self._results = results

    def result(self, timeout: float | None = None) -> list[ImageResult]:
        return self._results


class _Unused:
    """Stands for the store and the image preparer an `Embedder` never touches without incremental state."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"the ray engine's embedder has no {self._what} (asked for {name!r}); it runs "
                           "without incremental state")


def actor_device(device: str) -> str:
    """The torch device an embedding actor uses for settings embed.device ``device``: ``cuda:N`` is ``cuda``,
    since Ray shows each actor only the GPU(s) it reserved, numbered from 0."""
    return "cuda" if device.startswith("cuda") else device


def actor_resources(settings: Settings) -> dict[str, float]:
    """The resources each embedding actor reserves: ``ray.gpus_per_actor`` GPUs when embed.device is cuda,
    else one CPU (Ray Data's default for actors)."""
    if settings.embed.device.startswith("cuda"):
        return {"num_gpus": settings.ray.gpus_per_actor}
    return {}


class EmbedActor:
    """Embedding stage: a Ray Data callable class, so the model loads once per actor.

    Each call runs `indexer.stages.Embedder.finish` on a batch: texts and images embedded, image failures
    rejected, tags computed, payloads (with content hashes) built, exactly as the in-process engine does for
    a product it has not seen before.
    """

    def __init__(self, settings: Settings, model: str | None, collection: str,
                 vocabulary: Vocabulary | None) -> None:
        """Build and load the encoder of ``settings.embed`` (or ``model``), and the tagger of ``vocabulary``
        (its prompts embedded by this model, on this device, as the in-process engine does)."""
        device = actor_device(settings.embed.device)
        self.encoder = build_encoder(settings.embed.model_copy(update={"device": device}), model)
        self.encoder.load()
        tagger = None
        if vocabulary is not None:
            tagger = Tagger(self.encoder, vocabulary, logit_scale=settings.tags.logit_scale)
        self.embedder = Embedder(encoder=self.encoder, store=cast(VectorStore, _Unused("store")),
                                 collection=collection, preparer=cast(ImagePreparer, _Unused("image preparer")),
                                 chunks=1, tagger=tagger)

    def __call__(self, batch: Batch) -> Batch:
        """Embed a batch (columns ``planned`` and ``image``, see `prepare_images`).

        Returns:
            One row per product: ``point`` (a pickled `PointWrite`, or empty bytes) or ``rejection`` (a pickled
            `Rejection`, or empty bytes), and its ``thumbnailed`` and ``thumbnail_failed`` flags.
        """
        items: list[Planned] = [pickle.loads(blob) for blob in batch["planned"]]
        results = {key: replace(pickle.loads(blob), key=key) for key, blob in enumerate(batch["image"]) if blob}
        pending = PendingBatch(ReadBatch(index=0, rows=len(items), items=items),
                               [(list(results), _Ready(list(results.values())))])
        out = self.embedder.finish(pending)
        points = {point.product_id: point for point in out.points}
        rejections = {row.product_id: row for row in out.rejected}
        columns: dict[str, list[Any]] = {"point": [], "rejection": [], "thumbnailed": [], "thumbnail_failed": []}
        for key, item in enumerate(items):
            point, rejection = points.get(item.product.id), rejections.get(item.product.id)
            if point is None and rejection is None:  # cannot happen without incremental state; never lose a row
                rejection = Rejection(item.line, item.product.id, "the embedding stage returned nothing for it")
            image = results.get(key)
            columns["point"].append(_dumps(point) if point is not None else b"")
            columns["rejection"].append(_dumps(rejection) if point is None else b"")
            columns["thumbnailed"].append(bool(image and image.thumbnailed))
            columns["thumbnail_failed"].append(bool(image and image.thumbnail_error is not None))
        return {"point": _column(columns["point"]), "rejection": _column(columns["rejection"]),
                "thumbnailed": np.asarray(columns["thumbnailed"], dtype=bool),
                "thumbnail_failed": np.asarray(columns["thumbnail_failed"], dtype=bool)}


@dataclass
class RayWriteResult:
    """What one writer wrote (a write task of the datasink, or the driver)."""

    points: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    thumbnails: int = 0
    thumbnail_failures: int = 0
    seconds: float = 0.0

    def add(self, other: RayWriteResult) -> None:
        """Add ``other``'s counts to these."""
        self.points += other.points
        self.rejections += other.rejections
        self.thumbnails += other.thumbnails
        self.thumbnail_failures += other.thumbnail_failures
        self.seconds += other.seconds


class StoreWriter:
    """Upserts the embedding stage's output into a collection, in batches (idempotent: UUID5 point ids)."""

    def __init__(self, collection: str, *, batch_size: int) -> None:
        self.collection = collection
        self.batch_size = max(1, batch_size)

    def write(self, store: VectorStore, batch: Batch) -> RayWriteResult:
        """Upsert the points of ``batch`` (see `EmbedActor.__call__`); return the counts and its rejections."""
        start = time.perf_counter()
        points: list[PointWrite] = [pickle.loads(blob) for blob in batch["point"] if blob]
        for first in range(0, len(points), self.batch_size):
            store.upsert(self.collection, points[first : first + self.batch_size])
        return RayWriteResult(points=len(points),
                              rejections=[pickle.loads(blob) for blob in batch["rejection"] if blob],
                              thumbnails=int(np.count_nonzero(batch["thumbnailed"])),
                              thumbnail_failures=int(np.count_nonzero(batch["thumbnail_failed"])),
                              seconds=time.perf_counter() - start)


def store_datasink(settings: Settings, collection: str) -> Any:
    """A ``ray.data.Datasink`` that upserts the embedding stage's output into ``collection`` of the store of
    ``settings`` (each write task opens its own connection). For a Qdrant server: the embedded store is one
    process's (see `index_catalog_ray`).

    After ``Dataset.write_datasink``, its ``result`` holds the sum of the write tasks' `RayWriteResult`.
    """
    import_ray()
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class StoreDatasink(Datasink[RayWriteResult]):
        def __init__(self) -> None:
            self.writer = StoreWriter(collection, batch_size=settings.indexer.batch_size)
            self.result = RayWriteResult()

        def write(self, blocks: Iterable[Any], ctx: Any) -> RayWriteResult:
            result = RayWriteResult()
            store = open_store(settings)
            try:
                for block in blocks:
                    batch = BlockAccessor.for_block(block).to_batch_format("numpy")
                    result.add(self.writer.write(store, batch))
            finally:
                store.close()
            return result

        def on_write_complete(self, write_result: Any) -> None:
            for part in write_result.write_returns:
                self.result.add(part)

        def get_name(self) -> str:
            return "VitrineStore"

    return StoreDatasink()


def _absolute(settings: Settings) -> Settings:
    """``settings`` with its folders made absolute (tasks and actors may not run in this folder)."""
    images = settings.images
    if images.dir is not None:
        images = images.model_copy(update={"dir": images.dir.resolve()})
    roots = tuple(root.resolve() for root in settings.indexer.image_roots)
    return settings.model_copy(update={"home": settings.home.resolve(), "images": images,
                                       "indexer": settings.indexer.model_copy(update={"image_roots": roots})})


def _server(settings: Settings) -> bool:
    """Whether the store is a Qdrant server (many processes may write to it)."""
    url = settings.store.url
    return url is not None and url.startswith(("http://", "https://"))


def index_catalog_ray(
    catalog: Path,
    settings: Settings,
    *,
    address: str | None = None,
    model: str | None = None,
    collection: str | None = None,
    report: Path | None = None,
    prune: bool = False,
    progress: bool = True,
) -> IndexSummary:
    """Index ``catalog`` (JSON Lines, CSV or Parquet) into ``collection`` on a Ray cluster.

    The result is the collection `indexer.pipeline.index_catalog` builds from the same catalog (same points,
    payloads, tags and rejected rows), the job leaves the same report and job record, and returns the same
    summary, with no incremental indexing (see the module's notes).

    Args:
        catalog: the catalog file; relative image paths start from its folder (which every node must see,
            as it must see local image files: a shared file system, or URLs).
        settings: as for `index_catalog`, plus ``settings.ray`` (actors, GPUs per actor, block size, writers).
        address: the cluster: ``auto``, ``ray://HOST:PORT`` (default ``settings.ray.address``; unset: a local
            cluster started for the job). Ignored when Ray is already initialised in this process.
        model: encoder name (default ``settings.embed.model``).
        collection: the collection alias (default ``settings.store.collection``).
        report: where to write rejected rows (default: a file under ``settings.jobs_dir``, written only when
            some row is rejected).
        prune: delete stored products whose id is not in the catalog, once the whole catalog is written.
        progress: show progress bars on stderr.

    Returns:
        The counts, times and report path of the job.

    Raises:
        BackendNotInstalled: Ray Data is not installed.
        BackendUnavailable: no Ray cluster answers at ``address``.
        NotFound, InvalidInput, EncoderMismatch, VitrineError: as `index_catalog`.
    """
    ray = import_ray()
    started = time.perf_counter()
    catalog = catalog.resolve()
    settings = _absolute(settings)
    name = collection or settings.store.collection
    catalog_format(catalog)  # unsupported suffix or no such file: fail before loading the model or starting Ray
    if not catalog.is_file():
        raise NotFound(f"catalog {str(catalog)!r} does not exist or is not a file")
    vocabulary = load_vocabulary(settings.tags.vocabulary) if settings.tags.vocabulary is not None else None
    job = JobRecord(settings.jobs_dir, collection=name, catalog=catalog)
    job.base["engine"] = "ray"
    report_path = report or settings.jobs_dir / f"index-{name}-{job.stamp}.rejected.jsonl"
    job.write("running")
    owned = not ray.is_initialized()
    try:
        if owned:
            _join(ray, address or settings.ray.address, progress=progress)
        summary = _run(ray, catalog, name=name, settings=settings, model=model, vocabulary=vocabulary,
                       report=RejectReport(report_path, eager=report is not None), prune=prune, progress=progress,
                       started=started)
    except BaseException as e:
        job.write("failed", error=f"{type(e).__name__}: {e}", seconds=round(time.perf_counter() - started, 3))
        raise
    finally:
        if owned and ray.is_initialized():
            ray.shutdown()
    job.write("done", **summary.as_dict())
    logger.info("indexed %s into %r on Ray: %d rows, %d indexed, %d rejected, %d pruned in %.1f s (%.1f rows/s)",
                catalog.name, name, summary.rows, summary.indexed, summary.rejected, summary.pruned,
                summary.seconds, summary.rate)
    return summary


def _join(ray: ModuleType, address: str | None, *, progress: bool) -> None:
    """Join the cluster at ``address`` (None: start a local one).

    Raises:
        BackendUnavailable: no cluster answers there.
    """
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=progress)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BackendUnavailable(f"cannot join the Ray cluster at {address!r} ({type(e).__name__}: {e}); expected "
                                 "auto (a cluster started on this machine with `ray start`), ray://HOST:10001, or "
                                 "no address (a local cluster for the job)") from e


@dataclass
class _Read:
    """The driver's reading of the catalog: blocks of valid products in the object store, rejected rows."""

    refs: list[Any] = field(default_factory=list)
    rows: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def _read(ray: ModuleType, reader: CatalogReader) -> _Read:
    """Read the catalog into the object store: an Arrow table of pickled `Planned` products per batch."""
    import pyarrow as pa

    read = _Read()
    for batch in reader.batches():
        read.rows += batch.rows
        read.rejected += batch.rejected
        if batch.items:
            blobs = pa.array([_dumps(item) for item in batch.items], type=pa.binary())
            read.refs.append(ray.put(pa.table({"planned": blobs})))
    return read


def _dataset(ray: ModuleType, refs: list[Any], *, catalog: Path, settings: Settings, model: str | None,
             name: str, encoder: Encoder, vocabulary: Vocabulary | None, progress: bool) -> Any:
    """The dataset of the embedding stage's output (see `EmbedActor.__call__`), not yet executed."""
    options = settings.ray
    ray.data.DataContext.get_current().enable_progress_bars = progress
    config = WorkerConfig(fetch=FetchConfig.from_settings(settings, base_dir=catalog.parent),
                          transform=encoder.image_transform, encoder=encoder.name,
                          max_pixels=settings.indexer.max_image_pixels, draft_size=encoder.image_size,
                          thumbnails=ThumbnailStore.from_settings(settings) if settings.images.thumbnails else None)
    dataset = ray.data.from_arrow_refs(refs)
    cpus = options.cpus_per_task
    # the task arguments come from a function so that Ray does not fuse this stage into the actors: decoding
    # then runs on every CPU the actors leave free, while they embed (as the in-process engine's workers do)
    dataset = dataset.map_batches(prepare_images, fn_kwargs={"config": config}, batch_format="numpy",
                                  batch_size=None, ray_remote_args_fn=lambda: {"num_cpus": cpus})
    return dataset.map_batches(EmbedActor, fn_constructor_kwargs={"settings": settings, "model": model,
                                                                  "collection": name, "vocabulary": vocabulary},
                               batch_format="numpy", batch_size=settings.indexer.batch_size,
                               compute=ray.data.ActorPoolStrategy(size=options.actors),
                               **actor_resources(settings))


def _run(ray: ModuleType, catalog: Path, *, name: str, settings: Settings, model: str | None,
         vocabulary: Vocabulary | None, report: RejectReport, prune: bool, progress: bool,
         started: float) -> IndexSummary:
    timings = dict.fromkeys(("setup", "read", "pipeline", "write", "prune", "optimize"), 0.0)
    options = settings.ray
    start = time.perf_counter()
    # the driver's copy of the model, on its CPU: the collection's width, the image transform, the tags' fingerprint
    encoder = build_encoder(settings.embed.model_copy(update={"device": "cpu", "dtype": "fp32"}), model)
    encoder.load()
    store = open_store(settings)
    with report:
        try:
            embedded_store = settings.store_dir if settings.store.url is None else None
            if embedded_store is not None:
                check_free_space(embedded_store)
            store.ensure_collection(name, encoder=encoder.name, dim=encoder.dim, weights=encoder.weights_id)
            tagger = None
            if vocabulary is not None:
                tagger = Tagger(encoder, vocabulary, logit_scale=settings.tags.logit_scale)
                for field_name, kind in tagger.index_fields().items():
                    store.ensure_payload_index(name, field_name, kind)
            store.record_tags(name, vocabulary.as_dict() if vocabulary is not None else None)
            stored_ids = list(load_state(store, name)) if prune else []
            timings["setup"] = time.perf_counter() - start

            start = time.perf_counter()
            reader = CatalogReader(catalog, encoder=encoder.name, state={}, batch_size=options.block_rows,
                                   tags=tagger.fingerprint if tagger is not None else None)
            read = _read(ray, reader)
            rows, rejected = read.rows, read.rejected
            timings["read"] = time.perf_counter() - start

            start = time.perf_counter()
            written = RayWriteResult()
            if read.refs:
                dataset = _dataset(ray, read.refs, catalog=catalog, settings=settings, model=model, name=name,
                                   encoder=encoder, vocabulary=vocabulary, progress=progress)
                if _server(settings):
                    sink = store_datasink(settings, name)
                    dataset.write_datasink(sink, concurrency=options.writers)
                    written = sink.result
                else:  # the embedded store (or qdrant-client's local mode) is one process's: write from here
                    writer = StoreWriter(name, batch_size=settings.indexer.batch_size)
                    valid = rows - len(rejected)
                    with tqdm(total=valid, unit="row", desc=f"indexing {catalog.name} on Ray", disable=not progress,
                              dynamic_ncols=True) as bar:
                        for batch in dataset.iter_batches(batch_size=settings.indexer.batch_size,
                                                          batch_format="numpy"):
                            if embedded_store is not None:
                                check_free_space(embedded_store)
                            part = writer.write(store, batch)
                            written.add(part)
                            bar.update(len(batch["point"]))
            timings["pipeline"] = time.perf_counter() - start
            timings["write"] = written.seconds

            everything = sorted([*rejected, *written.rejections], key=lambda row: row.line)
            for row in everything:
                report.add(line=row.line, product_id=row.product_id, reason=row.reason)
            report.flush()
            notes = [NOTE_NOT_INCREMENTAL]
            pruned = finish_job(store, name, notes=notes, timings=timings, wrote=bool(written.points),
                                thumbnail_failures=written.thumbnail_failures,
                                thumbnail_hint=f"disk full? folder {str(settings.images_dir)!r} not writable on "
                                "some node?",
                                stale=[pid for pid in stored_ids if pid not in reader.seen] if prune else None,
                                anonymous=reader.anonymous_rejects)
        finally:
            store.close()
    summary = IndexSummary(collection=name, rows=rows, indexed=written.points, updated=0, unchanged=0,
                           rejected=len(everything), pruned=pruned, seconds=time.perf_counter() - started,
                           report=report.path if report.written else None, timings=timings, notes=tuple(notes),
                           thumbnails=written.thumbnails, thumbnail_failures=written.thumbnail_failures)
    for outcome in INGEST_OUTCOMES:
        INGEST_ROWS.labels(outcome).inc(getattr(summary, outcome))
    return summary
