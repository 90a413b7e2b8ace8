"""`api.limits`: the JSON depth scan, and the body limit middleware on a small app served by uvicorn (declared and
chunked bodies, deep JSON, chunked uploads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, File, UploadFile

from api.errors import install_error_handlers
from api.limits import BodyLimitMiddleware, is_json, json_depth
from tests.rawhttp import chunked, exchange
from tests.unit.api.http_helpers import running

MAX_BODY = 2048
MAX_DEPTH = 4
MAX_UPLOAD = 4096


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ('{"a": 1}', 1),
        ("[[[]]]", 3),
        ('[{"a": [1, {"b": []}]}]', 5),
        ('["[[[[[", "{{{{"]', 1),
        (r'["\"[[[[", "\\", [[]]]', 3),  # an escaped quote stays inside; an escaped backslash does not escape
        (r'["\\\"[[[["]', 1),
        (r'{"k\\": [[["\\\\"]]]}', 4),
        ("]]][[", 0),  # invalid from the first byte: closers first count down, the depth never goes below zero
        ("[]" * 1000 + "[[[]]]", 3),
        ("[" * 100_000, 100_000),
        ('"' + "[" * 1000, 0),  # an unterminated string
    ],
)
def test_json_depth(text: str, depth: int) -> None:
    assert json_depth(text.encode()) == depth
    if depth and text.count("[") + text.count("{") < 1000:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return
        assert _real_depth(parsed) == depth


def _real_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_real_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_real_depth(v) for v in value.values()), default=0)
    return 0


def test_json_depth_of_a_megabyte_is_quick() -> None:
    body = ('{"a": "' + "\\\\" * 200_000 + '", "b": ' + "[" * 40 + "]" * 40 + "}").encode() * 2
    assert json_depth(body) == 41


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [(None, True), (b"application/json", True), (b"Application/JSON; charset=utf-8", True),
     (b"application/merge-patch+json", True), (b"text/plain", False), (b"multipart/form-data; boundary=x", False)],
)
def test_is_json(content_type: bytes | None, expected: bool) -> None:
    assert is_json(content_type) is expected


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    def echo(body: dict[str, Any]) -> dict[str, int]:
        return {"size": len(json.dumps(body))}

    @app.post("/upload")
    def upload(file: Annotated[UploadFile, File()]) -> dict[str, int]:
        return {"size": len(file.file.read())}

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=MAX_BODY, max_json_depth=MAX_DEPTH,
                       upload_paths=("/upload",), max_upload_bytes=MAX_UPLOAD)
    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(_app()) as base:
        yield base


def test_bodies_within_the_limits_pass(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        assert client.get("/ping").json() == {"ok": "yes"}
        assert client.post("/echo", json={"a": [[["x" * 1000]]]}).status_code == 200
        reply = exchange(url, "POST", "/echo", headers={"Transfer-Encoding": "chunked",
                                                        "Content-Type": "application/json"},
                         body=chunked([b'{"a": ', b"[1, 2]", b"}"]))
        assert reply.status == 200, reply.body
        files = {"file": ("a.bin", b"x" * 3000)}
        assert client.post("/upload", files=files).json() == {"size": 3000}


def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(url: str) -> None:
    reply = exchange(url, "POST", "/echo", headers={"Content-Length": "5000000", "Content-Type": "application/json"})
    assert reply.status == 413 and reply.headers["connection"] == "close"
    error = reply.json()["error"]
    assert error["type"] == "RequestTooLarge"
    assert "5000000 bytes" in error["message"] and f"limit of {MAX_BODY} bytes (setting api.max_body_bytes)" in \
        error["message"]


def test_a_chunked_body_over_the_limit_is_413_once_over(url: str) -> None:
    reply = exchange(url, "POST", "/echo", headers={"Transfer-Encoding": "chunked",
                                                    "Content-Type": "application/json"},
                     body=chunked([b" " * 1000] * 100))
    assert reply.status == 413, reply.body
    assert f"more than {MAX_BODY} bytes" in reply.json()["error"]["message"]


def test_json_nested_too_deep_is_422(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        response = client.post("/echo", content=b'{"a": [[[[1]]]]}', headers={"Content-Type": "application/json"})
        assert response.status_code == 422
        assert response.json()["error"]["message"] == (f"JSON body nested 5 levels deep is over the limit of "
                                                        f"{MAX_DEPTH} levels (setting api.max_json_depth)")
        not_json = client.post("/echo", content=b"[[[[[[[[]]]]]]]]", headers={"Content-Type": "text/plain"})
        assert not_json.status_code == 422 and "api.max_json_depth" not in not_json.text  # FastAPI's own answer


def test_a_chunked_upload_over_the_limit_is_413(url: str) -> None:
    boundary = "b0undary"
    start = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    pieces = [start, *([b"x" * 65536] * 40), f"\r\n--{boundary}--\r\n".encode()]
    reply = exchange(url, "POST", "/upload", headers={"Transfer-Encoding": "chunked",
                                                      "Content-Type": f"multipart/form-data; boundary={boundary}"},
                     body=chunked(pieces))
    assert reply.status == 413, reply.body
    error = reply.json()["error"]
    assert error["type"] == "ImageTooLarge" and f"limit of {MAX_UPLOAD} bytes (setting api.max_upload_bytes)" in \
        error["message"]
    small = [start, b"y" * 100, f"\r\n--{boundary}--\r\n".encode()]
    reply = exchange(url, "POST", "/upload", headers={"Transfer-Encoding": "chunked",
                                                      "Content-Type": f"multipart/form-data; boundary={boundary}"},
                     body=chunked(small))
    assert reply.status == 200 and reply.json() == {"size": 100}
