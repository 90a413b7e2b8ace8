"""`index_catalog` with image URLs: a row whose URL points at a non-public address is rejected with the reason,
the rest of the batch is indexed; the allowlist lets an internal host through."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from common.settings import EmbedSettings, load_settings
from embed import Encoder, build_encoder
from indexer.pipeline import index_catalog
from store.factory import open_store


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Encoder:
    model = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    model.load()
    return model


@pytest.fixture()
def image_server(tmp_path: Path) -> Iterator[int]:
    folder = tmp_path / "served"
    folder.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        Image.new("RGB", (48, 40), colour).save(folder / f"{i}.jpg")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_private_urls_are_rejected_per_row_unless_allowed(tmp_path: Path, image_server: int,
                                                         encoder: Encoder) -> None:
    port = image_server
    catalog = tmp_path / "catalog.jsonl"
    rows = [
        {"id": "allowed", "title": "red", "image": f"http://localhost:{port}/0.jpg"},
        {"id": "loopback", "title": "green", "image": f"http://127.0.0.1:{port}/1.jpg"},
        {"id": "metadata", "title": "blue", "image": "http://169.254.169.254/latest/meta-data/"},
    ]
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = load_settings(home=tmp_path / "home", indexer={"workers": 0, "fetch_retries": 0},
                             fetch={"allow_hosts": ["localhost"]})
    store = open_store(settings)
    report = tmp_path / "rejected.jsonl"
    try:
        summary = index_catalog(catalog, settings=settings, encoder=encoder, store=store, progress=False,
                                report=report)
        ids = sorted(p.product_id for p in store.scroll("products", fields=["id"]))
    finally:
        store.close()
    assert (summary.rows, summary.indexed, summary.rejected) == (3, 1, 2)
    assert ids == ["allowed"]
    reasons = {row["id"]: row["reason"] for row in map(json.loads, report.read_text(encoding="utf-8").splitlines())}
    assert "host '127.0.0.1' is a loopback address; allow it with VITRINE_FETCH__ALLOW_HOSTS" in reasons["loopback"]
    assert "cloud metadata service address" in reasons["metadata"]
