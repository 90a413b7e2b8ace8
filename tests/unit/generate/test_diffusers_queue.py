"""The diffusers backend's job queue, with a plain-Python runner: batching by key, deadlines, failures, close."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from common.errors import GenerationFailed, InvalidInput
from generate.diffusers_queue import Job, JobQueue


def images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (4, 4)) for _ in range(count)]


def test_jobs_of_one_key_are_batched_and_others_keep_their_turn() -> None:
    batches: list[list[str]] = []
    gate = threading.Event()

    def run(worker: int, batch: list[Job]) -> None:
        gate.wait(10)
        batches.append([job.payload for job in batch])
        for job in batch:
            job.resolve(images(job.size))

    queue = JobQueue(run, batch_window_s=0.0, max_batch_images=3)
    blocker = Job(payload="blocker", key="z", size=1)
    queue.submit(blocker)  # holds the worker while the rest queue up
    time.sleep(0.05)
    jobs = [Job(payload=name, key=key, size=size)
            for name, key, size in (("a1", "a", 1), ("b1", "b", 1), ("a2", "a", 2), ("a3", "a", 1))]
    for job in jobs:
        queue.submit(job)
    gate.set()
    assert [len(job.wait()) for job in jobs] == [1, 1, 2, 1]
    assert batches == [["blocker"], ["a1", "a2"], ["b1"], ["a3"]]  # a3 would pass max_batch_images
    queue.close()


def test_a_failing_run_reaches_every_caller_and_the_worker_survives() -> None:
    def run(worker: int, batch: list[Job]) -> None:
        if batch[0].payload == "bad":
            raise RuntimeError("boom")
        if batch[0].payload == "invalid":
            raise InvalidInput("no colour named")
        batch[0].resolve(images(1))

    queue = JobQueue(run, batch_window_s=0.0)
    bad = Job(payload="bad", key="k", size=1)
    queue.submit(bad)
    with pytest.raises(GenerationFailed, match="RuntimeError: boom"):
        bad.wait()
    invalid = Job(payload="invalid", key="k", size=1)
    queue.submit(invalid)
    with pytest.raises(InvalidInput, match="no colour"):
        invalid.wait()
    good = Job(payload="good", key="k", size=1)
    queue.submit(good)
    assert len(good.wait()) == 1
    queue.close()


def test_deadlines_and_close() -> None:
    started = threading.Event()
    release = threading.Event()

    def run(worker: int, batch: list[Job]) -> None:
        started.set()
        release.wait(10)
        for job in batch:
            job.resolve(images(job.size))

    queue = JobQueue(run, batch_window_s=0.0)
    running = Job(payload=1, key="k", size=1, deadline=time.monotonic() + 0.2)
    queue.submit(running)
    assert started.wait(10)
    waiting = Job(payload=2, key="other", size=1)
    queue.submit(waiting)
    with pytest.raises(GenerationFailed, match="deadline"):
        running.wait()
    assert running.expired()
    closer = threading.Thread(target=queue.close)
    closer.start()
    with pytest.raises(GenerationFailed, match="closed"):
        waiting.wait()
    release.set()
    closer.join(10)
    with pytest.raises(GenerationFailed, match="closed"):
        queue.submit(Job(payload=3, key="k", size=1))
    with pytest.raises(ValueError, match="workers 0"):
        JobQueue(run, workers=0)
