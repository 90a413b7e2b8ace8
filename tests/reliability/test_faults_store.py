"""Faults of the Qdrant server: it goes away, it hangs, it comes back (issue 9, "faults").

The server is `tests.qdrant_rest.QdrantRestServer` (Qdrant's REST API over qdrant-client's local mode), reached
by `store.qdrant_backend.QdrantServerStore` through qdrant-client's REST transport, as a real deployment reaches
a Qdrant server (``VITRINE_STORE__URL``); it is a `tests.qdrant_grpc.QdrantGrpcServer`, so the down-and-back test
also runs over gRPC (``store.prefer_grpc``). Checked, through a real uvicorn server and the real ``vitrine`` CLI:

* the server down: search, product and facet requests answer 503 with ``Retry-After`` and a message naming the
  store URL, within the store's timeout; the server back on the same port: the same app answers 200 again, with
  the same results, without a restart. An app started while the server is down says so on ``/ready`` (503, the
  reason names the URL) and becomes ready once it is up;
* the server hanging (the port accepts, nothing answers): 503 after about ``store.timeout_s``, not a hang;
* the server going away in the middle of ``vitrine index``: exit status 1, one line naming the store URL, no
  traceback; what was written is whole (every stored product has its payload and both vectors); the server back
  and the same command again: every catalog row exactly once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.settings import Settings, StoreSettings
from store.protocol import IMAGE, STATE_KEY, TEXT
from store.qdrant_backend import QdrantServerStore
from tests.cli import cli_env, run_vitrine
from tests.demo_shop import DEMO, demo_subset, index_demo_subset
from tests.qdrant_grpc import QdrantGrpcServer
from tests.qdrant_rest import QdrantRestServer
from tests.reliability.conftest import FULL, Figures
from tests.unit.api.http_helpers import running, wait_ready

PRODUCTS = 60
INDEXED = 40 if FULL else 24
"""Products of the ``vitrine index`` test, written in batches of `BATCH`."""
BATCH = 4
TIMEOUT_S = 1.0
"""The store's request timeout in these tests (``store.timeout_s``); qdrant-client rounds it up to whole seconds."""
SLACK_S = 4.0
"""What a request may take beyond the store timeout (encoding the query, thread pool, a loaded CI machine)."""
CYCLES = 10 if FULL else 3
QUERIES = ("leather bag", "white sneakers", "summer dress", "wool hat")


@dataclass
class Shop:
    """A demo catalog indexed into a Qdrant server (REST and gRPC), and the settings that reach it (REST)."""

    server: QdrantGrpcServer
    settings: Settings

    def over(self, transport: str) -> Settings:
        """The settings reaching the server over ``transport`` (``rest`` or ``grpc``)."""
        if transport == "rest":
            return self.settings
        store = self.settings.store.model_copy(update={"prefer_grpc": True, "grpc_port": self.server.grpc_port})
        return self.settings.model_copy(update={"store": store})


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    folder = tmp_path_factory.mktemp("faults-store")
    server = QdrantGrpcServer(folder / "qdrant").start()
    try:
        settings = index_demo_subset(folder, count=PRODUCTS, store={"url": server.url})
        # qdrant-client's local mode behind the server writes slowly (about 1 s for 60 points), so only the
        # app gets the short timeout
        yield Shop(server, settings.model_copy(
            update={"store": settings.store.model_copy(update={"timeout_s": TIMEOUT_S})}))
    finally:
        server.stop()


@contextmanager
def hanging(port: int) -> Iterator[None]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    try:
        yield
    finally:
        sock.close()


def ids(response: httpx.Response) -> list[str]:
    return [hit["id"] for hit in response.json()["results"]]


def same(body: Any) -> Any:
    """A response body without its timing, floats rounded (the engine's scores vary in the 7th digit)."""
    if isinstance(body, dict):
        return {k: same(v) for k, v in body.items() if k != "took_ms"}
    if isinstance(body, list):
        return [same(v) for v in body]
    return round(body, 4) if isinstance(body, float) else body


def requests_of(product: str) -> list[tuple[str, dict[str, Any]]]:
    """The store-backed requests checked while the server is down: (path, query parameters)."""
    return [("/search", {"q": q}) for q in QUERIES] + [
        (f"/products/{product}", {}), (f"/products/{product}/similar", {"limit": 3}),
        ("/facets", {"field": "category"}),
    ]


def assert_unavailable(response: httpx.Response, url: str, took: float, figures: Figures) -> None:
    figures.add("requests tried")
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["error"]["type"] == "BackendUnavailable"
    assert url in body["error"]["message"], body
    assert took < TIMEOUT_S + SLACK_S, f"{response.request.url} took {took:.1f} s"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_search_answers_503_while_the_server_is_down_and_recovers(shop: Shop, figures: Figures,
                                                                  transport: str) -> None:
    server = shop.server
    with (running(create_app(shop.over(transport), retry_s=0.2)) as url,
          httpx.Client(base_url=url, timeout=60) as http):
        wait_ready(http)
        product = ids(http.get("/search", params={"q": "bag"}))[0]
        checks = requests_of(product)
        before = {path + json.dumps(params): http.get(path, params=params) for path, params in checks}
        assert all(r.status_code == 200 for r in before.values()), [r.text for r in before.values()]
        for _ in range(CYCLES):
            server.stop()
            figures.add("faults injected")
            for path, params in checks:
                start = time.monotonic()
                response = http.get(path, params=params)
                assert_unavailable(response, server.url, time.monotonic() - start, figures)
            assert http.get("/health").status_code == 200
            server.start()  # the same port, the same data
            if transport == "grpc":  # gRPC tries the lost server again after a backoff of at most a second
                deadline = time.monotonic() + 5
                while (http.get(checks[0][0], params=checks[0][1]).status_code != 200
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            for path, params in checks:
                response = http.get(path, params=params)
                figures.add("requests tried")
                assert response.status_code == 200, response.text
                assert same(response.json()) == same(before[path + json.dumps(params)].json())


def test_a_hung_server_answers_503_within_the_timeout(shop: Shop, figures: Figures) -> None:
    server = shop.server
    with running(create_app(shop.settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        expected = ids(http.get("/search", params={"q": "leather bag"}))
        server.stop()
        try:
            with hanging(server.port):
                figures.add("faults injected")
                for q in QUERIES[:2]:
                    start = time.monotonic()
                    response = http.get("/search", params={"q": q})
                    took = time.monotonic() - start
                    assert_unavailable(response, server.url, took, figures)
                    assert took >= TIMEOUT_S * 0.9  # it did wait for the server, as long as it was told
        finally:
            server.start()
        response = http.get("/search", params={"q": "leather bag"})
        assert response.status_code == 200 and ids(response) == expected


def test_an_app_started_while_the_server_is_down_becomes_ready(shop: Shop, figures: Figures) -> None:
    server = shop.server
    server.stop()
    figures.add("faults injected")
    try:
        with running(create_app(shop.settings, retry_s=0.2)) as url, httpx.Client(base_url=url, timeout=60) as http:
            body = wait_ready(http, expect=503)
            assert body["status"] == "failed" and server.url in str(body["reason"]), body
            response = http.get("/search", params={"q": "bag"})
            assert response.status_code == 503 and "retry-after" in response.headers
            figures.add("requests tried", 2)
            server.start()
            deadline = time.monotonic() + 30
            while (ready := http.get("/ready")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ready.status_code == 200, ready.text
            assert http.get("/search", params={"q": "bag"}).status_code == 200
    finally:
        if not server.running:
            server.start()


class StopAfter:
    """`QdrantRestServer.before` hook: stops the server when the ``n``-th upsert arrives (before it is applied)."""

    def __init__(self, server: QdrantRestServer, n: int) -> None:
        self.server, self.n, self.seen = server, n, 0
        self.fired = threading.Event()

    def __call__(self, method: str, path: str) -> None:
        if method == "PUT" and path.endswith("/points"):
            self.seen += 1
            if self.seen == self.n and not self.fired.is_set():
                self.fired.set()
                self.server.stop()  # from the handler's thread: its own answer never arrives


def check_store(url: str, rows: dict[str, dict[str, Any]], *, complete: bool) -> int:
    """Every stored product is a whole catalog row with both vectors, each once; all of them if ``complete``."""
    store = QdrantServerStore(url, settings=StoreSettings(url=url))
    try:
        stored = list(store.scroll("products", with_vectors=True))
    finally:
        store.close()
    got = [p.product_id for p in stored]
    assert len(got) == len(set(got)), "a product is stored twice"
    assert set(got) <= set(rows)
    if complete:
        assert set(got) == set(rows)
    for point in stored:
        assert set(point.vectors) == {IMAGE, TEXT}, point.product_id
        payload = {k: v for k, v in point.payload.items() if k != STATE_KEY}
        row = rows[point.product_id]
        assert {k: payload[k] for k in row} == row, point.product_id
    return len(stored)


def test_index_stops_cleanly_when_the_server_goes_away_and_resumes(tmp_path: Path, figures: Figures) -> None:
    server = QdrantRestServer(tmp_path / "qdrant").start()
    catalog = demo_subset(tmp_path, INDEXED)
    rows = {row["id"]: row for row in map(json.loads, catalog.read_text().splitlines())}
    env = cli_env(tmp_path / "home", VITRINE_STORE__URL=server.url, VITRINE_STORE__TIMEOUT_S=str(TIMEOUT_S),
                  VITRINE_INDEXER__WORKERS="0", VITRINE_INDEXER__BATCH_SIZE=str(BATCH),
                  VITRINE_INDEXER__IMAGE_ROOTS=json.dumps([str(DEMO / "images")]))
    try:
        stopper = StopAfter(server, 3)
        server.before = stopper
        failed = run_vitrine(tmp_path, "index", catalog, "--model", "demo", "--no-progress", env=env)
        assert stopper.fired.is_set() and not server.running
        figures.add("faults injected")
        assert failed.returncode == 1, failed.stderr
        assert server.url in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
        assert failed.stderr.strip().count("\n") < 3, failed.stderr  # one clear line, not a dump
        server.before = None
        server.start()
        figures.add("rows checked", check_store(server.url, rows, complete=False))
        done = run_vitrine(tmp_path, "index", catalog, "--model", "demo", "--no-progress", "--json", env=env)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["rows"] == INDEXED and summary["indexed"] + summary["unchanged"] == INDEXED, summary
        assert summary["unchanged"] == 2 * BATCH, summary  # the two batches written before the fault are kept
        figures.add("rows checked", check_store(server.url, rows, complete=True))
    finally:
        server.stop()
