"""`vitrine reindex`: a new version built aside, a canary, an atomic alias switch, the old version dropped.

In-process on the embedded store and on qdrant-client (local mode and the REST test server); through a running
server (``POST /admin/reindex``) when ``vitrine serve`` holds the embedded store, including the load test the
issue asks for: four clients searching without pause while the catalog is rebuilt and switched, with zero
failed queries, and the new titles visible after the switch.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.settings import EmbedSettings, Settings, load_settings
from embed import Encoder, build_encoder
from indexer.pipeline import index_catalog
from indexer.reindex import Canary, CanaryQuery, load_canary_queries, reindex
from store.factory import open_store
from store.protocol import VectorStore
from tests.cli import cli_env, run_vitrine
from tests.qdrant_rest import QdrantRestServer
from tests.unit.api.http_helpers import running, wait_ready

NOUNS = ("sneaker", "backpack", "raincoat", "scarf", "sandal", "wallet", "beanie", "jacket", "boot", "tote")
PRODUCTS = 40


def write_catalog(folder: Path, word: str, count: int = PRODUCTS, name: str | None = None) -> Path:
    """``count`` text-only products whose titles start with ``word`` (the version marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"p{i}", "title": f"{word} {NOUNS[i % len(NOUNS)]} number {i}", "brand": "acme",
             "category": NOUNS[i % len(NOUNS)], "price": 10.0 + i} for i in range(count)]
    path = folder / (name or f"{word}.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo() -> Encoder:
    encoder = build_encoder(EmbedSettings(), "demo")
    encoder.load()
    return encoder


def settings_for(home: Path, **groups: Any) -> Settings:
    return load_settings(home=home, indexer={"workers": 0, **groups.pop("indexer", {})}, **groups)


def first_index(settings: Settings, encoder: Encoder, catalog: Path) -> None:
    store = open_store(settings)
    try:
        index_catalog(catalog, settings=settings, encoder=encoder, store=store, progress=False)
    finally:
        store.close()


def titles(store: VectorStore, name: str = "products") -> set[str]:
    return {str(p.payload["title"]).split()[0] for p in store.scroll(name, fields=["title"])}


@pytest.fixture(params=["edge", "memory", "rest"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of each store backend, on a fresh location."""
    if request.param == "edge":
        yield settings_for(tmp_path / "home")
    elif request.param == "memory":
        yield settings_for(tmp_path / "home", store={"url": ":memory:"})
    else:
        server = QdrantRestServer(tmp_path / "qdrant").start()
        try:
            yield settings_for(tmp_path / "home", store={"url": server.url})
        finally:
            server.stop()


def test_reindex_switches_and_drops_the_old_version(backend: Settings, demo: Encoder, tmp_path: Path) -> None:
    store = open_store(backend)
    try:
        index_catalog(write_catalog(tmp_path, "alpha"), settings=backend, encoder=demo, store=store, progress=False)
        old = store.collection_info("products").physical
        stages: list[str] = []
        slept: list[float] = []
        result = reindex(write_catalog(tmp_path, "bravo"), settings=backend, encoder=demo, store=store,
                         grace_s=0, progress=False, on_stage=lambda stage, data: stages.append(stage),
                         sleep=slept.append)
        assert result.switched and result.canary.passed, result.canary.format()
        assert result.previous == old and result.dropped == [old]
        info = store.collection_info("products")
        assert (info.physical, info.count) == (result.version, PRODUCTS)
        assert store.list_versions("products") == [result.version]
        assert titles(store) == {"bravo"}
        assert stages == ["index", "canary", "switched", "grace", "done"] and slept == [0]
        names = [c.name for c in result.canary.checks]
        assert names[:2] == ["count", "encoder"] and sum(n.startswith("query") for n in names) == 5
    finally:
        store.close()


def test_canary_failure_leaves_the_alias(demo: Encoder, tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home")
    store = open_store(settings)
    try:
        index_catalog(write_catalog(tmp_path, "alpha"), settings=settings, encoder=demo, store=store, progress=False)
        old = store.collection_info("products").physical
        shrunk = write_catalog(tmp_path, "bravo", count=PRODUCTS // 2)
        result = reindex(shrunk, settings=settings, encoder=demo, store=store, grace_s=0, progress=False)
        assert not result.switched
        [count] = result.canary.failures()
        assert count.name == "count" and "20 products" in count.detail and "at least 36" in count.detail
        assert store.collection_info("products").physical == old and titles(store) == {"alpha"}
        assert result.dropped == [result.version] and store.list_versions("products") == [old]

        # a canary query whose product is not in the new catalog: kept for inspection when asked
        canary = Canary(queries=(CanaryQuery("alpha sneaker number 0", "p0"), CanaryQuery("bravo", "p99")),
                        allow_shrink=True)
        kept = reindex(shrunk, settings=settings, encoder=demo, store=store, canary=canary, grace_s=0,
                       progress=False, keep_failed=True)
        assert not kept.switched and kept.kept_failed
        assert [c.name for c in kept.canary.failures()] == ["query 'bravo'"]
        assert store.list_versions("products") == [old, kept.version]
        assert store.collection_info("products").physical == old and store.count(kept.version) == PRODUCTS // 2

        # shrinking allowed and the right queries: switched; the kept version is newer, so it stays
        good = Canary(queries=(CanaryQuery("bravo sneaker number 0", "p0"), CanaryQuery("bravo")), allow_shrink=True)
        done = reindex(shrunk, settings=settings, encoder=demo, store=store, canary=good, grace_s=0, progress=False)
        assert done.switched and store.count("products") == PRODUCTS // 2
        assert store.list_versions("products") == [kept.version, done.version]
        # the next reindex drops the superseded failed version first
        again = reindex(shrunk, settings=settings, encoder=demo, store=store, canary=good, grace_s=-1, progress=False)
        assert kept.version in again.dropped and store.list_versions("products") == [done.version, again.version]
    finally:
        store.close()


def test_canary_queries_file(tmp_path: Path) -> None:
    path = tmp_path / "canary.txt"
    path.write_text('# shop canaries\nwhite sneakers\n\n{"query": "red scarf", "expect": "p3"}\n', encoding="utf-8")
    assert load_canary_queries(path) == (CanaryQuery("white sneakers"), CanaryQuery("red scarf", "p3"))
    path.write_text('{"query": 3}\n', encoding="utf-8")
    with pytest.raises(Exception, match="needs a non-empty string 'query'"):
        load_canary_queries(path)


def test_the_cli_reindexes_in_process(demo: Encoder, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first_index(settings_for(home), demo, write_catalog(tmp_path, "alpha"))
    env = cli_env(home, VITRINE_INDEXER__WORKERS="0")
    done = run_vitrine(home, "reindex", write_catalog(tmp_path, "bravo"), "--grace-s", "0", "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert "switched    yes" in done.stdout
    failed = run_vitrine(home, "reindex", write_catalog(tmp_path, "charlie", count=5), "--json", env=env)
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["switched"] is False and "canary failed" in failed.stderr


# -- through a running server -----------------------------------------------------------------------

def server_settings(home: Path, roots: Path, **auth: Any) -> Settings:
    return settings_for(home, indexer={"catalog_roots": [roots]}, search={"no_match_below": 0.0}, **auth)


def follow(client: httpx.Client, job: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while job["state"] not in ("done", "failed", "canary_failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/admin/reindex/{job['id']}").json()
    return job


@pytest.mark.parametrize("where", ["edge", "rest"])
def test_reindex_under_load_through_the_server(demo: Encoder, tmp_path: Path, where: str) -> None:
    """Four clients search without pause while the server rebuilds, checks and switches the catalog (on the
    embedded store, and on a Qdrant server): not one query fails, and after the switch the products have their
    new titles."""
    home, roots = tmp_path / "home", tmp_path / "catalogs"
    qdrant = QdrantRestServer(tmp_path / "qdrant").start() if where == "rest" else None
    store: dict[str, Any] = {"store": {"url": qdrant.url}} if qdrant is not None else {}
    try:
        _load_test(demo, home, roots, store)
    finally:
        if qdrant is not None:
            qdrant.stop()


def _load_test(demo: Encoder, home: Path, roots: Path, store: dict[str, Any]) -> None:
    first_index(settings_for(home, **store), demo, write_catalog(roots, "alpha"))
    app = create_app(server_settings(home, roots, **store))
    outcomes: Counter[str] = Counter()
    seen_after: Counter[str] = Counter()
    stop = threading.Event()
    switched = threading.Event()

    def client_loop(url: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                q = NOUNS[n % len(NOUNS)]
                n += 1
                try:
                    response = client.get("/search", params={"q": q, "limit": 5})
                except httpx.HTTPError as e:
                    outcomes[f"error {type(e).__name__}"] += 1
                    continue
                if response.status_code != 200:
                    outcomes[f"{response.status_code} {response.text[:200]}"] += 1
                    continue
                outcomes["ok"] += 1
                if switched.is_set():
                    for hit in response.json()["results"]:
                        seen_after[str(hit["product"]["title"]).split()[0]] += 1

    with running(app) as url, httpx.Client(base_url=url, timeout=30) as admin:
        wait_ready(admin)
        threads = [threading.Thread(target=client_loop, args=(url, i), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        response = admin.post("/admin/reindex", json={"catalog": str(write_catalog(roots, "bravo")), "grace_s": 1})
        assert response.status_code == 202, response.text
        job = response.json()
        answered_before = outcomes["ok"]
        busy = admin.post("/admin/reindex", json={"catalog": str(roots / "bravo.jsonl")})
        assert busy.status_code == 429 and job["id"] in busy.json()["error"]["message"]
        job = follow(admin, job)
        during = outcomes["ok"] - answered_before
        switched.set()
        time.sleep(1.0)  # searches go on after the old version is dropped
        stop.set()
        for thread in threads:
            thread.join(30)
        assert job["state"] == "done", job
        result = job["result"]
        assert result["switched"] and result["dropped"] == [result["previous"]]
        assert admin.get("/products/p1").json()["title"].startswith("bravo")
    failures = {k: v for k, v in outcomes.items() if k != "ok"}
    assert not failures, failures
    assert during > 10, (during, outcomes)
    print(f"reindex under load ({'Qdrant server' if store else 'embedded store'}): {outcomes['ok']} "
          f"searches by 4 clients, {during} while the job ran, 0 failed")
    assert seen_after and set(seen_after) == {"bravo"}, seen_after


def test_after_a_reindex_the_server_searches_with_the_new_version_s_calibration(demo: Encoder,
                                                                                 tmp_path: Path) -> None:
    """The running search service takes up the new version when the job switches the alias: its calibration is
    measured again (here over 60 products instead of 40), and searches answer throughout."""
    home, roots = tmp_path / "home", tmp_path / "catalogs"
    first_index(settings_for(home), demo, write_catalog(roots, "alpha"))
    with running(create_app(server_settings(home, roots))) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        before = client.get("/stats").json()
        assert before["calibration"]["products"] == PRODUCTS and before["collection"]["count"] == PRODUCTS
        response = client.post("/admin/reindex", json={"catalog": str(write_catalog(roots, "bravo", count=60)),
                                                        "grace_s": 0})
        assert response.status_code == 202, response.text
        job = follow(client, response.json())
        assert job["state"] == "done", job
        after = client.get("/stats").json()
        assert after["calibration"]["products"] == 60 and after["collection"]["count"] == 60
        assert after["collection"]["physical"] == job["version"] != before["collection"]["physical"]
        hits = client.get("/search", params={"q": "sneaker", "limit": 3}).json()["results"]
        assert hits and all(hit["product"]["title"].startswith("bravo") for hit in hits)


def test_the_cli_goes_through_the_server_that_holds_the_store(demo: Encoder, tmp_path: Path) -> None:
    home, roots = tmp_path / "home", tmp_path / "catalogs"
    first_index(settings_for(home), demo, write_catalog(roots, "alpha"))
    app = create_app(server_settings(home, roots))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        port = url.rsplit(":", 1)[1]
        env = cli_env(home, VITRINE_API__PORT=port, VITRINE_INDEXER__WORKERS="0")
        canary = tmp_path / "canary.txt"
        canary.write_text('{"query": "bravo sneaker number 0", "expect": "p0"}\n', encoding="utf-8")
        done = run_vitrine(home, "reindex", write_catalog(roots, "bravo"), "--canary-queries", canary,
                           "--grace-s", "0", env=env)
        assert done.returncode == 0, done.stderr
        assert "held by a running server" in done.stderr and "switched" in done.stdout
        assert client.get("/products/p1").json()["title"].startswith("bravo")
        outside = write_catalog(tmp_path / "elsewhere", "charlie")
        refused = run_vitrine(home, "reindex", outside, env=env)
        assert refused.returncode == 1 and "outside the folders" in refused.stderr, refused.stderr
        shrunk = run_vitrine(home, "reindex", write_catalog(roots, "delta", count=3), "--grace-s", "0", env=env)
        assert shrunk.returncode == 1 and "canary failed" in shrunk.stderr, shrunk.stderr
        assert client.get("/products/p1").json()["title"].startswith("bravo")


def test_admin_needs_a_key_or_loopback(demo: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    home, roots = tmp_path / "home", tmp_path / "catalogs"
    first_index(settings_for(home), demo, write_catalog(roots, "alpha"))
    body = {"catalog": str(roots / "alpha.jsonl")}
    with TestClient(create_app(server_settings(home, roots))) as client:  # client host "testclient": not loopback
        refused = client.post("/admin/reindex", json=body)
        assert refused.status_code == 401 and "loopback" in refused.json()["error"]["message"]
    keyed = server_settings(home, roots, auth={"api_keys": ["admin-key-0123456789"]})
    with TestClient(create_app(keyed)) as client:
        assert client.post("/admin/reindex", json=body).status_code == 401
        headers = {"X-API-Key": "admin-key-0123456789"}
        for bad, why in (("/etc/passwd", "outside the folders"), ("relative.jsonl", "not an absolute path"),
                         (str(roots / "missing.jsonl"), "not a file"), (str(roots / ".." / "x.jsonl"), "outside")):
            response = client.post("/admin/reindex", json={"catalog": bad}, headers=headers)
            assert response.status_code == 422 and why in response.json()["error"]["message"], response.text
        assert client.get("/admin/reindex/abc", headers=headers).status_code == 404
    with TestClient(create_app(settings_for(home, auth={"api_keys": ["admin-key-0123456789"]}))) as client:
        response = client.post("/admin/reindex", json=body, headers={"X-API-Key": "admin-key-0123456789"})
        assert response.status_code == 422 and "catalog_roots is empty" in response.json()["error"]["message"]
