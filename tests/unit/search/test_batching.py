"""Micro-batched query encoding (`search.batching.MicroBatcher`) with a real (tiny, random) open_clip encoder,
seen through a wrapper that records every encoder call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from common.errors import BackendUnavailable, InvalidInput
from common.metrics import REGISTRY
from common.settings import EmbedSettings, SearchSettings, Settings
from embed import Encoder, build_encoder
from search.batching import MicroBatcher
from search.encode import QueryEncoder
from search.query import SearchRequest
from search.service import SearchService
from store.factory import open_store
from store.protocol import IMAGE, TEXT, PointWrite

ATOL = 1e-5
BAD_SIZE = (1, 1)
"""Images of this size make `Recording.embed_images` fail (a stand-in for an image the model cannot take)."""


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    built = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    built.load()
    return built


class Recording:
    """An encoder wrapper that records each call (kind, size, thread) and can hold calls until released."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int, str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(("text", len(texts), threading.current_thread().name))
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.embed_texts(texts)

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        self.calls.append(("image", len(images), threading.current_thread().name))
        if any(image.size == BAD_SIZE for image in images):
            raise InvalidInput(f"image of size {BAD_SIZE} is too small for the model")
        return self.inner.embed_images(images)


@pytest.fixture
def recording(encoder: Encoder) -> Recording:
    return Recording(encoder)


@pytest.fixture
def batcher(recording: Recording) -> Iterator[MicroBatcher]:
    made = MicroBatcher(recording, window_ms=200, max_batch=64)
    yield made
    made.close()


def picture(seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_concurrent_threads_each_get_their_own_embedding_from_shared_calls(
        encoder: Encoder, recording: Recording, batcher: MicroBatcher) -> None:
    texts = [f"red shoe number {i}" for i in range(16)]
    start = threading.Barrier(len(texts))
    got: dict[str, NDArray[np.float32]] = {}

    def ask(text: str) -> None:
        start.wait()
        got[text] = batcher.text(text)

    threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for text in texts:  # each caller got its own row: the unbatched embedding of its text
        np.testing.assert_allclose(got[text], encoder.embed_texts([text])[0], atol=ATOL)
    sizes = [size for _, size, _ in recording.calls]
    assert sum(sizes) == len(texts)
    assert len(sizes) < len(texts) and max(sizes) > 1  # batched
    assert {where for _, _, where in recording.calls} == {f"encode-batcher-{encoder.name}"}  # one worker


def test_texts_and_images_are_batched_apart_and_the_metrics_recorded(
        encoder: Encoder, recording: Recording, batcher: MicroBatcher) -> None:
    before = {kind: (sample("vitrine_encode_batch_size_count", kind=kind),
                     sample("vitrine_encode_batch_size_sum", kind=kind)) for kind in ("text", "image")}
    waits = sample("vitrine_encode_queue_wait_seconds_count")
    images = [picture(i) for i in range(3)]
    futures = [batcher.submit("text", "blue bag"), batcher.submit("image", images[0]),
               batcher.submit("text", "green hat"), batcher.submit("image", images[1]),
               batcher.submit("image", images[2])]
    rows = [f.result(60) for f in futures]
    assert sorted(recording.calls) == sorted([("text", 2, recording.calls[0][2]), ("image", 3, recording.calls[0][2])])
    np.testing.assert_allclose(rows[0], encoder.embed_texts(["blue bag"])[0], atol=ATOL)
    np.testing.assert_allclose(rows[2], encoder.embed_texts(["green hat"])[0], atol=ATOL)
    expected = encoder.embed_images(images)
    for row, want in zip([rows[1], rows[3], rows[4]], expected, strict=True):
        np.testing.assert_allclose(row, want, atol=ATOL)
    for kind, size in (("text", 2), ("image", 3)):
        count, total = before[kind]
        assert sample("vitrine_encode_batch_size_count", kind=kind) == count + 1
        assert sample("vitrine_encode_batch_size_sum", kind=kind) == total + size
    assert sample("vitrine_encode_queue_wait_seconds_count") == waits + 5


def test_equal_texts_in_a_batch_are_encoded_once(recording: Recording, batcher: MicroBatcher) -> None:
    futures = [batcher.submit("text", text) for text in ("tee", "tee", "cap", "tee")]
    rows = [f.result(60) for f in futures]
    assert [size for _, size, _ in recording.calls] == [2]
    np.testing.assert_array_equal(rows[0], rows[3])
    rows[0][0] += 1.0  # each caller has its own copy
    assert rows[1][0] != rows[0][0]


def test_a_bad_image_fails_only_its_caller(encoder: Encoder, recording: Recording, batcher: MicroBatcher) -> None:
    images = [picture(1), Image.new("RGB", BAD_SIZE), picture(2), picture(3)]
    futures = [batcher.submit("image", image) for image in images]
    with pytest.raises(InvalidInput, match="too small"):
        futures[1].result(60)
    good = [futures[i].result(60) for i in (0, 2, 3)]
    for row, want in zip(good, encoder.embed_images([images[i] for i in (0, 2, 3)]), strict=True):
        np.testing.assert_allclose(row, want, atol=ATOL)
    assert [size for _, size, _ in recording.calls] == [4, 1, 1, 1, 1]  # the batch, then one by one


def test_the_window_bounds_a_lone_querys_wait_and_a_full_batch_does_not_wait(recording: Recording) -> None:
    lone = MicroBatcher(recording, window_ms=150, max_batch=8)
    try:
        started = time.perf_counter()
        lone.text("alone")
        waited = time.perf_counter() - started
        assert waited >= 0.14  # nobody joined: it waited the whole window, and then no longer than its call
    finally:
        lone.close()
    full = MicroBatcher(recording, window_ms=60_000, max_batch=3)
    try:
        started = time.perf_counter()
        futures = [full.submit("text", f"item {i}") for i in range(3)]
        for future in futures:
            future.result(30)
        assert time.perf_counter() - started < 30  # max_batch reached: no minute-long window
        assert [size for _, size, _ in recording.calls][-1] == 3
    finally:
        full.close()


def test_close_fails_queued_queries_and_refuses_new_ones(encoder: Encoder, recording: Recording) -> None:
    batcher = MicroBatcher(recording, window_ms=1, max_batch=1)
    recording.release.clear()
    running = batcher.submit("text", "in the encoder")
    assert recording.entered.wait(30)
    queued = batcher.submit("text", "still queued")
    batcher.close(wait_s=0.1)
    with pytest.raises(BackendUnavailable, match="shut down"):
        queued.result(5)
    with pytest.raises(BackendUnavailable, match="shut down"):
        batcher.submit("text", "after close")
    recording.release.set()  # the batch that was running finishes and answers its caller
    np.testing.assert_allclose(running.result(30), encoder.embed_texts(["in the encoder"])[0], atol=ATOL)
    batcher.close()  # idempotent
    assert batcher.closed


def test_an_idle_worker_ends_and_the_next_query_starts_another(recording: Recording) -> None:
    batcher = MicroBatcher(recording, window_ms=1, max_batch=4, idle_s=0.05)
    try:
        batcher.text("first")
        deadline = time.monotonic() + 10
        while any(t.name.startswith("encode-batcher-") and t.is_alive() for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the idle worker did not end"
            time.sleep(0.02)
        batcher.text("second")
        assert [size for _, size, _ in recording.calls] == [1, 1]
    finally:
        batcher.close()


def test_bad_arguments_are_refused(recording: Recording, batcher: MicroBatcher) -> None:
    with pytest.raises(InvalidInput, match="batch window 0"):
        MicroBatcher(recording, window_ms=0, max_batch=4)
    with pytest.raises(InvalidInput, match="max_batch 0"):
        MicroBatcher(recording, window_ms=1, max_batch=0)
    with pytest.raises(InvalidInput, match="expected a str"):
        batcher.submit("image", "not an image")


def test_query_encoder_caches_batched_embeddings(encoder: Encoder, recording: Recording,
                                                 batcher: MicroBatcher) -> None:
    queries = QueryEncoder(recording, cache_size=8, batcher=batcher)
    first = queries.text("red shoe")
    assert queries.text("red shoe") is first  # a hit: not queued again
    np.testing.assert_allclose(first, encoder.embed_texts(["red shoe"])[0], atol=ATOL)
    assert len(recording.calls) == 1
    queries.close()
    assert batcher.closed


@pytest.mark.parametrize("window_ms", [0.0, 5.0])
def test_the_service_batches_by_setting_and_close_stops_the_worker(
        tmp_path: Path, encoder: Encoder, recording: Recording, window_ms: float) -> None:
    store = open_store(Settings(home=tmp_path))
    try:
        store.ensure_collection("products", encoder=encoder.name, dim=encoder.dim)
        vectors = encoder.embed_texts(["red shoe", "blue bag"])
        store.upsert("products", [PointWrite(f"p{i}", {"title": title}, {IMAGE: vectors[i], TEXT: vectors[i]})
                                  for i, title in enumerate(["red shoe", "blue bag"])])
        service = SearchService(encoder=recording, store=store,
                                settings=SearchSettings(batch_window_ms=window_ms, cache_size=0),
                                collection="products")
        found = service.search(SearchRequest(q="red shoe", limit=2))
        assert found.results[0].id == "p0"
        where = recording.calls[-1][2]
        if window_ms == 0:  # inline: the caller's own thread ran the encoder
            assert where == threading.current_thread().name
        else:
            assert where.startswith("encode-batcher-")
        service.close()
        if window_ms:  # the worker is stopped: no more queries are encoded
            with pytest.raises(BackendUnavailable, match="shut down"):
                service.search(SearchRequest(q="blue bag", limit=2))
        else:  # nothing to stop
            assert service.search(SearchRequest(q="blue bag", limit=2)).results
    finally:
        store.close()
