"""`index_catalog` end to end: real catalog files and images, the tiny open_clip encoder, the embedded
store."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from common.errors import EncoderMismatch
from common.images import decode_image
from common.settings import EmbedSettings, Settings, load_settings
from embed import Encoder, build_encoder
from indexer.pipeline import IndexSummary, index_catalog
from indexer.report import last_job
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT, PointWrite, StoredPoint, VectorStore
from tests.tiny_models import save_tiny_open_clip

DIM = 32


def picture(i: int, size: tuple[int, int] = (72, 56)) -> Image.Image:
    """A distinct picture per ``i``: a background colour, a shape and stripes that depend on ``i``."""
    rng = np.random.default_rng(i)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for k in range(1 + i % 4):
        box = [int(v) for v in rng.integers(0, min(size), 4)]
        draw.rectangle((min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])),
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)), outline=(k * 60, 0, 0))
    return image


def save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows),
                    encoding="utf-8")
    return path


def product(i: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"p{i}", "title": f"product number {i}", "brand": ["acme", "zeta"][i % 2],
            "image": f"img/{i}.jpg", "price": 10.0 + i, **extra}


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    model = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    model.load()
    return model


class Shop:
    """A catalog folder, settings with VITRINE_HOME inside it, and the embedded store."""

    def __init__(self, root: Path, *, workers: int = 0) -> None:
        self.root = root
        self.catalog = root / "catalog.jsonl"
        self.settings: Settings = load_settings(home=root / "home",
                                                indexer={"workers": workers, "batch_size": 3})
        self.store: VectorStore = open_store(self.settings)

    def run(self, encoder: Encoder, catalog: Path | None = None, **options: Any) -> IndexSummary:
        return index_catalog(catalog or self.catalog, settings=self.settings, encoder=encoder,
                             store=self.store, progress=False, **options)

    def get(self, product_id: str) -> StoredPoint:
        [point] = self.store.retrieve("products", [product_id], with_vectors=True)
        return point

    def ids(self) -> list[str]:
        return sorted(p.product_id for p in self.store.scroll("products", fields=["id"]))


@pytest.fixture()
def shop(tmp_path: Path) -> Iterator[Shop]:
    for i in range(10):
        save(picture(i), tmp_path / "img" / f"{i}.jpg")
    made = Shop(tmp_path)
    yield made
    made.store.close()


def counts(summary: IndexSummary) -> tuple[int, int, int, int, int, int]:
    return (summary.rows, summary.indexed, summary.updated, summary.unchanged, summary.rejected,
            summary.pruned)


def check_catalog_with_bad_rows(shop: Shop, encoder: Encoder) -> None:
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((200, 30, 30, 255), (10, 10, 30, 30))
    save(rgba, shop.root / "img" / "alpha.png")
    (shop.root / "img" / "notes.jpg").write_text("this is not a picture", encoding="utf-8")
    save(picture(99), shop.root / "outside.jpg")
    (shop.root / "catalog").mkdir()
    catalog = write_jsonl(shop.root / "catalog" / "catalog.jsonl", [
        product(0, image="../img/0.jpg"),                                      # 1
        product(1, image="../img/alpha.png"),                                  # 2
        product(2, image="../img/2.jpg", attributes={"color": "red"}),         # 3
        '{"id": "broken", ',                                                   # 4
        product(3, image="../img/3.jpg", price="cheap"),                       # 5
        {"id": "p4", "title": "text only product"},                            # 6
        product(5, image="../img/missing.jpg"),                                # 7
        product(6, image="../img/notes.jpg"),                                  # 8
        product(0, image="../img/0.jpg"),                                      # 9
        product(7, image="../../etc/passwd"),                                  # 10
        {"id": "p8", "price": 3},                                              # 11
        {"id": "p9", "image": "../img/9.jpg"},                                 # 12
    ])
    shop.settings = load_settings(home=shop.root / "home", indexer={**shop.settings.indexer.model_dump(),
                                                                    "image_roots": [shop.root / "img"]})
    report = shop.root / "rejected.jsonl"
    summary = shop.run(encoder, catalog, report=report)
    assert counts(summary) == (12, 5, 0, 0, 7, 0)
    assert summary.exit_code == 3 and summary.report == report
    rows = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert [(row["line"], row["id"]) for row in rows] == [
        (4, None), (5, "p3"), (7, "p5"), (8, "p6"), (9, "p0"), (10, "p7"), (11, "p8")]
    reasons = [row["reason"] for row in rows]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "price 'cheap' is not a number"
    assert "image file '../img/missing.jpg' not found" in reasons[2]
    assert "../img/notes.jpg: not an image" in reasons[3]
    assert reasons[4] == "duplicate id 'p0' first seen on line 1"
    assert "outside the catalog's folder" in reasons[5]
    assert reasons[6].startswith("nothing to embed")

    assert shop.ids() == ["p0", "p1", "p2", "p4", "p9"]
    assert set(shop.get("p0").vectors) == {IMAGE, TEXT}
    assert set(shop.get("p4").vectors) == {TEXT}       # no image at all: indexed text-only
    assert set(shop.get("p9").vectors) == {IMAGE}      # no text at all: indexed image-only
    stored = shop.get("p2")
    assert stored.payload["attributes"] == {"color": "red"} and stored.payload["price"] == 12.0
    assert set(stored.payload[STATE_KEY]) == {"v", "text", "image", "payload"}
    # The stored image vector is the encoder's embedding of the decoded file, and it finds its product.
    data = (shop.root / "img" / "2.jpg").read_bytes()
    expected = encoder.embed_images([decode_image(data, max_pixels=10**8, draft_size=encoder.image_size)])[0]
    np.testing.assert_allclose(stored.vectors[IMAGE], expected, atol=1e-5)
    for using in (IMAGE, TEXT):
        hits = shop.store.search("products", vector=stored.vectors[using], using=using, limit=1, exact=True)
        assert hits[0].product_id == "p2"
    job = last_job(shop.settings.jobs_dir)
    assert job is not None and job["status"] == "done" and job["rejected"] == 7


def test_catalog_with_bad_rows_in_process(shop: Shop, encoder: Encoder) -> None:
    check_catalog_with_bad_rows(shop, encoder)


@pytest.mark.slow
def test_catalog_with_bad_rows_in_a_worker_process(tmp_path: Path, encoder: Encoder) -> None:
    for i in range(10):
        save(picture(i), tmp_path / "img" / f"{i}.jpg")
    shop = Shop(tmp_path, workers=1)
    try:
        check_catalog_with_bad_rows(shop, encoder)
    finally:
        shop.store.close()


def plant(shop: Shop, product_id: str, *, seed: int) -> dict[str, NDArray[np.float32]]:
    """Overwrite a product's stored vectors with markers (keeping payload and hashes): a vector that is
    re-embedded loses its marker, a vector that is kept keeps it."""
    point = shop.get(product_id)
    rng = np.random.default_rng(seed)
    markers = {}
    for name in point.vectors:
        vector = rng.standard_normal(DIM).astype(np.float32)
        markers[name] = vector / np.linalg.norm(vector)
    shop.store.upsert("products", [PointWrite(product_id, point.payload, markers)])
    return markers


def test_rerun_and_edits_redo_only_what_changed(shop: Shop, encoder: Encoder) -> None:
    rows = [product(i) for i in range(6)]
    write_jsonl(shop.catalog, rows)  # type: ignore[arg-type]
    built = shop.run(encoder)
    assert counts(built) == (6, 6, 0, 0, 0, 0)
    assert built.timings["optimize"] > 0  # vector indexes are built after new embeddings
    first = shop.run(encoder)
    assert counts(first) == (6, 0, 0, 6, 0, 0) and first.exit_code == 0 and first.report is None
    assert first.timings["optimize"] == 0  # nothing changed: nothing to rebuild

    markers = {pid: plant(shop, pid, seed=n) for n, pid in enumerate(["p1", "p2", "p3"])}

    rows[1]["price"] = 99.5  # payload only: rewritten, not re-embedded
    write_jsonl(shop.catalog, rows)  # type: ignore[arg-type]
    assert counts(shop.run(encoder)) == (6, 0, 1, 5, 0, 0)
    p1 = shop.get("p1")
    assert p1.payload["price"] == 99.5
    for name in (IMAGE, TEXT):
        np.testing.assert_array_equal(p1.vectors[name], markers["p1"][name])

    save(picture(42), shop.root / "img" / "2.jpg")  # new image bytes: image re-embedded, text kept
    assert counts(shop.run(encoder)) == (6, 1, 0, 5, 0, 0)
    p2 = shop.get("p2")
    data = (shop.root / "img" / "2.jpg").read_bytes()
    expected = encoder.embed_images([decode_image(data, max_pixels=10**8, draft_size=encoder.image_size)])[0]
    np.testing.assert_allclose(p2.vectors[IMAGE], expected, atol=1e-5)
    np.testing.assert_array_equal(p2.vectors[TEXT], markers["p2"][TEXT])

    rows[3]["title"] = "a brand new name"  # new text: text re-embedded, image kept
    write_jsonl(shop.catalog, rows)  # type: ignore[arg-type]
    assert counts(shop.run(encoder)) == (6, 1, 0, 5, 0, 0)
    p3 = shop.get("p3")
    expected_text = encoder.embed_texts(["a brand new name. zeta"])[0]
    np.testing.assert_allclose(p3.vectors[TEXT], expected_text, atol=1e-5)
    np.testing.assert_array_equal(p3.vectors[IMAGE], markers["p3"][IMAGE])

    del rows[4]["image"]  # image removed: the image vector goes
    write_jsonl(shop.catalog, rows)  # type: ignore[arg-type]
    assert counts(shop.run(encoder)) == (6, 1, 0, 5, 0, 0)
    assert set(shop.get("p4").vectors) == {TEXT}

    (shop.root / "img" / "5.jpg").write_bytes(b"broken now")  # a failing image keeps the stored version
    summary = shop.run(encoder)
    assert counts(summary) == (6, 0, 0, 5, 1, 0) and summary.exit_code == 3
    assert set(shop.get("p5").vectors) == {IMAGE, TEXT}
    assert summary.report is not None and summary.report.parent == shop.settings.jobs_dir
    assert "not an image" in json.loads(summary.report.read_text(encoding="utf-8"))["reason"]


def test_prune_removes_only_what_the_catalog_dropped(shop: Shop, encoder: Encoder) -> None:
    rows: list[dict[str, Any] | str] = [product(i) for i in range(6)]
    write_jsonl(shop.catalog, rows)
    shop.run(encoder)
    assert counts(shop.run(encoder, prune=True)) == (6, 0, 0, 6, 0, 0)

    # p4, p5 dropped; p3's row is now invalid but names its id: p3 stays.
    write_jsonl(shop.catalog, [*rows[:3], product(3, price="n/a")])
    assert counts(shop.run(encoder)) == (4, 0, 0, 3, 1, 0)  # without --prune nothing is deleted
    assert shop.ids() == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert counts(shop.run(encoder, prune=True)) == (4, 0, 0, 3, 1, 2)
    assert shop.ids() == ["p0", "p1", "p2", "p3"]

    # A line with no readable id might be p3: pruning is skipped, and the summary says why.
    write_jsonl(shop.catalog, [*rows[:3], "{not json"])
    summary = shop.run(encoder, prune=True)
    assert counts(summary) == (4, 0, 0, 3, 1, 0)
    assert shop.ids() == ["p0", "p1", "p2", "p3"]
    assert len(summary.notes) == 1 and summary.notes[0].startswith("pruning skipped: 1 rejected row(s)")


def test_csv_and_parquet_catalogs(shop: Shop, encoder: Encoder) -> None:
    csv_path = shop.root / "catalog.csv"
    csv_path.write_text("id,title,images,price,in_stock,attributes.color\n"
                        "c1,Red mug,img/1.jpg|img/2.jpg,4.50,yes,red\n"
                        "c2,Blue mug,,5,no,blue\n", encoding="utf-8")
    assert counts(shop.run(encoder, csv_path)) == (2, 2, 0, 0, 0, 0)
    c1 = shop.get("c1")
    assert c1.payload["images"] == ["img/1.jpg", "img/2.jpg"] and c1.payload["in_stock"] is True
    assert c1.payload["attributes"] == {"color": "red"} and set(c1.vectors) == {IMAGE, TEXT}
    assert set(shop.get("c2").vectors) == {TEXT}

    parquet_path = shop.root / "catalog.parquet"
    pq.write_table(pa.table({"id": ["c1", "c3"], "title": ["Red mug", "Green mug"],
                             "images": [["img/1.jpg", "img/2.jpg"], ["img/3.jpg"]],
                             "price": [4.5, 6.0], "in_stock": [True, True],
                             "attributes": [{"color": "red"}, {"color": "green"}]}), parquet_path)
    assert counts(shop.run(encoder, parquet_path, prune=True)) == (2, 1, 0, 1, 0, 1)
    assert shop.ids() == ["c1", "c3"]


def test_another_encoder_is_refused(shop: Shop, encoder: Encoder, tmp_path: Path) -> None:
    write_jsonl(shop.catalog, [product(0)])
    shop.run(encoder)
    other = build_encoder(EmbedSettings(), str(save_tiny_open_clip(tmp_path / "other", seed=1)))
    with pytest.raises(EncoderMismatch):
        shop.run(other)
    job = last_job(shop.settings.jobs_dir)
    assert job is not None and job["status"] == "failed" and "EncoderMismatch" in job["error"]


def test_jpeg_with_exif_rotation_is_embedded_upright(shop: Shop, encoder: Encoder) -> None:
    upright = picture(7, (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; EXIF says "turn 90 degrees clockwise"
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
    (shop.root / "img" / "rot.jpg").write_bytes(buffer.getvalue())
    write_jsonl(shop.catalog, [product(0, image="img/rot.jpg")])
    shop.run(encoder)
    decoded = decode_image(buffer.getvalue(), max_pixels=10**8)
    assert decoded.size == (80, 40)
    np.testing.assert_allclose(shop.get("p0").vectors[IMAGE], encoder.embed_images([decoded])[0], atol=1e-5)
