"""Thumbnails and previews made by `index_catalog`: the tiny open_clip encoder, real image files, the embedded store.

Each product with an image gets both files under its stored image hash; a re-run finds everything unchanged
and writes nothing; when the files are gone, the next run makes them again from the images (decoded for that
alone) while the products still count as unchanged; a folder that cannot be written never rejects a product.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.settings import EmbedSettings, load_settings
from common.thumbnails import SIZES, ThumbnailStore
from embed import Encoder, build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, VectorStore


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    model = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    model.load()
    return model


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


class Shop:
    """A catalog of images of several sizes and kinds, and a VITRINE_HOME beside it."""

    def __init__(self, root: Path, *, workers: int, **images: Any) -> None:
        (root / "img").mkdir(parents=True)
        noise((1600, 1200), 1).save(root / "img" / "large.jpg", quality=90)  # draft-decoded for the model
        noise((72, 56), 2).save(root / "img" / "small.jpg")
        alpha = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
        alpha.paste((200, 30, 30, 255), (200, 0, 400, 300))
        alpha.save(root / "img" / "alpha.png")
        (root / "img" / "broken.jpg").write_bytes(b"not a picture")
        rows = [
            {"id": "large", "title": "a large photo", "image": "img/large.jpg"},
            {"id": "small", "title": "a small photo", "image": "img/small.jpg"},
            {"id": "alpha", "title": "a transparent png", "image": "img/alpha.png"},
            {"id": "text", "title": "no picture at all"},
            {"id": "broken", "title": "a broken picture", "image": "img/broken.jpg"},
        ]
        self.catalog = root / "catalog.jsonl"
        self.catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        self.settings = load_settings(home=root / "home", indexer={"workers": workers, "batch_size": 2},
                                      images=images)
        self.thumbnails = ThumbnailStore.from_settings(self.settings)
        self.store: VectorStore = open_store(self.settings)

    def run(self, encoder: Encoder) -> IndexSummary:
        return index_catalog(self.catalog, settings=self.settings, encoder=encoder, store=self.store,
                             progress=False)

    def keys(self) -> dict[str, str | None]:
        """Product id -> stored image hash."""
        return {p.product_id: p.payload[STATE_KEY]["image"]
                for p in self.store.scroll("products", fields=["id", STATE_KEY])}

    def image_vectors(self) -> dict[str, list[float]]:
        found = self.store.retrieve("products", ["large", "small", "alpha"], with_vectors=True)
        return {p.product_id: p.vectors[IMAGE].tolist() for p in found}


@pytest.fixture(params=[0, pytest.param(1, marks=pytest.mark.slow)], ids=["in-process", "worker-process"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    made = Shop(tmp_path, workers=request.param)
    yield made
    made.store.close()


def counts(summary: IndexSummary) -> dict[str, int]:
    return {"indexed": summary.indexed, "unchanged": summary.unchanged, "rejected": summary.rejected,
            "thumbnails": summary.thumbnails, "thumbnail_failures": summary.thumbnail_failures}


def test_thumbnails_are_made_kept_and_restored_without_re_embedding(shop: Shop, encoder: Encoder) -> None:
    first = shop.run(encoder)
    assert counts(first) == {"indexed": 4, "unchanged": 0, "rejected": 1, "thumbnails": 3, "thumbnail_failures": 0}
    keys = shop.keys()
    assert keys["text"] is None and "broken" not in keys
    with_images = {pid: key for pid, key in keys.items() if key is not None}
    assert set(with_images) == {"large", "small", "alpha"}
    assert all(shop.thumbnails.has(key) for key in with_images.values())
    made = {(pid, size): Image.open(shop.thumbnails.path(key, size)) for pid, key in with_images.items()
            for size in SIZES}
    assert {name: image.format for name, image in made.items()} == {
        (pid, size): "WEBP" if size == "thumb" else "JPEG" for pid, size in made}
    # the large JPEG is draft-decoded for the model, but its preview still has 1024 pixels on the long side
    assert made["large", "preview"].size == (1024, 768) and made["large", "thumb"].size == (320, 240)
    assert made["small", "preview"].size == made["small", "thumb"].size == (72, 56)  # never upscaled
    flat = made["alpha", "thumb"].convert("RGB")
    assert flat.getpixel((10, 10)) == pytest.approx((255, 255, 255), abs=8)  # transparency on white
    assert flat.getpixel((300, 100)) == pytest.approx((200, 30, 30), abs=12)
    files = sorted(p.relative_to(shop.thumbnails.root) for p in shop.thumbnails.root.rglob("*") if p.is_file())
    assert len(files) == 3 * len(SIZES)  # nothing else: no temporary file, nothing for the broken image
    vectors = shop.image_vectors()

    again = shop.run(encoder)
    assert counts(again) == {"indexed": 0, "unchanged": 4, "rejected": 1, "thumbnails": 0, "thumbnail_failures": 0}

    shutil.rmtree(shop.thumbnails.root)
    restored = shop.run(encoder)
    assert counts(restored) == {"indexed": 0, "unchanged": 4, "rejected": 1, "thumbnails": 3,
                                "thumbnail_failures": 0}
    assert all(shop.thumbnails.has(key) for key in with_images.values())
    assert Image.open(shop.thumbnails.path(with_images["large"], "preview")).size == (1024, 768)
    assert shop.keys() == keys and shop.image_vectors() == vectors  # nothing was embedded again


def test_thumbnails_can_be_turned_off(tmp_path: Path, encoder: Encoder) -> None:
    shop = Shop(tmp_path, workers=0, thumbnails=False)
    try:
        summary = shop.run(encoder)
    finally:
        shop.store.close()
    assert counts(summary) == {"indexed": 4, "unchanged": 0, "rejected": 1, "thumbnails": 0, "thumbnail_failures": 0}
    assert not shop.thumbnails.root.exists()


def test_a_folder_that_cannot_be_written_rejects_no_product(tmp_path: Path, encoder: Encoder,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the thumbnail folder should be", encoding="utf-8")
    shop = Shop(tmp_path / "shop", workers=0, dir=str(blocker))
    try:
        with caplog.at_level("WARNING"):
            failed = shop.run(encoder)
        assert counts(failed) == {"indexed": 4, "unchanged": 0, "rejected": 1, "thumbnails": 0,
                                  "thumbnail_failures": 3}
        assert any("cannot make its thumbnail and preview" in r.getMessage() for r in caplog.records)
        assert any("3 image(s) got no thumbnail and preview" in note for note in failed.notes)
        warnings = [r for r in caplog.records if "cannot make its thumbnail" in r.getMessage()]
        assert len(warnings) == 1  # once per job and process; the rest at DEBUG

        blocker.unlink()
        fixed = shop.run(encoder)
        assert counts(fixed) == {"indexed": 0, "unchanged": 4, "rejected": 1, "thumbnails": 3,
                                 "thumbnail_failures": 0}
        assert all(shop.thumbnails.has(key) for key in shop.keys().values() if key is not None)
    finally:
        shop.store.close()
