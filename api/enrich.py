"""Catalog enrichment (``vitrine enrich``): a vision-language model describes products whose text is thin.

Which products: those with an image whose catalog ``description`` is missing or shorter than ``min_chars``
characters (`is_thin`; settings ``rerank.enrich_min_chars``, 40). Products without an image are left alone
(a model given only a thin text has nothing to describe but guesses).

For each, the configured re-rank backend (`rerank.build_describer`) writes at most 2 factual sentences and
a few attributes from the photo and the text. The product is then written back in one upsert:

- payload: every stored field as it was, plus `common.product.GENERATED_FIELD` (``generated``) =
  ``{"description", "attributes", "model", "at", "source": "enrich"}``; catalog fields are never changed. The
  store's lexical (BM25) vector is rebuilt from the new payload and counts the generated description
  (`store.lexical.lexical_text`), so keyword search finds the words it names;
- text vector: the collection's encoder embeds the product's text (`common.product.Product.embedding_text`,
  as the indexer does) followed by the generated description; the image vector is kept as it was;
- state (`indexer.state`): the content hashes are kept, plus ``generated`` (the hash of the embedded text),
  so a later ``vitrine index`` of an unchanged catalog counts the product unchanged and keeps the enrichment,
  while any change to its catalog row rewrites it from the catalog (without ``generated``, text embedded again).

Resumable: a product whose ``generated.model`` is the current model is skipped, so a stopped job (Ctrl-C,
``--limit``, a crash) continues where it left off; products are written in batches, each durable when written.
One failing product (image unreadable, model error, an answer with no usable description) is counted and
reported and never stops the job, unless `MAX_CONSECUTIVE_FAILURES` products in a row fail (the backend is
down, or the model answers nothing usable): then the job stops, with what it wrote kept.

A product whose catalog already has a ``generated`` field is not enriched (its value is catalog data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import ValidationError
from tqdm import tqdm

from common.errors import VitrineError
from common.images import decode_image
from common.product import GENERATED_FIELD, GENERATED_SOURCE, RESERVED_FIELD, Product
from common.settings import Settings
from common.thumbnails import ThumbnailStore, check_key
from embed.protocol import Encoder
from indexer.fetch import FetchConfig, ImageFetcher
from indexer.state import ContentHashes, text_hash
from rerank.describe import Describer, Description
from rerank.protocol import Candidate
from store.protocol import STATE_KEY, TEXT, VECTOR_NAMES, PointWrite, StoredPoint, VectorStore

logger = logging.getLogger(__name__)

BATCH_SIZE = 16
"""Products described, embedded and written together."""
MAX_CONSECUTIVE_FAILURES = 20
"""The job stops once this many products in a row failed."""
MAX_REPORTED_FAILURES = 1000
"""Failures kept in the summary (all are counted and logged)."""
_TEXT_FIELDS = ("id", "title", "brand", "category", "description", "image", "images", GENERATED_FIELD, STATE_KEY)


def is_thin(payload: Mapping[str, Any], min_chars: int) -> bool:
    """Whether a product's catalog text is thin: its ``description`` is missing or shorter than ``min_chars``
    characters (after stripping); never when ``min_chars`` is 0."""
    description = payload.get("description")
    length = len(description.strip()) if isinstance(description, str) else 0
    return length < min_chars


def generated_of(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The enrichment `vitrine enrich` stored with a product, or ``None`` (none, or a catalog field of that name)."""
    value = payload.get(GENERATED_FIELD)
    if isinstance(value, Mapping) and value.get("source") == GENERATED_SOURCE:
        return dict(value)
    return None


def product_text(payload: Mapping[str, Any]) -> str:
    """The text the indexer embeds for a stored product (`Product.embedding_text`: title, brand, category,
    description)."""
    fields = {key: value for key, value in payload.items() if not key.startswith(RESERVED_FIELD)}
    try:
        return Product.model_validate(fields).embedding_text()
    except ValidationError:  # a payload written by hand: the same fields, read as they are
        parts = [payload.get(name) for name in ("title", "brand", "category", "description")]
        return ". ".join(part for part in parts if isinstance(part, str) and part.strip())


def enriched_text(payload: Mapping[str, Any], description: str) -> str:
    """The text an enriched product's text vector embeds: its catalog text, then the generated description."""
    return ". ".join(part for part in (product_text(payload), description) if part)


def _image_refs(payload: Mapping[str, Any]) -> list[str]:
    refs = [payload["image"]] if isinstance(payload.get("image"), str) else []
    images = payload.get("images")
    if isinstance(images, list):
        refs += [ref for ref in images if isinstance(ref, str) and ref not in refs]
    return refs


class ProductImages:
    """Loads a stored product's image: its preview (made at ingestion) when there is one, else its catalog image.

    Args:
        settings: fetch limits, image roots, the thumbnails folder.
        base_dir: the folder relative image paths start from (the catalog's folder; default: the current one).

    Thread-safe.
    """

    def __init__(self, settings: Settings, *, base_dir: Path | None = None) -> None:
        self._thumbnails = ThumbnailStore.from_settings(settings) if settings.images.thumbnails else None
        self._fetcher = ImageFetcher(FetchConfig.from_settings(settings, base_dir=base_dir or Path.cwd()))
        self._max_pixels = settings.indexer.max_image_pixels
        _ = self._fetcher.client  # made now, not raced for by the worker threads

    def key(self, payload: Mapping[str, Any]) -> str | None:
        """The stored hash of the product's image (from its content hashes), if any."""
        state = ContentHashes.from_payload(payload.get(STATE_KEY))
        return state.image if state is not None else None

    def load(self, payload: Mapping[str, Any]) -> Image.Image:
        """The product's image, RGB.

        Raises:
            VitrineError: no image, or it cannot be read (the message names it).
        """
        key = self.key(payload)
        if self._thumbnails is not None and key is not None:
            try:
                if self._thumbnails.exists(check_key(key), "preview"):
                    return self._thumbnails.open(key, "preview")
            except (OSError, VitrineError) as e:  # a damaged preview: read the original instead
                logger.debug("preview of %s unreadable (%s); reading its image", payload.get("id"), e)
        refs = _image_refs(payload)
        if not refs:
            raise VitrineError(f"product {payload.get('id')!r} has no image")
        return decode_image(self._fetcher.fetch(refs[0]), max_pixels=self._max_pixels, source=refs[0])

    def close(self) -> None:
        """Close the HTTP connections."""
        self._fetcher.close()


@dataclass
class EnrichSummary:
    """What an enrichment run did."""

    model: str
    products: int = 0
    """Products looked at (after the filters)."""
    thin: int = 0
    """Of those, thin products with an image."""
    enriched: int = 0
    skipped: int = 0
    """Thin products already enriched by this model (left as they are)."""
    failed: int = 0
    no_image: int = 0
    """Thin products without an image (not enriched)."""
    conflicts: int = 0
    """Products whose catalog has a ``generated`` field of its own (not enriched)."""
    remaining: int = 0
    """Thin products left for a later run (``--limit``, or the job stopped)."""
    seconds: float = 0.0
    planned: list[str] = field(default_factory=list)
    """Dry run: the ids that would be enriched."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(product id, reason), at most `MAX_REPORTED_FAILURES`."""
    stopped: str | None = None
    """Why the job stopped early, if it did."""

    @property
    def rate(self) -> float:
        """Products enriched per second."""
        return self.enriched / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (rate included)."""
        return {"model": self.model, "products": self.products, "thin": self.thin, "enriched": self.enriched,
                "skipped": self.skipped, "failed": self.failed, "no_image": self.no_image,
                "conflicts": self.conflicts, "remaining": self.remaining, "seconds": round(self.seconds, 3),
                "rate": round(self.rate, 3), "planned": self.planned,
                "failures": [{"id": pid, "reason": reason} for pid, reason in self.failures],
                "stopped": self.stopped}


def _select(points: Iterable[StoredPoint], summary: EnrichSummary, *, model: str, min_chars: int,
            where: Mapping[str, str]) -> list[str]:
    """The ids to enrich, in store order; counts the others in ``summary``."""
    todo: list[str] = []
    for point in points:
        payload = point.payload
        if any(str(payload.get(name)) != value for name, value in where.items()):
            continue
        summary.products += 1
        if not is_thin(payload, min_chars):
            continue
        if GENERATED_FIELD in payload and generated_of(payload) is None:
            summary.conflicts += 1
        elif not _image_refs(payload):
            summary.no_image += 1
        else:
            summary.thin += 1
            done = generated_of(payload)
            if done is not None and done.get("model") == model:
                summary.skipped += 1
            else:
                todo.append(point.product_id)
    return todo


def _enriched_point(point: StoredPoint, description: Description, vector: NDArray[np.float32], *, model: str,
                    text: str, encoder: str, at: str) -> PointWrite:
    payload = dict(point.payload)
    payload[GENERATED_FIELD] = {"description": description.text, "attributes": dict(description.attributes),
                                "model": model, "at": at, "source": GENERATED_SOURCE}
    state = ContentHashes.from_payload(payload.get(STATE_KEY))
    if state is not None:
        payload[STATE_KEY] = {**payload[STATE_KEY], "generated": text_hash(text, encoder=encoder)}
    vectors = {name: value for name, value in point.vectors.items() if name in VECTOR_NAMES and name != TEXT}
    vectors[TEXT] = vector
    return PointWrite(point.product_id, payload, vectors)


def enrich_catalog(
    store: VectorStore,
    collection: str,
    *,
    describer: Describer,
    encoder: Encoder | None,
    images: ProductImages | None,
    min_chars: int,
    limit: int | None = None,
    where: Mapping[str, str] | None = None,
    product_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    concurrency: int = 1,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> EnrichSummary:
    """Describe the thin products of ``collection`` and store the descriptions (see the module's notes).

    Args:
        store: the open store.
        collection: the collection (alias).
        describer: the model that writes descriptions (loaded here unless ``dry_run``).
        encoder: the collection's encoder, loaded (``None`` only for a dry run).
        images: where product images come from (``None`` only for a dry run).
        min_chars: a description shorter than this makes a product thin (`is_thin`).
        limit: enrich at most this many products in this run (the others stay for the next one).
        where: only products whose payload field equals the value (as text): ``{"category": "Bag"}``.
        product_ids: only these products (default: every product).
        dry_run: decide and count, describe nothing: ``planned`` lists the ids that would be enriched.
        concurrency: products described at once (API backends answer several requests in parallel).
        batch_size: products described, embedded and written together.
        progress: show a progress bar.
        clock: the time recorded as ``generated.at``.

    Raises:
        ValueError: a limit, concurrency or batch size below 1.
        VitrineError: the describer or the encoder cannot be loaded, or the store fails (per-product failures
            are counted instead).
    """
    if (limit is not None and limit < 0) or concurrency < 1 or batch_size < 1:
        raise ValueError(f"enrich needs limit >= 0, concurrency >= 1 and batch_size >= 1; got limit {limit}, "
                         f"concurrency {concurrency}, batch_size {batch_size}")
    start = time.perf_counter()
    summary = EnrichSummary(model=describer.name)
    points = (store.retrieve(collection, list(product_ids)) if product_ids is not None
              else store.scroll(collection, fields=list(_TEXT_FIELDS)))
    todo = _select(points, summary, model=describer.name, min_chars=min_chars, where=where or {})
    if limit is not None and len(todo) > limit:
        summary.remaining = len(todo) - limit
        todo = todo[:limit]
    if dry_run or not todo:
        summary.planned = list(todo) if dry_run else []
        summary.remaining += len(todo) if dry_run else 0
        summary.seconds = time.perf_counter() - start
        return summary
    if encoder is None or images is None:
        raise ValueError("enrich needs the collection's encoder and an image source unless it is a dry run")
    describer.load()
    run = _Run(store, collection, describer=describer, encoder=encoder, images=images, summary=summary, clock=clock)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="enrich") as pool, \
            tqdm(total=len(todo), unit="product", desc="enriching", disable=not progress,
                 dynamic_ncols=True) as bar:
        for offset in range(0, len(todo), batch_size):
            batch = todo[offset:offset + batch_size]
            run.batch(pool, batch, bar)
            if run.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                summary.remaining += len(todo) - offset - len(batch)
                summary.stopped = (f"{run.consecutive_failures} products in a row failed (last: "
                                   f"{summary.failures[-1][1] if summary.failures else '?'}); is the backend up?")
                logger.error("enrich stopped: %s", summary.stopped)
                break
    summary.seconds = time.perf_counter() - start
    return summary


class _Run:
    """One enrichment run's batches: describe, embed, write, count."""

    def __init__(self, store: VectorStore, collection: str, *, describer: Describer, encoder: Encoder,
                 images: ProductImages, summary: EnrichSummary, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.collection = collection
        self.describer = describer
        self.encoder = encoder
        self.images = images
        self.summary = summary
        self.clock = clock
        self.consecutive_failures = 0

    def describe(self, point: StoredPoint) -> Description | str:
        """The description of one product, or why there is none."""
        try:
            image = self.images.load(point.payload)
            item = Candidate(point.product_id, product_text(point.payload), image, self.images.key(point.payload))
            return self.describer.describe_product(item)
        except VitrineError as e:
            return str(e)
        except Exception as e:  # a model's unexpected failure is one product's failure, not the job's
            logger.debug("enrich: %s failed", point.product_id, exc_info=True)
            return f"{type(e).__name__}: {e}"

    def fail(self, product_id: str, reason: str) -> None:
        self.summary.failed += 1
        self.consecutive_failures += 1
        if len(self.summary.failures) < MAX_REPORTED_FAILURES:
            self.summary.failures.append((product_id, reason))
        logger.warning("enrich: product %r not enriched: %s", product_id, reason)

    def batch(self, pool: ThreadPoolExecutor, ids: list[str], bar: tqdm[Any]) -> None:
        found = self.store.retrieve(self.collection, ids, with_vectors=True)
        for pid in sorted(set(ids) - {point.product_id for point in found}):
            self.fail(pid, "deleted from the collection meanwhile")
            bar.update(1)
        done: list[tuple[StoredPoint, Description, str]] = []
        for point, answer in zip(found, pool.map(self.describe, found), strict=True):
            if isinstance(answer, str):
                self.fail(point.product_id, answer)
                bar.update(1)
            else:
                self.consecutive_failures = 0
                done.append((point, answer, enriched_text(point.payload, answer.text)))
        if not done:
            return
        vectors = self.encoder.embed_texts([text for _, _, text in done])
        at = self.clock().isoformat(timespec="seconds")
        writes = [_enriched_point(point, description, vector, model=self.describer.name, text=text,
                                  encoder=self.encoder.name, at=at)
                  for (point, description, text), vector in zip(done, vectors, strict=True)]
        self.store.upsert(self.collection, writes)
        self.summary.enriched += len(writes)
        bar.update(len(writes))
        bar.set_postfix(failed=self.summary.failed, refresh=False)
