"""The `Encoder` contract, checked on every backend with tiny random models (fixture ``encoder``)."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image

from common.errors import BackendUnavailable, InvalidInput
from common.settings import EmbedSettings
from embed.protocol import Encoder
from embed.registry import build_encoder

TEXTS = [
    "white running shoes",
    "red summer dress",
    "a",
    "",
    "blue denim jeans for men and women",
    "bag",
    "x 1",
]


def images() -> list[Image.Image]:
    """Seven decoded images of different sizes, modes and content."""
    rng = np.random.default_rng(0)
    out = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(32, 32), (40, 64), (90, 30), (17, 23), (200, 150)]
    ]
    out.append(Image.new("L", (50, 40), 128))
    out.append(Image.new("RGBA", (33, 47), (255, 0, 0, 128)))
    return out


def assert_unit_rows(vectors: NDArray[np.float32], n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_is_an_encoder(encoder: Encoder) -> None:
    assert isinstance(encoder, Encoder)
    assert encoder.dim > 0
    assert encoder.image_size == 32


def test_texts_are_unit_float32_rows(encoder: Encoder) -> None:
    assert_unit_rows(encoder.embed_texts(TEXTS), len(TEXTS), encoder.dim)


def test_images_are_unit_float32_rows_in_the_text_space(encoder: Encoder) -> None:
    vectors = encoder.embed_images(images())
    assert_unit_rows(vectors, 7, encoder.dim)
    assert vectors.shape[1] == encoder.embed_texts(["a"]).shape[1]


def test_different_inputs_give_different_vectors(encoder: Encoder) -> None:
    texts = encoder.embed_texts(["white running shoes", "red summer dress"])
    pictures = encoder.embed_images(images()[:2])
    assert float(texts[0] @ texts[1]) < 0.9999
    assert float(pictures[0] @ pictures[1]) < 0.9999


def test_deterministic(encoder: Encoder) -> None:
    np.testing.assert_array_equal(encoder.embed_texts(TEXTS), encoder.embed_texts(TEXTS))
    np.testing.assert_array_equal(encoder.embed_images(images()), encoder.embed_images(images()))


def test_batches_equal_one_by_one(encoder: Encoder) -> None:
    """Batch size 3 splits 7 inputs into 3 batches; padding and batching must not change a vector."""
    batched = encoder.embed_texts(TEXTS)
    alone = np.concatenate([encoder.embed_texts([text]) for text in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=2e-5)
    batched_images = encoder.embed_images(images())
    alone_images = np.concatenate([encoder.embed_images([image]) for image in images()])
    np.testing.assert_allclose(batched_images, alone_images, atol=2e-5)


def test_empty_inputs(encoder: Encoder) -> None:
    assert_unit_rows(encoder.embed_texts([]), 0, encoder.dim)
    assert_unit_rows(encoder.embed_images([]), 0, encoder.dim)
    assert_unit_rows(encoder.embed_pixels(np.zeros((0, 3, 32, 32), np.float32)), 0, encoder.dim)


def test_embed_images_is_transform_then_embed_pixels(encoder: Encoder) -> None:
    transform = encoder.image_transform
    pixels = np.stack([transform(image) for image in images()])
    assert pixels.dtype == np.float32
    assert pixels.shape == (7, 3, 32, 32)
    np.testing.assert_allclose(encoder.embed_images(images()), encoder.embed_pixels(pixels), atol=1e-6)


def test_bad_inputs_are_named(encoder: Encoder) -> None:
    with pytest.raises(InvalidInput, match="single string 'shoes'"):
        encoder.embed_texts("shoes")
    with pytest.raises(InvalidInput, match="text #1 is int"):
        encoder.embed_texts(["shoes", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match=r"shape \(2, 32, 32\)"):
        encoder.embed_pixels(np.zeros((2, 32, 32), np.float32))


def test_image_transform_pickles(encoder: Encoder) -> None:
    transform = pickle.loads(pickle.dumps(encoder.image_transform))
    image = images()[1]
    np.testing.assert_array_equal(transform(image), encoder.image_transform(image))


@pytest.fixture(scope="module")
def spawned() -> Iterator[ProcessPoolExecutor]:
    """One worker process started with "spawn" (a fresh interpreter, as the indexer's workers may be)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.mark.slow
def test_image_transform_runs_in_a_spawned_process(encoder: Encoder, spawned: ProcessPoolExecutor) -> None:
    image = images()[2]
    remote = spawned.submit(encoder.image_transform, image).result(timeout=120)
    np.testing.assert_array_equal(remote, encoder.image_transform(image))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_on_cpu_gives_unit_float32(
    encoder: Encoder, settings: EmbedSettings, dtype: str
) -> None:
    """bf16 and fp16 weights run on CPU (torch >= 2.x); outputs stay float32, unit norm, near fp32's."""
    half = build_encoder(settings.model_copy(update={"dtype": dtype}), encoder.name)
    texts, pictures = half.embed_texts(TEXTS), half.embed_images(images())
    assert_unit_rows(texts, len(TEXTS), encoder.dim)
    assert_unit_rows(pictures, 7, encoder.dim)
    cosines = np.sum(texts * encoder.embed_texts(TEXTS), axis=1)
    assert cosines.min() > 0.95, cosines


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_backend_unavailable(
    encoder: Encoder, settings: EmbedSettings, device: str
) -> None:
    gpu = build_encoder(settings.model_copy(update={"device": device, "dtype": "fp16"}), encoder.name)
    with pytest.raises(BackendUnavailable, match=f"device '{device}'.*CUDA is not available.*DEVICE=cpu"):
        gpu.load()
