"""Images for the re-rankers: RGB, shrunk to a bounded short side, as JPEG data URLs (and, from `common.images`,
hashed for the cache)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from common.images import pixel_digest, to_rgb

__all__ = ["fit_short_side", "jpeg_data_url", "pixel_digest", "to_rgb"]

JPEG_QUALITY = 90


def fit_short_side(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` in RGB, shrunk (never enlarged) so that its short side is at most ``max_side`` pixels."""
    rgb = to_rgb(image)
    width, height = rgb.size
    short = min(width, height)
    if short <= max_side:
        return rgb
    scale = max_side / short
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    size = (max_side, size[1]) if width == short else (size[0], max_side)
    return rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def jpeg_data_url(image: Image.Image, max_side: int) -> str:
    """A ``data:image/jpeg;base64,...`` URL of ``image`` shrunk by `fit_short_side`."""
    buffer = io.BytesIO()
    fit_short_side(image, max_side).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
