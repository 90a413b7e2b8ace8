"""``kill -9`` of ingestion at random moments, ten times in a row, then a run to the end (issue 9, "faults").

Each killed run resumes what the one before it left; the last run completes. Then the embedded store (the default
``vitrine index`` target) must hold every catalog row exactly once, with the catalog's payload and both vectors;
every thumbnail on disk must decode; the job record of the last run must agree with the store.

Starting ``vitrine index`` costs seconds of imports and model loading on every run, more than the work that a
kill interrupts, so the runs are forked from a warm process (`zygote`: imports done, the demo model loaded; it
never runs the model itself, so the children fork clean). Each child runs the real job, `index_catalog`, with
the real store, and is killed with SIGKILL after a delay drawn from a seeded generator, spread from before the
store is opened to the middle of the last batches. The first kill hits the real ``vitrine`` command as it
starts, for the start-up path.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image

from common.settings import load_settings
from indexer.report import last_job
from store.factory import open_store
from store.protocol import IMAGE, STATE_KEY, TEXT
from tests.cli import VITRINE, cli_env
from tests.demo_shop import DEMO, ROOT, demo_subset
from tests.reliability.conftest import FULL, Figures

PRODUCTS = 400 if FULL else 128
KILLS = 10
BATCH = 8
SEED = 9
MAX_DELAY_S = 1.0
MIN_DELAY_S = 0.2
"""Kill delays are drawn from [0, max delay), starting at this; the children start at once. The max delay adapts
to the machine's speed (between `MIN_DELAY_S` and 4 x this): a run that got through more than its share of what is
left (an equal share per remaining kill) halves it, one that wrote nothing lengthens it, so the kills fall before,
between and inside writes all along the catalog."""


def zygote() -> None:
    """The warm process: load the model, then fork one indexing job per ``run`` line read from stdin.

    Answers ``pid N`` when a job starts and ``exit N STATUS`` (``os.waitpid`` status) when it ends. The settings
    come from the environment (``VITRINE_*``); the catalog is ``sys.argv[1]``.
    """
    from embed import build_encoder
    from indexer.pipeline import index_catalog

    catalog = Path(sys.argv[1])
    settings = load_settings()
    encoder = build_encoder(settings.embed, "demo")
    encoder.load()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        pid = os.fork()
        if pid == 0:  # the job
            code = 1
            try:
                sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 - the child ends with os._exit
                store = open_store(settings)
                try:
                    index_catalog(catalog, settings=settings, encoder=encoder, store=store, progress=False)
                finally:
                    store.close()
                code = 0
            finally:
                os._exit(code)
        out.write(f"pid {pid}\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(f"exit {pid} {status}\n")
        out.flush()


class Zygote:
    """The `zygote` process, driven from the test."""

    def __init__(self, catalog: Path, env: dict[str, str]) -> None:
        code = "from tests.reliability.test_faults_kill import zygote; zygote()"
        self.process = subprocess.Popen([sys.executable, "-c", code, str(catalog)], cwd=ROOT, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read() == ["ready"]

    def _read(self) -> list[str]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        assert line, f"the zygote died (exit status {self.process.poll()})"
        return line.split()

    def start(self) -> int:
        """Fork a job; its pid."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write("run\n")
        stdin.flush()
        word, pid = self._read()
        assert word == "pid"
        return int(pid)

    def wait(self, pid: int) -> int:
        """The ``os.waitpid`` status of job ``pid``, once it ended."""
        word, ended, status = self._read()
        assert (word, int(ended)) == ("exit", pid)
        return int(status)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    catalog = demo_subset(tmp_path, PRODUCTS)
    env = cli_env(tmp_path / "home", VITRINE_INDEXER__WORKERS="0", VITRINE_INDEXER__BATCH_SIZE=str(BATCH),
                  VITRINE_INDEXER__IMAGE_ROOTS=json.dumps([str(DEMO / "images")]), OMP_NUM_THREADS="1",
                  PYTHONPATH=str(ROOT))
    yield catalog, env


def stored_count(env: dict[str, str]) -> int:
    """Products in the collection now (0 before it exists)."""
    settings = load_settings(home=Path(env["VITRINE_HOME"]))
    store = open_store(settings)
    try:
        return store.count(settings.store.collection) if "products" in store.list_collections() else 0
    finally:
        store.close()


def test_kill_9_at_random_points_then_resume(shop: tuple[Path, dict[str, str]], figures: Figures) -> None:
    catalog, env = shop
    rows = {row["id"]: row for row in map(json.loads, catalog.read_text().splitlines())}
    rng = random.Random(SEED)
    counts = [0]
    # the first kill: the real command, while it starts up
    cli = subprocess.Popen([str(VITRINE), "index", str(catalog), "--model", "demo", "--no-progress"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.5, 3.0))
    cli.send_signal(signal.SIGKILL)
    assert cli.wait(30) == -signal.SIGKILL
    figures.add("faults injected")
    counts.append(stored_count(env))
    zygote = Zygote(catalog, env)
    try:
        kills, max_delay, midway = 1, MAX_DELAY_S, 0
        while kills < KILLS:
            pid = zygote.start()
            time.sleep(rng.uniform(0.0, max_delay))
            with contextlib.suppress(ProcessLookupError):  # it may have ended already
                os.kill(pid, signal.SIGKILL)
            status = zygote.wait(pid)
            if os.WIFSIGNALED(status):
                assert os.WTERMSIG(status) == signal.SIGKILL
                kills += 1
                midway += counts[-1] < PRODUCTS
                figures.add("faults injected")
            else:
                assert os.WEXITSTATUS(status) == 0, counts  # it finished before the kill: fine, but does not count
            counts.append(stored_count(env))
            assert counts[-1] >= counts[-2], counts  # nothing written is ever lost
            written, left = counts[-1] - counts[-2], PRODUCTS - counts[-2]
            if written > left / (KILLS - kills + 1):
                max_delay = max(MIN_DELAY_S, max_delay * 0.5)
            elif written == 0 and counts[-1] < PRODUCTS:
                max_delay = min(MAX_DELAY_S * 4, max_delay * 1.3)
        assert midway >= KILLS // 2, f"too few kills fell while rows were left to index: {counts}"
        pid = zygote.start()
        assert zygote.wait(pid) == 0
    finally:
        zygote.close()
    figures.note(f"kill -9: stored products after each kill {counts[1:]} of {PRODUCTS}")
    figures.add("kills with rows left to index", midway)
    figures.add("rows checked", check_all(env, rows))
    job = last_job(Path(env["VITRINE_HOME"]) / "jobs")
    assert job is not None and job["status"] == "done", job
    assert job["rows"] == PRODUCTS and job["rejected"] == 0, job
    assert job["indexed"] + job["unchanged"] == PRODUCTS and job["unchanged"] == counts[-1], job


def check_all(env: dict[str, str], rows: dict[str, dict[str, Any]]) -> int:
    """Every catalog row stored exactly once, whole, with both vectors; every thumbnail file decodes."""
    home = Path(env["VITRINE_HOME"])
    settings = load_settings(home=home)
    store = open_store(settings)
    try:
        stored = list(store.scroll(settings.store.collection, with_vectors=True))
        assert store.count(settings.store.collection) == len(rows)
    finally:
        store.close()
    got = [p.product_id for p in stored]
    assert len(got) == len(set(got)) == len(rows) and set(got) == set(rows)
    for point in stored:
        assert set(point.vectors) == {IMAGE, TEXT}, point.product_id
        payload = {k: v for k, v in point.payload.items() if k != STATE_KEY}
        row = rows[point.product_id]
        assert {k: payload[k] for k in row} == row, point.product_id
    pictures = [f for f in settings.images_dir.rglob("*") if f.is_file() and not f.name.startswith(".")]
    assert pictures
    for picture in pictures:  # written atomically: a kill leaves at most a hidden temporary file
        Image.open(io.BytesIO(picture.read_bytes())).load()
    return len(stored)
