"""Decoding of untrusted image bytes: every mode, orientation, format and refusal, on files built here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from common.errors import ImageTooLarge, UnsupportedImage
from common.images import decode_image

MAX = 50_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that holds no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def test_plain_jpeg_decodes_to_rgb() -> None:
    out = decode_image(encode(halves(), "JPEG", quality=95), max_pixels=MAX)
    assert out.mode == "RGB" and out.size == (40, 20)
    red, blue = out.getpixel((5, 10)), out.getpixel((35, 10))
    assert isinstance(red, tuple) and isinstance(blue, tuple)
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(halves(), "JPEG", quality=95, exif=exif), max_pixels=MAX)
    if orientation == 3:  # rotated 180 degrees: red ends on the right
        assert out.size == (40, 20)
        pixel = out.getpixel((35, 10))
    else:  # 6: rotate 90 clockwise (red on top); 8: counter-clockwise (red at the bottom)
        assert out.size == (20, 40)
        pixel = out.getpixel((10, 5 if orientation == 6 else 35))
    assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[2] < 60


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_block_is_ignored() -> None:
    data = encode(halves(), "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff")
    assert decode_image(data, max_pixels=MAX).size == (40, 20)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(mode: str) -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 0, 255))
    if mode == "LA":
        image = image.convert("LA")
    out = decode_image(encode(image, "PNG"), max_pixels=MAX)
    assert out.mode == "RGB"
    assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_palette_with_transparent_index() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 0)
    out = decode_image(encode(image, "PNG", transparency=0), max_pixels=MAX)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (10, 200, 30)


def test_half_transparent_pixel_is_blended() -> None:
    image = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    pixel = decode_image(encode(image, "PNG"), max_pixels=MAX).getpixel((0, 0))
    assert isinstance(pixel, tuple) and 120 <= pixel[0] <= 135


def test_cmyk_jpeg() -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    pixel = decode_image(encode(image, "JPEG", quality=95), max_pixels=MAX).getpixel((4, 4))
    assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = decode_image(encode(image, "PNG"), max_pixels=MAX)
    grey = [(0, 0, 0), (128, 128, 128), (255, 255, 255), (4, 4, 4)]
    assert [out.getpixel((x, 0)) for x in range(4)] == grey


def test_thirty_two_bit_integer_tiff() -> None:
    values = np.array([[0, 255, 100]], dtype=np.int32)
    out = decode_image(encode(Image.fromarray(values, "I"), "TIFF"), max_pixels=MAX)
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (255, 255, 255), (100, 100, 100)]


def test_float_tiff_in_unit_range() -> None:
    values = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    out = decode_image(encode(Image.fromarray(values, "F"), "TIFF"), max_pixels=MAX)
    grey = [(0, 0, 0), (128, 128, 128), (255, 255, 255), (0, 0, 0)]
    assert [out.getpixel((x, 0)) for x in range(4)] == grey


@pytest.mark.parametrize("mode", ["L", "1"])
def test_greyscale_and_one_bit(mode: str) -> None:
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (4, 0, 8, 8))
    out = decode_image(encode(image.convert(mode), "PNG"), max_pixels=MAX)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((7, 0)) == (255, 255, 255)


@pytest.mark.parametrize(("fmt", "params"), [("WEBP", {"lossless": True}), ("WEBP", {"quality": 90}),
                                             ("GIF", {}), ("BMP", {}), ("TIFF", {})])
def test_other_formats(fmt: str, params: dict[str, object]) -> None:
    out = decode_image(encode(halves(), fmt, **params), max_pixels=MAX)
    assert out.mode == "RGB" and out.size == (40, 20)
    pixel = out.getpixel((35, 10))
    assert isinstance(pixel, tuple) and pixel[2] > 200


def test_webp_with_alpha() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = decode_image(encode(image, "WEBP", lossless=True), max_pixels=MAX)
    assert out.getpixel((1, 1)) == (255, 255, 255)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode_image(data, max_pixels=MAX).getpixel((0, 0))
    assert isinstance(pixel, tuple) and pixel[0] > 200


def test_pixel_limit_checked_before_decoding() -> None:
    # The header claims 8000 x 8000 and no real pixel data follows: only a header check can say "too large".
    with pytest.raises(ImageTooLarge, match=r"8000x8000 = 64000000 pixels, over the limit of 50000000 pixels "
                       r"\(VITRINE_INDEXER__MAX_IMAGE_PIXELS\)"):
        decode_image(png_header(8000, 8000), max_pixels=MAX, source="bomb.png")


def test_pillow_bomb_guard_maps_to_image_too_large() -> None:
    with pytest.raises(ImageTooLarge, match=r"bomb\.png: .* the limit is 1000000000000 pixels "
                       r"\(VITRINE_INDEXER__MAX_IMAGE_PIXELS\)"):
        decode_image(png_header(30_000, 30_000), max_pixels=10**12, source="bomb.png")


def test_pixel_limit_on_a_real_image() -> None:
    with pytest.raises(ImageTooLarge, match="40x20 = 800 pixels"):
        decode_image(encode(halves(), "PNG"), max_pixels=799)
    assert decode_image(encode(halves(), "PNG"), max_pixels=800).size == (40, 20)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noise, fmt)
    with pytest.raises(UnsupportedImage, match=r"cut\.img: (truncated or corrupt|unreadable)"):
        decode_image(data[: len(data) // 2], max_pixels=MAX, source="cut.img")


def test_non_image_bytes() -> None:
    with pytest.raises(UnsupportedImage, match=r"notes\.txt: not an image \(first bytes b'hello wo'\)"):
        decode_image(b"hello world, I am text", max_pixels=MAX, source="notes.txt")


def test_empty_file() -> None:
    with pytest.raises(UnsupportedImage, match=r"empty\.jpg: empty file"):
        decode_image(b"", max_pixels=MAX, source="empty.jpg")


def test_known_but_unsupported_format_is_named() -> None:
    with pytest.raises(UnsupportedImage, match="image format 'ICO' is not supported"):
        decode_image(encode(halves((32, 32)), "ICO"), max_pixels=MAX)


def test_jpeg_draft_decodes_at_reduced_scale_not_below_the_asked_size() -> None:
    data = encode(halves((1000, 800)), "JPEG", quality=90)
    assert decode_image(data, max_pixels=MAX).size == (1000, 800)
    assert decode_image(data, max_pixels=MAX, draft_size=224).size == (500, 400)
    assert decode_image(data, max_pixels=MAX, draft_size=90).size == (125, 100)
    assert decode_image(data, max_pixels=MAX, draft_size=1000).size == (1000, 800)


def test_draft_then_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((1000, 800)), "JPEG", exif=exif)
    assert decode_image(data, max_pixels=MAX, draft_size=224).size == (400, 500)


def test_draft_is_ignored_for_other_formats() -> None:
    assert decode_image(encode(halves((600, 500)), "PNG"), max_pixels=MAX, draft_size=100).size == (600, 500)


def test_greyscale_jpeg_with_draft() -> None:
    data = encode(Image.new("L", (800, 800), 77), "JPEG")
    out = decode_image(data, max_pixels=MAX, draft_size=224)
    assert out.mode == "RGB" and out.size == (400, 400) and out.getpixel((10, 10)) == (77, 77, 77)
