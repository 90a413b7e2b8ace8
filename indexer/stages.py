"""The three stages of an indexing job, with typed batches between them (clip-retrieval's shape).

    CatalogReader  ->  ReadBatch  ->  Embedder.submit  ->  PendingBatch  ->  Embedder.finish
                   ->  EmbeddedBatch  ->  Writer.write

* `CatalogReader` (main process) reads and validates rows, refuses repeated ids and rows with nothing to
  embed, and compares each product's text and payload hashes with the stored ones.
* `Embedder` hands the batch's images to the worker processes (`submit`), then, once they are ready,
  decides each product's fate and runs the model on what changed (`finish`). The runner submits the next
  batches before finishing the current one, so decoding overlaps inference.
* `Writer` upserts new and re-embedded products (vectors, payload and hashes in one write), rewrites the
  payload of products whose other fields changed, and reports rejected rows.

Fate of a product (``stored`` = hashes kept with its stored version, see `indexer.state`):

* image failed to fetch or decode -> rejected (a stored version stays as it was);
* text and image hashes as stored -> ``unchanged``, or ``updated`` (payload only) if other fields changed;
  but a product enriched by ``vitrine enrich`` (stored ``generated`` hash) whose row changed is ``indexed``,
  its text embedded again: its stored text vector holds generated text the rewritten payload drops;
* otherwise -> ``indexed``: only what changed is embedded again; the other vector is copied from the store.

Tags (`indexer.tagging`, when a vocabulary is set) are computed from the image vector of every product
written with vectors. A product whose vectors are unchanged but whose payload changed, or whose stored tags
hash is not the tagger's fingerprint (vocabulary changed, tagging turned on or off), is ``updated``: its
stored image vector is read back and tagged (no image is decoded), and its payload rewritten. Should that
vector have vanished, the product is embedded again instead.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from common.errors import BackendUnavailable
from common.product import Product
from embed.device_preprocess import DeviceEncoder
from embed.protocol import Encoder
from indexer.gpu_decode import DeviceDecoder
from indexer.readers import BadRow, iter_products
from indexer.report import RejectReport
from indexer.state import ContentHashes, payload_hash, text_hash
from indexer.tagging import TAG_FIELDS, Tagger, Tags, tag_payload
from indexer.worker import ImageFuture, ImagePreparer, ImageResult, ImageTask
from store.protocol import IMAGE, STATE_KEY, TEXT, PointWrite, VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """A row that will not be indexed, and why."""

    line: int
    product_id: str | None
    reason: str


@dataclass(frozen=True)
class Planned:
    """A valid product with what the reader learned about it."""

    line: int
    product: Product
    text: str
    hashes: ContentHashes
    """New hashes; ``image`` is filled in once the image bytes are read."""
    image_ref: str | None
    stored: ContentHashes | None


@dataclass
class ReadBatch:
    """Reader -> embedder."""

    index: int
    rows: int
    items: list[Planned] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    read_s: float = 0.0


@dataclass
class PendingBatch:
    """A batch whose images are being prepared."""

    batch: ReadBatch
    chunks: list[tuple[list[int], ImageFuture]]


@dataclass
class EmbeddedBatch:
    """Embedder -> writer."""

    index: int
    rows: int
    points: list[PointWrite] = field(default_factory=list)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``images`` (waiting for the workers), ``inference`` and ``write`` (totals), and per stage (see
    `STAGES`; ``fetch``, ``decode`` and ``preprocess`` summed over the worker processes)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Items each stage of `STAGES` handled in this batch."""
    thumbnails: int = 0
    """Images whose thumbnail and preview were written."""
    thumbnail_failures: int = 0
    """Images whose missing thumbnail and preview could not be made (their products are indexed all the same)."""


STAGES: dict[str, tuple[str, str]] = {
    "read": ("main", "rows"),
    "wait": ("main", "images"),
    "fetch": ("workers", "images"),
    "decode": ("workers", "images"),
    "preprocess": ("workers", "images"),
    "device_decode": ("main", "images"),
    "device_preprocess": ("main", "images"),
    "embed_text": ("main", "texts"),
    "embed_image": ("main", "images"),
    "tag": ("main", "products"),
    "upsert": ("main", "products"),
}
"""The stages of the job's summary: name -> (where it runs, what it counts). ``main`` stages run in turn in
the job's process (their seconds add up to at most the job's); ``workers`` stages are summed over the
worker processes, which run them in parallel with the main process (and with each other)."""


def _add(batch: EmbeddedBatch, stage: str, seconds: float, count: int) -> None:
    batch.timings[stage] = batch.timings.get(stage, 0.0) + seconds
    batch.counts[stage] = batch.counts.get(stage, 0) + count


def stored_payload(product: Product, hashes: ContentHashes, tags: Tags | None = None) -> dict[str, Any]:
    """The payload a product is stored with: its fields, its zero-shot tags (if any) and its content hashes."""
    return {**product.payload(), **tag_payload(tags), STATE_KEY: hashes.as_payload()}


class CatalogReader:
    """Reads the catalog in batches of valid products and rejected rows.

    Attributes:
        seen: ids present in the catalog (valid, and rejected rows that named an id).
        anonymous_rejects: rejected rows with no readable id (they make pruning unsafe).
    """

    def __init__(self, catalog: Path, *, encoder: str, state: dict[str, ContentHashes | None],
                 batch_size: int, tags: str | None = None) -> None:
        """Read ``catalog``; ``tags`` is the tagger's fingerprint (None: no tagging)."""
        self.catalog = catalog
        self.tags = tags
        self.encoder = encoder
        self.state = state
        self.batch_size = batch_size
        self.seen: set[str] = set()
        self.anonymous_rejects = 0

    def batches(self) -> Iterator[ReadBatch]:
        """Consecutive batches of up to ``batch_size`` rows (valid or not)."""
        items = iter_products(self.catalog)
        index = 0
        while True:
            start = time.perf_counter()
            batch = ReadBatch(index=index, rows=0)
            for item in items:
                batch.rows += 1
                if isinstance(item, BadRow):
                    self._reject(batch, item.line, item.product_id, item.reason)
                else:
                    self._plan(batch, item.line, item.product)
                if batch.rows >= self.batch_size:
                    break
            batch.read_s = time.perf_counter() - start
            if batch.rows == 0:
                return
            yield batch
            index += 1

    def _reject(self, batch: ReadBatch, line: int, product_id: str | None, reason: str) -> None:
        if product_id is None:
            self.anonymous_rejects += 1
        else:
            self.seen.add(product_id)
        batch.rejected.append(Rejection(line, product_id, reason))

    def _plan(self, batch: ReadBatch, line: int, product: Product) -> None:
        self.seen.add(product.id)
        text = product.embedding_text()
        refs = product.image_refs
        if not text and not refs:
            reason = "nothing to embed: the product has no image and no title, brand, category or description"
            batch.rejected.append(Rejection(line, product.id, reason))
            return
        if self.tags is not None:
            taken = [name for name in TAG_FIELDS if name in (product.model_extra or {})]
            if taken:
                reason = (f"field {taken[0]!r} is where the zero-shot tags go (a tag vocabulary is set); "
                          "rename that column of the catalog, or index without a vocabulary")
                batch.rejected.append(Rejection(line, product.id, reason))
                return
        hashes = ContentHashes(text=text_hash(text, encoder=self.encoder), image=None,
                               payload=payload_hash(product.payload()), tags=self.tags if refs else None)
        batch.items.append(Planned(line, product, text, hashes, refs[0] if refs else None,
                                   self.state.get(product.id)))


def _reuses(item: Planned, hashes: ContentHashes, result: ImageResult | None) -> bool:
    """Whether some stored vector of the product can be kept (its text or its image is unchanged)."""
    if item.stored is None:
        return False
    same_text = hashes.text is not None and item.stored.text == hashes.text
    return same_text or (result is not None and result.unchanged)


class Embedder:
    """Prepares images in the workers and runs the model on what changed.

    With a ``decoder`` (`indexer.gpu_decode`, the preparer's workers configured with ``raw_jpeg``), the JPEGs
    the workers hand back as bytes are decoded and preprocessed in one batch on the encoder's device, and
    embedded there (``encoder`` must then be a `embed.device_preprocess.DeviceEncoder`).
    """

    def __init__(self, *, encoder: Encoder, store: VectorStore, collection: str, preparer: ImagePreparer,
                 chunks: int, tagger: Tagger | None = None, decoder: DeviceDecoder | None = None) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.tagger = tagger
        self.store = store
        self.collection = collection
        self.preparer = preparer
        self.chunks = max(1, chunks)

    def submit(self, batch: ReadBatch) -> PendingBatch:
        """Start preparing the batch's images."""
        tasks = [ImageTask(key, item.image_ref, item.stored.image if item.stored else None)
                 for key, item in enumerate(batch.items) if item.image_ref]
        size = max(1, -(-len(tasks) // self.chunks))
        chunks = []
        for start in range(0, len(tasks), size):
            part = tasks[start : start + size]
            chunks.append(([task.key for task in part], self.preparer.submit(part, group=batch.index)))
        return PendingBatch(batch, chunks)

    def finish(self, pending: PendingBatch) -> EmbeddedBatch:
        """Embed the batch's new texts, wait for its images, decide each product's fate, embed new images.

        Texts go first: they need no image, so the model works while the workers finish the images.
        """
        batch = pending.batch
        out = EmbeddedBatch(index=batch.index, rows=batch.rows, rejected=list(batch.rejected))
        start = time.perf_counter()
        texts = self._embed_new_texts(batch.items)
        inference = time.perf_counter() - start
        _add(out, "embed_text", inference, len(texts))

        start = time.perf_counter()
        images: dict[int, ImageResult] = {}
        for _, future in pending.chunks:
            try:
                images.update((result.key, result) for result in future.result())
            except BrokenProcessPool as e:
                lines = [item.line for item in batch.items]
                raise BackendUnavailable(
                    f"an image worker process died while preparing the images of catalog lines {min(lines)} "
                    f"to {max(lines)} (out of memory, or a crash in an image decoder?); re-run the command "
                    "to resume, and check those rows' images if it happens again") from e
            except (OSError, RuntimeError, pickle.PicklingError, AttributeError, TypeError) as e:
                raise BackendUnavailable(f"cannot prepare images in a worker process ({type(e).__name__}: "
                                         f"{e}); set VITRINE_INDEXER__WORKERS=0 to prepare them in-process"
                                         ) from e
        out.timings["images"] = time.perf_counter() - start
        _add(out, "wait", out.timings["images"], len(images))
        for stage in ("fetch", "decode", "preprocess"):
            done = [result for result in images.values() if getattr(result, f"{stage}_s") > 0]
            _add(out, stage, sum(getattr(result, f"{stage}_s") for result in done), len(done))
        out.thumbnails = sum(result.thumbnailed for result in images.values())
        out.thumbnail_failures = sum(result.thumbnail_error is not None for result in images.values())

        start = time.perf_counter()
        work: list[tuple[int, Planned, ContentHashes, ImageResult | None]] = []
        retag: list[tuple[int, Planned, ContentHashes, ImageResult | None]] = []
        for key, item in enumerate(batch.items):
            result = images.get(key)
            if result is not None and result.error is not None:
                out.rejected.append(Rejection(item.line, item.product.id, result.error))
                continue
            hashes = ContentHashes(item.hashes.text, result.hash if result else None, item.hashes.payload,
                                   item.hashes.tags)
            old = item.stored
            if old is not None and old.text == hashes.text and old.image == hashes.image:
                if old.payload == hashes.payload and old.tags == hashes.tags:
                    out.unchanged += 1
                    continue
                if old.generated is None:  # an enriched product is rewritten whole (see the module's notes)
                    if hashes.tags is not None:
                        retag.append((key, item, hashes, result))
                    else:
                        out.payloads[item.product.id] = stored_payload(item.product, hashes)
                    continue
            work.append((key, item, hashes, result))
        work += self._retag(retag, out.payloads, out)
        out.points = self._embed(work, texts, out.rejected, out)
        out.timings["inference"] = inference + time.perf_counter() - start
        return out

    def _retag(self, retag: Sequence[tuple[int, Planned, ContentHashes, ImageResult | None]],
               payloads: dict[str, dict[str, Any]], out: EmbeddedBatch
               ) -> list[tuple[int, Planned, ContentHashes, ImageResult | None]]:
        """Tag products whose vectors are unchanged from their stored image vectors; put their payloads in
        ``payloads``. Returns the products whose stored image vector vanished (to embed again)."""
        if not retag:
            return []
        assert self.tagger is not None  # hashes.tags is set only when tagging
        found = self.store.retrieve(self.collection, [item.product.id for _, item, _, _ in retag], with_vectors=True)
        stored = {point.product_id: point.vectors[IMAGE] for point in found if IMAGE in point.vectors}
        ready = [entry for entry in retag if entry[1].product.id in stored]
        if ready:
            start = time.perf_counter()
            tags = self.tagger.tag(np.stack([stored[item.product.id] for _, item, _, _ in ready]))
            _add(out, "tag", time.perf_counter() - start, len(ready))
            for (_, item, hashes, _), product_tags in zip(ready, tags, strict=True):
                payloads[item.product.id] = stored_payload(item.product, hashes, product_tags)
        return [entry for entry in retag if entry[1].product.id not in stored]

    def _embed_new_texts(self, items: Sequence[Planned]) -> dict[int, NDArray[np.float32]]:
        """Text vectors of the items whose text is new or changed, by position in the batch."""
        keys = [key for key, item in enumerate(items) if item.hashes.text is not None
                and (item.stored is None or item.stored.text != item.hashes.text)]
        if not keys:
            return {}
        vectors = self.encoder.embed_texts([items[key].text for key in keys])
        return dict(zip(keys, vectors, strict=True))

    def _embed(self, work: Sequence[tuple[int, Planned, ContentHashes, ImageResult | None]],
               texts: dict[int, NDArray[np.float32]], rejected: list[Rejection],
               out: EmbeddedBatch | None = None) -> list[PointWrite]:
        """Vectors for each product: embedded when new or changed, copied from the store otherwise."""
        reuse_ids = [item.product.id for _, item, hashes, result in work if _reuses(item, hashes, result)]
        stored: dict[str, dict[str, NDArray[np.float32]]] = {}
        if reuse_ids:
            found = self.store.retrieve(self.collection, reuse_ids, with_vectors=True)
            stored = {point.product_id: point.vectors for point in found}
        out = out if out is not None else EmbeddedBatch(index=-1, rows=0)
        vectors: list[dict[str, NDArray[np.float32]]] = [{} for _ in work]
        missing_texts: list[tuple[int, str]] = []
        pixels: list[tuple[int, NDArray[np.float32]]] = []
        raw: list[tuple[int, bytes]] = []
        redo: list[ImageTask] = []
        for i, (key, item, hashes, result) in enumerate(work):
            old = stored.get(item.product.id, {})
            if key in texts:
                vectors[i][TEXT] = texts[key]
            elif hashes.text is not None:
                if TEXT in old and (item.stored is None or item.stored.generated is None):
                    vectors[i][TEXT] = old[TEXT]
                else:  # vanished since the state was read, or enriched (`vitrine enrich`): embed it
                    missing_texts.append((i, item.text))
            if result is not None:
                if result.pixels is not None:
                    pixels.append((i, result.pixels))
                elif result.data is not None:
                    raw.append((i, result.data))
                elif IMAGE in old:
                    vectors[i][IMAGE] = old[IMAGE]
                else:  # the stored vector vanished since the state was read: decode after all
                    assert item.image_ref is not None
                    redo.append(ImageTask(i, item.image_ref))
        failed: set[int] = set()
        for result in self.preparer.prepare_here(redo) if redo else []:
            if result.pixels is not None:
                pixels.append((result.key, result.pixels))
            elif result.data is not None:
                raw.append((result.key, result.data))
            else:
                failed.add(result.key)
                item = work[result.key][1]
                rejected.append(Rejection(item.line, item.product.id, result.error or "image vanished"))
        if missing_texts:
            start = time.perf_counter()
            embedded = self.encoder.embed_texts([text for _, text in missing_texts])
            _add(out, "embed_text", time.perf_counter() - start, len(missing_texts))
            for (i, _), vector in zip(missing_texts, embedded, strict=True):
                vectors[i][TEXT] = vector
        if raw:
            self._embed_raw(work, raw, vectors=vectors, failed=failed, rejected=rejected, out=out)
        if pixels:
            start = time.perf_counter()
            stack = np.stack([p for _, p in pixels])
            for (i, _), vector in zip(pixels, self.encoder.embed_pixels(stack), strict=True):
                vectors[i][IMAGE] = vector
            _add(out, "embed_image", time.perf_counter() - start, len(pixels))
        tags: dict[int, Tags] = {}
        tagged = [i for i, (_, _, hashes, _) in enumerate(work)
                  if hashes.tags is not None and IMAGE in vectors[i] and i not in failed]
        if self.tagger is not None and tagged:
            start = time.perf_counter()
            tags = dict(zip(tagged, self.tagger.tag(np.stack([vectors[i][IMAGE] for i in tagged])), strict=True))
            _add(out, "tag", time.perf_counter() - start, len(tagged))
        return [PointWrite(item.product.id, stored_payload(item.product, hashes, tags.get(i)), vectors[i])
                for i, (_, item, hashes, _) in enumerate(work) if i not in failed]


    def _embed_raw(self, work: Sequence[tuple[int, Planned, ContentHashes, ImageResult | None]],
                   raw: Sequence[tuple[int, bytes]], *, vectors: list[dict[str, NDArray[np.float32]]],
                   failed: set[int], rejected: list[Rejection], out: EmbeddedBatch) -> None:
        """Decode JPEG bytes on the encoder's device in one batch and embed them there."""
        if self.decoder is None:
            raise RuntimeError("image bytes came back for device decoding, but the Embedder has no decoder")
        refs = [work[i][1].image_ref or f"image of {work[i][1].product.id!r}" for i, _ in raw]
        decoded = self.decoder.decode([data for _, data in raw], refs)
        _add(out, "device_decode", decoded.decode_s, len(raw))
        _add(out, "device_preprocess", decoded.preprocess_s, len(decoded.keys))
        for position, reason in decoded.errors.items():
            i = raw[position][0]
            failed.add(i)
            item = work[i][1]
            rejected.append(Rejection(item.line, item.product.id, reason))
        if decoded.keys and decoded.pixels is not None:
            start = time.perf_counter()
            embedded = cast(DeviceEncoder, self.encoder).embed_tensor(decoded.pixels)
            for position, vector in zip(decoded.keys, embedded, strict=True):
                vectors[raw[position][0]][IMAGE] = vector
            _add(out, "embed_image", time.perf_counter() - start, len(decoded.keys))


class Writer:
    """Writes embedded batches to the store and rejected rows to the report, and keeps the counts."""

    def __init__(self, *, store: VectorStore, collection: str, report: RejectReport) -> None:
        self.store = store
        self.collection = collection
        self.report = report
        self.indexed = self.updated = self.unchanged = self.rejected = self.rows = 0
        self.thumbnails = self.thumbnail_failures = 0

    def write(self, batch: EmbeddedBatch) -> None:
        """Upsert, rewrite payloads, report; durable when this returns."""
        start = time.perf_counter()
        if batch.points:
            self.store.upsert(self.collection, batch.points)
        if batch.payloads:
            self.store.set_payload(self.collection, batch.payloads)
        for row in sorted(batch.rejected, key=lambda r: r.line):
            self.report.add(line=row.line, product_id=row.product_id, reason=row.reason)
        self.report.flush()
        batch.timings["write"] = time.perf_counter() - start
        _add(batch, "upsert", batch.timings["write"], len(batch.points) + len(batch.payloads))
        self.rows += batch.rows
        self.indexed += len(batch.points)
        self.updated += len(batch.payloads)
        self.unchanged += batch.unchanged
        self.rejected += len(batch.rejected)
        self.thumbnails += batch.thumbnails
        self.thumbnail_failures += batch.thumbnail_failures
