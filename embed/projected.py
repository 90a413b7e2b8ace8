"""A frozen base encoder with a trained projection head on its image side (``vitrine train --train head``).

LiT-style: the base encoder's text embeddings stay as they are; its image embeddings go through a small head
trained to land them on the text embeddings of each image's caption. Texts, preprocessing and image size are
the base encoder's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from common.errors import ConfigError
from common.settings import EmbedSettings
from embed.demo_towers import projection
from embed.manifest import MANIFEST, EncoderManifest, load_weights, read_manifest
from embed.protocol import Encoder, ImageTransform, Vectors
from embed.torch_utils import check_pixels, check_texts, to_unit_float32, torch_device
from embed.weights_id import files_id

logger = logging.getLogger(__name__)


def build_head(config: dict[str, object], dim: int) -> nn.Module:
    """The projection head of a ``projection`` encoder from its config (``in_dim``, ``hidden``, ``dropout``).

    Raises:
        ConfigError: ``in_dim`` or ``hidden`` is not a non-negative integer.
    """
    in_dim, hidden = config.get("in_dim"), config.get("hidden", 0)
    if not isinstance(in_dim, int) or in_dim <= 0 or not isinstance(hidden, int) or hidden < 0:
        raise ConfigError(f"projection head needs integer in_dim > 0 and hidden >= 0, got in_dim={in_dim!r}, "
                          f"hidden={hidden!r}")
    dropout = config.get("dropout", 0.0)
    return projection(in_dim, dim, hidden, float(dropout) if isinstance(dropout, int | float) else 0.0)


class ProjectedEncoder:
    """A ``projection`` encoder folder behind the `Encoder` protocol.

    Args:
        folder: the checkpoint folder.
        settings: device, dtype and batch size (also used to build the base encoder).
        name: the canonical name (the folder).
        manifest: the folder's manifest, if already read.
        base: an already-built base encoder (tests hand in one).
    """

    def __init__(self, folder: Path, settings: EmbedSettings, *, name: str | None = None,
                 manifest: EncoderManifest | None = None, base: Encoder | None = None) -> None:
        self._folder = folder
        self._settings = settings
        self._manifest = manifest or read_manifest(folder)
        if self._manifest.kind != "projection" or not self._manifest.base:
            raise ConfigError(f"{str(folder)!r} is not a 'projection' encoder with a base")
        self._name = name or str(folder)
        self._base = base
        self._head: nn.Module | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def base(self) -> Encoder:
        """The frozen base encoder (built on first use)."""
        if self._base is None:
            with self._lock:
                if self._base is None:
                    from embed.registry import build_encoder

                    assert self._manifest.base is not None
                    self._base = build_encoder(self._settings, self._manifest.base)
        return self._base

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def weights_id(self) -> str:
        """Content hash of the head's manifest and weights, and the base encoder's weights id."""
        return files_id([self._folder / MANIFEST, self._folder / self._manifest.weights],
                        extra=self.base.weights_id)

    @property
    def image_size(self) -> int:
        return self.base.image_size

    @property
    def image_transform(self) -> ImageTransform:
        return self.base.image_transform

    def load(self) -> None:
        base = self.base
        base.load()
        if self._head is None:
            with self._lock:
                if self._head is None:
                    head = build_head(self._manifest.image, self._manifest.dim)
                    head.load_state_dict(load_weights(self._folder / self._manifest.weights))
                    self._head = head.to(torch_device(self._settings.device)).eval()
                    logger.info("loaded encoder %s (projection head over %s)", self._name, base.name)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        return self.base.embed_texts(check_texts(texts))

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        pixels = check_pixels(pixels)
        self.load()
        assert self._head is not None
        features = self.base.embed_pixels(pixels)
        if not len(features):
            return np.zeros((0, self.dim), np.float32)
        device = torch_device(self._settings.device)
        with torch.inference_mode():
            return to_unit_float32(self._head(torch.from_numpy(features).to(device)))

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        transform = self.image_transform
        return self.embed_pixels(np.stack([transform(image) for image in images]))
