"""``vitrine generate`` in a child process, with the offline recolor backend, on 60 indexed demo products."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.cli import run_vitrine
from tests.demo_shop import DEMO, index_demo_subset


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("generate_cli")
    index_demo_subset(folder, count=60)
    return folder / "home"


def test_generate_from_a_product_then_search(home: Path, tmp_path: Path) -> None:
    done = run_vitrine(home, "generate", "fm-00003", "the same in red", "--n", "2", "--seed", "5", "--out",
                       tmp_path, "--search", "--limit", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    images = [Path(line) for line in lines[:2]]
    assert all(path.parent == tmp_path and path.suffix == ".png" for path in images)
    with Image.open(images[0]) as first:
        assert first.mode == "RGB" and max(first.size) <= 768
    assert lines[2].startswith("2 image(s) by recolor in ") and lines[2].endswith("seed 5")
    assert lines[3].startswith("prompt (template): ") and "red" in lines[3]
    assert lines[4] == "nearest products:" and len(lines) == 8
    assert "fm-00003" not in done.stdout.split("nearest products:")[1]
    again = run_vitrine(home, "generate", "fm-00003", "the same in red", "--n", "2", "--seed", "5", "--json")
    body = json.loads(again.stdout)
    assert body["cached"] is True and body["seed"] == 5 and len(body["images"]) == 2


def test_generate_from_a_file_and_bad_input(home: Path) -> None:
    done = run_vitrine(home, "generate", "in navy", "--image", DEMO / "queries" / "train-02724.png", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "recolor"
    refused = run_vitrine(home, "generate", "fm-00003", "on a beach")
    assert refused.returncode == 2 and "colour" in refused.stderr
    neither = run_vitrine(home, "generate", "in red")
    assert neither.returncode == 2 and "give a PRODUCT_ID or --image" in neither.stderr
    off = run_vitrine(home, "generate", "fm-00003", "in red", "--backend", "diffusers")
    assert off.returncode == 1 and "VITRINE_GENERATE__MODEL" in off.stderr
