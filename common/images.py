"""Decode untrusted image bytes into an upright RGB PIL image, or refuse them with a clear reason.

What it handles:

* formats: JPEG (and MPO), PNG, WebP, GIF, BMP, TIFF; only these decoders are ever tried, so a file
  that merely claims to be something else (EPS, which would run Ghostscript, ICO, PSD, ...) is refused;
  animated files give their first frame;
* EXIF orientation (applied, then dropped); a broken EXIF block is ignored, not fatal;
* every common mode: RGBA/LA/PA/P with transparency composited on white, CMYK, YCbCr, LAB, HSV,
  16-bit and 32-bit integer or float greyscale (scaled, not clipped), 1-bit, greyscale;
* decompression bombs: the pixel count is read from the header and checked against ``max_pixels``
  before any pixel is decoded;
* empty, truncated, corrupt and non-image data: `UnsupportedImage` naming the source;
* draft decoding: a JPEG can be decoded directly at 1/2, 1/4 or 1/8 scale (DCT scaling) when the model
  input is much smaller than the photo, which is several times faster than decoding then resizing.
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from common.errors import ImageTooLarge, UnsupportedImage, VitrineError

logger = logging.getLogger(__name__)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # Pillow's default, stated: a truncated file is an error here

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow decoder ids (JPEG covers MPO)
_HUMAN_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_BACKGROUND = (255, 255, 255)
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA", "P"})


def _scale_top(array: NDArray[np.float64], mode: str) -> float:
    """The value that maps to white for a high-depth greyscale image."""
    if mode.startswith("I;16"):
        return 65535.0
    peak = float(np.max(array)) if array.size else 0.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    for top in (255.0, 65535.0):
        if peak <= top:
            return top
    return peak


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = _scale_top(array, image.mode)
    grey = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb(image: Image.Image, source: str = "image") -> Image.Image:
    """``image`` in RGB, from any Pillow mode; transparency is composited on white (``image`` itself when it is
    RGB already).

    Raises:
        UnsupportedImage: a mode Pillow cannot convert; the message names ``source``.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    try:
        if mode in _HIGH_DEPTH_MODES:
            return _high_depth_to_rgb(image)
        if mode in _ALPHA_MODES:
            rgba = image.convert("RGBA") if mode != "La" else image.convert("LA").convert("RGBA")
            background = Image.new("RGB", rgba.size, _BACKGROUND)
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise UnsupportedImage(f"{source}: cannot convert image mode {mode!r} to RGB ({e})") from e


def _name_format(data: bytes) -> str | None:
    """The format Pillow would read these bytes as, with every decoder allowed (header only, no decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:  # untrusted bytes: any failure just means "unknown"
        return None


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Read the header of ``data`` with the supported decoders only."""
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{source}: image too large to decode safely ({e}); the limit is {max_pixels} pixels "
                            "(VITRINE_INDEXER__MAX_IMAGE_PIXELS)") from e
    except UnidentifiedImageError as e:
        other = _name_format(data)
        if other is not None:
            raise UnsupportedImage(f"{source}: image format {other!r} is not supported; expected "
                                   f"{_HUMAN_FORMATS}") from e
        raise UnsupportedImage(f"{source}: not an image (first bytes {data[:8]!r}); expected "
                               f"{_HUMAN_FORMATS}") from e
    except Exception as e:  # untrusted bytes: Pillow raises many kinds for broken headers
        raise UnsupportedImage(f"{source}: unreadable image header ({type(e).__name__}: {e})") from e


def _upright(image: Image.Image, source: str) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as e:  # EXIF is metadata: never reject an image for it
        logger.debug("%s: ignoring unreadable EXIF orientation (%s)", source, e)
        return image


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    source: str = "image",
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``data`` into an upright RGB image.

    Args:
        data: the file's bytes.
        max_pixels: largest width x height accepted (decompression-bomb guard, checked from the header,
            before decoding).
        source: what the bytes are (a path, URL or "upload"), for error messages.
        draft_size: when set, JPEGs decode at a reduced scale (1/2, 1/4 or 1/8) whose sides are both still
            at least this many pixels (much faster when the model input is small). Other formats ignore it.

    Returns:
        A fully loaded RGB image, EXIF orientation applied.

    Raises:
        UnsupportedImage: empty, not an image, an unsupported format, truncated or corrupt.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    if not data:
        raise UnsupportedImage(f"{source}: empty file (0 bytes); expected {_HUMAN_FORMATS} image bytes")
    image = _open(data, source, max_pixels)
    width, height = image.size
    if width < 1 or height < 1:
        raise UnsupportedImage(f"{source}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{source}: image is {width}x{height} = {width * height} pixels, over the "
                            f"limit of {max_pixels} pixels (VITRINE_INDEXER__MAX_IMAGE_PIXELS)")
    try:
        if draft_size and image.format in {"JPEG", "MPO"}:
            image.draft("RGB", (draft_size, draft_size))
        image.load()
    except VitrineError:
        raise
    except Exception as e:  # untrusted bytes: truncation and corruption surface as many exception types
        raise UnsupportedImage(f"{source}: truncated or corrupt {image.format} data "
                               f"({type(e).__name__}: {e})") from e
    return to_rgb(_upright(image, source), source)


def pixel_digest(image: Image.Image) -> str:
    """A SHA-256 of an image's size, mode and pixels: a cache key for an image given without the bytes it came
    from."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
