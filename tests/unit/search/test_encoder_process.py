"""Query encoding in a child process (`search.encoder_process.ProcessEncoder`): real spawned children running the
bundled ``demo`` encoder, compared with the same encoder in this process."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from common.errors import BackendUnavailable, EncoderMismatch, InvalidInput, ModelNotFound
from common.settings import EmbedSettings
from embed import Embedder, Encoder, build_encoder
from embed.demo import DEMO_MODEL_ENV
from search.batching import MicroBatcher
from search.encoder_process import ProcessEncoder

ATOL = 1e-6
TEXTS = ["white sneakers for running", "red leather handbag", "navy wool coat", "white sneakers for running"]


@pytest.fixture(scope="module")
def demo() -> Encoder:
    built = build_encoder(EmbedSettings(), "demo")
    built.load()
    return built


@pytest.fixture(scope="module")
def process(demo: Encoder) -> Iterator[ProcessEncoder]:
    made = ProcessEncoder(demo, EmbedSettings())
    yield made
    made.close()


def picture(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB")


def truncated_png() -> Image.Image:
    """A lazily opened PNG whose pixel data is cut off (fails when its pixels are read)."""
    out = io.BytesIO()
    picture(9, 64).save(out, format="PNG")
    return Image.open(io.BytesIO(out.getvalue()[:200]))


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists any more (reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_child_embeds_as_this_process_does(demo: Encoder, process: ProcessEncoder) -> None:
    assert isinstance(process, Embedder) and isinstance(demo, Embedder)
    assert (process.name, process.dim, process.weights_id) == (demo.name, demo.dim, demo.weights_id)
    assert process.pid is not None and process.pid != os.getpid()
    texts = process.embed_texts(TEXTS)
    assert texts.dtype == np.float32 and texts.shape == (len(TEXTS), demo.dim)
    np.testing.assert_allclose(texts, demo.embed_texts(TEXTS), atol=ATOL)
    images = [picture(1), picture(2, 200), picture(3).convert("L")]
    np.testing.assert_allclose(process.embed_images(images), demo.embed_images(images), atol=ATOL)
    assert process.embed_texts([]).shape == (0, demo.dim)


def test_a_bad_image_fails_only_its_caller_through_the_batcher(demo: Encoder, process: ProcessEncoder) -> None:
    batcher = MicroBatcher(process, window_ms=300, max_batch=64)
    try:
        images = [picture(4), Image.new("RGB", (0, 0)), picture(5), truncated_png(), picture(6)]
        futures = [batcher.submit("image", image) for image in images]
        with pytest.raises(ValueError) as empty:  # the demo encoder's own error, raised in the child
            futures[1].result(60)
        assert "raised in the encoder process of 'demo'" in "".join(getattr(empty.value, "__notes__", []))
        with pytest.raises(InvalidInput, match=r"query image #0 .* cannot be read"):  # refused before sending
            futures[3].result(60)
        good = [futures[i].result(60) for i in (0, 2, 4)]
    finally:
        batcher.close()
    np.testing.assert_allclose(np.stack(good), demo.embed_images([images[i] for i in (0, 2, 4)]), atol=ATOL)
    assert process.starts == 1  # errors for a batch do not cost the child


def test_a_killed_child_fails_the_next_call_and_the_one_after_starts_a_new_one(demo: Encoder,
                                                                                process: ProcessEncoder) -> None:
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    with pytest.raises(BackendUnavailable, match=rf"pid {first}\) died .*exit code -9.*the next query starts"):
        process.embed_texts(["red shoe"])
    np.testing.assert_allclose(process.embed_texts(["red shoe"]), demo.embed_texts(["red shoe"]), atol=ATOL)
    assert process.starts == 2 and process.pid not in (None, first)


def test_restarts_stop_after_quick_failures_and_close_leaves_no_child(
        demo: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    made = ProcessEncoder(demo, EmbedSettings(), max_failures=2, failure_window_s=600)
    try:
        pid = made.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(BackendUnavailable, match="died while encoding"):
            made.embed_texts(["a"])
        monkeypatch.setenv(DEMO_MODEL_ENV, "/nonexistent/demo_model")  # the next child cannot build its encoder
        with pytest.raises(BackendUnavailable, match=r"could not be restarted \(ModelNotFound: .*nonexistent") \
                as why:
            made.embed_texts(["a"])
        assert isinstance(why.value.__cause__, ModelNotFound)  # the child's own error
        monkeypatch.delenv(DEMO_MODEL_ENV)
        starts = made.starts
        with pytest.raises(BackendUnavailable, match="2 times within 600 s; it is not restarted any more"):
            made.embed_texts(["a"])
        assert made.starts == starts  # no new child was tried
    finally:
        made.close()
    process = made  # closed: no child left, and calls are refused
    assert process.pid is None
    assert not [child for child in multiprocessing.active_children() if child.pid == pid]
    with pytest.raises(BackendUnavailable, match="closed"):
        process.embed_texts(["a"])


def test_close_stops_the_child_and_refuses_later_calls(demo: Encoder, process: ProcessEncoder) -> None:
    pid = process.pid
    assert pid is not None
    process.close()
    process.close()  # idempotent
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid) and process.pid is None
    with pytest.raises(BackendUnavailable, match="closed"):
        process.embed_images([picture(7)])


def test_a_child_with_another_encoder_is_refused(demo: Encoder, tiny_clip_dir: object) -> None:
    started = time.monotonic()
    with pytest.raises(EncoderMismatch, match=r"built .* as encoder .* but this process searches with 'demo'"):
        ProcessEncoder(demo, EmbedSettings(), model=str(tiny_clip_dir))
    assert time.monotonic() - started < 60
    assert not [child for child in multiprocessing.active_children() if child.name == "vitrine-encoder-demo"]


def test_a_hung_child_is_stopped_after_the_timeout_and_replaced(demo: Encoder) -> None:
    """A child alive but silent (stopped with SIGSTOP) fails its batch once ``call_timeout_s`` passes, is killed,
    and the next call starts a new one."""
    made = ProcessEncoder(demo, EmbedSettings(), call_timeout_s=1.5)
    try:
        hung = made.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(BackendUnavailable, match=rf"pid {hung}\) did not encode 1 query texts within 1.5 s "
                                                     r"\(settings search.encoder_timeout_s\); it was stopped"):
            made.embed_texts(["red shoe"])
        assert 1.5 <= time.monotonic() - began < 10
        deadline = time.monotonic() + 10
        while not gone(hung) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(hung)
        np.testing.assert_allclose(made.embed_texts(["red shoe"]), demo.embed_texts(["red shoe"]), atol=ATOL)
        assert made.starts == 2 and made.pid not in (None, hung)
    finally:
        made.close()
