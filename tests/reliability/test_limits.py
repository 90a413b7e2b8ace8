"""Every limit of the service, over HTTP against a real server on demo products: each refusal has the right status
(413, 422, 429) and a message that names the limit and the setting behind it."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image

from api.app import create_app
from common.settings import Settings
from generate.protocol import GenerationRequest
from generate.recolor import RecolorGenerator
from generate.service import Variants
from search.query import MAX_QUERY_CHARS
from tests.demo_shop import index_demo_subset
from tests.rawhttp import chunked, exchange
from tests.reliability.conftest import Figures
from tests.unit.api.http_helpers import running, wait_ready

MAX_BODY = 100_000
MAX_UPLOAD = 300_000
MAX_DEPTH = 16
MAX_LIMIT = 50
MAX_OFFSET = 500


class BlockingGenerator:
    """The recolor backend, held inside ``generate`` until ``release`` is set."""

    name = "recolor"

    def __init__(self) -> None:
        self.inner = RecolorGenerator()
        self.started = threading.Event()
        self.release = threading.Event()

    def load(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": "blocking"}

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        self.started.set()
        self.release.wait(60)
        return self.inner.generate(request, deadline=None)


@dataclass
class Shop:
    url: str
    http: httpx.Client
    settings: Settings
    generator: BlockingGenerator


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    settings = index_demo_subset(
        tmp_path_factory.mktemp("limits"), count=20,
        api={"max_body_bytes": MAX_BODY, "max_upload_bytes": MAX_UPLOAD, "max_json_depth": MAX_DEPTH},
        search={"max_limit": MAX_LIMIT, "max_offset": MAX_OFFSET},
        generate={"max_concurrency": 1, "max_queued": 0})
    app = create_app(settings)
    generator = BlockingGenerator()
    app.state.variants = Variants(settings, generators={"recolor": generator})
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield Shop(url=url, http=http, settings=settings, generator=generator)
        generator.release.set()


def error_of(status: int, expected: int, body: Any, *names: str) -> str:
    """The error message of a response, checked to have ``expected`` status and to contain ``names``."""
    assert status == expected, body
    message: str = body["error"]["message"]
    for name in names:
        assert name in message, message
    return message


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that holds almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def test_a_declared_body_over_the_limit_is_413(shop: Shop, figures: Figures) -> None:
    for path in ("/search", "/generate/variants", "/catalog/does-not-matter"):
        reply = exchange(shop.url, "POST", path, headers={"Content-Length": str(MAX_BODY + 1),
                                                          "Content-Type": "application/json"})
        error_of(reply.status, 413, reply.json(), f"{MAX_BODY + 1} bytes", f"limit of {MAX_BODY} bytes",
                 "api.max_body_bytes")
        assert reply.json()["error"]["type"] == "RequestTooLarge"
        figures.add("limits checked")


def test_a_chunked_body_over_the_limit_is_413(shop: Shop, figures: Figures) -> None:
    pieces = [b'{"q": "' + b"a" * 10_000] + [b"a" * 10_000] * 30 + [b'"}']
    reply = exchange(shop.url, "POST", "/search", headers={"Transfer-Encoding": "chunked",
                                                           "Content-Type": "application/json"},
                     body=chunked(pieces))
    error_of(reply.status, 413, reply.json(), f"more than {MAX_BODY} bytes", "api.max_body_bytes")
    figures.add("limits checked")


def test_a_body_just_under_the_limit_is_read(shop: Shop) -> None:
    padding = " " * (MAX_BODY - 100)
    response = shop.http.post("/search", content=f'{{"q": "dress",{padding}"limit": 3}}'.encode(),
                              headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


def test_json_too_deep_is_422(shop: Shop, figures: Figures) -> None:
    deep = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)  # inside the body's object and the filters' object
    ok = shop.http.post("/search", content=f'{{"q": "dress", "filters": {{"a": {deep}}}}}'.encode(),
                        headers={"Content-Type": "application/json"})
    assert ok.status_code == 422 and "api.max_json_depth" not in ok.text  # a bad filter value, not too deep
    for depth in (MAX_DEPTH + 1, 1000, MAX_BODY - 10):
        body = ('{"q": "x", "filters": {"a": ' + "[" * depth + "]" * min(depth, 10) + "}}").encode()[:MAX_BODY]
        response = shop.http.post("/search", content=body, headers={"Content-Type": "application/json"})
        error_of(response.status_code, 422, response.json(), f"limit of {MAX_DEPTH} levels",
                 "api.max_json_depth")
        figures.add("limits checked")


def test_an_upload_over_the_limit_is_413(shop: Shop, figures: Figures) -> None:
    big = png_header(10, 10) + b"\0" * MAX_UPLOAD
    for path, data in (("/search/image", {"text": "dress"}), ("/generate/variants/image", {"instruction": "red"})):
        response = shop.http.post(path, files={"file": ("big.png", big, "image/png")}, data=data)
        error_of(response.status_code, 413, response.json(), f"limit of {MAX_UPLOAD} bytes", "api.max_upload_bytes")
        figures.add("limits checked")


def test_pixels_over_the_limit_are_413(shop: Shop, figures: Figures) -> None:
    limit = shop.settings.indexer.max_image_pixels
    for width, height in ((100_000, 100_000), (8000, 8000)):
        response = shop.http.post("/search/image", files={"file": ("bomb.png", png_header(width, height),
                                                                   "image/png")})
        error_of(response.status_code, 413, response.json(), "bomb.png", str(limit),
                 "VITRINE_INDEXER__MAX_IMAGE_PIXELS")
        figures.add("limits checked")


def test_a_query_too_long_is_422(shop: Shop, figures: Figures) -> None:
    q = "a" * (MAX_QUERY_CHARS + 1)
    for response in (shop.http.get("/search", params={"q": q}), shop.http.post("/search", json={"q": q})):
        error_of(response.status_code, 422, response.json(), "'q'", f"at most {MAX_QUERY_CHARS} characters")
        figures.add("limits checked")
    response = shop.http.get("/search", params={"q": "a" * MAX_QUERY_CHARS})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"limit": MAX_LIMIT + 1}, [f"limit {MAX_LIMIT + 1} is over the largest page size {MAX_LIMIT}",
                                    "search.max_limit"]),
        ({"offset": MAX_OFFSET + 1}, [f"offset {MAX_OFFSET + 1} is over the deepest offset {MAX_OFFSET}",
                                      "search.max_offset"]),
        ({"limit": 0}, ["'limit'", "greater than or equal to 1"]),
        ({"offset": -1}, ["'offset'", "greater than or equal to 0"]),
        ({"limit": 10**30}, ["is over the largest page size", "search.max_limit"]),
    ],
)
def test_limit_and_offset_out_of_bounds_are_422(shop: Shop, figures: Figures, params: dict[str, int],
                                                expected: list[str]) -> None:
    for response in (shop.http.get("/search", params={"q": "dress", **params}),
                     shop.http.post("/search", json={"q": "dress", **params})):
        error_of(response.status_code, 422, response.json(), *expected)
        figures.add("limits checked")


def test_generation_over_the_queue_is_429_at_once(shop: Shop, figures: Figures) -> None:
    picture = io.BytesIO()
    product = Image.new("RGB", (64, 64), (255, 255, 255))
    product.paste((90, 90, 90), (16, 16, 48, 48))
    product.save(picture, format="PNG")
    first: list[httpx.Response] = []

    def make() -> None:
        with httpx.Client(base_url=shop.url, timeout=60) as http:
            first.append(http.post("/generate/variants/image", files={"file": ("a.png", picture.getvalue())},
                                   data={"instruction": "the same in red", "seed": "1"}))

    thread = threading.Thread(target=make)
    thread.start()
    try:
        assert shop.generator.started.wait(30), "the first job never started"
        started = time.monotonic()
        response = shop.http.post("/generate/variants/image", files={"file": ("b.png", picture.getvalue())},
                                  data={"instruction": "the same in blue", "seed": "2"})
        took = time.monotonic() - started
        error_of(response.status_code, 429, response.json(), "1 at once (VITRINE_GENERATE__MAX_CONCURRENCY)",
                 "0 waiting (VITRINE_GENERATE__MAX_QUEUED)")
        assert response.json()["error"]["type"] == "Overloaded"
        assert int(response.headers["retry-after"]) > 0
        assert took < 5, took
        figures.add("limits checked")
        figures.note(f"generation overload answered 429 in {took * 1000:.0f} ms")
    finally:
        shop.generator.release.set()
        thread.join(60)
    assert first and first[0].status_code == 200, first[0].text if first else "no response"
    again = shop.http.post("/generate/variants/image", files={"file": ("b.png", picture.getvalue())},
                           data={"instruction": "the same in blue", "seed": "2"})
    assert again.status_code == 200, again.text  # the place is given back
