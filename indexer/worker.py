"""Image preparation (fetch -> hash -> decode -> model preprocessing), in worker processes.

`ImagePreparer` is the main process's handle: it starts the worker processes at once (``spawn`` context:
never ``fork`` a process in which torch may already run threads) so that they warm up while the model
loads; `submit` hands a chunk of `ImageTask` to them and returns a future of `ImageResult`. While they
are still starting, chunks run on a thread of this process (and the workers take over the ones it has not
started); with ``workers=0``, chunks run in this process when their result is asked for.

In each worker, `init_worker` watches the parent (a worker exits when its job is killed), lowers its CPU
priority and limits torch to one thread (the model in the main process owns the cores); `prepare_chunk`
fetches the chunk's images (URLs concurrently, in threads), hashes the bytes and, unless they hash to the
task's ``expected_hash`` (the image is unchanged and its stored vector still holds), decodes and
preprocesses them into float32 (3, H, W) arrays. With a `ThumbnailStore` in the config, it also writes the
image's thumbnail and preview from the decoded picture when they are missing (decoding an unchanged image
for them alone, which leaves it unchanged); a failure to write them is counted, never a rejection.

With ``WorkerConfig.raw_jpeg`` (``indexer.decode`` = gpu, see `indexer.gpu_decode`), a JPEG whose header
reads well is not decoded into pixels here: its bytes go back (``ImageResult.data``) for the main process to
decode in batches on the encoder's device (thumbnails, when missing, are still made here, from a draft-size
decode). Other formats, and JPEGs whose header does not read, take the usual path.

Each result carries its share of the chunk's fetch time and its own decode and preprocess times, for the
job's per-stage timings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import logging
import multiprocessing
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import VitrineError
from common.images import decode_image
from common.thumbnails import ThumbnailStore
from embed.protocol import ImageTransform
from indexer.fetch import FetchConfig, ImageFetcher, is_url
from indexer.gpu_decode import is_jpeg
from indexer.state import image_hash

logger = logging.getLogger(__name__)

FETCH_THREADS = 8
"""Concurrent downloads per worker (only URLs use them; local files are read in turn)."""


@dataclass(frozen=True)
class ImageTask:
    """One image to prepare."""

    key: int
    """The caller's handle on the result (its position in the batch)."""
    ref: str
    expected_hash: str | None = None
    """Hash of the stored version: when the bytes hash the same, decoding is skipped."""


@dataclass(frozen=True)
class ImageResult:
    """A prepared image: pixels, or skipped as unchanged (``pixels`` None), or an error."""

    key: int
    hash: str | None = None
    pixels: NDArray[np.float32] | None = None
    error: str | None = None
    seconds: float = 0.0
    """Time spent fetching, decoding and preprocessing it."""
    thumbnailed: bool = False
    """Its thumbnail and preview were written now."""
    thumbnail_error: str | None = None
    """Why its missing thumbnail and preview could not be made (the image itself is fine)."""
    data: bytes | None = None
    """The JPEG's bytes, left for the main process to decode on the encoder's device (``raw_jpeg``)."""
    fetch_s: float = 0.0
    """Its share of the time its chunk spent fetching (reading files, downloading)."""
    decode_s: float = 0.0
    """Time spent decoding it (and checking its header; thumbnails included)."""
    preprocess_s: float = 0.0
    """Time spent in the model's preprocessing."""

    @property
    def unchanged(self) -> bool:
        """The bytes hashed to the expected hash and were not decoded."""
        return self.error is None and self.pixels is None and self.data is None


@dataclass(frozen=True)
class WorkerConfig:
    """What workers need (picklable)."""

    fetch: FetchConfig
    transform: ImageTransform
    encoder: str
    """Encoder name, mixed into image hashes."""
    max_pixels: int
    draft_size: int | None = None
    thumbnails: ThumbnailStore | None = None
    """Where thumbnails and previews go (None: none are made)."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Identifies the job: workers build their fetcher once per token."""
    raw_jpeg: bool = False
    """Return readable JPEGs as bytes (``ImageResult.data``) instead of pixels: decoded on the device later."""


class _Context:
    """The per-process tools of image preparation."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.fetcher = ImageFetcher(config.fetch)
        self.thumbnail_failures = 0

    def _draft_size(self, data: bytes, thumbnails: bool) -> int | None:
        """The JPEG draft size: the model's, or what the thumbnails need when they are made too."""
        if thumbnails and self.config.thumbnails is not None:
            return self.config.thumbnails.draft_size(data, self.config.draft_size)
        return self.config.draft_size

    def _thumbnail(self, task: ImageTask, digest: str, image: Image.Image, data: bytes) -> str | None:
        """Write the thumbnail and preview of ``image`` (decoded from ``data``); the reason when that fails
        (logged, not raised)."""
        assert self.config.thumbnails is not None
        try:
            self.config.thumbnails.write(digest, image, original=data)
        except Exception as e:  # disk full, permissions...: the product is indexed all the same
            return self._thumbnail_failed(task, f"{type(e).__name__}: {e}")
        return None

    def _thumbnail_failed(self, task: ImageTask, reason: str) -> str:
        self.thumbnail_failures += 1
        message = f"{task.ref}: cannot make its thumbnail and preview ({reason})"
        if self.thumbnail_failures == 1:  # once per worker and job; the summary counts them all
            logger.warning("%s; the product is indexed without them (further failures are logged at DEBUG)",
                           message)
        else:
            logger.debug("%s", message)
        return message

    def prepare(self, task: ImageTask, data: bytes | VitrineError) -> ImageResult:
        start = time.perf_counter()
        if isinstance(data, VitrineError):
            return ImageResult(task.key, error=str(data))
        digest = image_hash(data, encoder=self.config.encoder)
        unchanged = task.expected_hash is not None and digest == task.expected_hash
        thumbnails = self.config.thumbnails is not None and not self.config.thumbnails.has(digest)
        if unchanged and not thumbnails:
            return ImageResult(task.key, hash=digest, seconds=time.perf_counter() - start)
        if self.config.raw_jpeg and not unchanged and is_jpeg(data) and self._header_ok(data):
            return self._raw(task, digest, data, thumbnails, start)
        try:
            image = decode_image(data, max_pixels=self.config.max_pixels, source=task.ref,
                                 draft_size=self._draft_size(data, thumbnails))
        except VitrineError as e:
            if unchanged:  # decoded for its thumbnails only: its stored vector still holds
                return ImageResult(task.key, hash=digest, seconds=time.perf_counter() - start,
                                   thumbnail_error=self._thumbnail_failed(task, str(e)))
            return ImageResult(task.key, hash=digest, error=str(e))
        decoded = time.perf_counter()
        if unchanged:
            failure = self._thumbnail(task, digest, image, data)
            return ImageResult(task.key, hash=digest, seconds=time.perf_counter() - start,
                               thumbnailed=failure is None, thumbnail_error=failure, decode_s=decoded - start)
        try:
            pixels = self.config.transform(image)
        except VitrineError as e:
            return ImageResult(task.key, hash=digest, error=str(e))
        except Exception as e:  # a preprocessing failure on one image must not stop the job
            logger.debug("preprocessing %s failed", task.ref, exc_info=True)
            return ImageResult(task.key, hash=digest, error=f"{task.ref}: cannot preprocess the image "
                                                             f"({type(e).__name__}: {e})")
        preprocessed = time.perf_counter()
        failure = self._thumbnail(task, digest, image, data) if thumbnails else None  # after a possible rejection
        end = time.perf_counter()
        return ImageResult(task.key, hash=digest, pixels=np.asarray(pixels, dtype=np.float32),
                           seconds=end - start, thumbnailed=thumbnails and failure is None,
                           thumbnail_error=failure, decode_s=decoded - start + end - preprocessed,
                           preprocess_s=preprocessed - decoded)

    def _header_ok(self, data: bytes) -> bool:
        """Whether the JPEG header reads and is within ``max_pixels`` (else the usual path explains why not)."""
        try:
            with Image.open(io.BytesIO(data), formats=["JPEG"]) as probe:
                width, height = probe.size
        except Exception:  # untrusted bytes: decode_image gives the reason
            return False
        return 0 < width * height <= self.config.max_pixels

    def _raw(self, task: ImageTask, digest: str, data: bytes, thumbnails: bool, start: float) -> ImageResult:
        """A JPEG left for the device: its thumbnails made here when missing (from a draft-size decode)."""
        failure = None
        if thumbnails:
            try:
                image = decode_image(data, max_pixels=self.config.max_pixels, source=task.ref,
                                     draft_size=self._draft_size(data, True))
            except VitrineError as e:
                return ImageResult(task.key, hash=digest, error=str(e))
            failure = self._thumbnail(task, digest, image, data)
        end = time.perf_counter()
        return ImageResult(task.key, hash=digest, data=data, seconds=end - start,
                           decode_s=end - start if thumbnails else 0.0,  # a header check is no decoding
                           thumbnailed=thumbnails and failure is None, thumbnail_error=failure)

    def fetch(self, ref: str) -> bytes | VitrineError:
        try:
            return self.fetcher.fetch(ref)
        except VitrineError as e:
            return e

    def prepare_chunk(self, tasks: Sequence[ImageTask]) -> list[ImageResult]:
        start = time.perf_counter()
        urls = sum(1 for task in tasks if is_url(task.ref))
        if urls > 1:
            with ThreadPoolExecutor(min(FETCH_THREADS, urls), thread_name_prefix="vitrine-fetch") as pool:
                blobs = list(pool.map(self.fetch, [task.ref for task in tasks]))
        else:
            blobs = [self.fetch(task.ref) for task in tasks]
        fetch_s = (time.perf_counter() - start) / max(1, len(tasks))
        results = [dataclasses.replace(self.prepare(task, data), fetch_s=fetch_s)
                   for task, data in zip(tasks, blobs, strict=True)]
        logger.debug("prepared %d images in %.3f s", len(tasks), time.perf_counter() - start)
        return results

    def close(self) -> None:
        self.fetcher.close()


_CONTEXT: dict[str, _Context] = {}  # this worker process's context for the current job, by config token
PARENT_POLL_S = 0.5
LOW_NICE = 10
"""The nice value of image preparation at priority ``low``."""
WARM_MODULES = ("numpy", "PIL.Image", "torch", "torchvision.transforms")
"""Imported by each worker as it starts, while the main process loads the model."""


def _exit_with_parent(parent: int) -> None:
    """End this worker when its parent is gone (a ``kill -9`` of the job must not leave orphans behind)."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(1)


def lower_priority(priority: str) -> None:
    """Lower the CPU priority of the calling thread (on Linux, priorities are per thread).

    ``idle`` (SCHED_IDLE): image preparation runs only on CPU time the model leaves unused, so it never
    slows the model's threads (on 2 cores, a decoder at normal priority halves a 2-thread forward pass);
    when the model waits for images, they get the whole machine. ``low``: nice 10, for machines shared
    with other busy jobs, where idle-priority work could starve. ``normal``: unchanged. Where SCHED_IDLE
    does not exist, ``idle`` falls back to ``low``.
    """
    if priority == "normal":
        return
    if priority == "idle" and hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_NICE)


def init_worker(priority: str) -> None:
    """Pool initializer: lower the priority first (`lower_priority`: even the start-up imports, seconds of
    CPU for torch, must not slow the model), watch the parent (exit when it dies), import the usual modules
    of image transforms, and keep torch to one thread (the model in the main process owns the cores)."""
    lower_priority(priority)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="vitrine-parent-watch",
                     daemon=True).start()
    for module in WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def warm_up() -> int:
    """A no-op task that makes the pool start a worker process now; returns its pid."""
    return os.getpid()


def prepare_chunk(config: WorkerConfig, tasks: Sequence[ImageTask]) -> list[ImageResult]:
    """Prepare ``tasks`` in this worker process (its fetcher is built on the job's first chunk)."""
    context = _CONTEXT.get(config.token)
    if context is None:
        for old in _CONTEXT.values():
            old.close()
        _CONTEXT.clear()
        context = _CONTEXT[config.token] = _Context(config)
    return context.prepare_chunk(tasks)


class ImageFuture(Protocol):
    """The result of `ImagePreparer.submit` (a `concurrent.futures.Future`, or work deferred in-process)."""

    def result(self, timeout: float | None = None) -> list[ImageResult]:
        """The prepared images, one per task, in order."""
        ...


class _Deferred:
    """A chunk prepared without the workers: in this process (a thread, or when asked for), unless the
    workers, once up, take it before it started."""

    def __init__(self, tasks: Sequence[ImageTask], group: int, local: Future[list[ImageResult]] | None,
                 context: _Context, lock: threading.Lock) -> None:
        self.tasks = list(tasks)
        self.group = group
        self.local = local
        """The chunk queued on this process's start-up thread (None: prepared when asked for)."""
        self.remote: Future[list[ImageResult]] | None = None
        """The chunk handed over to the workers."""
        self._context = context
        self._lock = lock
        self._result: list[ImageResult] | None = None

    def result(self, timeout: float | None = None) -> list[ImageResult]:
        if self.remote is None and self.local is not None:
            try:
                return self.local.result(timeout)
            except CancelledError:  # handed over to the workers just now
                with self._lock:  # taken while handing over: `remote` is set once it is free
                    pass
        if self.remote is not None:
            return self.remote.result(timeout)
        if self._result is None:
            self._result = self._context.prepare_chunk(self.tasks)
        return self._result


class ImagePreparer:
    """Runs image preparation in ``workers`` processes (0: in this process, when results are asked for).

    The worker processes start at once (``spawn``) and warm up while the caller loads its model. Until they
    are up, chunks go to a thread of this process (decoding releases the GIL, so it overlaps the model's
    work on other batches or on texts); once they are up, they take every chunk that thread has not
    started, except those of the oldest group (the batch the caller needs next). So a slow worker start
    never holds the first batches back, and never leaves the workers idle either. Call `configure` before
    `submit`. Use as a context manager; leaving it stops the workers (pending work is cancelled on error).
    """

    def __init__(self, *, workers: int, priority: str = "idle") -> None:
        self.workers = workers
        self.lock = threading.Lock()
        self._config: WorkerConfig | None = None
        self._local: _Context | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._starting: ThreadPoolExecutor | None = None
        self._ready = workers == 0
        self._waiting: list[_Deferred] = []
        if workers > 0:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker,
                                             initargs=(priority,))
            self._starting = ThreadPoolExecutor(1, thread_name_prefix="vitrine-images", initializer=lower_priority,
                                                initargs=(priority,))
            warming = [self._pool.submit(warm_up) for _ in range(workers)]
            threading.Thread(target=self._hand_over, args=(self._pool, warming), name="vitrine-hand-over",
                             daemon=True).start()

    def __enter__(self) -> ImagePreparer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close(cancel=error is not None)

    def _hand_over(self, pool: ProcessPoolExecutor, warming: list[Future[int]]) -> None:
        """Once every worker is up, give them the waiting chunks that have not started here."""
        start = time.perf_counter()
        try:
            pids = [future.result() for future in warming]
        except BaseException as e:  # a worker that cannot start: everything runs in this process
            if self._pool is None:  # closed meanwhile
                return
            logger.warning("image worker processes failed to start (%s); preparing images in-process", e)
            return
        handed = 0
        with self.lock:
            self._ready = True
            waiting, self._waiting = self._waiting, []
            next_group = min((chunk.group for chunk in waiting), default=None)  # the batch in the works
            try:
                for chunk in waiting:
                    if chunk.group == next_group or self._config is None:
                        continue
                    if chunk.local is None or chunk.local.cancel():
                        chunk.remote = pool.submit(prepare_chunk, self._config, chunk.tasks)
                        handed += 1
            except RuntimeError:  # the pool was shut down meanwhile
                return
        logger.debug("%d image worker(s) %s ready after %.2f s; %d waiting chunk(s) handed over", len(pids),
                     pids, time.perf_counter() - start, handed)

    def configure(self, config: WorkerConfig) -> None:
        """Set what the coming chunks need (fetch limits, transform, encoder name)."""
        if self._local is not None:
            self._local.close()
        self._config = config
        self._local = _Context(config)

    @property
    def ready(self) -> bool:
        """Whether the worker processes are up (always true without workers)."""
        return self._ready

    def submit(self, tasks: Sequence[ImageTask], *, group: int = 0) -> ImageFuture:
        """Start preparing ``tasks``: in a worker, or, while the workers start, in this process.

        Args:
            tasks: the images.
            group: the caller's batch number (results are asked for in increasing group order).
        """
        if self._config is None or self._local is None:
            raise RuntimeError("ImagePreparer.configure must be called before submit")
        with self.lock:
            if self._pool is not None and self._ready:
                return self._pool.submit(prepare_chunk, self._config, list(tasks))
            local = self._starting.submit(self._local.prepare_chunk, list(tasks)) if self._starting else None
            chunk = _Deferred(tasks, group, local, self._local, self.lock)
            if self._pool is not None:
                self._waiting.append(chunk)
            return chunk

    def prepare_here(self, tasks: Sequence[ImageTask]) -> list[ImageResult]:
        """Prepare ``tasks`` in this process now (for rare fallbacks)."""
        if self._local is None:
            raise RuntimeError("ImagePreparer.configure must be called before prepare_here")
        return self._local.prepare_chunk(tasks)

    def close(self, *, cancel: bool = False) -> None:
        """Stop the workers and close connections."""
        if self._starting is not None:
            self._starting.shutdown(wait=True, cancel_futures=cancel)
            self._starting = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
        if self._local is not None:
            self._local.close()
