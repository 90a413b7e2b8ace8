"""The richer queries over HTTP, through a real uvicorn server: composed queries, the lexical match, more-like-this,
recommendations, facets, statistics, and image URLs refused by the address policy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from common.settings import Settings
from embed import Encoder
from tests.http_server import QuietHandler
from tests.unit.api.http_helpers import PRODUCTS, Catalog, fill_store, png_bytes, product_image, running, wait_ready


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[httpx.Client]:
    settings = Settings(home=catalog.home, search={"max_limit": 20})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield http


class _Images(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server calls it by this name
        self.send(200, png_bytes(product_image(0)), {"Content-Type": "image/png"})


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def ids(body: dict[str, object]) -> list[str]:
    results = body["results"]
    assert isinstance(results, list)
    return [str(hit["id"]) for hit in results]


def test_a_composed_query_with_a_negative_part(client: httpx.Client) -> None:
    plain = client.post("/search", json={"q": "leather"}).json()
    assert {"shoe-2", "bag-1"} <= set(ids(plain)[:3])
    composed = client.post("/search", json={"query": [{"text": "shoe"}, {"text": "leather", "weight": -0.5}],
                                            "w_lexical": 0}).json()
    assert composed["weights"]["lexical"] == 0
    assert ids(composed).index("shoe-1") < ids(composed).index("shoe-2")
    like = client.post("/search", json={"query": [{"product_id": "bag-1"}], "w_text": 0}).json()
    assert ids(like)[0] == "bag-1" and like["results"][0]["scores"]["image"] == pytest.approx(1.0, abs=1e-4)


def test_bad_parts_are_named(client: httpx.Client) -> None:
    response = client.post("/search", json={"query": [{"product_id": "nope"}]})
    assert response.status_code == 422 and "'nope'" in response.json()["error"]["message"]
    response = client.post("/search", json={"query": [{"text": "a", "image_url": "http://x/y.png"}]})
    assert response.status_code == 422 and "exactly one" in response.json()["error"]["message"]


def test_image_urls_on_private_addresses_are_refused(client: httpx.Client, image_server: str) -> None:
    response = client.post("/search", json={"query": [{"image_url": f"{image_server}/shoe.png"}]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "127.0.0.1" in message and "loopback" in message and "VITRINE_FETCH__ALLOW_HOSTS" in message
    response = client.post("/search", json={"query": [{"image_url": "http://169.254.169.254/latest/meta-data"}]})
    assert response.status_code == 400 and "169.254.169.254" in response.json()["error"]["message"]
    response = client.post("/search", json={"query": [{"image_url": "file:///etc/passwd"}]})
    assert response.status_code == 400


def test_image_urls_of_allowed_hosts_are_searched(tmp_path: Path, tiny_encoder: Encoder, image_server: str) -> None:
    settings = Settings(home=tmp_path, fetch={"allow_hosts": ["127.0.0.1/32"]})
    fill_store(settings, tiny_encoder)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        response = http.post("/search", json={"query": [{"image_url": f"{image_server}/shoe.png"}], "w_text": 0})
        assert response.status_code == 200, response.text
        top = response.json()["results"][0]
        assert top["id"] == PRODUCTS[0]["id"] and top["scores"]["image"] == pytest.approx(1.0, abs=1e-4)


def test_words_find_a_product_the_lexical_way(client: httpx.Client) -> None:
    body = client.get("/search", params={"q": "Carry tote", "limit": 3}).json()
    top = body["results"][0]
    assert top["id"] == "bag/2" and top["scores"]["all_words"] and top["scores"]["lexical"] == 1.0
    assert body["weights"]["lexical"] == 0.2


def test_similar_and_recommend(client: httpx.Client) -> None:
    body = client.get("/products/bag/2/similar", params={"limit": 3}).json()
    assert body["product_id"] == "bag/2" and body["source"] == "search"
    assert "bag/2" not in ids(body) and len(ids(body)) == 3
    assert client.get("/products/nope/similar").status_code == 404
    assert client.get("/products/bag-1/similar", params={"limit": 0}).status_code == 422
    rec = client.post("/recommend", json={"positive": ["shoe-1"], "negative": ["bag-1"], "limit": 5}).json()
    assert rec["source"] == "recommend" and not {"shoe-1", "bag-1"} & set(ids(rec))
    only_bags = client.post("/recommend", json={"positive": ["shoe-1"], "category": "bags"}).json()
    assert sorted(ids(only_bags)) == ["bag-1", "bag/2"]
    response = client.post("/recommend", json={"positive": ["hat-1"]})
    assert response.status_code == 422 and "no image vector" in response.json()["error"]["message"]
    assert client.post("/recommend", json={"positive": []}).status_code == 422


def test_facets_over_the_catalog_and_a_filter(client: httpx.Client) -> None:
    everything = client.get("/facets", params={"field": "category"}).json()
    assert everything == [{"value": "bags", "count": 2}, {"value": "shoes", "count": 2},
                          {"value": "hats", "count": 1}]
    acme = client.get("/facets", params={"field": "category", "brand": "Acme"}).json()
    assert acme == [{"value": "bags", "count": 1}, {"value": "shoes", "count": 1}]
    response = client.get("/facets", params={"field": "title"})
    assert response.status_code == 422 and "no payload index" in response.json()["error"]["message"]
    assert client.get("/facets", params={"field": "_vitrine"}).status_code == 422
    search = client.get("/search", params={"q": "leather", "facet": ["category", "brand"]}).json()
    assert {f["value"] for f in search["facets"]["category"]} == {"bags", "shoes", "hats"}


def test_stats_count_cache_hits(client: httpx.Client) -> None:
    before = client.get("/stats").json()["cache"]
    client.get("/search", params={"q": "a query only this test asks"})
    client.get("/search", params={"q": "a query only this test asks"})
    after = client.get("/stats").json()
    assert after["cache"]["hits"] == before["hits"] + 1 and after["cache"]["misses"] == before["misses"] + 1
    assert after["collection"]["count"] == len(PRODUCTS) and after["collection"]["lexical"]
