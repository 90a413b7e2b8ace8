"""Canny edges of a product image, the conditioning image of a Canny ControlNet; numpy and Pillow only.

The steps are Canny's own (as OpenCV's ``cv2.Canny``, which the ControlNet papers and diffusers' examples use):
Gaussian smoothing, Sobel gradients, non-maximum suppression along the gradient direction, and hysteresis
between two thresholds on the gradient magnitude of 0-255 intensities (the L2 norm, as ``cv2.Canny`` with
``L2gradient=True``). The defaults 100 and 200 are the thresholds of diffusers' ControlNet examples.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageFilter

from common.errors import InvalidInput

logger = logging.getLogger(__name__)

# tan(22.5 deg) and tan(67.5 deg): a gradient direction is rounded to 0, 45, 90 or 135 degrees.
_TAN_22_5 = 0.41421356
_TAN_67_5 = 2.41421356


def _sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    padded = np.pad(gray, 1, mode="edge")
    top, mid, bottom = padded[:-2], padded[1:-1], padded[2:]
    gx = (top[:, 2:] + 2 * mid[:, 2:] + bottom[:, 2:]) - (top[:, :-2] + 2 * mid[:, :-2] + bottom[:, :-2])
    gy = (bottom[:, :-2] + 2 * bottom[:, 1:-1] + bottom[:, 2:]) - (top[:, :-2] + 2 * top[:, 1:-1] + top[:, 2:])
    return gx, gy


def _shifted(values: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``values`` moved so that ``out[y, x] == values[y + dy, x + dx]`` (zero beyond the border)."""
    padded = np.pad(values, 1)
    height, width = values.shape
    return padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]


def _thin(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: keep a pixel only where it is the largest of its two neighbours across the
    edge."""
    ax, ay = np.abs(gx), np.abs(gy)
    horizontal = ay <= _TAN_22_5 * ax  # gradient along x: compare left and right
    vertical = ay > _TAN_67_5 * ax  # gradient along y: compare above and below
    diagonal = ~horizontal & ~vertical
    same_sign = (gx * gy) > 0  # down-right in image coordinates (y grows downwards)
    keep = np.zeros(magnitude.shape, dtype=bool)
    for mask, (dy, dx) in (
        (horizontal, (0, 1)), (vertical, (1, 0)), (diagonal & same_sign, (1, 1)), (diagonal & ~same_sign, (1, -1)),
    ):
        forward = _shifted(magnitude, dy, dx)
        backward = _shifted(magnitude, -dy, -dx)
        keep |= mask & (magnitude >= forward) & (magnitude > backward)
    return np.where(keep, magnitude, 0.0)


def _dilate(mask: np.ndarray) -> np.ndarray:
    grown = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                grown |= _shifted(mask, dy, dx)
    return grown


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The weak pixels 8-connected (through weak pixels) to a strong one, and the strong ones."""
    edges = strong.copy()
    candidates = weak | strong
    while True:
        grown = _dilate(edges) & candidates
        if np.array_equal(grown, edges):
            return edges
        edges = grown


def canny_edges(image: Image.Image, *, low: float = 100.0, high: float = 200.0, sigma: float = 1.0) -> Image.Image:
    """The Canny edges of ``image``: an RGB image of its size, white edges on black.

    Args:
        image: any Pillow image (converted to grey).
        low: the lower hysteresis threshold on the gradient magnitude (0-255 intensities).
        high: the upper threshold: pixels above it start edges; pixels between the two extend them.
        sigma: the Gaussian smoothing radius in pixels before the gradients (0: none).

    Raises:
        InvalidInput: thresholds out of order or negative, or a negative sigma.
    """
    if not 0 <= low <= high:
        raise InvalidInput(f"Canny thresholds low {low} and high {high} must satisfy 0 <= low <= high")
    if sigma < 0:
        raise InvalidInput(f"Canny sigma {sigma} must be at least 0")
    gray_image = image.convert("L")
    if sigma > 0:
        gray_image = gray_image.filter(ImageFilter.GaussianBlur(radius=sigma))
    gray = np.asarray(gray_image, dtype=np.float32)
    gx, gy = _sobel(gray)
    thin = _thin(np.hypot(gx, gy), gx, gy)
    edges = _hysteresis(thin >= high, thin >= low)
    return Image.fromarray(np.where(edges, np.uint8(255), np.uint8(0))).convert("RGB")
