"""Content hashes, the job summary and report files, and in-process image preparation."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from indexer.fetch import FetchConfig
from indexer.report import IndexSummary, JobRecord, RejectReport, last_job
from indexer.state import ContentHashes, image_hash, payload_hash, text_hash
from indexer.worker import ImagePreparer, ImageTask, WorkerConfig


def test_hashes_depend_on_content_and_encoder() -> None:
    assert text_hash("red shoe", encoder="a") == text_hash("red shoe", encoder="a")
    assert text_hash("red shoe", encoder="a") != text_hash("red shoe", encoder="b")
    assert text_hash("red shoe", encoder="a") != text_hash("red shoes", encoder="a")
    assert text_hash("", encoder="a") is None
    assert image_hash(b"abc", encoder="a") != image_hash(b"abd", encoder="a")
    assert image_hash(b"abc", encoder="a") != image_hash(b"abc", encoder="b")
    same = payload_hash({"a": [1], "price": 1.0, "id": "x"})
    assert payload_hash({"id": "x", "price": 1.0, "a": [1]}) == same
    assert payload_hash({"id": "x", "price": 1.0}) != payload_hash({"id": "x", "price": 2.0})


def test_content_hashes_round_trip_and_unreadable_state() -> None:
    hashes = ContentHashes(text="t", image=None, payload="p")
    assert ContentHashes.from_payload(hashes.as_payload()) == hashes
    for junk in (None, "x", {}, {"v": 2, "text": "t", "image": None, "payload": "p"},
                 {"v": 1, "text": 3, "image": None, "payload": "p"}, {"v": 1, "text": "t", "image": None}):
        assert ContentHashes.from_payload(junk) is None


def test_summary() -> None:
    summary = IndexSummary(collection="c", rows=10, indexed=6, updated=1, unchanged=2, rejected=1, pruned=0,
                           seconds=2.0, report=Path("/r.jsonl"), timings={"write": 0.12345})
    assert summary.rate == 5.0 and summary.exit_code == 3
    data = summary.as_dict()
    assert data["report"] == "/r.jsonl" and data["rate"] == 5.0 and data["exit_code"] == 3
    assert data["timings"] == {"write": 0.123}
    json.dumps(data)
    clean = IndexSummary(collection="c", rows=0, indexed=0, updated=0, unchanged=0, rejected=0, pruned=0,
                         seconds=0.0, report=None)
    assert clean.exit_code == 0 and clean.rate == 0.0


def test_reject_report_is_lazy_unless_eager(tmp_path: Path) -> None:
    lazy = RejectReport(tmp_path / "lazy.jsonl")
    lazy.close()
    assert not lazy.written and not (tmp_path / "lazy.jsonl").exists()
    stale = tmp_path / "eager.jsonl"
    stale.write_text("old report\n", encoding="utf-8")
    with RejectReport(stale, eager=True) as report:
        report.add(line=3, product_id=None, reason="bad ✓")
    assert stale.read_text(encoding="utf-8") == '{"line": 3, "id": null, "reason": "bad ✓"}\n'


def test_job_record_and_last_job(tmp_path: Path) -> None:
    assert last_job(tmp_path) is None
    job = JobRecord(tmp_path / "jobs", collection="shop", catalog=Path("/c.jsonl"))
    job.write("running")
    assert last_job(tmp_path / "jobs") == json.loads(job.path.read_text(encoding="utf-8"))
    job.write("done", rows=3, indexed=3, rejected=0)
    record = last_job(tmp_path / "jobs")
    assert record is not None and record["status"] == "done" and record["rows"] == 3
    assert record["collection"] == "shop" and job.path.name.startswith("index-shop-")


def constant_transform(image: Image.Image) -> NDArray[np.float32]:
    return np.full((3, 2, 2), image.size[0], dtype=np.float32)


def test_in_process_preparation_skips_unchanged_bytes(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (1, 2, 3)).save(buffer, "JPEG")
    (tmp_path / "a.jpg").write_bytes(buffer.getvalue())
    config = WorkerConfig(fetch=FetchConfig(base_dir=tmp_path), transform=constant_transform, encoder="e",
                          max_pixels=10**7, draft_size=100)
    known = image_hash(buffer.getvalue(), encoder="e")
    with ImagePreparer(workers=0) as preparer:
        preparer.configure(config)
        fresh, same, missing = preparer.submit([ImageTask(0, "a.jpg"), ImageTask(1, "a.jpg", known),
                                                ImageTask(2, "b.jpg")]).result()
    assert fresh.hash == known and fresh.pixels is not None and fresh.pixels[0, 0, 0] == 200  # drafted to 1/4
    assert same.unchanged and same.hash == known and same.pixels is None
    assert missing.error is not None and "'b.jpg' not found" in missing.error and not missing.unchanged


@pytest.mark.slow
def test_worker_process_takes_waiting_chunks_then_new_ones(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 9, 9)).save(buffer, "PNG")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(buffer.getvalue())
    config = WorkerConfig(fetch=FetchConfig(base_dir=tmp_path), transform=constant_transform, encoder="e",
                          max_pixels=10**7)
    with ImagePreparer(workers=1) as preparer:
        preparer.configure(config)
        early = preparer.submit([ImageTask(0, "a.png")], group=0)  # before the worker is up: done here
        later = preparer.submit([ImageTask(0, "b.png")], group=1)
        assert not isinstance(early, Future) and not isinstance(later, Future)
        deadline = time.monotonic() + 120
        while not preparer.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        assert preparer.ready
        with preparer.lock:  # the worker took the waiting chunk of group 1 (if not started here yet)
            assert getattr(early, "remote", "?") is None
        late = preparer.submit([ImageTask(1, "b.png"), ImageTask(2, "../c.png")])
        assert isinstance(late, Future)  # runs in the worker process
        [a] = early.result()
        assert later.result()[0].hash == a.hash
        b, c = late.result(timeout=60)
    assert a.pixels is not None and b.pixels is not None and a.hash == b.hash
    assert float(b.pixels[0, 0, 0]) == 64.0
    assert c.error is not None and "outside the catalog's folder" in c.error
