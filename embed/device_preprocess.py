"""A model's image preprocessing run on a torch device, for images decoded there (batched GPU JPEG decoding).

An encoder whose evaluation transform is the usual CLIP one (resize, centre crop, to tensor, normalise) can
tell it as a `PreprocessSpec`; `preprocess_batch` then applies it to decoded uint8 (3, H, W) tensors on any
device, so that pixels never leave the GPU between decoding and the model. The result matches the Pillow
path (`Encoder.image_transform`) closely: the same torchvision resize arithmetic (shortest side, then
centre crop), antialiased, rounded and clamped to 0..255 as Pillow's 8-bit resize is, then normalised.

`DeviceEncoder` is the optional side of an encoder that takes such batches (`embed_tensor`); the open_clip
backend implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from embed.protocol import Vectors

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceEncoder", "PreprocessSpec", "device_encoder", "preprocess_batch", "spec_from_transform"]

_PASS_THROUGH = frozenset({"MaybeConvertMode", "MaybeToTensor", "ToTensor", "_convert_to_rgb", "ToImage",
                           "ToDtype", "ConvertImageDtype", "convert_to_rgb"})
"""Steps of a transform that a decoded RGB uint8 tensor needs no equivalent of (scaling to 0..1 is built in)."""
_INTERPOLATIONS = frozenset({"nearest", "bilinear", "bicubic"})


@dataclass(frozen=True)
class PreprocessSpec:
    """The resize, crop and normalisation a model's images get.

    Attributes:
        resize: the shortest side after resizing (an int), or the exact (height, width).
        crop: the centre crop (height, width), or None for none.
        mean: per-channel mean of 0..1 pixels, subtracted.
        std: per-channel standard deviation, divided by.
        interpolation: ``bicubic``, ``bilinear`` or ``nearest``.
    """

    resize: int | tuple[int, int]
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, int):
            raise ValueError(f"preprocessing {self} has no fixed output size (shortest-side resize, no crop)")
        return self.resize


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) in (1, 2) and all(isinstance(v, int) for v in value):
        return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])
    return None


def spec_from_transform(transform: object) -> PreprocessSpec | None:
    """The `PreprocessSpec` of a torchvision ``Compose`` (open_clip's evaluation transform), or None when it
    holds a step that `preprocess_batch` does not reproduce (then images must be preprocessed on the CPU).

    Recognised: ``Resize`` (int or (h, w), no ``max_size``), ``CenterCrop``, ``Normalize``, and conversions
    to RGB / tensor. ``Resize`` and ``Normalize`` are required.
    """
    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, list | tuple):
        return None
    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean = std = None
    interpolation = "bilinear"
    for step in steps:
        kind = type(step).__name__ if type(step).__name__ != "function" else getattr(step, "__name__", "")
        if kind == "Resize" and resize is None and mean is None:
            size = getattr(step, "size", None)
            if getattr(step, "max_size", None) is not None or getattr(step, "antialias", True) is False:
                return None
            mode = str(getattr(getattr(step, "interpolation", None), "value", "bilinear"))
            if mode not in _INTERPOLATIONS:
                return None
            interpolation = mode
            if isinstance(size, int) or (isinstance(size, Sequence) and len(size) == 1):
                resize = size if isinstance(size, int) else int(size[0])
            else:
                pair = _pair(size)
                if pair is None:
                    return None
                resize = pair
        elif kind == "CenterCrop" and resize is not None and crop is None and mean is None:
            crop = _pair(getattr(step, "size", None))
            if crop is None:
                return None
        elif kind == "Normalize" and mean is None:
            mean, std = tuple(getattr(step, "mean", ())), tuple(getattr(step, "std", ()))
            if len(mean) != 3 or len(std) != 3:
                return None
        elif kind not in _PASS_THROUGH:
            return None
    if resize is None or mean is None or std is None or (isinstance(resize, int) and crop is None):
        return None
    return PreprocessSpec(resize=resize, crop=crop, mean=(float(mean[0]), float(mean[1]), float(mean[2])),
                          std=(float(std[0]), float(std[1]), float(std[2])), interpolation=interpolation)


def preprocess_batch(images: Sequence[torch.Tensor], spec: PreprocessSpec,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Resize, crop and normalise decoded RGB images into one float32 (n, 3, H, W) batch on ``device``.

    Args:
        images: uint8 (3, H, W) tensors (any sizes), e.g. from ``torchvision.io.decode_jpeg``.
        spec: the model's preprocessing.
        device: where the batch goes (default: where the images are).

    Raises:
        ValueError: an image is not a (3, H, W) tensor.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    height, width = spec.size
    if not images:
        return torch.zeros((0, 3, height, width), dtype=torch.float32, device=device)
    target = torch.device(device) if device is not None else images[0].device
    mode = InterpolationMode(spec.interpolation)
    size = [spec.resize] if isinstance(spec.resize, int) else list(spec.resize)
    out = torch.empty((len(images), 3, height, width), dtype=torch.uint8, device=target)
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image #{i} has shape {tuple(image.shape)}; expected an RGB (3, H, W) tensor")
        # uint8 in, uint8 out: torchvision rounds and clamps as Pillow's 8-bit resize does (and has a fast
        # uint8 path on CPUs; on GPUs it resizes in float32 and converts back)
        pixels = tvf.resize(image.to(target, non_blocking=True).unsqueeze(0), size, interpolation=mode,
                            antialias=True)
        if spec.crop is not None:
            pixels = tvf.center_crop(pixels, list(spec.crop))
        out[i] = pixels[0]
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    return out.to(torch.float32).div_(255.0).sub_(mean).div_(std)


@runtime_checkable
class DeviceEncoder(Protocol):
    """The optional side of an `Encoder` that embeds batches preprocessed on its own device."""

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        ...

    @property
    def preprocess_spec(self) -> PreprocessSpec | None:
        """Its image preprocessing, when `preprocess_batch` can reproduce it (else None)."""
        ...

    def embed_tensor(self, pixels: torch.Tensor) -> Vectors:
        """Embed a float32 (n, 3, H, W) batch from `preprocess_batch`: (n, dim) float32, L2-normalised."""
        ...


def device_encoder(encoder: object) -> DeviceEncoder | None:
    """``encoder`` as a `DeviceEncoder` when it is one and tells its preprocessing, else None."""
    if isinstance(encoder, DeviceEncoder) and encoder.preprocess_spec is not None:
        return encoder
    return None
