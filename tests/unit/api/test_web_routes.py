"""The search page's routes over HTTP: the page, its static files and their caching, and ``/capabilities``.

What the page does in a browser is tested in tests/e2e/test_web_page.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.routes.web import CONTENT_SECURITY_POLICY, WEB_DIR, WebAssets
from common.settings import Settings
from tests.unit.api.http_helpers import Catalog, running, wait_ready


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[httpx.Client]:
    settings = Settings(home=catalog.home, search={"max_limit": 20})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield http


def test_the_page_links_its_files_by_content_hash(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    links = dict(re.findall(r'/static/([\w.]+)\?v=([0-9a-f]{16})"', response.text))
    assert set(links) == {"app.js", "style.css", "icon.svg"}
    assert "{{" not in response.text
    for name, version in links.items():
        asset = client.get(f"/static/{name}?v={version}")
        assert asset.status_code == 200
        assert asset.content == (WEB_DIR / name).read_bytes()
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["etag"] == f'"{version}"'
        again = client.get(f"/static/{name}?v={version}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert client.get("/static/app.js").headers["content-type"] == "text/javascript; charset=utf-8"


def test_only_the_page_files_are_served(client: httpx.Client) -> None:
    for name in ("index.html", "nope.js", "..%2Fapp.py", "..%2F..%2Froutes%2Fweb.py"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["type"] in {"NotFound", "HTTPError"}
    assert "app.js" in client.get("/static/nope.js").json()["error"]["message"]


def test_the_page_is_not_in_the_api_schema(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/static/{name}" not in paths
    assert "/capabilities" in paths


def test_capabilities(client: httpx.Client) -> None:
    body = client.get("/capabilities").json()
    assert body == {"facets": ["category", "brand"], "max_limit": 20, "max_upload_bytes": 10_000_000,
                    "rerank": False, "rerank_model": None, "generate": True, "generate_backends": ["recolor"],
                    "max_variants": 4, "keyed": []}


def test_assets_hash_what_they_serve(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="/static/a.js?v={{a.js}}"></script>', encoding="utf-8")
    (tmp_path / "a.js").write_text("let x = 1;", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not served", encoding="utf-8")
    first = WebAssets.load(tmp_path)
    assert set(first.files) == {"a.js"}
    (tmp_path / "a.js").write_text("let x = 2;", encoding="utf-8")
    second = WebAssets.load(tmp_path)
    assert first.files["a.js"].etag != second.files["a.js"].etag
    assert second.files["a.js"].etag.encode() in second.page
