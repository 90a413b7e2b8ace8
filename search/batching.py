"""Micro-batching of query encodings: the texts and images of concurrent searches through one encoder call.

The API answers searches in a pool of threads, and each search that misses the query cache needs one encoder
call. One call per query wastes the model: on a CPU a batch of 16 short texts costs little more than one (the
matrix products share their weights' memory traffic), on a GPU the kernels launch once for the batch, and
concurrent calls from many threads only fight over the same cores. `MicroBatcher` queues those misses instead:
one worker thread per encoder takes the oldest queued item, waits at most ``window_ms`` after it was queued for
up to ``max_batch`` items of its kind (texts and images are batched apart), runs ONE ``embed_texts`` or
``embed_images`` call and gives each caller its own row through a `concurrent.futures.Future`.

Under load the window costs nothing: while the worker runs a batch the next one gathers, and starts at once when
its first item has already waited the window. A batch that fails is tried again one item at a time, so a bad
image fails only the search that sent it. `MicroBatcher.close` stops the worker and fails what is still queued
with `common.errors.BackendUnavailable`.

Metrics (`common.metrics`): per item the queue wait (queued to its batch's start), per call the batch size and
the encoder time, labelled by kind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import BackendUnavailable, InvalidInput
from common.metrics import ENCODE_BATCH_SIZE, ENCODE_QUEUE_WAIT, ENCODE_SECONDS
from embed.protocol import Embedder

logger = logging.getLogger(__name__)

Kind = Literal["text", "image"]
KINDS: tuple[Kind, ...] = ("text", "image")
IDLE_S = 30.0
"""An idle worker thread ends after this long; the next query starts a new one."""
CLOSE_WAIT_S = 5.0


@dataclass
class _Item:
    """One queued input and the future its caller waits on."""

    value: str | Image.Image
    queued: float
    future: Future[NDArray[np.float32]] = field(default_factory=Future)


class MicroBatcher:
    """Encodes query texts and images from many threads in batches, with one worker thread per encoder.

    Thread-safe. The worker starts with the first query and ends after ``idle_s`` without one.

    Args:
        encoder: the loaded encoder (the only caller of its ``embed_texts`` / ``embed_images`` while queries go
            through here), or a `search.encoder_process.ProcessEncoder` that runs them in a child process.
        window_ms: longest wait after an item is queued for others to join its batch (> 0; settings
            search.batch_window_ms).
        max_batch: most items in one encoder call (settings search.max_batch).
        idle_s: seconds without a query after which the worker thread ends.

    Raises:
        InvalidInput: a window that is not positive, or a max_batch under 1.
    """

    def __init__(self, encoder: Embedder, *, window_ms: float, max_batch: int, idle_s: float = IDLE_S) -> None:
        if not window_ms > 0:
            raise InvalidInput(f"batch window {window_ms!r} ms must be more than 0 (0 means: no batching, encode "
                               "inline)")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InvalidInput(f"max_batch {max_batch!r} must be an integer of at least 1")
        self.encoder = encoder
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch
        self._idle_s = idle_s
        self._ready = threading.Condition(threading.Lock())
        self._pending: dict[Kind, deque[_Item]] = {kind: deque() for kind in KINDS}
        self._worker: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def text(self, text: str) -> NDArray[np.float32]:
        """The embedding of one query text (blocks until its batch is done).

        Raises:
            BackendUnavailable: the batcher was closed before the text was encoded.
            Exception: whatever the encoder raised for this text.
        """
        return self.submit("text", text).result()

    def image(self, image: Image.Image) -> NDArray[np.float32]:
        """The embedding of one query image (blocks until its batch is done); raises as `text`."""
        return self.submit("image", image).result()

    def submit(self, kind: Kind, value: str | Image.Image) -> Future[NDArray[np.float32]]:
        """Queue one text or image; the future gets its embedding (a row of the encoder's output) or its error.

        Raises:
            InvalidInput: a value of the wrong type for its kind.
            BackendUnavailable: the batcher is closed.
        """
        if kind not in KINDS or isinstance(value, str) != (kind == "text") or \
                (kind == "image" and not isinstance(value, Image.Image)):
            raise InvalidInput(f"cannot encode a {type(value).__name__} as a query {kind!r}; expected a str for "
                               "'text' and a PIL image for 'image'")
        item = _Item(value, time.perf_counter())
        with self._ready:
            if self._closed:
                raise BackendUnavailable("the query encoder is shut down (the search service was closed); no "
                                         "more queries are encoded")
            self._pending[kind].append(item)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=f"encode-batcher-{self.encoder.name}",
                                                daemon=True)
                self._worker.start()
            else:
                self._ready.notify()
        return item.future

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Stop the worker (a batch it is running finishes) and fail the queued items with
        `common.errors.BackendUnavailable`. Idempotent."""
        with self._ready:
            self._closed = True
            left = [item for kind in KINDS for item in self._pending[kind]]
            for queue in self._pending.values():
                queue.clear()
            worker = self._worker
            self._ready.notify_all()
        for item in left:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(BackendUnavailable(
                    "the query encoder was shut down (the search service was closed) before this query was "
                    "encoded; try again once the service is back"))
        if worker is not None and worker is not threading.current_thread():
            worker.join(wait_s)

    # -- the worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        """The worker: batches until closed or idle."""
        try:
            while True:
                taken = self._next_batch()
                if taken is None:
                    return
                self._encode(*taken)
        except BaseException:  # never leave a caller waiting on a dead worker
            logger.exception("the query encoding worker failed")
            self.close(wait_s=0)
            raise

    def _next_batch(self) -> tuple[Kind, list[_Item]] | None:
        """Wait for the next batch: the oldest queued item's kind, up to max_batch items, gathered until the
        window after that item is over. None when closed or idle (the worker then ends)."""
        with self._ready:
            idle_until = time.perf_counter() + self._idle_s
            while not self._closed and not any(self._pending.values()):
                remaining = idle_until - time.perf_counter()
                if remaining <= 0:
                    self._worker = None  # the next submit starts another
                    return None
                self._ready.wait(remaining)
            if self._closed:
                return None
            kind = min((k for k in KINDS if self._pending[k]), key=lambda k: self._pending[k][0].queued)
            queue = self._pending[kind]
            deadline = queue[0].queued + self.window_s
            while not self._closed and len(queue) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            if self._closed:
                return None
            return kind, [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]

    def _encode(self, kind: Kind, items: Sequence[_Item]) -> None:
        """Run one encoder call for ``items`` and resolve their futures (one by one after a failed batch)."""
        started = time.perf_counter()
        live = [item for item in items if item.future.set_running_or_notify_cancel()]
        for item in live:
            ENCODE_QUEUE_WAIT.observe(started - item.queued)
        if not live:
            return
        try:
            rows = self._call(kind, [item.value for item in live])
        except Exception as error:
            if len(live) == 1:
                live[0].future.set_exception(error)
                return
            logger.info("a batch of %d query %ss failed (%s); encoding them one by one", len(live), kind, error)
            for item in live:
                try:
                    row = self._call(kind, [item.value])[0]
                except Exception as alone:
                    item.future.set_exception(alone)
                else:
                    item.future.set_result(row)
            return
        for item, row in zip(live, rows, strict=True):
            item.future.set_result(row)

    def _call(self, kind: Kind, values: Sequence[str | Image.Image]) -> list[NDArray[np.float32]]:
        """One encoder call (equal texts encoded once); the rows in the order of ``values``, each its own copy.

        Raises:
            BackendUnavailable: the encoder returned another number of rows than it was given inputs.
        """
        if kind == "text":
            texts = [str(v) for v in values]
            unique = list(dict.fromkeys(texts))
            ENCODE_BATCH_SIZE.labels(kind).observe(len(unique))
            with ENCODE_SECONDS.labels(kind).time():
                out = np.asarray(self.encoder.embed_texts(unique), dtype=np.float32)
            self._check_rows(kind, out, len(unique))
            where = {text: i for i, text in enumerate(unique)}
            return [out[where[text]].copy() for text in texts]
        images = [v for v in values if isinstance(v, Image.Image)]
        ENCODE_BATCH_SIZE.labels(kind).observe(len(images))
        with ENCODE_SECONDS.labels(kind).time():
            out = np.asarray(self.encoder.embed_images(images), dtype=np.float32)
        self._check_rows(kind, out, len(images))
        return [row.copy() for row in out]

    def _check_rows(self, kind: Kind, out: NDArray[np.float32], expected: int) -> None:
        if out.ndim != 2 or out.shape[0] != expected:
            raise BackendUnavailable(f"encoder {self.encoder.name!r} returned an array of shape {out.shape} for "
                                     f"{expected} {kind}s; expected one row per input")
