"""A bounded load test on loopback: a headless locust run (tests/reliability/locustfile.py) against ``vitrine
serve`` in its own process over a demo index, for a fixed time with a fixed number of shoppers.

Zero failed requests, and the latency (p50, p99) and throughput recorded in the run's figures. CI: 8 shoppers for
15 s; ``VITRINE_RELIABILITY=full``: 32 shoppers for 60 s. Locust runs as a subprocess: it imports gevent, whose
monkeypatching must not reach pytest.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.settings import Settings
from tests.cli import VITRINE, cli_env
from tests.demo_shop import DEMO, index_demo_subset
from tests.reliability.conftest import FULL, Figures
from tests.unit.api.http_helpers import free_socket

pytestmark = pytest.mark.slow

LOCUST = Path(sys.executable).with_name("locust")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PRODUCTS = 300
USERS, DURATION = (32, "60s") if FULL else (8, "15s")
API_KEY = "reliability-load-key"
START_TIMEOUT_S = 120.0


def serve_env(settings: Settings) -> dict[str, str]:
    """The environment of a ``vitrine serve`` with the settings the index was built with, and an API key."""
    return cli_env(settings.home, VITRINE_TAGS__VOCABULARY=str(DEMO / "vocabulary.toml"),
                   VITRINE_AUTH__API_KEYS=API_KEY, VITRINE_LOG_LEVEL="WARNING")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vitrine serve`` over a demo index, in its own process; yields its URL once ``/ready`` says 200."""
    settings = index_demo_subset(tmp_path_factory.mktemp("load"), count=PRODUCTS)
    with free_socket() as sock:
        port = sock.getsockname()[1]
    log = (settings.home.parent / "serve.log").open("w", encoding="utf-8")
    process = subprocess.Popen([str(VITRINE), "serve", "--port", str(port)], env=serve_env(settings),
                               cwd=settings.home.parent, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(base_url=url, timeout=10) as http:
            while True:
                assert process.poll() is None, (settings.home.parent / "serve.log").read_text()
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "vitrine serve never became ready"
                time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            log.close()


def stats_rows(prefix: Path) -> list[dict[str, str]]:
    with Path(f"{prefix}_stats.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_load(server: str, tmp_path: Path, figures: Figures) -> None:
    prefix = tmp_path / "load"
    env = {**cli_env(tmp_path), "VITRINE_LOAD_PRODUCTS": str(PRODUCTS), "VITRINE_LOAD_API_KEY": API_KEY}
    done = subprocess.run(
        [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", str(USERS), "-r", str(USERS), "-t", DURATION,
         "--host", server, "--csv", str(prefix), "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    rows = stats_rows(prefix)
    total = next(row for row in rows if row["Name"] == "Aggregated")
    failures = Path(f"{prefix}_failures.csv").read_text(encoding="utf-8").splitlines()[1:]
    requests, failed = int(total["Request Count"]), int(total["Failure Count"])
    figures.add("load requests", requests)
    figures.note(f"load: {USERS} users for {DURATION} on a {PRODUCTS}-product demo index: {requests:,} requests, "
                 f"{float(total['Requests/s']):.1f} req/s, p50 {total['50%']} ms, p99 {total['99%']} ms, "
                 f"{failed} failed")
    for row in rows:
        if row["Name"] != "Aggregated":
            figures.note(f"  {row['Type']:<5} {row['Name']:<28} {int(row['Request Count']):>6,} requests  "
                         f"p50 {row['50%']:>5} ms  p99 {row['99%']:>5} ms")
    assert failed == 0 and not failures, "\n".join(failures) + done.stderr[-3000:]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert requests >= USERS * 10, f"only {requests} requests: {done.stderr[-3000:]}"
