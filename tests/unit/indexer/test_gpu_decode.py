"""Batched JPEG decoding on the encoder's device (`indexer.gpu_decode`), run on a CPU device (torchvision's
batch API is the same there), and the workers' raw-JPEG mode."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from common.errors import ConfigError
from common.images import decode_image
from common.settings import EmbedSettings
from embed.device_preprocess import PreprocessSpec, spec_from_transform
from embed.registry import build_encoder
from indexer.fetch import FetchConfig
from indexer.gpu_decode import DeviceDecoder, choose_decode, is_jpeg
from indexer.worker import ImageTask, WorkerConfig, _Context

MAX_PIXELS = 50_000_000
CLIP_SPEC = PreprocessSpec(resize=32, crop=(32, 32), mean=(0.48145466, 0.4578275, 0.40821073),
                           std=(0.26862954, 0.26130258, 0.27577711), interpolation="bicubic")


def picture(i: int, size: tuple[int, int] = (80, 60)) -> Image.Image:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, int(rng.integers(0, 256)))], axis=-1)
    image = Image.fromarray(base.astype(np.uint8))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    ImageDraw.Draw(image).rectangle((5, 5, size[0] // 2, size[1] // 2), fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pillow_reference(data: bytes) -> np.ndarray:
    """The CPU path's pixels: Pillow decode, then open_clip's transform for CLIP_SPEC."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32), transforms.ToTensor(),
                                    transforms.Normalize(CLIP_SPEC.mean, CLIP_SPEC.std)])
    assert spec_from_transform(transform) == CLIP_SPEC
    return np.asarray(transform(decode_image(data, max_pixels=MAX_PIXELS)))


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (bench/gpu_check.sh runs "
                             "these on a GPU machine)")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=NO_CUDA)])
def decoder(request: pytest.FixtureRequest) -> DeviceDecoder:
    """The decoder on the CPU (torchvision with libjpeg-turbo) and, where there is one, on CUDA (nvJPEG)."""
    return DeviceDecoder(CLIP_SPEC, request.param, max_pixels=MAX_PIXELS)


def test_batch_decode_on_cpu_equals_pillow(decoder: DeviceDecoder) -> None:
    blobs = [encode(picture(i, size), quality=92) for i, size in enumerate([(80, 60), (45, 100), (32, 32), (300, 200)])]
    out = decoder.decode(blobs)
    assert out.keys == [0, 1, 2, 3] and not out.errors and out.fallbacks == 0
    assert out.pixels is not None and out.pixels.shape == (4, 3, 32, 32)
    assert out.pixels.device.type == decoder.device.type
    for row, data in zip(out.pixels.cpu().numpy(), blobs, strict=True):
        error = np.abs(row - pillow_reference(data))
        assert error.mean() < 0.01 and error.max() < 0.1  # normalised units (one 8-bit level is ~0.015)
    assert out.decode_s > 0 and out.preprocess_s > 0


def test_a_corrupt_jpeg_in_the_batch_falls_back_per_image(decoder: DeviceDecoder) -> None:
    good = [encode(picture(i)) for i in range(3)]
    truncated = good[0][: len(good[0]) // 2]
    garbage = b"\xff\xd8\xff" + b"not a jpeg at all" * 4
    out = decoder.decode([good[0], truncated, good[1], garbage, good[2]],
                         ["a.jpg", "cut.jpg", "b.jpg", "junk.jpg", "c.jpg"])
    assert out.keys == [0, 2, 4]
    assert set(out.errors) == {1, 3}
    assert out.errors[1].startswith("cut.jpg: ") and "runcated" in out.errors[1]
    assert "junk.jpg" in out.errors[3]
    assert out.pixels is not None
    for row, data in zip(out.pixels.cpu().numpy(), [good[0], good[1], good[2]], strict=True):
        assert np.abs(row - pillow_reference(data)).mean() < 0.01


def test_other_formats_and_odd_jpegs_go_through_pillow(decoder: DeviceDecoder) -> None:
    png = encode(picture(5), "PNG")
    cmyk = encode(picture(6).convert("CMYK"))  # libjpeg's RGB mode may refuse CMYK: Pillow then decodes it
    grey = encode(picture(7).convert("L"))
    out = decoder.decode([png, cmyk, grey])
    assert out.keys == [0, 1, 2] and not out.errors
    assert out.fallbacks >= 1  # the PNG at least
    assert out.pixels is not None
    for row, data in zip(out.pixels.cpu().numpy(), [png, cmyk, grey], strict=True):
        assert np.abs(row - pillow_reference(data)).mean() < 0.05


def test_exif_orientation_is_applied(decoder: DeviceDecoder) -> None:
    image = picture(8, (90, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright picture is 40 x 90
    data = encode(image, exif=exif.tobytes())
    out = decoder.decode([data])
    assert out.pixels is not None
    assert np.abs(out.pixels[0].cpu().numpy() - pillow_reference(data)).mean() < 0.01


def test_an_empty_batch(decoder: DeviceDecoder) -> None:
    out = decoder.decode([])
    assert out.keys == [] and out.pixels is not None and out.pixels.shape == (0, 3, 32, 32)


def test_is_jpeg() -> None:
    assert is_jpeg(encode(picture(1)))
    assert not is_jpeg(encode(picture(1), "PNG")) and not is_jpeg(b"")


def test_choose_decode(tiny_clip_dir: Path) -> None:
    clip = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    clip.load()
    demo = build_encoder(EmbedSettings(), "demo")
    assert choose_decode("cpu", clip) is None
    assert choose_decode("auto", clip) is None  # a CPU encoder: Pillow in the workers keeps up
    assert choose_decode("gpu", clip) is clip  # asked for: torchvision on the CPU device
    assert choose_decode("auto", demo) is None
    with pytest.raises(ConfigError, match=r"indexer.decode='gpu' needs .*encoder 'demo' does not.*DECODE=cpu"):
        choose_decode("gpu", demo)


def test_workers_hand_readable_jpegs_back_as_bytes(tmp_path: Path) -> None:
    jpeg = tmp_path / "a.jpg"
    jpeg.write_bytes(encode(picture(1)))
    png = tmp_path / "b.png"
    png.write_bytes(encode(picture(2), "PNG"))
    broken = tmp_path / "c.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    config = WorkerConfig(fetch=FetchConfig(base_dir=tmp_path), transform=lambda image: np.zeros((3, 4, 4), np.float32),
                          encoder="test", max_pixels=MAX_PIXELS, raw_jpeg=True)
    context = _Context(config)
    try:
        results = context.prepare_chunk([ImageTask(0, "a.jpg"), ImageTask(1, "b.png"), ImageTask(2, "c.jpg")])
    finally:
        context.close()
    raw, pixels, error = results
    assert raw.data == jpeg.read_bytes() and raw.pixels is None and not raw.unchanged and raw.hash
    assert pixels.data is None and pixels.pixels is not None and pixels.preprocess_s > 0
    assert error.error is not None and "c.jpg" in error.error
    assert all(result.fetch_s > 0 for result in results)


def test_workers_decode_as_before_without_raw_jpeg(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(encode(picture(1)))
    config = WorkerConfig(fetch=FetchConfig(base_dir=tmp_path), transform=lambda image: np.zeros((3, 4, 4), np.float32),
                          encoder="test", max_pixels=MAX_PIXELS)
    context = _Context(config)
    try:
        (result,) = context.prepare_chunk([ImageTask(0, "a.jpg")])
    finally:
        context.close()
    assert result.data is None and result.pixels is not None
    assert result.decode_s > 0 and result.preprocess_s > 0


def test_decode_on_a_device_the_encoder_names(tiny_clip_dir: Path) -> None:
    clip = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    found = choose_decode("gpu", clip)
    assert found is not None
    decoder = DeviceDecoder.for_encoder(found, max_pixels=MAX_PIXELS)
    assert decoder.device == torch.device("cpu") and decoder.spec.size == (32, 32)
