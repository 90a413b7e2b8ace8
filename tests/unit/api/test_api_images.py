"""Thumbnails and previews over real HTTP: URLs in results, the files with caching headers, 304s, bad and missing keys.

The catalog is indexed by the real pipeline (tiny open_clip encoder), which makes the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api.app import create_app
from api.wiring import Components, open_search
from common.settings import Settings, load_settings
from common.thumbnails import ThumbnailStore, url
from embed import Encoder
from indexer.pipeline import index_catalog
from store.factory import open_store
from store.protocol import STATE_KEY
from tests.unit.api.http_helpers import product_image, running, wait_ready

MAX_AGE = 3600
IMAGED = ("shoe-1", "shoe-2", "bag-1")


@dataclass(frozen=True)
class Shop:
    """An indexed VITRINE_HOME (served by `client`), a copy of it for tests that open their own store (the
    embedded store is held by one opener at a time), and the stored image hash of each product."""

    home: Path
    spare: Path
    keys: dict[str, str | None]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> Shop:
    """Three products that have an image (one larger than a thumbnail) and one without."""
    root = tmp_path_factory.mktemp("thumbnail_shop")
    product_image(0, size=48).save(root / "shoe-1.png")
    product_image(1, size=500).save(root / "shoe-2.jpg")
    product_image(2, size=64).save(root / "bag-1.png")
    rows = [{"id": "shoe-1", "title": "red running shoe", "image": "shoe-1.png", "category": "shoes"},
            {"id": "shoe-2", "title": "white leather sneaker", "image": "shoe-2.jpg", "category": "shoes"},
            {"id": "bag-1", "title": "brown leather bag", "image": "bag-1.png", "category": "bags",
             "preview": {"catalog": "field"}},  # the catalog's own field of that name: Vitrine's URL wins
            {"id": "hat-1", "title": "green wool hat", "category": "hats", "thumbnail": "https://cdn/hat.jpg"}]
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = load_settings(home=root / "home", indexer={"workers": 0})
    store = open_store(settings)
    try:
        summary = index_catalog(catalog, settings=settings, encoder=tiny_encoder, store=store, progress=False)
        keys = {p.product_id: p.payload[STATE_KEY]["image"] for p in store.scroll("products", fields=["id", STATE_KEY])}
    finally:
        store.close()
    assert (summary.indexed, summary.thumbnails) == (4, 3)
    shutil.copytree(root / "home", root / "spare")
    return Shop(home=root / "home", spare=root / "spare", keys=keys)


@pytest.fixture(scope="module")
def client(shop: Shop) -> Iterator[httpx.Client]:
    settings = Settings(home=shop.home, images={"max_age_s": MAX_AGE})
    with running(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as http:
        wait_ready(http)
        yield http


def test_results_carry_the_urls_of_existing_files(client: httpx.Client, shop: Shop) -> None:
    stored = shop.keys
    response = client.get("/search", params={"q": "leather", "limit": 10})
    assert response.status_code == 200, response.text
    products = {hit["id"]: hit["product"] for hit in response.json()["results"]}
    assert set(products) == {*IMAGED, "hat-1"}
    for pid in IMAGED:
        key = stored[pid]
        assert key is not None
        assert products[pid]["thumbnail"] == url(key, "thumb") == f"/images/{key}/thumb.webp"
        assert products[pid]["preview"] == url(key, "preview")
    assert products["hat-1"]["thumbnail"] == "https://cdn/hat.jpg"  # the catalog's own, as there is no file
    assert "preview" not in products["hat-1"]
    assert all(STATE_KEY not in product for product in products.values())
    one = client.get("/products/shoe-2").json()
    assert one["thumbnail"] == url(str(stored["shoe-2"]), "thumb") and one["preview"] == url(str(stored["shoe-2"]),
                                                                                              "preview")


def test_a_thumbnail_is_served_as_webp_with_cache_headers_and_304(client: httpx.Client) -> None:
    path = client.get("/products/shoe-2").json()["thumbnail"]
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == f"public, max-age={MAX_AGE}, immutable"
    etag = response.headers["etag"]
    assert etag.startswith('"') and response.headers["last-modified"]
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "WEBP" and picture.size == (320, 320)  # the 500-pixel original, scaled down
    preview = client.get(path.replace("/thumb.webp", "/preview.jpg"))
    assert preview.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(preview.content)).size == (500, 500)  # not upscaled to 1024

    for held in (etag, f"W/{etag}", f'"something-else", {etag}', "*"):
        again = client.get(path, headers={"If-None-Match": held})
        assert again.status_code == 304, held
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == f"public, max-age={MAX_AGE}, immutable"
    assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200


@pytest.mark.parametrize("path", [
    "/images/not-a-hash/thumb.webp",
    f"/images/{'A' * 64}/thumb.webp",
    f"/images/{'a' * 63}/thumb.webp",
    f"/images/{'a' * 64}/full.webp",
    f"/images/{'a' * 64}/..%2F..%2Fthumb.webp",
    "/images/..%2F..%2F..%2Fetc%2Fpasswd/thumb.webp",
])
def test_a_bad_key_or_size_is_refused(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        body = response.json()["error"]
        assert body["type"] == "InvalidInput"
        assert "image key" in body["message"] or "image file" in body["message"]


def test_a_bad_key_names_it(client: httpx.Client) -> None:
    body = client.get("/images/not-a-hash/thumb.webp").json()["error"]
    assert body == {"type": "InvalidInput", "message": "image key 'not-a-hash' is not an image hash; expected 64 "
                    "lowercase hexadecimal characters"}
    size = client.get(f"/images/{'a' * 64}/huge.webp").json()["error"]
    assert size["message"] == "image file 'huge.webp' is not known; expected one of ['thumb.webp', 'preview.jpg']"
    assert client.get(f"/images/{'a' * 64}/preview.webp").status_code == 422


def test_a_missing_key_is_404(client: httpx.Client) -> None:
    missing = hashlib.sha256(b"never indexed").hexdigest()
    response = client.get(f"/images/{missing}/thumb.webp")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFound"
    assert missing in response.json()["error"]["message"]


def test_images_are_served_before_the_search_service_is_ready(shop: Shop) -> None:
    release = threading.Event()

    def gated(settings: Settings) -> Components:
        release.wait(60)
        return open_search(settings)

    key = next(k for k in shop.keys.values() if k is not None)
    with running(create_app(Settings(home=shop.spare), loader=gated)) as base, \
            httpx.Client(base_url=base, timeout=60) as http:
        try:
            assert http.get("/ready").status_code == 503
            response = http.get(url(key, "preview"))
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        finally:
            release.set()


def test_no_urls_when_thumbnails_are_off_or_missing(shop: Shop, tmp_path: Path) -> None:
    components = open_search(Settings(home=shop.spare))
    try:
        assert components.service.get_product("shoe-1")["thumbnail"] == url(str(shop.keys["shoe-1"]), "thumb")
    finally:
        components.close()
    components = open_search(Settings(home=shop.spare, images={"thumbnails": False}))
    try:
        hit = components.service.get_product("shoe-1")
        assert "thumbnail" not in hit and "preview" not in hit
    finally:
        components.close()
    elsewhere = Settings(home=shop.spare, images={"dir": str(tmp_path / "empty")})  # the files are not there
    components = open_search(elsewhere)
    try:
        assert "thumbnail" not in components.service.get_product("shoe-1")
        assert ThumbnailStore.from_settings(elsewhere).urls(shop.keys["shoe-1"]) == {}
    finally:
        components.close()
