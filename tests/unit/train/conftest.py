"""Fixtures of the training tests: a tiny text tower, a tiny catalog of drawn colour products, and a tiny
Fashion-MNIST in IDX files. Everything is generated; nothing is downloaded."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.settings import Settings
from tests.tiny_models import save_tiny_minilm

CATEGORIES = ("Bag", "Sneaker", "Dress")
PER_CATEGORY = 12
COLOURS = ((200, 30, 30), (30, 60, 200), (20, 20, 20), (40, 150, 60))


def draw_product(category: str, variant: int, *, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A colour picture of a simple product shape on a white background (shape by category)."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    colour = COLOURS[variant % len(COLOURS)]
    jitter = variant % 5
    width, height = size
    if category == "Bag":
        draw.rectangle((20 + jitter, 30, width - 20, height - 10), fill=colour)
        draw.arc((30, 8 + jitter, width - 30, 50), 180, 360, fill=colour, width=4)
    elif category == "Sneaker":
        draw.ellipse((6, 40 + jitter, width - 6, height - 12), fill=colour)
        draw.rectangle((10, 58, width - 10, height - 12), fill=(240, 240, 240))
    else:
        draw.polygon([(width // 2, 6 + jitter), (14, height - 6), (width - 14, height - 6)], fill=colour)
    return image


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT in the all-MiniLM-L6-v2 folder layout (32-d)."""
    return save_tiny_minilm(tmp_path_factory.mktemp("tiny_minilm"))


@pytest.fixture(scope="session")
def shapes_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL catalog of 36 drawn products (3 categories), images relative to it, plus one bad image row."""
    folder = tmp_path_factory.mktemp("shapes_catalog")
    (folder / "images").mkdir()
    rows = []
    for category in CATEGORIES:
        for variant in range(PER_CATEGORY):
            product_id = f"{category.lower()}-{variant:02d}"
            draw_product(category, variant).save(folder / "images" / f"{product_id}.png")
            rows.append({"id": product_id, "title": f"{['red', 'blue', 'black', 'grey'][variant % 4]} "
                                                    f"{category.lower()} {variant}",
                         "image": f"images/{product_id}.png", "category": category})
    (folder / "images" / "broken.png").write_bytes(b"not a png at all")
    rows.append({"id": "broken", "title": "broken bag", "image": "images/broken.png", "category": "Bag"})
    rows.append({"id": "no-image", "title": "a bag without a picture", "category": "Bag"})
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return catalog


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def tiny_fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fashion-MNIST-format IDX files: 40 train and 20 test pictures (light shapes on black), 10 labels."""
    folder = tmp_path_factory.mktemp("tiny_fashion_mnist")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("t10k", 20)):
        labels = np.arange(count) % 10
        images = np.zeros((count, 28, 28), np.uint8)
        for i, label in enumerate(labels):
            top, height = 2 + label, 20 - label
            images[i, top : top + height, 4:24] = 120 + rng.integers(0, 120)
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def fashion_env(tiny_fashion_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``fashion-mnist:*`` data at the tiny IDX files."""
    monkeypatch.setenv("VITRINE_FASHION_MNIST_DIR", str(tiny_fashion_dir))
    return tiny_fashion_dir


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with VITRINE_HOME in a temporary folder, CPU."""
    return Settings(home=tmp_path / "home")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run on one thread: on a busy 2-core machine, more threads only add contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
