"""Batched JPEG decoding and preprocessing on the encoder's device (``indexer.decode = "gpu"``).

On one GPU the model is rarely the bottleneck of ingestion; decoding and moving images are. In this mode the
worker processes only fetch, hash and check the header of each JPEG (`indexer.worker`), and the main
process decodes the whole batch at once with ``torchvision.io.decode_jpeg(list_of_tensors, device=...)``
(nvJPEG on CUDA), then resizes, crops and normalises it there (`embed.device_preprocess`), so the pixels go
from compressed bytes to the model without a trip through the CPU. On a CPU device the same calls run with
libjpeg-turbo (that is how the path is tested without a GPU).

Failures never cost more than the images concerned: when the batch call raises, each image is decoded on
its own with torchvision, and an image that still fails (or is no JPEG) is decoded by Pillow
(`common.images.decode_image`: orientation, colour modes, clear errors) and preprocessed on the device the
same way. An image Pillow refuses too gets its error, as on the CPU path.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.errors import ConfigError, VitrineError
from common.images import decode_image
from embed.device_preprocess import DeviceEncoder, PreprocessSpec, device_encoder, preprocess_batch

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["DecodedBatch", "DeviceDecoder", "choose_decode", "is_jpeg"]

JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG file (SOI marker)."""
    return data[:3] == JPEG_MAGIC


def choose_decode(setting: Literal["cpu", "gpu", "auto"], encoder: object) -> DeviceEncoder | None:
    """The encoder to decode for on its device, or None to decode on the CPU (in the worker processes).

    ``auto`` picks the device path when the encoder runs on CUDA and tells its preprocessing; ``gpu`` asks for
    it on whatever device the encoder runs (on a CPU device too: torchvision decodes there with libjpeg).

    Raises:
        ConfigError: ``gpu`` with an encoder that cannot take device batches (e.g. ``demo``).
    """
    if setting == "cpu":
        return None
    found = device_encoder(encoder)
    if setting == "gpu":
        if found is None:
            name = getattr(encoder, "name", type(encoder).__name__)
            raise ConfigError(f"indexer.decode='gpu' needs an encoder that tells its preprocessing and embeds "
                              f"device batches (open_clip); encoder {name!r} does not; set "
                              "VITRINE_INDEXER__DECODE=cpu or auto")
        return found
    return found if found is not None and found.device.type == "cuda" else None


@dataclass
class DecodedBatch:
    """What `DeviceDecoder.decode` made of a batch of image bytes."""

    pixels: torch.Tensor | None = None
    """float32 (k, 3, H, W) on the device, one row per position in ``keys`` (set by `DeviceDecoder.decode`)."""
    keys: list[int] = field(default_factory=list)
    """Positions (in the input) of the decoded images, in the order of ``pixels``."""
    errors: dict[int, str] = field(default_factory=dict)
    """Position -> why that image could not be decoded at all."""
    fallbacks: int = 0
    """Images decoded by Pillow because torchvision could not (or they were not JPEGs)."""
    decode_s: float = 0.0
    preprocess_s: float = 0.0


class DeviceDecoder:
    """Decodes batches of image bytes on ``device`` into the model's input.

    Args:
        spec: the model's preprocessing (`DeviceEncoder.preprocess_spec`).
        device: where to decode and preprocess (the encoder's device).
        max_pixels: the decompression-bomb limit of the Pillow fallback (the workers check JPEG headers
            against it before bytes get here).
    """

    def __init__(self, spec: PreprocessSpec, device: torch.device | str, *, max_pixels: int) -> None:
        import torch

        self.spec = spec
        self.device = torch.device(device)
        self.max_pixels = max_pixels

    @classmethod
    def for_encoder(cls, encoder: DeviceEncoder, *, max_pixels: int) -> DeviceDecoder:
        """A decoder for ``encoder``'s device and preprocessing.

        Raises:
            ConfigError: the encoder does not tell its preprocessing.
        """
        spec = encoder.preprocess_spec
        if spec is None:
            raise ConfigError(f"encoder {getattr(encoder, 'name', encoder)!r} does not tell its preprocessing; "
                              "decode on the CPU (VITRINE_INDEXER__DECODE=cpu)")
        return cls(spec, encoder.device, max_pixels=max_pixels)

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _torchvision(self, blobs: Sequence[bytes], positions: list[int]) -> dict[int, torch.Tensor]:
        """Decode the JPEGs at ``positions`` in one batch call; image by image when the batch raises."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        if not positions:
            return {}
        tensors = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in positions]
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image io in favour of torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device,
                                     apply_exif_orientation=True)
                return dict(zip(positions, images, strict=True))
            except Exception as e:  # one bad image fails the whole call: find it
                logger.debug("batch JPEG decoding of %d images failed (%s); decoding them one by one",
                             len(tensors), e)
            decoded: dict[int, torch.Tensor] = {}
            for i, tensor in zip(positions, tensors, strict=True):
                try:
                    decoded[i] = decode_jpeg([tensor], mode=ImageReadMode.RGB, device=self.device,
                                             apply_exif_orientation=True)[0]
                except Exception as e:  # left to Pillow, which explains what is wrong
                    logger.debug("torchvision cannot decode image #%d (%s); trying Pillow", i, e)
        return decoded

    def _pillow(self, data: bytes, source: str) -> torch.Tensor:
        """Decode with Pillow into a uint8 (3, H, W) tensor (raises `VitrineError`)."""
        import torch

        image = decode_image(data, max_pixels=self.max_pixels, source=source, draft_size=min(self.spec.size))
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)

    def decode(self, blobs: Sequence[bytes], sources: Sequence[str] | None = None) -> DecodedBatch:
        """Decode and preprocess ``blobs``; failures are per image (see the module's notes).

        Args:
            blobs: the images' bytes.
            sources: what each image is (path or URL), for error messages.
        """
        names = list(sources) if sources is not None else [f"image #{i}" for i in range(len(blobs))]
        start = time.perf_counter()
        jpegs = [i for i, data in enumerate(blobs) if is_jpeg(data)]
        decoded = self._torchvision(blobs, jpegs)
        out = DecodedBatch()
        for i, data in enumerate(blobs):
            if i in decoded:
                continue
            try:
                decoded[i] = self._pillow(data, names[i])
                out.fallbacks += 1
            except VitrineError as e:
                out.errors[i] = str(e)
        self._sync()
        out.decode_s = time.perf_counter() - start
        start = time.perf_counter()
        out.keys = sorted(decoded)
        out.pixels = preprocess_batch([decoded[i] for i in out.keys], self.spec, self.device)
        self._sync()
        out.preprocess_s = time.perf_counter() - start
        return out
