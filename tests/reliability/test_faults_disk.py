"""A full or read-only disk under ``vitrine index`` (issue 9, "faults").

VITRINE_HOME (the embedded store, the job records, the thumbnails) is a small tmpfs mounted for the test (we run
as root, so permissions would not stop a write; a real mount does). Checked, with the real ``vitrine`` command:

* the disk too full for the store: exit status 1 and one line naming the store folder and the lack of space, no
  traceback; the store is still whole (the server opens it and answers searches); space freed, the same command
  again indexes every row exactly once. (The embedded engine maps its files into memory: a write into a full
  disk would kill the process with SIGBUS, so the indexer checks the free space first: `indexer.space`.)
* the disk remounted read-only: a clear error naming the folder; remounted read-write, the same command again
  finds every row and nothing duplicated.

Skipped where mounting is not permitted (not root, or no tmpfs).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from common.settings import load_settings
from indexer.space import MIN_FREE_BYTES
from store.factory import open_store
from tests.cli import cli_env, run_vitrine
from tests.demo_shop import DEMO, demo_subset
from tests.reliability.conftest import FULL, Figures
from tests.unit.api.http_helpers import running, wait_ready

PRODUCTS = 120 if FULL else 32
SIZE_MIB = 384


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `SIZE_MIB` MiB, unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = _mount("-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(folder))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free on ``disk``."""
    stat = os.statvfs(disk)
    ballast = disk / "ballast"
    size = stat.f_bavail * stat.f_frsize - leave
    with ballast.open("wb") as file:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= file.write(chunk[: min(len(chunk), size)])
    return ballast


def stored_ids(home: Path) -> list[str]:
    settings = load_settings(home=home)
    store = open_store(settings)
    try:
        if settings.store.collection not in store.list_collections():
            return []
        return [p.product_id for p in store.scroll(settings.store.collection, fields=[])]
    finally:
        store.close()


def assert_clear(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 1 and an error line holding ``words``, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("vitrine: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_a_full_disk_stops_the_job_clearly_and_it_resumes(disk: Path, tmp_path: Path, figures: Figures) -> None:
    home = disk / "home"
    catalog = demo_subset(tmp_path, PRODUCTS)
    env = cli_env(home, VITRINE_INDEXER__WORKERS="0", VITRINE_INDEXER__BATCH_SIZE="8",
                  VITRINE_INDEXER__IMAGE_ROOTS=json.dumps([str(DEMO / "images")]))
    # room for the collection (about 50 MiB), not for writing batches after it
    ballast = fill(disk, MIN_FREE_BYTES + 16 * 2**20)
    full = run_vitrine(home, "index", catalog, "--model", "demo", "--no-progress", env=env)
    figures.add("faults injected")
    assert_clear(full, "no space left", str(home / "store"))
    assert stored_ids(home) == []  # the collection exists, whole and empty
    settings = load_settings(home=home)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        response = http.get("/search", params={"q": "shoes"})
        assert response.status_code == 200 and response.json()["results"] == [], response.text
    ballast.unlink()
    done = run_vitrine(home, "index", catalog, "--model", "demo", "--no-progress", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == PRODUCTS
    ids = stored_ids(home)
    assert len(ids) == len(set(ids)) == PRODUCTS
    figures.add("rows checked", len(ids))


def test_a_read_only_disk_stops_the_job_clearly_and_it_resumes(disk: Path, tmp_path: Path,
                                                               figures: Figures) -> None:
    home = disk / "home"
    catalog = demo_subset(tmp_path, PRODUCTS)
    env = cli_env(home, VITRINE_INDEXER__WORKERS="0", VITRINE_INDEXER__BATCH_SIZE="8",
                  VITRINE_INDEXER__IMAGE_ROOTS=json.dumps([str(DEMO / "images")]))
    half = catalog.with_name("half.jsonl")
    half.write_text("".join(catalog.read_text().splitlines(keepends=True)[: PRODUCTS // 2]))
    first = run_vitrine(home, "index", half, "--model", "demo", "--no-progress", env=env)
    assert first.returncode == 0, first.stderr
    remounted = _mount("-o", "remount,ro", str(disk))
    assert remounted.returncode == 0, remounted.stderr
    try:
        refused = run_vitrine(home, "index", catalog, "--model", "demo", "--no-progress", env=env)
        figures.add("faults injected")
        assert_clear(refused, str(home))
        figures.note("read-only disk: " + refused.stderr.strip().splitlines()[-1])
    finally:
        assert _mount("-o", "remount,rw", str(disk)).returncode == 0
    assert sorted(stored_ids(home)) == sorted(json.loads(line)["id"] for line in half.read_text().splitlines())
    done = run_vitrine(home, "index", catalog, "--model", "demo", "--no-progress", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["unchanged"], summary["indexed"]) == (PRODUCTS // 2, PRODUCTS - PRODUCTS // 2), summary
    ids = stored_ids(home)
    assert len(ids) == len(set(ids)) == PRODUCTS
    figures.add("rows checked", len(ids))
