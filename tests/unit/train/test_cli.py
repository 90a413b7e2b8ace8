"""``vitrine train`` through a real subprocess: writes a loadable encoder, reports metrics, resumes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from embed.manifest import read_manifest
from tests.cli import cli_env, run_vitrine


def vitrine_train(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_vitrine(home, "train", *args, env=cli_env(home, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_train_writes_an_encoder_reports_metrics_and_resumes(shapes_catalog: Path, tiny_text_dir: Path,
                                                             tmp_path: Path) -> None:
    out, home = tmp_path / "model", tmp_path / "home"
    common = (shapes_catalog, "--out", out, "--text-model", tiny_text_dir, "--stages", "4x1,8x1",
              "--batch-size", "8", "--captions-per-class", "8", "--threads", "1", "--no-progress")
    first = vitrine_train(home, *common, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert f"encoder written to {out}" in first.stdout
    assert "held-out (4 pairs): text_p@10" in first.stdout  # 10 % of the 37 rows with an image
    assert read_manifest(out).training["command"].startswith("vitrine --log-level WARNING train ")

    second = vitrine_train(home, *common, "--epochs", "2", "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["resumed_from_epoch"] == 1 and result["epochs"] == 2
    assert set(result["metrics"]) == {"text_p@10", "image_p@10", "zero_shot", "pair_r@10"}
    assert read_manifest(out).training["epochs"] == 2


@pytest.mark.slow
def test_bad_options_exit_2_with_the_reason(tmp_path: Path) -> None:
    done = vitrine_train(tmp_path, "fashion-mnist", "--out", tmp_path / "m", "--epochs", "0")
    assert done.returncode == 2
    assert "epochs must be at least 1, got 0" in done.stderr
    bad_stages = vitrine_train(tmp_path, "fashion-mnist", "--out", tmp_path / "m", "--stages", "32x")
    assert bad_stages.returncode == 2 and "must look like 32x1,64x2,128x2" in bad_stages.stderr
