"""Preprocessing on a torch device (`embed.device_preprocess`) and the open_clip encoder's speed options:
device batches, autocast (bf16/fp16 on CPU), ``torch.compile``; all on CPU, the paths a GPU takes too."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import transforms

from common.errors import InvalidInput
from common.settings import EmbedSettings
from embed.device_preprocess import PreprocessSpec, device_encoder, preprocess_batch, spec_from_transform
from embed.open_clip_backend import OpenClipEncoder
from embed.registry import build_encoder

SIZES = [(72, 56), (40, 90), (32, 32), (200, 150)]


def picture(i: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(i)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x0 + size[0] // 3, y0 + size[1] // 3), fill=colour)
    return image


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def open_clip_encoder(tiny_clip_dir: Path) -> OpenClipEncoder:
    encoder = build_encoder(EmbedSettings(device="cpu", dtype="fp32", batch_size=3), str(tiny_clip_dir))
    assert isinstance(encoder, OpenClipEncoder)
    encoder.load()
    return encoder


def test_open_clip_tells_its_preprocessing(open_clip_encoder: OpenClipEncoder) -> None:
    spec = open_clip_encoder.preprocess_spec
    assert spec is not None
    assert spec.resize == 32 and spec.crop == (32, 32) and spec.size == (32, 32)
    assert spec.interpolation == "bicubic" and len(spec.mean) == len(spec.std) == 3
    assert device_encoder(open_clip_encoder) is open_clip_encoder
    assert open_clip_encoder.device == torch.device("cpu")


def test_demo_encoder_is_no_device_encoder() -> None:
    assert device_encoder(build_encoder(EmbedSettings(), "demo")) is None


@pytest.mark.parametrize("steps", [
    [transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor(),
     transforms.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))],
    [transforms.Resize((32, 48)), transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))],
])
def test_spec_from_known_transforms(steps: list[object]) -> None:
    spec = spec_from_transform(transforms.Compose(steps))
    assert spec is not None and spec.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("steps", [
    [transforms.Resize(32), transforms.RandomHorizontalFlip(), transforms.CenterCrop(32), transforms.ToTensor(),
     transforms.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))],  # a step the device path does not reproduce
    [transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()],  # no Normalize
    [transforms.Resize(32), transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.2,) * 3)],  # no fixed size
])
def test_spec_refuses_transforms_it_cannot_reproduce(steps: list[object]) -> None:
    assert spec_from_transform(transforms.Compose(steps)) is None
    assert spec_from_transform(lambda image: image) is None


def test_device_batch_matches_the_pillow_transform(open_clip_encoder: OpenClipEncoder) -> None:
    spec = open_clip_encoder.preprocess_spec
    assert spec is not None
    images = [picture(i, size) for i, size in enumerate(SIZES)]
    batch = preprocess_batch([as_tensor(image) for image in images], spec, "cpu")
    assert batch.shape == (len(images), 3, 32, 32) and batch.dtype == torch.float32
    reference = np.stack([open_clip_encoder.image_transform(image) for image in images])
    error = np.abs(batch.numpy() - reference)
    assert error.mean() < 0.01, error.mean()  # normalised units: about a third of one 8-bit level
    assert error.max() < 0.1
    on_device = open_clip_encoder.embed_tensor(batch)
    on_cpu = open_clip_encoder.embed_pixels(reference)
    assert np.all(np.sum(on_device * on_cpu, axis=1) > 0.99)


def test_preprocess_batch_shapes_and_errors() -> None:
    spec = PreprocessSpec(resize=(16, 24), crop=None, mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bilinear")
    assert preprocess_batch([], spec).shape == (0, 3, 16, 24)
    assert preprocess_batch([torch.zeros((3, 10, 10), dtype=torch.uint8)], spec).shape == (1, 3, 16, 24)
    with pytest.raises(ValueError, match=r"image #0 has shape \(10, 10\); expected an RGB"):
        preprocess_batch([torch.zeros((10, 10), dtype=torch.uint8)], spec)


def test_embed_tensor_refuses_bad_shapes(open_clip_encoder: OpenClipEncoder) -> None:
    with pytest.raises(InvalidInput, match=r"shape \(2, 32, 32\).*expected \(n, 3, H, W\)"):
        open_clip_encoder.embed_tensor(torch.zeros((2, 32, 32)))


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_runs_under_autocast_on_cpu(tiny_clip_dir: Path, open_clip_encoder: OpenClipEncoder,
                                                   dtype: str) -> None:
    encoder = build_encoder(EmbedSettings(device="cpu", dtype=dtype, batch_size=2), str(tiny_clip_dir))  # type: ignore[arg-type]
    assert isinstance(encoder, OpenClipEncoder)
    encoder.load()
    images = [picture(i, size) for i, size in enumerate(SIZES)]
    pixels = np.stack([encoder.image_transform(image) for image in images])
    with encoder._autocast(encoder.device):
        assert torch.is_autocast_enabled("cpu")
    half = encoder.embed_pixels(pixels)
    texts = encoder.embed_texts(["red dress", "white shoes"])
    assert half.dtype == np.float32 and np.allclose(np.linalg.norm(half, axis=1), 1, atol=1e-3)
    assert texts.shape == (2, open_clip_encoder.dim)
    full = open_clip_encoder.embed_pixels(pixels)
    assert np.all(np.sum(half * full, axis=1) > 0.95)  # the same model, in half precision


def test_fp32_does_not_autocast(open_clip_encoder: OpenClipEncoder) -> None:
    with open_clip_encoder._autocast(open_clip_encoder.device):
        assert not torch.is_autocast_enabled("cpu")


def test_compile_setting_compiles_the_image_forward(tiny_clip_dir: Path, open_clip_encoder: OpenClipEncoder) -> None:
    encoder = build_encoder(EmbedSettings(device="cpu", compile=True, batch_size=4), str(tiny_clip_dir))
    assert isinstance(encoder, OpenClipEncoder)
    encoder.load()
    forward = encoder._images_forward()
    assert forward is encoder._images_forward()  # built once
    assert forward is not encoder._loaded[0].encode_image  # wrapped by torch.compile
    assert open_clip_encoder._images_forward() == open_clip_encoder._loaded[0].encode_image


def test_compiled_forward_embeds_like_the_eager_one(tiny_clip_dir: Path, open_clip_encoder: OpenClipEncoder,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path end to end, traced by TorchDynamo with the ``eager`` backend: inductor's C++ kernel
    build on CPU takes minutes here (see the next test), which a GPU host does in seconds."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **options: real_compile(model, backend="eager", **options))
    encoder = build_encoder(EmbedSettings(device="cpu", compile=True, batch_size=4), str(tiny_clip_dir))
    pixels = np.stack([open_clip_encoder.image_transform(picture(i, size)) for i, size in enumerate(SIZES)])
    assert np.allclose(encoder.embed_pixels(pixels), open_clip_encoder.embed_pixels(pixels), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VITRINE_TEST_COMPILE"),
                    reason="torch.compile's inductor backend builds C++ kernels: over 400 s on the 2-core test VM "
                           "(set VITRINE_TEST_COMPILE=1 to run it)")
def test_inductor_compiled_forward_embeds_like_the_eager_one(tiny_clip_dir: Path,
                                                             open_clip_encoder: OpenClipEncoder) -> None:
    encoder = build_encoder(EmbedSettings(device="cpu", compile=True, batch_size=4), str(tiny_clip_dir))
    pixels = np.stack([open_clip_encoder.image_transform(picture(i, size)) for i, size in enumerate(SIZES)])
    assert np.allclose(encoder.embed_pixels(pixels), open_clip_encoder.embed_pixels(pixels), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (bench/gpu_check.sh runs this on a GPU)")
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_cuda_device_batches_pinned_copies_and_autocast(tiny_clip_dir: Path, open_clip_encoder: OpenClipEncoder,
                                                         dtype: str) -> None:
    encoder = build_encoder(EmbedSettings(device="cuda", dtype=dtype, batch_size=3), str(tiny_clip_dir))  # type: ignore[arg-type]
    assert isinstance(encoder, OpenClipEncoder)
    encoder.load()
    assert encoder.device.type == "cuda"
    spec = encoder.preprocess_spec
    assert spec is not None
    images = [picture(i, size) for i, size in enumerate(SIZES)]
    batch = preprocess_batch([as_tensor(image).cuda() for image in images], spec)
    assert batch.device.type == "cuda"
    on_device = encoder.embed_tensor(batch)
    pinned = encoder.embed_pixels(np.stack([encoder.image_transform(image) for image in images]))  # pinned copies
    reference = open_clip_encoder.embed_pixels(np.stack([encoder.image_transform(image) for image in images]))
    assert np.all(np.sum(on_device * reference, axis=1) > 0.95)
    assert np.all(np.sum(pinned * reference, axis=1) > 0.95)
