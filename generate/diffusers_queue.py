"""The diffusers backend's job queue: worker threads that run compatible requests as one batch.

A request becomes a `Job` (its prepared inputs, a batching key and a deadline) and waits in one FIFO queue. Each
worker thread (``max_concurrency`` of them; one GPU job at a time by default) takes the oldest job, then for up
to ``batch_window_s`` also takes every queued job whose key equals it (same mode, size, strength, reference
image...) until the batch holds ``max_batch_images`` images, and runs them all as one call. Jobs of other keys
keep their place in the queue. The caller of `Job.wait` blocks until its own images are ready, or until its
deadline passes (then `GenerationFailed`; a worker that has not started the job skips it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from common.errors import GenerationFailed, VitrineError

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One request waiting for, or being run by, a worker.

    Attributes:
        payload: the backend's prepared inputs (opaque to the queue).
        key: jobs with equal keys may share one pipeline call.
        size: images this job asks for.
        deadline: a `time.monotonic` instant after which nobody waits for the result (None: no limit).
    """

    payload: Any
    key: Hashable
    size: int
    deadline: float | None = None
    submitted: float = field(default_factory=time.monotonic)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _images: list[Image.Image] | None = field(default=None, repr=False)
    _error: BaseException | None = field(default=None, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def done(self) -> bool:
        """Whether the job has its images or its error."""
        return self._done.is_set()

    def expired(self, now: float | None = None) -> bool:
        """Whether nobody waits for this job any more: its caller gave up, or its deadline has passed."""
        if self._cancelled:
            return True
        return self.deadline is not None and (time.monotonic() if now is None else now) > self.deadline

    def resolve(self, images: list[Image.Image]) -> None:
        """Hand the caller its images (ignored once the job is done)."""
        if not self.done:
            self._images = images
            self._done.set()

    def fail(self, error: BaseException) -> None:
        """Hand the caller an error to raise (ignored once the job is done)."""
        if not self.done:
            self._error = error
            self._done.set()

    def wait(self) -> list[Image.Image]:
        """Block until the images are ready and return them.

        Raises:
            GenerationFailed: the deadline passed first (the job is cancelled), or the run failed.
            Exception: whatever error the worker handed over (`fail`).
        """
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self._done.wait(timeout):
            self._cancelled = True
            waited = time.monotonic() - self.submitted
            raise GenerationFailed(f"diffusers generation ran past its deadline ({waited:.1f} s after it was "
                                   "asked for, queue included); raise VITRINE_GENERATE__TIME_LIMIT_S, or lower "
                                   "steps, size or n")
        if self._error is not None:
            raise self._error
        assert self._images is not None
        return self._images


Runner = Callable[[int, list[Job]], None]
"""``run(worker_index, batch)``: run the batch and `Job.resolve` or `Job.fail` each of its jobs."""


class JobQueue:
    """A FIFO of jobs served by worker threads that batch compatible jobs.

    Args:
        run: the function a worker calls with its index and a batch.
        workers: how many batches may run at once.
        batch_window_s: how long a worker waits for compatible jobs to join the oldest one, seconds.
        max_batch_images: a batch stops growing at this many images (a single larger job still runs).
        name: the threads' name prefix.
    """

    def __init__(self, run: Runner, *, workers: int = 1, batch_window_s: float = 0.05, max_batch_images: int = 8,
                 name: str = "vitrine-generate") -> None:
        if workers < 1:
            raise ValueError(f"workers {workers} must be at least 1")
        if batch_window_s < 0:
            raise ValueError(f"batch_window_s {batch_window_s} must be at least 0")
        if max_batch_images < 1:
            raise ValueError(f"max_batch_images {max_batch_images} must be at least 1")
        self._run = run
        self._workers = workers
        self._window = batch_window_s
        self._max_images = max_batch_images
        self._name = name
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        with self._cond:
            if self._closed:
                raise GenerationFailed("the generation queue is closed")
            if self._threads:
                return
            for index in range(self._workers):
                thread = threading.Thread(target=self._serve, args=(index,), name=f"{self._name}-{index}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (starting the workers if needed)."""
        self.start()
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the workers after their current batch; queued jobs fail."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in left:
            job.fail(GenerationFailed("the generation backend was closed before this request ran"))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            batch, images = [first], first.size
            window_end = time.monotonic() + self._window
            while True:
                for job in list(self._queue):
                    if job.key == first.key and images + job.size <= self._max_images:
                        self._queue.remove(job)
                        batch.append(job)
                        images += job.size
                remaining = window_end - time.monotonic()
                if remaining <= 0 or images >= self._max_images or self._closed:
                    return batch
                self._cond.wait(remaining)

    def _serve(self, index: int) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for job in batch:
                if job.expired(now):
                    job.fail(GenerationFailed("diffusers generation ran past its deadline while queued"))
                else:
                    live.append(job)
            if not live:
                continue
            try:
                self._run(index, live)
            except Exception as e:  # a worker thread must survive any failure and hand it to the callers
                logger.exception("generation batch of %d request(s) failed", len(live))
                error: Exception = e
                if not isinstance(e, VitrineError):
                    error = GenerationFailed(f"diffusers generation failed: {type(e).__name__}: {e}")
                    error.__cause__ = e
                for job in live:
                    job.fail(error)
            for job in live:
                job.fail(GenerationFailed("the generation backend returned no images for this request"))
