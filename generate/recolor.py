"""The offline backend: recolour the product in a photo to the colour the instruction names. No weights.

How it works (numpy and Pillow only):

1. **Product mask.** Product photos are mostly shot on a plain, light background. The background colour is the
   median of a thin strip along the border (CIELAB); each pixel's colour distance from it (ΔE) gives a soft mask
   (0 below a threshold set from the border's own noise, 1 a dozen ΔE above it). Background-like regions that do
   not touch the border (a white print on a black hoodie) count as product; an opening (3x3 min then max
   filter) drops specks and a slight blur feathers the edge. Background pixels keep mask 0 and stay unchanged.
2. **Colour transfer in CIELAB.** The product's lightness keeps its structure (shading, folds, prints): every
   pixel's L moves by the same amount, ``min(1, 1.25 * strength)`` of the way from the product's median L (a
   print or logo does not sway it) to the target's. Hue and chroma become the target's (fully from ``strength``
   0.5 up, proportionally below), the chroma scaled down towards black and white as real colours are (so
   highlights stay white and deep shadows dark). The result is blended with the source by the mask.
3. **Variations.** Image ``i`` of a request jitters the target slightly (hue by a few degrees, chroma and
   lightness a little) from a generator seeded by ``(seed, i)``: the same seed gives the same images, and ``n``
   images differ a little.

Greyscale products (the demo's Fashion-MNIST pictures, grey on white) work: the hue comes from the target alone.
The backend refuses instructions that are not colour changes (`generate.colours.parse_colour`), text-to-image
requests (it needs a product image), and images whose product cannot be told from the background.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from common.errors import GenerationFailed, InvalidInput
from common.settings import GenerateSettings
from generate.colours import COLOURS, TargetColour, lab_to_rgb, parse_colour, rgb_to_lab
from generate.protocol import GenerationRequest

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

BORDER_FRACTION = 0.02
"""Width of the border strip the background colour is read from, as a fraction of the short side."""
MIN_THRESHOLD = 3.0
"""ΔE below which a pixel is background whatever the border noise."""
SOFT_RANGE = 12.0
"""ΔE over which the mask goes from 0 to 1."""
MIN_PRODUCT_FRACTION = 0.002
"""Masks covering less of the image than this mean no product was found."""
HUE_JITTER_DEG = 4.0
CHROMA_JITTER = 0.06
LIGHTNESS_JITTER = 2.0


def _smoothstep(low: float, high: float, x: FloatArray) -> FloatArray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def _spread_along_rows(reached: BoolArray, candidate: BoolArray) -> BoolArray:
    """Every run of candidate pixels in a row that holds a reached pixel, whole."""
    starts = candidate & ~np.pad(candidate, ((0, 0), (1, 0)))[:, :-1]
    run = (np.cumsum(starts.ravel()) * candidate.ravel()).astype(np.int64)
    hit = np.bincount(run, weights=(reached & candidate).ravel().astype(np.float64), minlength=int(run.max()) + 1)
    hit[0] = 0.0
    return (hit[run] > 0).reshape(candidate.shape)


def border_connected(candidate: BoolArray) -> BoolArray:
    """The candidate pixels connected (4-neighbourhood) to the image border through candidate pixels.

    Runs of candidate pixels spread along rows, then columns, until nothing changes: a few passes for the shapes
    of product photos.
    """
    reached = np.zeros_like(candidate)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = (
        candidate[0, :], candidate[-1, :], candidate[:, 0], candidate[:, -1])
    for _ in range(candidate.shape[0] * candidate.shape[1]):
        grown = _spread_along_rows(reached, candidate)
        grown = _spread_along_rows(grown.T, candidate.T).T
        if np.array_equal(grown, reached):
            break
        reached = grown
    return reached


def background_colour(lab: FloatArray) -> tuple[FloatArray, float]:
    """The median CIELAB colour of the border strip and the 90th percentile of the strip's ΔE from it."""
    height, width = lab.shape[:2]
    band = max(1, round(BORDER_FRACTION * min(height, width)))
    strip = np.concatenate([lab[:band].reshape(-1, 3), lab[-band:].reshape(-1, 3),
                            lab[:, :band].reshape(-1, 3), lab[:, -band:].reshape(-1, 3)])
    colour = np.median(strip, axis=0).astype(np.float32)
    noise = float(np.percentile(np.linalg.norm(strip - colour, axis=1), 90))
    return colour, noise


def product_mask(rgb: npt.ArrayLike) -> FloatArray:
    """A soft mask (0-1, shape (h, w)) of the product in an RGB product photo on a plain background."""
    pixels = np.asarray(rgb, dtype=np.float32)
    lab = rgb_to_lab(pixels)
    colour, noise = background_colour(lab)
    low = min(25.0, max(MIN_THRESHOLD, 1.5 * noise))
    distance = np.linalg.norm(lab - colour, axis=-1).astype(np.float32)
    soft = _smoothstep(low, low + SOFT_RANGE, distance)
    background = border_connected(soft < 1.0)
    soft = np.where(background, soft, 1.0).astype(np.float32)
    image = Image.fromarray(np.round(soft * 255.0).astype(np.uint8))
    image = image.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    radius = max(0.5, 0.002 * max(image.size))
    return (np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0).astype(np.float32)


def recolour(rgb: npt.ArrayLike, mask: FloatArray, target: tuple[float, float, float], *,
             strength: float = 0.6) -> npt.NDArray[np.uint8]:
    """The photo with its masked product moved to the CIELAB colour ``target`` (see the module's description).

    Args:
        rgb: the photo, (h, w, 3) in 0-255.
        mask: the product mask, (h, w) in 0-1.
        target: the target's CIELAB (L, a, b).
        strength: how far the colour moves, 0-1.
    """
    pixels = np.asarray(rgb, dtype=np.float32)
    lab = rgb_to_lab(pixels)
    weight = float(mask.sum())
    if weight <= 0:
        return np.asarray(np.round(pixels), dtype=np.uint8)
    light = lab[..., 0]
    core = mask > 0.5
    base_light = float(np.median(light[core])) if core.any() else float((light * mask).sum() / weight)
    target_light, target_a, target_b = target
    new_light = np.clip(light + min(1.0, 1.25 * strength) * (target_light - base_light), 0.0, 100.0)
    room = np.minimum(new_light / max(target_light, 1.0), (100.0 - new_light) / max(100.0 - target_light, 1.0))
    gamut = np.clip(room, 0.0, 1.0)
    chroma_move = min(1.0, 2.0 * strength)
    new_a = lab[..., 1] + chroma_move * (target_a * gamut - lab[..., 1])
    new_b = lab[..., 2] + chroma_move * (target_b * gamut - lab[..., 2])
    moved = lab_to_rgb(np.stack([new_light, new_a, new_b], axis=-1))
    out = pixels + mask[..., None] * (moved - pixels)
    return np.asarray(np.clip(np.round(out), 0, 255), dtype=np.uint8)


def jittered(target: tuple[float, float, float], seed: int, index: int) -> tuple[float, float, float]:
    """The target colour of image ``index`` of a request with ``seed``: a small, seeded hue, chroma and lightness
    jitter (lightness only for greys)."""
    rng = np.random.default_rng([seed, index])
    light, a, b = target
    hue_turn, chroma_scale, light_shift = rng.normal(size=3)
    light = float(np.clip(light + LIGHTNESS_JITTER * light_shift, 0.0, 100.0))
    chroma = float(np.hypot(a, b))
    if chroma < 5.0:
        return light, a, b
    hue = float(np.arctan2(b, a)) + np.deg2rad(HUE_JITTER_DEG * hue_turn)
    chroma *= max(0.5, 1.0 + CHROMA_JITTER * chroma_scale)
    return light, chroma * float(np.cos(hue)), chroma * float(np.sin(hue))


class RecolorGenerator:
    """The ``recolor`` backend (`generate.protocol.Generator`): no weights, no state."""

    @property
    def name(self) -> str:
        """``recolor``."""
        return "recolor"

    def load(self) -> None:
        """Nothing to load."""

    def describe(self) -> dict[str, Any]:
        """Backend name and the size of the colour table."""
        return {"backend": "recolor", "colours": len(COLOURS)}

    def target(self, instruction: str) -> TargetColour:
        """The colour ``instruction`` asks for (`generate.colours.parse_colour`; raises `InvalidInput`)."""
        return parse_colour(instruction)

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        """``request.n`` recoloured copies of ``request.image``.

        Raises:
            InvalidInput: no source image, an instruction that is not a colour change, or no product found.
            GenerationFailed: the deadline passed.
        """
        if request.image is None:
            raise InvalidInput("recolor needs a product image: it recolours the product in a photo and cannot "
                               "draw from text alone (give a product_id or an image, or use the diffusers or "
                               "openai backend)")
        colour = self.target(request.instruction)
        rgb = np.asarray(request.image.convert("RGB"), dtype=np.float32)
        mask = product_mask(rgb)
        if float(mask.mean()) < MIN_PRODUCT_FRACTION:
            raise InvalidInput(f"recolor found no product in the {request.image.width}x{request.image.height} "
                               "image: it looks like one plain colour; recolor needs a product on a plain "
                               "background of another colour")
        logger.debug("recolor to %s %s: product covers %.1f%% of the image", colour.name, colour.rgb,
                     100.0 * float(mask.mean()))
        images: list[Image.Image] = []
        for index in range(request.n):
            if deadline is not None and time.monotonic() > deadline:
                raise GenerationFailed(f"recolor ran out of time after {index} of {request.n} images")
            target = jittered(colour.lab, request.seed, index)
            images.append(Image.fromarray(recolour(rgb, mask, target, strength=request.strength)))
        return images


def build(settings: GenerateSettings) -> RecolorGenerator:
    """The recolouring backend (it has no settings of its own)."""
    return RecolorGenerator()
