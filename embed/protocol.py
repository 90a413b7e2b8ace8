"""The contract every encoder backend meets.

Preprocessing is split from the model: ``image_transform`` is a picklable callable that turns a decoded
RGB image into a float32 (3, H, W) array, so that decoding and resizing run in worker processes while
``embed_pixels`` runs the model on stacked batches in the main one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

Vectors = NDArray[np.float32]
ImageTransform = Callable[[Image.Image], NDArray[np.float32]]


@runtime_checkable
class Embedder(Protocol):
    """What query encoding needs of an encoder: its name and the two ``embed_*`` calls (float32 (n, dim) arrays,
    rows L2-normalised). Every `Encoder` is one; so is `search.encoder_process.ProcessEncoder`, which runs them
    in a child process."""

    @property
    def name(self) -> str:
        """The canonical name the encoder was built from."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Preprocess and embed decoded images."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """An image-text embedding model with a shared space.

    Every ``embed_*`` method returns float32 arrays of shape (n, dim), each row L2-normalised.
    Construction is cheap; weights load on first use or on ``load()``.
    """

    @property
    def name(self) -> str:
        """The canonical name the encoder was built from (stored with every collection it builds)."""
        ...

    @property
    def dim(self) -> int:
        """Embedding width."""
        ...

    @property
    def weights_id(self) -> str:
        """A content hash of the local files the weights load from (`embed.weights_id`), or "" when the name
        pins the weights (an open_clip tag, a hub repository). Collections remember it: other weights under
        the same name are refused rather than mixed."""
        ...

    @property
    def image_size(self) -> int:
        """Side of the square image the model sees; decoders may reduce larger images to about this."""
        ...

    @property
    def image_transform(self) -> ImageTransform:
        """Picklable preprocessing of one decoded RGB image into a float32 (3, H, W) array."""
        ...

    def load(self) -> None:
        """Load weights now (idempotent, thread-safe)."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts."""
        ...

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        """Embed a batch of preprocessed images of shape (n, 3, H, W)."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Preprocess and embed decoded images."""
        ...
