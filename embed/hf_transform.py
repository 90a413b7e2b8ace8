"""Picklable image preprocessing for transformers encoders.

CLIP's and SigLIP's image processors are mirrored by `ResizeCropNormalize`: a frozen dataclass of plain
numbers that resizes with PIL, centre-crops, rescales and normalises with numpy, exactly as transformers' PIL
backend does, and unpickles in worker processes without importing transformers or torch. Any other image
processor is wrapped as it is (`ProcessorTransform`), which also pickles but imports transformers in workers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from embed.protocol import ImageTransform

logger = logging.getLogger(__name__)

# Image processors whose whole pipeline is resize -> centre crop -> rescale -> normalise.
_MIRRORED = frozenset({"CLIPImageProcessor", "SiglipImageProcessor"})


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of ``image``, with transparency composited onto white (as transformers does)."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ResizeCropNormalize:
    """Resize, centre-crop, rescale and normalise one image into a float32 (3, H, W) array.

    Attributes:
        shortest_edge: resize so that the shorter side has this length (aspect kept), or None.
        size: resize to exactly (height, width), or None (used when ``shortest_edge`` is None).
        resample: PIL resampling filter (``PIL.Image.Resampling`` value).
        crop: centre crop (height, width), zero-padded if the image is smaller, or None.
        rescale: factor applied to the 0-255 values, or None.
        mean: per-channel mean subtracted after rescaling, or None (no normalisation).
        std: per-channel standard deviation divided by, or None.
    """

    shortest_edge: int | None
    size: tuple[int, int] | None
    resample: int
    crop: tuple[int, int] | None
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @property
    def output_size(self) -> int:
        """Side of the square the model sees (the larger side of the output)."""
        if self.crop is not None:
            return max(self.crop)
        if self.size is not None:
            return max(self.size)
        return int(self.shortest_edge or 0)

    def _resized(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if self.shortest_edge is not None:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        elif self.size is not None:
            new_height, new_width = self.size
        else:
            return image
        if (new_width, new_height) == (width, height):
            return image
        return image.resize((new_width, new_height), resample=Image.Resampling(self.resample))

    def _cropped(self, array: NDArray[np.uint8]) -> NDArray[np.uint8]:
        if self.crop is None:
            return array
        crop_height, crop_width = self.crop
        height, width = array.shape[:2]
        if crop_height > height or crop_width > width:  # zero padding around the image, as in transformers
            new_height, new_width = max(crop_height, height), max(crop_width, width)
            top, left = math.ceil((new_height - height) / 2), math.ceil((new_width - width) / 2)
            padded = np.zeros((new_height, new_width, array.shape[2]), array.dtype)
            padded[top : top + height, left : left + width] = array
            array, height, width = padded, new_height, new_width
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        return array[top : top + crop_height, left : left + crop_width]

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        """The preprocessed image, float32 (3, H, W)."""
        array = self._cropped(np.asarray(self._resized(to_rgb(image))))
        pixels: NDArray[np.float32] = array.astype(np.float32)
        if self.rescale is not None:
            pixels *= np.float32(self.rescale)
        if self.mean is not None and self.std is not None:
            pixels -= np.asarray(self.mean, np.float32)
            pixels /= np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


class ProcessorTransform:
    """A transformers image processor run on one image; picklable when the processor is."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        """The preprocessed image, float32 (3, H, W)."""
        pixels = self.processor(images=[image], return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(np.asarray(pixels)[0], dtype=np.float32)


def _pair(value: Any) -> tuple[int, int] | None:
    """(height, width) of a ``{"height", "width"}`` dict or of an int side, else None."""
    if isinstance(value, dict) and value.get("height") and value.get("width"):
        return int(value["height"]), int(value["width"])
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    return None


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    values = [float(v) for v in (value if isinstance(value, list | tuple) else [value] * 3)]
    if len(values) != 3:
        return None
    return values[0], values[1], values[2]


def mirror(processor_config: dict[str, Any]) -> ResizeCropNormalize | None:
    """The numpy mirror of a CLIP or SigLIP image processor's config (``processor.to_dict()``), if any."""
    kind = str(processor_config.get("image_processor_type", "")).removesuffix("Pil").removesuffix("Fast")
    if kind not in _MIRRORED or processor_config.get("do_pad"):
        return None
    size = processor_config.get("size") or {}
    if not isinstance(size, dict):
        return None  # an int size means shortest edge or square depending on the processor
    shortest_edge = size.get("shortest_edge")
    exact = _pair(size)
    if processor_config.get("do_resize", True) and (
        (shortest_edge is None) == (exact is None) or set(size) - {"shortest_edge", "height", "width"}
    ):
        return None  # longest_edge, max_height, ... : leave it to transformers
    crop = _pair(processor_config.get("crop_size")) if processor_config.get("do_center_crop") else None
    if processor_config.get("do_center_crop") and crop is None:
        return None
    normalise = bool(processor_config.get("do_normalize", True))
    mean = _triple(processor_config.get("image_mean")) if normalise else None
    std = _triple(processor_config.get("image_std")) if normalise else None
    if normalise and (mean is None or std is None):
        return None
    resize = bool(processor_config.get("do_resize", True))
    rescale = bool(processor_config.get("do_rescale", True))
    return ResizeCropNormalize(
        shortest_edge=int(shortest_edge) if resize and shortest_edge else None,
        size=exact if resize and not shortest_edge else None,
        resample=int(processor_config.get("resample", Image.Resampling.BICUBIC)),
        crop=crop,
        rescale=float(processor_config.get("rescale_factor", 1 / 255)) if rescale else None,
        mean=mean,
        std=std,
    )


def image_transform_for(processor: Any, *, default_size: int) -> tuple[ImageTransform, int]:
    """A picklable transform for a transformers image processor, and the image side it produces.

    Args:
        processor: a loaded transformers image processor.
        default_size: the vision config's image size, used when the processor does not say.
    """
    config = processor.to_dict() if hasattr(processor, "to_dict") else {}
    mirrored = mirror(config)
    if mirrored is not None:
        return mirrored, mirrored.output_size or default_size
    logger.info("image processor %s is run as it is in worker processes", type(processor).__name__)
    crop = _pair(config.get("crop_size")) if config.get("do_center_crop") else None
    size = _pair(config.get("size"))
    side = max(crop or size or (default_size, default_size))
    return ProcessorTransform(processor), side
