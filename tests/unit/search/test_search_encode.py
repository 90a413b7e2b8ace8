"""Query encoding with a real (tiny, random) open_clip encoder: the cached query encoder and weighted parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import InvalidQuery
from common.metrics import REGISTRY
from common.settings import EmbedSettings
from embed import Encoder, build_encoder
from search.batching import MicroBatcher
from search.encode import Part, QueryEncoder, combine


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    built = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    built.load()
    return built


def test_text_and_image_queries_are_the_encoders_vectors(encoder: Encoder) -> None:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    queries = QueryEncoder(encoder, cache_size=8)
    text_q, image_q = queries.text("red shoe"), queries.image(image)
    assert text_q.shape == (encoder.dim,) and text_q.dtype == np.float32
    np.testing.assert_allclose(text_q, encoder.embed_texts(["red shoe"])[0], atol=1e-6)
    np.testing.assert_allclose(image_q, encoder.embed_images([image])[0], atol=1e-6)
    assert queries.image(image.copy()) is image_q  # the same pixels: a cache hit
    assert not image_q.flags.writeable  # shared by every hit: read-only
    assert (queries.stats().hits, queries.stats().misses) == (1, 2)


def test_two_parts_of_weight_one_give_their_normalised_mean(encoder: Encoder) -> None:
    image = Image.new("RGB", (32, 32), (20, 30, 200))
    t = encoder.embed_texts(["blue bag"])[0].astype(np.float64)
    i = encoder.embed_images([image])[0].astype(np.float64)
    both = combine([Part(t.astype(np.float32), 1.0, "text"), Part(i.astype(np.float32), 1.0, "image")])
    expected = (t + i) / np.linalg.norm(t + i)
    np.testing.assert_allclose(both, expected, atol=1e-6)
    assert float(np.linalg.norm(both)) == pytest.approx(1.0, abs=1e-6)
    # halfway: equally similar to both parts
    assert float(both @ t) == pytest.approx(float(both @ i), abs=1e-5)
    weighted = combine([Part(t.astype(np.float32), 2.0, "text"), Part(i.astype(np.float32), -0.5, "image")])
    np.testing.assert_allclose(weighted, (2 * t - 0.5 * i) / np.linalg.norm(2 * t - 0.5 * i), atol=1e-6)


def test_opposites_or_only_negative_parts_are_refused() -> None:
    v = np.asarray([0.6, 0.8], dtype=np.float32)
    with pytest.raises(InvalidQuery, match="cancel out"):
        combine([Part(v, 1.0, "text"), Part(-v, 1.0, "text")])
    with pytest.raises(InvalidQuery, match="positive weight"):
        combine([Part(v, -1.0, "text")])


@pytest.mark.parametrize("window_ms", [0.0, 50.0])
def test_atext_awaits_the_same_vectors_and_shares_the_cache(encoder: Encoder, window_ms: float) -> None:
    """`QueryEncoder.atext` (for an event loop) gives `text`'s vectors, from the batcher when there is one (one
    encoder call for texts awaited together) or a worker thread, and shares the cache with `text`."""
    batcher = MicroBatcher(encoder, window_ms=window_ms, max_batch=8) if window_ms else None
    queries = QueryEncoder(encoder, cache_size=8, batcher=batcher)

    async def both() -> list[np.ndarray]:
        return list(await asyncio.gather(queries.atext("red shoe"), queries.atext("blue bag")))

    def calls() -> float:
        return REGISTRY.get_sample_value("vitrine_encode_batch_size_count", {"kind": "text"}) or 0.0

    try:
        before = calls()
        red, blue = asyncio.run(both())
        assert calls() - before == (1 if batcher else 2)
        np.testing.assert_allclose(red, encoder.embed_texts(["red shoe"])[0], atol=1e-6)
        np.testing.assert_allclose(blue, encoder.embed_texts(["blue bag"])[0], atol=1e-6)
        assert queries.text("red shoe") is red and asyncio.run(queries.atext("blue bag")) is blue  # cache hits
        assert (queries.stats().hits, queries.stats().misses) == (2, 2)
    finally:
        queries.close()
