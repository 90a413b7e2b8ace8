"""Fashion-MNIST as shipped by the Debian package ``dataset-fashion-mnist`` (IDX files, gzipped).

70,000 grey 28 x 28 Zalando product pictures (light product on black), 10 classes; 60,000 in the train split
and 10,000 in the test split. MIT licence.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from common.errors import InvalidInput, NotFound

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
DIR_ENV = "VITRINE_FASHION_MNIST_DIR"

# Class names, in label order, spelled exactly as the dataset's documentation spells them.
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

Split = Literal["train", "test"]
_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UBYTE = 0x08


def dataset_dir(folder: Path | None = None) -> Path:
    """The folder of the IDX files: ``folder``, ``$VITRINE_FASHION_MNIST_DIR`` or the Debian package's."""
    if folder is not None:
        return folder
    named = os.environ.get(DIR_ENV)
    return Path(named) if named else DEFAULT_DIR


def read_idx(path: Path) -> NDArray[np.uint8]:
    """Read an unsigned-byte IDX file (optionally gzipped) into an array of its declared shape.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file is not an unsigned-byte IDX file, or is truncated.
    """
    if not path.is_file():
        raise NotFound(f"IDX file {str(path)!r} does not exist; install the Debian package "
                       f"dataset-fashion-mnist or set {DIR_ENV} to a folder holding the Fashion-MNIST .gz "
                       "files")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise InvalidInput(f"{str(path)!r} is not an unsigned-byte IDX file (magic {data[:4]!r})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise InvalidInput(f"{str(path)!r} holds {len(data) - offset} values, but its header declares shape "
                           f"{shape} ({expected} values)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_split(split: Split, folder: Path | None = None) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """(images (n, 28, 28) uint8, labels (n,) int64) of a split.

    Raises:
        InvalidInput: an unknown split, or images and labels that disagree in number.
        NotFound: the files are missing.
    """
    if split not in _FILES:
        raise InvalidInput(f"Fashion-MNIST split {split!r} does not exist; expected 'train' or 'test'")
    root = dataset_dir(folder)
    images_file, labels_file = _FILES[split]
    images = read_idx(root / images_file)
    labels = read_idx(root / labels_file).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise InvalidInput(f"Fashion-MNIST {split} split in {str(root)!r}: {images.shape} images but "
                           f"{labels.shape} labels")
    return images, labels


def display_png(pixels: NDArray[np.uint8], *, side: int = 112, levels: int = 16) -> bytes:
    """A Fashion-MNIST array as a product picture for display: dark product on white, upscaled, PNG.

    The image is inverted back to a white background (the dataset negated its source photos), upscaled with
    bicubic filtering to ``side`` pixels and reduced to ``levels`` grey levels (a 4-bit palette PNG of about
    1.7 KB at 112 pixels, against 3.6 KB with 256 levels).
    """
    from PIL import Image

    image = Image.fromarray(255 - pixels, "L").resize((side, side), Image.Resampling.BICUBIC)
    step = 255 / (levels - 1)
    indices = np.rint(np.asarray(image, dtype=np.float32) / step).astype(np.uint8)
    paletted = Image.fromarray(indices, "P")
    paletted.putpalette([round(v * step) for v in range(levels) for _ in range(3)])
    buffer = io.BytesIO()
    paletted.save(buffer, format="PNG", bits=max(1, int(np.ceil(np.log2(levels)))), optimize=True)
    return buffer.getvalue()
