"""Hostile input against a real server and through ``vitrine index``: decompression bombs, polyglot files, huge and
deep JSON, unicode edge cases in queries and catalog fields, path traversal in a catalog's image paths, and SSRF
vectors for every URL the service fetches (query image URLs, catalog image URLs). Each is refused with a reason or
handled, never a 500, a hang or a memory blow-up; a loopback server that records requests sees none of the SSRF
attempts."""

from __future__ import annotations

import io
import json
import resource
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from api.app import create_app
from common.settings import Settings
from tests.cli import cli_env, run_vitrine
from tests.demo_shop import DEMO, index_demo_subset
from tests.http_server import QuietHandler
from tests.rawhttp import exchange
from tests.reliability.conftest import Figures
from tests.unit.api.http_helpers import running, wait_ready

MAX_RSS_GROWTH_MB = 300
REFUSALS = ("refused", "not allowed", "not supported", "not a valid URL")
BOMB_SECONDS = 5.0

UNICODE = {
    "nul": "nul\x00byte",
    "lone-surrogate": "half \ud800 pair",
    "rtl-override": "\u202egnp.exe\u202c sneaker",
    "zero-width": "sne\u200bak\u200cer\u200d\ufeff",
    "combining": "e" + "\u0301" * 10_000,
    "emoji-zwj": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family tote",
    "full-width": "\uff37\uff28\uff29\uff34\uff25\u3000\uff33\uff2e\uff25\uff21\uff2b\uff25\uff32\uff33",
    "emojis": "\U0001f600" * 1000,
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "astral-letters": "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
}


# --- the servers --------------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """A loopback HTTP server that answers every request with a small PNG and records its path."""

    server: ThreadingHTTPServer
    seen: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def _png(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    image = Image.new("RGB", (size, size), (255, 255, 255))
    image.paste(color, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _serve(host: str, handler: type[QuietHandler]) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    seen: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            seen.append(self.path)
            self.send(200, _png(), {"Content-Type": "image/png"})

    for server in _serve("127.0.0.1", Handler):
        yield Recorder(server=server, seen=seen)


@pytest.fixture(scope="module")
def redirector(recorder: Recorder) -> Iterator[str]:
    """The "public" host: 127.0.0.2, allowlisted; ``/to/PATH`` redirects to the recorder (loopback, not allowed)."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
            if self.path.startswith("/to/"):
                self.send(302, b"", {"Location": f"http://127.0.0.1:{recorder.port}/{self.path[4:]}"})
            else:
                self.send(200, _png((30, 30, 200)), {"Content-Type": "image/png"})

    for server in _serve("127.0.0.2", Handler):
        yield f"http://127.0.0.2:{server.server_address[1]}"


@dataclass
class Shop:
    url: str
    http: httpx.Client
    settings: Settings


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    settings = index_demo_subset(tmp_path_factory.mktemp("hostile"), count=20, fetch={"allow_hosts": ["127.0.0.2"]})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield Shop(url=url, http=http, settings=settings)


def assert_answered(response: httpx.Response, *allowed: int) -> dict[str, Any]:
    """A JSON answer with one of the ``allowed`` statuses (an error one with the shared shape)."""
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    if response.status_code >= 400:
        assert set(body["error"]) == {"type", "message"} and body["error"]["type"] != "InternalError", body
    return body


# --- decompression bombs and polyglots ----------------------------------------------------------------------------


def png_bomb(side: int) -> bytes:
    """A real PNG of ``side`` x ``side`` black pixels, deflated in identical blocks (30000 x 30000 is ~2.6 MB)."""
    row = side * 3 + 1
    rows_per_block = max(1, 8_000_000 // row)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"\0" * (row * rows_per_block)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    same = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(side, rows_per_block)
    tail = deflate.compress(b"\0" * (row * rest)) + deflate.flush()
    total = row * side
    adler = ((total % 65521) << 16) | 1  # the Adler-32 of `total` zero bytes
    stream = b"\x78\xda" + first + same * (blocks - 1) + tail + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def gif_with_screen(width: int, height: int) -> bytes:
    """A 1 x 1 GIF whose logical screen claims ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("P", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (10, 120, 200)), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_png_bomb_is_a_real_image() -> None:
    with Image.open(io.BytesIO(png_bomb(300))) as small:
        assert small.size == (300, 300)
        assert small.convert("RGB").getextrema() == ((0, 0), (0, 0), (0, 0))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("kind", ["png-30000", "gif-screen", "jpeg-65000"])
def test_decompression_bombs_are_413_at_once(shop: Shop, figures: Figures, kind: str) -> None:
    data = {"png-30000": lambda: png_bomb(30_000), "gif-screen": lambda: gif_with_screen(65_535, 65_535),
            "jpeg-65000": lambda: jpeg_claiming(65_000, 65_000)}[kind]()
    before = _peak_rss_mb()
    started = time.monotonic()
    for path, form in (("/search/image", {}), ("/generate/variants/image", {"instruction": "in red"})):
        response = shop.http.post(path, files={"file": (f"{kind}.img", data)}, data=form)
        message = assert_answered(response, 413)["error"]["message"]
        assert "VITRINE_INDEXER__MAX_IMAGE_PIXELS" in message and str(shop.settings.indexer.max_image_pixels) in \
            message, message
        figures.add("hostile inputs tried")
    took = time.monotonic() - started
    assert took < BOMB_SECONDS, took
    assert _peak_rss_mb() - before < MAX_RSS_GROWTH_MB
    figures.note(f"bomb {kind} ({len(data):,} bytes): refused in {took * 1000:.0f} ms")


def _polyglots() -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected status)."""
    picture = Image.new("RGB", (48, 48), (255, 255, 255))
    picture.paste((20, 90, 160), (12, 12, 36, 36))
    zip_tail = b"PK\x03\x04" + b"\0" * 26 + b"evil.sh#!/bin/sh\nrm -rf /\n" + b"PK\x05\x06" + b"\0" * 18
    script = b"<script>alert(document.cookie)</script>"
    return {
        "gif+zip.gif": (encoded(picture.convert("P"), "GIF") + zip_tail, 200),
        "jpeg+html.jpg": (encoded(picture, "JPEG") + b"<html><body>" + script + b"</body></html>", 200),
        "png+js.png": (encoded(picture, "PNG") + b"/*" + script, 200),
        "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9" height="9"/></svg>',
                    415),
        "html.png": (b"<!doctype html><html>" + script + b"</html>", 415),
        "script.png": (script, 415),
        "pdf.jpg": (b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF", 415),
        "gifar.jpg": (b"GIF89a" + zip_tail, 415),
    }


@pytest.mark.parametrize("name", list(_polyglots()))
def test_polyglot_files_are_decoded_or_415(shop: Shop, figures: Figures, name: str) -> None:
    data, expected = _polyglots()[name]
    hostile_name = f'<img src=x onerror="alert(1)">{name}'
    response = shop.http.post("/search/image", files={"file": (hostile_name, data, "image/png")},
                              data={"text": "shirt"})
    body = assert_answered(response, expected)
    if expected == 200:
        assert body["results"], body
    else:
        assert body["error"]["type"] == "UnsupportedImage"
        message = body["error"]["message"]
        assert "<script>alert" not in message and "onload=" not in message, message
    assert response.headers.get("content-disposition") is None
    figures.add("hostile inputs tried")


# --- huge and deep JSON -------------------------------------------------------------------------------------------


def test_huge_and_deep_json(shop: Shop, figures: Figures) -> None:
    limit = shop.settings.api.max_body_bytes
    huge = ('{"q": "' + "a" * limit + '"}').encode()
    reply = exchange(shop.url, "POST", "/search", headers={"Content-Type": "application/json",
                                                           "Content-Length": str(len(huge))}, body=[huge])
    assert reply.status == 413 and "api.max_body_bytes" in reply.json()["error"]["message"]
    started = time.monotonic()
    for deep in (b"[" * 1_000_000, b"{" * 1_000_000, b'{"a":' * 199_999, b"[" * 500_000 + b"]" * 500_000):
        response = shop.http.post("/search", content=deep, headers={"Content-Type": "application/json"})
        message = assert_answered(response, 422)["error"]["message"]
        assert "api.max_json_depth" in message, message
        figures.add("hostile inputs tried")
    for deep in (b"[" * 1_000_000, b'{"q": ' + b"[" * 900_000):  # no Content-Type: FastAPI would parse it as JSON
        response = shop.http.post("/search", content=deep, headers={"Content-Type": ""})
        assert_answered(response, 422)
        figures.add("hostile inputs tried")
    figures.note(f"deep JSON (6 bodies of about 1 MB) refused in {(time.monotonic() - started) * 1000:.0f} ms")
    wide = ('{"q": "x", "filters": {' + ", ".join(f'"k{i}": {i}' for i in range(60_000)) + "}}").encode()
    assert_answered(shop.http.post("/search", content=wide, headers={"Content-Type": "application/json"}), 422)
    figures.add("hostile inputs tried")


# --- unicode in queries -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(UNICODE))
def test_unicode_queries(shop: Shop, figures: Figures, name: str) -> None:
    text = UNICODE[name]
    raw_json = ('{"q": ' + json.dumps(text) + ', "limit": 3}').encode()  # ensure_ascii: a lone surrogate as \ud800
    answers = [shop.http.post("/search", content=raw_json, headers={"Content-Type": "application/json"}),
               shop.http.post("/search", content=('{"query": [{"text": ' + json.dumps(text) + "}]}").encode(),
                              headers={"Content-Type": "application/json"})]
    if name != "lone-surrogate":  # not representable in UTF-8, so not in a URL
        answers.append(shop.http.get("/search", params={"q": text, "limit": 3}))
    else:
        answers.append(shop.http.get("/search?q=half%20%ED%A0%80%20pair&limit=3"))  # its would-be UTF-8 bytes
    for response in answers:
        body = assert_answered(response, 200, 422)
        if response.status_code == 422:
            assert body["error"]["message"], body
        figures.add("hostile inputs tried")


# --- catalogs: unicode fields, path traversal, SSRF ---------------------------------------------------------------


@dataclass
class Indexed:
    home: Path
    rejected: dict[str, str]
    url: str
    http: httpx.Client
    rows: dict[str, dict[str, Any]]


def _ssrf_hosts(port: int) -> dict[str, str]:
    """name -> image URL on a host the service must not fetch from (the loopback ones at the recorder's port)."""
    return {
        "127.0.0.1": f"http://127.0.0.1:{port}/a.png",
        "localhost": f"http://localhost:{port}/a.png",
        "[::1]": f"http://[::1]:{port}/a.png",
        "0.0.0.0": f"http://0.0.0.0:{port}/a.png",
        "0": f"http://0:{port}/a.png",
        "decimal": f"http://2130706433:{port}/a.png",
        "hex": f"http://0x7f000001:{port}/a.png",
        "octal": f"http://0177.0.0.1:{port}/a.png",
        "short": f"http://127.1:{port}/a.png",
        "mapped-v6": f"http://[::ffff:127.0.0.1]:{port}/a.png",
        "metadata-ip": "http://169.254.169.254/latest/meta-data/",
        "metadata-name": "http://metadata.google.internal/computeMetadata/v1/",
        "private-10": "http://10.0.0.1/a.png",
        "private-192": "http://192.168.0.1/a.png",
        "unique-local-v6": "http://[fd00::1]/a.png",
        "file": "file:///etc/passwd",
        "gopher": f"gopher://127.0.0.1:{port}/_GET%20/a.png",
        "ftp": f"ftp://127.0.0.1:{port}/a.png",
    }


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder, redirector: str) -> Iterator[Indexed]:
    root = tmp_path_factory.mktemp("catalog")
    folder = root / "shop"
    (folder / "images").mkdir(parents=True)
    demo_images = sorted((DEMO / "images").iterdir())[:3]
    for i, source in enumerate(demo_images):
        shutil.copy(source, folder / "images" / f"p{i}{source.suffix}")
    good = f"images/p0{demo_images[0].suffix}"
    outside = root / "outside.png"  # a real image next to the catalog's folder: readable, but not allowed
    outside.write_bytes(_png((0, 200, 0)))
    (folder / "images" / "link.png").symlink_to(outside)
    rows: dict[str, dict[str, Any]] = {"plain": {"id": "plain", "title": "plain cotton shirt", "image": good}}
    for name, text in UNICODE.items():
        rows[f"u-{name}"] = {"id": f"u-{name}", "title": f"hostile {name}: {text}", "brand": text[:200],
                             "description": text, "attributes": {"note": text, f"k-{text[:20]}": "v"},
                             "image": good}
    traversal = {"dotdot": "../../etc/passwd", "dotdot-image": "../outside.png", "absolute": "/etc/passwd",
                 "absolute-image": str(outside), "encoded": "%2e%2e/%2e%2e/etc/passwd",
                 "symlink": "images/link.png", "file-url": "file:///etc/passwd", "file-url-image": outside.as_uri()}
    for name, ref in traversal.items():
        rows[f"t-{name}"] = {"id": f"t-{name}", "title": f"traversal {name}", "image": ref}
    for name, url in _ssrf_hosts(recorder.port).items():
        rows[f"s-{name}"] = {"id": f"s-{name}", "title": f"ssrf {name}", "image": url}
    rows["s-redirect"] = {"id": "s-redirect", "title": "ssrf redirect", "image": f"{redirector}/to/b.png"}
    rows["public"] = {"id": "public", "title": "allowed host image", "image": f"{redirector}/fine.png"}
    catalog = folder / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows.values()), encoding="utf-8")
    home = root / "home"
    report = root / "rejected.jsonl"
    env = cli_env(home, VITRINE_INDEXER__WORKERS="0", VITRINE_FETCH__ALLOW_HOSTS='["127.0.0.2"]',
                  VITRINE_INDEXER__FETCH_RETRIES="0")
    done = run_vitrine(home, "index", catalog, "--model", "demo", "--report", report, "--no-progress", "--json",
                       env=env)
    assert done.returncode in (0, 3), done.stderr
    rejected = {}
    if report.exists():
        for line in report.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            rejected[record["id"]] = record["reason"]
    with running(create_app(Settings(home=home))) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield Indexed(home=home, rejected=rejected, url=url, http=http, rows=rows)


def test_catalog_unicode_fields_are_indexed_exactly_or_rejected(indexed: Indexed, figures: Figures) -> None:
    assert "plain" not in indexed.rejected
    for product_id, row in indexed.rows.items():
        if not product_id.startswith(("u-", "plain")):
            continue
        figures.add("hostile catalog rows")
        if product_id in indexed.rejected:
            assert indexed.rejected[product_id], product_id
            continue
        response = indexed.http.get(f"/products/{product_id}")
        got = assert_answered(response, 200)
        for key in ("title", "brand", "description", "attributes"):
            if key in row:
                assert got[key] == row[key], (product_id, key)
        search = indexed.http.post("/search", json={"q": row["title"][:500], "limit": 20})
        ids = [hit["id"] for hit in assert_answered(search, 200)["results"]]
        assert product_id in ids, (product_id, ids)
    indexed_count = sum(1 for pid in indexed.rows if pid.startswith("u-") and pid not in indexed.rejected)
    figures.note(f"unicode catalog rows: {indexed_count} of {len(UNICODE)} indexed byte-exact, the others "
                 "rejected with a reason")


def test_catalog_path_traversal_is_rejected(indexed: Indexed, figures: Figures) -> None:
    for product_id, row in indexed.rows.items():
        if not product_id.startswith("t-"):
            continue
        figures.add("hostile catalog rows")
        reason = indexed.rejected.get(product_id)
        assert reason is not None, f"{product_id} ({row['image']!r}) was indexed"
        assert row["image"] in reason, (product_id, reason)
        assert_answered(indexed.http.get(f"/products/{product_id}"), 404)


def test_catalog_ssrf_urls_are_rejected_and_never_fetched(indexed: Indexed, recorder: Recorder,
                                                          figures: Figures) -> None:
    for product_id, row in indexed.rows.items():
        if not product_id.startswith("s-"):
            continue
        figures.add("SSRF vectors tried")
        reason = indexed.rejected.get(product_id)
        assert reason is not None, f"{product_id} ({row['image']!r}) was indexed"
        assert any(word in reason for word in REFUSALS), (product_id, reason)
    assert "public" not in indexed.rejected, indexed.rejected.get("public")
    assert recorder.seen == [], recorder.seen


def test_query_image_urls_ssrf(shop: Shop, recorder: Recorder, redirector: str, figures: Figures) -> None:
    vectors = {**_ssrf_hosts(recorder.port), "redirect": f"{redirector}/to/c.png"}
    for name, url in vectors.items():
        response = shop.http.post("/search", json={"query": [{"image_url": url}]})
        message = assert_answered(response, 400, 422)["error"]["message"]  # 422: not even a valid URL
        assert any(word in message for word in REFUSALS), (name, message)
        figures.add("SSRF vectors tried")
    allowed = shop.http.post("/search", json={"query": [{"image_url": f"{redirector}/fine.png"}]})
    assert_answered(allowed, 200)
    assert recorder.seen == [], recorder.seen
