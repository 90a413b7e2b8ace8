"""Decode untrusted image bytes into an RGB PIL image, or refuse them with a clear reason.

Handles EXIF orientation, every common mode (RGBA/LA/P with transparency composited on white, CMYK,
16-bit and 32-bit greyscale, 1-bit), WebP, and refuses decompression bombs, truncated and non-image data.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from common.errors import ImageTooLarge, UnsupportedImage

ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})
_BACKGROUND = (255, 255, 255)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        if mode in {"I", "F"} and array.max() <= 255:
            top = 255.0
        grey = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
    elif mode == "LA" or mode == "La":
        image = image.convert("RGBA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


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
        max_pixels: largest width x height accepted (decompression-bomb guard, checked before decoding).
        source: what the bytes are (a path, URL or "upload"), for error messages.
        draft_size: when set, JPEGs decode at a reduced scale whose sides are still at least this many
            pixels (much faster when the model input is small).

    Raises:
        UnsupportedImage: not an image, an unsupported format, truncated or corrupt.
        ImageTooLarge: more than ``max_pixels`` pixels.
    """
    if not data:
        raise UnsupportedImage(f"{source}: empty file; expected image bytes (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise UnsupportedImage(f"{source}: not an image (first bytes {data[:8]!r}); expected JPEG, PNG, WebP, GIF, "
                               "BMP or TIFF") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{source}: image too large to decode safely ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise UnsupportedImage(f"{source}: unreadable image header ({e})") from e
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"{source}: image format {image.format!r} is not supported; expected one of "
                               f"{sorted(SUPPORTED_FORMATS)}")
    width, height = image.size
    if width < 1 or height < 1:
        raise UnsupportedImage(f"{source}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{source}: image is {width}x{height} = {width * height} pixels, over the limit of "
                            f"{max_pixels} pixels")
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnsupportedImage(f"{source}: truncated or corrupt image data ({e})") from e
