"""Fashion-MNIST-style preprocessing of product photos for the demo encoder's image tower.

The demo image tower was trained on Fashion-MNIST: grey, 28 x 28, the product trimmed to its bounding box,
its longest side scaled to 28 pixels, centred, light on a dark background. A colour product photo on a
white background only lands where it should after the same treatment, so the demo encoder's
``image_transform`` does it for every image: catalog pictures, uploads and training images alike.

Steps (`FashionStyle.prepare`):
    1. grey (ITU-R 601 luma);
    2. estimate the background from the image border (median); when it is light, invert, so the
       background becomes dark and the product light;
    3. subtract the background level and stretch the rest back to 0..255;
    4. trim to the bounding box of the pixels that differ from the background;
    5. scale the longest side to ``fit`` pixels (aspect kept) and centre on a ``canvas``-sided black square;
    6. optionally upscale to ``size`` (for backbones that want more pixels), normalise with ``mean``/``std``
       and repeat the grey channel three times, giving float32 (3, size, size).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# Grey-level statistics of Fashion-MNIST's training split (pixels scaled to 0..1).
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530

_BORDER = 2
_TRIM_THRESHOLD = 24  # grey levels above the background that count as "product"


class FashionStyle:
    """Picklable image transform: RGB PIL image -> float32 (3, size, size) in the Fashion-MNIST domain.

    Args:
        size: side of the output array (28 for the small CNN; larger for ImageNet backbones).
        canvas: side of the square the product is centred on before any upscaling (28, as Fashion-MNIST).
        fit: longest side of the trimmed product on that square (28: Fashion-MNIST products touch the edges).
        mean: normalisation mean of the grey channel (0..1 scale).
        std: normalisation standard deviation of the grey channel.
    """

    def __init__(self, *, size: int = 28, canvas: int = 28, fit: int = 28, mean: float = FASHION_MEAN,
                 std: float = FASHION_STD) -> None:
        if not 1 <= fit <= canvas <= size:
            raise ValueError(f"FashionStyle needs 1 <= fit <= canvas <= size, got fit={fit}, "
                             f"canvas={canvas}, size={size}")
        if std <= 0:
            raise ValueError(f"FashionStyle std must be positive, got {std}")
        self.size = size
        self.canvas = canvas
        self.fit = fit
        self.mean = mean
        self.std = std

    def __repr__(self) -> str:
        return (f"FashionStyle(size={self.size}, canvas={self.canvas}, fit={self.fit}, mean={self.mean}, "
                f"std={self.std})")

    def prepare(self, image: Image.Image) -> Image.Image:
        """The image in the Fashion-MNIST domain: grey ("L"), ``canvas`` x ``canvas``, light on dark."""
        grey = np.asarray(image.convert("L"), dtype=np.int16)
        border = np.concatenate([grey[:_BORDER].ravel(), grey[-_BORDER:].ravel(),
                                 grey[:, :_BORDER].ravel(), grey[:, -_BORDER:].ravel()])
        background = int(np.median(border))
        if background > 127:
            grey = 255 - grey
            background = 255 - background
        level = np.clip(grey - background, 0, None)
        if background > 0:
            level = level * 255 // (255 - background)
        level = level.astype(np.uint8)
        mask = level > _TRIM_THRESHOLD
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size and cols.size:
            level = level[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        product = Image.fromarray(level, "L")
        height, width = level.shape
        scale = self.fit / max(height, width)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if new_size != product.size:
            resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
            product = product.resize(new_size, resample)
        square = Image.new("L", (self.canvas, self.canvas), 0)
        square.paste(product, ((self.canvas - new_size[0]) // 2, (self.canvas - new_size[1]) // 2))
        return square

    def __call__(self, image: Image.Image) -> NDArray[np.float32]:
        """Preprocess one decoded image into a normalised float32 array of shape (3, size, size)."""
        square = self.prepare(image)
        if self.size != self.canvas:
            square = square.resize((self.size, self.size), Image.Resampling.BILINEAR)
        grey = (np.asarray(square, dtype=np.float32) / 255.0 - self.mean) / self.std
        return np.ascontiguousarray(np.broadcast_to(grey, (3, self.size, self.size)), dtype=np.float32)

    def from_fashion_array(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Preprocess raw Fashion-MNIST pixels (n, 28, 28), light on dark, into (n, 1, size, size) float32.

        The same path as `__call__` (each array goes through `prepare`), kept to one channel to save memory.
        """
        out = np.empty((len(pixels), 1, self.size, self.size), dtype=np.float32)
        for i, item in enumerate(pixels):
            out[i, 0] = self(Image.fromarray(item, "L"))[0]
        return out
