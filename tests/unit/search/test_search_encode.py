"""Query encoding with a real (tiny, random) open_clip encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import InvalidQuery
from common.settings import EmbedSettings
from embed import Encoder, build_encoder
from search.encode import encode_query, normalised_mean


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    built = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    built.load()
    return built


def test_text_and_image_queries_are_the_encoders_vectors(encoder: Encoder) -> None:
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    text_q = encode_query(encoder, text="red shoe", image=None)
    image_q = encode_query(encoder, text=None, image=image)
    assert text_q.shape == (encoder.dim,) and text_q.dtype == np.float32
    np.testing.assert_allclose(text_q, encoder.embed_texts(["red shoe"])[0], atol=1e-6)
    np.testing.assert_allclose(image_q, encoder.embed_images([image])[0], atol=1e-6)


def test_text_and_image_together_give_their_normalised_mean(encoder: Encoder) -> None:
    image = Image.new("RGB", (32, 32), (20, 30, 200))
    t = encoder.embed_texts(["blue bag"])[0].astype(np.float64)
    i = encoder.embed_images([image])[0].astype(np.float64)
    both = encode_query(encoder, text="blue bag", image=image)
    expected = (t + i) / np.linalg.norm(t + i)
    np.testing.assert_allclose(both, expected, atol=1e-6)
    assert float(np.linalg.norm(both)) == pytest.approx(1.0, abs=1e-6)
    # halfway: equally similar to both parts
    assert float(both @ t) == pytest.approx(float(both @ i), abs=1e-5)


def test_nothing_to_encode_or_opposites_are_refused(encoder: Encoder) -> None:
    with pytest.raises(InvalidQuery, match="nothing to search for"):
        encode_query(encoder, text=None, image=None)
    v = np.asarray([0.6, 0.8], dtype=np.float32)
    with pytest.raises(InvalidQuery, match="cancel out"):
        normalised_mean(np.stack([v, -v]))
