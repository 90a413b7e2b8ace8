"""`index_catalog` with ``indexer.decode = "gpu"`` run on a CPU device (torchvision's batch decoder there),
against the Pillow path: the same products, nearly the same vectors, the same rejections; and the per-stage
timings of the summary, the job record and the command's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from api.cli.index import format_summary
from common.settings import load_settings
from embed import Encoder
from indexer.pipeline import IndexSummary
from indexer.report import last_job
from indexer.stages import STAGES
from store.protocol import IMAGE
from tests.integration.test_index_pipeline import Shop, encoder, picture, product, save, write_jsonl

__all__ = ["encoder"]  # the module-scoped fixture, shared


def make_shop(root: Path, decode: str, *, thumbnails: bool = True) -> Shop:
    for i in range(8):
        save(picture(i, (90, 70)), root / "img" / f"{i}.jpg")
    save(picture(20), root / "img" / "p.png")
    noise = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    good = save(Image.fromarray(noise), root / "noise.jpg").read_bytes()
    (root / "img" / "cut.jpg").write_bytes(good[: len(good) // 2])  # header reads, pixels do not
    (root / "img" / "notes.jpg").write_text("not a picture", encoding="utf-8")
    rows: list[dict[str, Any] | str] = [product(i) for i in range(8)]
    rows += [product(8, image="img/p.png"), product(9, image="img/cut.jpg"), product(10, image="img/notes.jpg")]
    write_jsonl(root / "catalog.jsonl", rows)
    shop = Shop(root)
    shop.settings = load_settings(home=root / "home", indexer={"workers": 0, "batch_size": 4, "decode": decode},
                                  images={"thumbnails": thumbnails})
    return shop


def rejected(shop: Shop, summary: IndexSummary) -> dict[int, str]:
    assert summary.report is not None
    lines = summary.report.read_text(encoding="utf-8").splitlines()
    return {row["line"]: row["reason"] for row in map(json.loads, lines)}


@pytest.mark.parametrize("thumbnails", [True, False])
def test_device_decoding_indexes_like_pillow(tmp_path: Path, encoder: Encoder, thumbnails: bool) -> None:
    on_device = make_shop(tmp_path / "device", "gpu", thumbnails=thumbnails)
    on_cpu = make_shop(tmp_path / "cpu", "cpu", thumbnails=thumbnails)
    try:
        device_run, cpu_run = on_device.run(encoder), on_cpu.run(encoder)
        assert (device_run.rows, device_run.indexed, device_run.rejected) == (11, 9, 2)
        assert (cpu_run.rows, cpu_run.indexed, cpu_run.rejected) == (11, 9, 2)
        device_reasons, cpu_reasons = rejected(on_device, device_run), rejected(on_cpu, cpu_run)
        assert sorted(device_reasons) == sorted(cpu_reasons) == [10, 11]
        assert "img/cut.jpg" in device_reasons[10] and "img/notes.jpg: not an image" in device_reasons[11]
        assert on_device.ids() == on_cpu.ids()
        for product_id in on_device.ids():
            a, b = on_device.get(product_id).vectors[IMAGE], on_cpu.get(product_id).vectors[IMAGE]
            assert float(np.dot(a, b)) > 0.99, product_id

        stages = device_run.stages
        assert set(stages) == set(STAGES)
        # the 8 JPEGs, and the cut one unless the worker decoded it for its thumbnails (and found it cut)
        assert stages["device_decode"]["count"] == (8 if thumbnails else 9)  # the PNG stays in the worker
        assert stages["device_preprocess"]["count"] == 8
        assert stages["embed_image"]["count"] == 9 and stages["embed_text"]["count"] == 11
        assert stages["preprocess"]["count"] == 1  # the PNG, preprocessed in the worker
        assert cpu_run.stages["device_decode"]["count"] == 0 and cpu_run.stages["preprocess"]["count"] == 9
        for summary in (device_run, cpu_run):
            check_stages(summary)
        # switching the decoder changes no image hash: a re-run finds everything unchanged
        again = on_device.run(encoder)
        assert (again.indexed, again.unchanged, again.rejected) == (0, 9, 2)
    finally:
        on_device.store.close()
        on_cpu.store.close()


def check_stages(summary: IndexSummary) -> None:
    """Stages exist, rates are count / seconds, and main-process stages fit in the job's time."""
    stages = summary.stages
    main = sum(stage["seconds"] for stage in stages.values() if stage["where"] == "main")
    assert 0 < main <= summary.seconds
    assert stages["read"]["count"] == summary.rows and stages["upsert"]["count"] == summary.indexed
    assert stages["wait"]["count"] == summary.indexed + summary.rejected  # every product has an image
    for name, stage in stages.items():
        assert stage["where"] == STAGES[name][0] and stage["unit"] == STAGES[name][1]
        if stage["seconds"] > 0:
            assert stage["per_s"] == pytest.approx(stage["count"] / stage["seconds"])
    for name in ("read", "fetch", "decode", "embed_text", "embed_image", "upsert"):
        assert stages[name]["seconds"] > 0, name


def test_stages_in_the_job_record_and_the_printed_summary(tmp_path: Path, encoder: Encoder) -> None:
    shop = make_shop(tmp_path, "gpu")
    try:
        summary = shop.run(encoder)
    finally:
        shop.store.close()
    job = last_job(shop.settings.jobs_dir)
    assert job is not None and set(job["stages"]) == set(STAGES)
    assert job["stages"]["device_decode"]["count"] == 8 and job["stages"]["embed_image"]["unit"] == "images"
    assert json.loads(json.dumps(summary.as_dict()))["stages"]["read"]["count"] == 11
    printed = format_summary(summary)
    assert "stages (seconds, rate; workers: summed over the worker processes):" in printed
    assert "device_decode" in printed and "images/s" in printed and "(workers)" in printed
    assert "device_preprocess" in printed and "tag " not in printed  # stages that did nothing are left out


def test_the_device_benchmark_runs_on_cpu_and_says_so(tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.ingest import NO_GPU, main

    argv = ["--device", "cuda", "--model", str(tiny_clip_dir), "--decode", "gpu", "--count", "6", "--distinct", "2",
            "--size", "240x200", "--embed-batch", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert printed.startswith(NO_GPU) and printed.rstrip().endswith(NO_GPU)
    for label in ("decode (torchvision on", "encode (model alone)", "end to end (decode overlapped)",
                  "ratio end to end / encode"):
        assert label in printed
