"""``vitrine dedup`` and ``vitrine similar`` through real subprocesses: on a catalog indexed by ``vitrine index``
(the same picture under several ids), and on a store written directly with known vectors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.settings import Settings, StoreSettings
from search.neighbours import similar_of
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, SIMILAR_KEY, PointWrite
from tests.cli import cli_env, run_vitrine
from tests.tiny_models import save_tiny_demo_encoder

DIM = 16


def vitrine(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_vitrine(home, *args, env=cli_env(home, VITRINE_INDEXER__WORKERS="0", OMP_NUM_THREADS="1"))


def picture(variant: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    colour = ((200, 30, 30), (30, 60, 200), (20, 20, 20), (20, 160, 40))[variant % 4]
    if variant % 2:
        draw.ellipse((4 + variant, 8, 60, 56 - variant), fill=colour)
    else:
        draw.rectangle((10, 6 + variant, 54 - variant, 58), fill=colour)
    return image


def test_indexed_catalog(tmp_path: Path) -> None:
    """Three ids with the same picture (one file twice, and a byte copy) form one cluster; --all stores
    neighbours that ``vitrine similar ID`` then shows; a product without a picture is skipped."""
    model = save_tiny_demo_encoder(tmp_path / "model")
    (tmp_path / "img").mkdir()
    rows = []
    for variant in range(6):
        picture(variant).save(tmp_path / "img" / f"v{variant}.png")
        rows.append({"id": f"item-{variant}", "title": f"item {variant}", "image": f"img/v{variant}.png"})
    (tmp_path / "img" / "copy.png").write_bytes((tmp_path / "img" / "v0.png").read_bytes())
    rows.append({"id": "same-file", "title": "relisted", "image": "img/v0.png"})
    rows.append({"id": "byte-copy", "title": "copied", "image": "img/copy.png"})
    rows.append({"id": "words-only", "title": "a product without a picture"})
    (tmp_path / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    home = tmp_path / "home"
    done = vitrine(home, "index", tmp_path / "catalog.jsonl", "--model", model, "--no-progress")
    assert done.returncode == 0, done.stderr

    report = tmp_path / "out" / "dups.jsonl"
    report.parent.mkdir()
    done = vitrine(home, "dedup", "--report", report, "--threshold", "0.9999", "--no-progress")
    assert done.returncode == 0, done.stderr
    clusters = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()]
    assert clusters[0]["cluster"] == 1 and clusters[0]["product_ids"] == ["byte-copy", "item-0", "same-file"]
    assert clusters[0]["min_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert "among 8 products" in done.stdout and "1 without an image vector" in done.stdout

    done = vitrine(home, "similar", "--all", "--k", "3", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "top-3 similar products stored for 8 products" in done.stdout
    done = vitrine(home, "similar", "item-0", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["source"] == "precomputed" and len(shown["similar"]) == 3
    assert {s["id"] for s in shown["similar"][:2]} == {"byte-copy", "same-file"}
    assert shown["similar"][0]["title"] in {"copied", "relisted"}

    done = vitrine(home, "similar", "words-only")  # no image: its text vector is searched, itself left out
    assert done.returncode == 0, done.stderr
    assert "of 'words-only' (searched now)" in done.stdout and "  words-only " not in done.stdout
    done = vitrine(home, "search", "item", "--json")  # the stored neighbours never show in results
    assert done.returncode == 0, done.stderr and SIMILAR_KEY not in done.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A VITRINE_HOME whose embedded store holds 50 products with known image vectors (c000 = c001)."""
    home = tmp_path / "home"
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, DIM)).astype(np.float32)
    vectors[1] = vectors[0]
    store = EdgeStore(Settings(home=home).store_dir, settings=StoreSettings())
    try:
        store.ensure_collection("products", encoder="tiny-encoder", dim=DIM)
        store.upsert("products", [PointWrite(f"c{i:03d}", {"title": f"thing {i}"}, {IMAGE: vectors[i]})
                                  for i in range(50)])
    finally:
        store.close()
    return home


def test_known_vectors(home: Path) -> None:
    done = vitrine(home, "dedup", "--threshold", "0.999", "--index", "hnsw")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["product_ids"] for line in done.stdout.splitlines()] == [["c000", "c001"]]
    assert "1 cluster(s) of near-duplicates holding 2 products" in done.stderr

    done = vitrine(home, "similar", "c007")  # nothing precomputed: searched now
    assert done.returncode == 0, done.stderr and "(searched now)" in done.stdout
    live = done.stdout
    done = vitrine(home, "similar", "--all", "--no-progress")  # k from settings: 20
    assert done.returncode == 0, done.stderr and "top-20 similar products stored for 50 products" in done.stdout
    done = vitrine(home, "similar", "c007", "--k", "20")
    assert done.returncode == 0 and "(precomputed)" in done.stdout
    assert done.stdout.splitlines()[1:6] == live.splitlines()[1:6]
    store = EdgeStore(Settings(home=home).store_dir, settings=StoreSettings())
    try:
        stored = similar_of(store, "products", "c000")
    finally:
        store.close()
    assert stored is not None and len(stored) == 20 and stored[0][0] == "c001"
    assert stored[0][1] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("args", "status", "message"), [
    (("similar",), 2, "either --all or one PRODUCT_ID"),
    (("similar", "c001", "--all"), 2, "either --all or one PRODUCT_ID"),
    (("similar", "--all", "--k", "0"), 1, "k 0 must be"),
    (("dedup", "--threshold", "1.5"), 1, "threshold 1.5"),
    (("dedup", "--collection", "absent"), 1, "collection 'absent' does not exist"),
    (("similar", "ghost"), 1, "product 'ghost' is not in collection"),
])
def test_bad_usage(home: Path, args: tuple[str, ...], status: int, message: str) -> None:
    done = vitrine(home, *args)
    assert done.returncode == status and message in done.stderr, done.stderr
