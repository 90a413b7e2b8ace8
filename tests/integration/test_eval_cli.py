"""``vitrine eval`` through real subprocesses, against a catalog indexed by ``vitrine index``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.cli import cli_env, run_vitrine
from tests.tiny_models import save_tiny_demo_encoder

SHAPES = ("Bag", "Dress", "Sneaker")


def vitrine(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_vitrine(home, *args, env=cli_env(home, VITRINE_INDEXER__WORKERS="0", OMP_NUM_THREADS="1"))


def picture(shape: str, variant: int) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    colour = ((200, 30, 30), (30, 60, 200), (20, 20, 20))[variant % 3]
    if shape == "Bag":
        draw.rectangle((12 + variant, 20, 52, 56), fill=colour)
    elif shape == "Dress":
        draw.polygon([(32, 4 + variant), (8, 60), (56, 60)], fill=colour)
    else:
        draw.ellipse((4, 24 + variant, 60, 52), fill=colour)
    return image


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(VITRINE_HOME, folder): 15 drawn products indexed with a tiny demo-style encoder, queries beside."""
    folder = tmp_path_factory.mktemp("eval_catalog")
    model = save_tiny_demo_encoder(folder / "model")
    (folder / "img").mkdir()
    rows = []
    for shape in SHAPES:
        for variant in range(5):
            product_id = f"{shape.lower()}-{variant}"
            picture(shape, variant).save(folder / "img" / f"{product_id}.png")
            colour = ["red", "blue", "black"][variant % 3]
            rows.append({"id": product_id, "title": f"{colour} {shape.lower()}",
                         "image": f"img/{product_id}.png", "category": shape})
    (folder / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    home = folder / "home"
    done = vitrine(home, "index", folder / "catalog.jsonl", "--model", model, "--no-progress")
    assert done.returncode == 0, done.stderr
    all_ids = [r["id"] for r in rows]
    queries = [
        {"id": "t1", "query": "red bag", "relevant_where": {"category": "Bag"}},
        {"id": "t2", "query": "anything at all", "relevant": all_ids},
        {"id": "i1", "image": "img/dress-2.png", "relevant": ["dress-2"]},
        {"id": "i2", "image": "img/bag-1.png", "relevant_where": {"category": "Bag"}},
    ]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    return home, folder


@pytest.mark.slow
def test_eval_reports_every_index_as_json(indexed: tuple[Path, Path]) -> None:
    home, folder = indexed
    done = vitrine(home, "eval", folder / "queries.jsonl", "--json", "--k", "5")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["queries"] == 4 and report["k"] == 5
    assert report["counts"] == {"all": 4, "image": 2, "text": 2}
    for mode in ("fused", "image", "text"):
        assert set(report[mode]) == {"ndcg@5", "recall@5", "precision@5", "mrr@5"}
        assert all(0 <= v <= 1 for v in report[mode].values())
    assert report["by_kind"]["image"]["image"]["mrr@5"] >= 0.5
    per_query = {entry["id"]: entry for entry in report["per_query"]}
    assert all(per_query["t2"][mode]["precision@5"] == 1.0 for mode in ("fused", "image", "text"))
    assert per_query["i1"]["image"]["mrr@5"] == 1.0  # its own picture first in the image index (cosine 1)
    table = vitrine(home, "eval", folder / "queries.jsonl")
    assert table.returncode == 0, table.stderr
    assert "ndcg@10" in table.stdout and "fused" in table.stdout


@pytest.mark.slow
def test_weight_sweep_finds_a_best_weighting_and_plots_it(indexed: tuple[Path, Path]) -> None:
    home, folder = indexed
    plot = folder / "out" / "sweep.png"
    done = vitrine(home, "eval", folder / "queries.jsonl", "--sweep-weights", "--plot", plot, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [point["w_image"] for point in report["sweep"]] == [i / 10 for i in range(11)]
    assert report["sweep"][10]["all"] == report["image"]  # w_text 0 is the image index alone
    assert report["sweep"][0]["all"] == report["text"]
    best = report["best"]["all"]
    assert best["all"]["ndcg@10"] == max(point["all"]["ndcg@10"] for point in report["sweep"])
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (640, 400)


@pytest.mark.slow
def test_a_query_with_nothing_relevant_is_named(indexed: tuple[Path, Path]) -> None:
    home, folder = indexed
    bad = folder / "bad.jsonl"
    bad.write_text(json.dumps({"query": "hat", "relevant_where": {"category": "Hat"}}) + "\n",
                   encoding="utf-8")
    done = vitrine(home, "eval", bad)
    assert done.returncode != 0
    assert "query line 1" in done.stderr and "no product" in done.stderr
