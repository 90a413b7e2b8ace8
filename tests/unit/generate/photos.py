"""Product photos for the generation tests: a drawn, shaded object on white, and the demo catalog's pictures;
and CIELAB measured with Pillow's ImageCms (independent of `generate.colours`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageCms, ImageFilter

DEMO_IMAGES = Path(__file__).resolve().parents[3] / "data" / "demo" / "images"


def shaded_product(size: int = 256,
                   colour: tuple[int, int, int] = (40, 90, 200)) -> tuple[Image.Image, npt.NDArray[np.bool_]]:
    """A cylinder-like object lit from the left (lightness falls across it) on white, anti-aliased, and the mask
    of its pixels (True inside the object)."""
    scale = 4
    big = size * scale
    y, x = np.mgrid[0:big, 0:big].astype(np.float32) / big
    inside = (((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.38) ** 2) <= 1.0
    shade = np.clip(1.15 - 0.9 * np.abs(x - 0.35) / 0.45, 0.25, 1.15)[..., None]
    pixels = np.where(inside[..., None], np.clip(np.asarray(colour, np.float32) * shade, 0, 255), 255.0)
    image = Image.fromarray(pixels.astype(np.uint8)).resize((size, size), Image.Resampling.BOX)
    mask = np.asarray(Image.fromarray(inside.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX)) > 127
    return image, mask


def demo_image(name: str = "fm-00000", size: int = 224) -> Image.Image:
    """A demo catalog picture (a grey Fashion-MNIST garment on white), scaled up to ``size``."""
    return Image.open(DEMO_IMAGES / f"{name}.png").convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def lab(image: Image.Image) -> npt.NDArray[np.float64]:
    """CIELAB of an RGB image (L 0-100, a and b signed), through ImageCms."""
    transform = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    raw = np.asarray(ImageCms.applyTransform(image.convert("RGB"), transform)).astype(np.float64)
    out = raw.copy()
    out[..., 0] = raw[..., 0] * 100.0 / 255.0
    out[..., 1:] = np.where(raw[..., 1:] > 127, raw[..., 1:] - 256.0, raw[..., 1:])
    return out


def far_from(mask: npt.NDArray[np.bool_], pixels: int) -> npt.NDArray[np.bool_]:
    """Pixels more than ``pixels`` away from every True pixel of ``mask``."""
    grown = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * pixels + 1))
    return np.asarray(grown) == 0


def inner(mask: npt.NDArray[np.bool_], pixels: int) -> npt.NDArray[np.bool_]:
    """``mask`` eroded by ``pixels``."""
    shrunk = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * pixels + 1))
    return np.asarray(shrunk) == 255
