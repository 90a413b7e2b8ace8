"""``vitrine index`` through a real subprocess: summary, report and exit codes; ``kill -9``, then resume."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.settings import load_settings
from store.factory import open_store
from store.protocol import IMAGE, TEXT
from tests.cli import VITRINE, cli_env, run_vitrine
from tests.tiny_models import save_tiny_open_clip


def run_cli(home: Path, *args: str | Path, workers: int = 0,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_vitrine(home, "index", *args, env=index_env(home, workers), timeout=timeout)


def index_env(home: Path, workers: int) -> dict[str, str]:
    return cli_env(home, VITRINE_INDEXER__WORKERS=str(workers), VITRINE_INDEXER__BATCH_SIZE="8",
                   OMP_NUM_THREADS="1")


def make_catalog(folder: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pixels = np.full((40, 48, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        pixels[rng.integers(0, 30):, : rng.integers(10, 48)] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(folder / "img" / f"{i}.jpg", quality=90)
        rows.append({"id": f"sku-{i}", "title": f"item {i} in {['red', 'blue', 'green'][i % 3]}",
                     "image": f"img/{i}.jpg", "price": i})
    (folder / "catalog.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [str(r["id"]) for r in rows]


@pytest.mark.slow
def test_cli_summary_report_and_exit_codes(tmp_path: Path, tiny_clip_dir: Path) -> None:
    make_catalog(tmp_path, 5)
    catalog = tmp_path / "catalog.jsonl"
    with catalog.open("a", encoding="utf-8") as f:
        f.write('{"id": "bad", "title": "x", "price": "lots"}\n')
    report = tmp_path / "out" / "rejected.jsonl"
    done = run_cli(tmp_path / "home", catalog, "--model", tiny_clip_dir, "--no-progress", "--json",
                   "--report", report)
    assert done.returncode == 3, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["indexed"], summary["rejected"], summary["exit_code"]) == (6, 5, 1, 3)
    assert json.loads(report.read_text(encoding="utf-8")) == {"line": 6, "id": "bad",
                                                               "reason": "price 'lots' is not a number"}

    make_catalog(tmp_path, 5)  # the bad row fixed (removed): exit 0, all unchanged, human summary
    done = run_cli(tmp_path / "home", catalog, "--model", tiny_clip_dir, "--no-progress", "--prune")
    assert done.returncode == 0, done.stderr
    table = dict(line.split(None, 1) for line in done.stdout.strip().splitlines())
    assert (table["rows"], table["unchanged"], table["rejected"], table["pruned"]) == ("5", "5", "0", "0")

    done = run_cli(tmp_path / "home", tmp_path / "catalog.xml", "--model", tiny_clip_dir)
    assert done.returncode == 1
    assert "catalog.xml' has an unsupported file type" in done.stderr


@pytest.mark.slow
def test_a_model_folder_retrained_in_place_is_refused_not_mixed(tmp_path: Path) -> None:
    model = save_tiny_open_clip(tmp_path / "model", seed=0)
    make_catalog(tmp_path, 4)
    home, catalog = tmp_path / "home", tmp_path / "catalog.jsonl"
    first = run_cli(home, catalog, "--model", model, "--no-progress")
    assert first.returncode == 0, first.stderr

    save_tiny_open_clip(model, seed=1)  # other weights in the same folder: same encoder name
    again = run_cli(home, catalog, "--model", model, "--no-progress")
    assert again.returncode not in (0, 3)
    assert "other weights of encoder" in again.stderr and "--collection" in again.stderr
    search = run_vitrine(home, "search", "item", env=index_env(home, 0))
    assert search.returncode != 0 and "other weights of encoder" in search.stderr

    save_tiny_open_clip(model, seed=0)  # the old weights back: searchable again
    assert run_vitrine(home, "search", "item", env=index_env(home, 0)).returncode == 0


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text(encoding="utf-8")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture()
def crash_site(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    ids = make_catalog(tmp_path, 200)
    yield tmp_path, ids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find worker processes")
def test_kill_9_at_random_moments_then_resume(crash_site: tuple[Path, list[str]],
                                              tiny_clip_dir: Path) -> None:
    folder, ids = crash_site
    home = folder / "home"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    catalog = folder / "catalog.jsonl"
    for attempt in range(3):
        workers = attempt % 2
        log = folder / f"attempt{attempt}.log"
        with log.open("w", encoding="utf-8") as stderr:
            process = subprocess.Popen(
                [str(VITRINE), "--log-level", "DEBUG", "index", str(catalog), "--model", str(tiny_clip_dir),
                 "--no-progress"], env=index_env(home, workers), stdout=subprocess.DEVNULL, stderr=stderr)
        # Kill after a random number of written batches (0 = while starting up), plus a random delay.
        batches = rng.choice([0, rng.randrange(1, 25)])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if log.read_text(encoding="utf-8").count(": batch ") >= batches:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        workers_before = children(process.pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        for child in workers_before:  # the image workers notice their parent died and exit on their own
            end = time.monotonic() + 15
            while alive(child) and time.monotonic() < end:
                time.sleep(0.1)
            assert not alive(child), f"worker {child} outlived the killed job (seed {seed})"

    done = run_cli(home, catalog, "--model", tiny_clip_dir, "--no-progress", "--json", workers=1)
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    summary = json.loads(done.stdout)
    assert summary["rows"] == len(ids) and summary["rejected"] == 0
    assert summary["indexed"] + summary["unchanged"] == len(ids)

    settings = load_settings(home=home)
    store = open_store(settings)
    try:
        stored = [p.product_id for p in store.scroll("products", fields=["id"])]
        assert sorted(stored) == sorted(ids), f"seed {seed}"  # exactly the catalog: none lost, none twice
        assert store.count("products") == len(ids)
        points = store.retrieve("products", ids, with_vectors=True)
        assert [p.product_id for p in points] == ids
        for point in points:
            assert set(point.vectors) == {IMAGE, TEXT}, f"{point.product_id} (seed {seed})"
        for point in points[::20]:
            hits = store.search("products", vector=point.vectors[IMAGE], using=IMAGE, limit=3)
            assert point.product_id in [hit.product_id for hit in hits], f"seed {seed}"
    finally:
        store.close()

    again = run_cli(home, catalog, "--model", tiny_clip_dir, "--no-progress", "--json")
    assert json.loads(again.stdout)["unchanged"] == len(ids), f"seed {seed}"
