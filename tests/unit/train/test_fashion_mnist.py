"""Reading Fashion-MNIST IDX files, and the display pictures of the demo catalog."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import InvalidInput, NotFound
from train.fashion_mnist import CLASS_NAMES, display_png, load_split, read_idx


def test_class_names_are_the_datasets() -> None:
    assert CLASS_NAMES == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                           "Sneaker", "Bag", "Ankle boot")


def test_splits_load_with_their_shapes(tiny_fashion_dir: Path) -> None:
    images, labels = load_split("train", tiny_fashion_dir)
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(40)]
    assert load_split("test", tiny_fashion_dir)[0].shape == (20, 28, 28)


def test_the_folder_comes_from_the_environment(fashion_env: Path) -> None:
    assert load_split("test")[0].shape == (20, 28, 28)


def test_bad_files_are_named(tmp_path: Path, tiny_fashion_dir: Path) -> None:
    with pytest.raises(NotFound, match=r"missing.gz.*dataset-fashion-mnist"):
        read_idx(tmp_path / "missing.gz")
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as file:
        file.write(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
    with pytest.raises(InvalidInput, match="not an unsigned-byte IDX file"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as file:
        file.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(InvalidInput, match=r"holds 3 values.*\(5,\)"):
        read_idx(short)
    with pytest.raises(InvalidInput, match="split 'valid'"):
        load_split("valid", tiny_fashion_dir)  # type: ignore[arg-type]


def test_display_pictures_are_small_white_background_pngs(tiny_fashion_dir: Path) -> None:
    images, _ = load_split("train", tiny_fashion_dir)
    data = display_png(images[3])
    picture = Image.open(io.BytesIO(data))
    assert picture.format == "PNG" and picture.size == (112, 112)
    grey = np.asarray(picture.convert("L"))
    assert grey[0, 0] == 255  # background white (the dataset's black, inverted)
    assert grey.min() < 200  # the product is darker
    assert len(np.unique(grey)) <= 16
    assert len(data) < 4000
