"""The HTTP API through a real uvicorn server on a free port, over a store filled through the store API."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api.app import create_app
from common.settings import Settings
from store.protocol import STATE_KEY
from tests.unit.api.http_helpers import PRODUCTS, Catalog, png_bytes, product_image, running, wait_ready

MAX_UPLOAD = 16384


@pytest.fixture(scope="module")
def client(catalog: Catalog) -> Iterator[httpx.Client]:
    # the lexical match is off: these tests check the dense fusion's exact scores (tests/unit/api/test_api_queries.py
    # has it on)
    settings = Settings(home=catalog.home, api={"max_upload_bytes": MAX_UPLOAD},
                        search={"max_limit": 20, "w_lexical": 0.0})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield http


def error_of(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind, body
    message: str = body["error"]["message"]
    return message


def test_ready_names_the_collection_and_the_encoder(client: httpx.Client, catalog: Catalog) -> None:
    body = client.get("/ready").json()
    assert body["status"] == "ready"
    assert body["collection"] == "products"
    assert body["encoder"] == catalog.encoder_name
    assert client.get("/health").json() == {"status": "ok"}


def test_get_search_finds_the_product_whose_title_is_the_query(client: httpx.Client) -> None:
    response = client.get("/search", params={"q": "brown leather bag", "w_image": 0, "w_text": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"results", "took_ms", "total_candidates", "offset", "limit", "weights", "no_good_match"} <= set(body)
    top = body["results"][0]
    assert set(top) == {"id", "score", "relevance", "scores", "product", "variants"}
    assert top["id"] == "bag-1"
    assert top["scores"]["text"] == pytest.approx(1.0, abs=1e-4)
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["product"]["title"] == "brown leather bag"
    assert all(STATE_KEY not in hit["product"] for hit in body["results"])
    assert body["weights"] == {"image": 0.0, "text": 1.0, "lexical": 0.0}
    assert len(body["results"]) == len(PRODUCTS)


def test_a_product_without_an_image_has_a_null_image_score(client: httpx.Client) -> None:
    body = client.get("/search", params={"q": "green wool hat"}).json()
    hat = next(hit for hit in body["results"] if hit["id"] == "hat-1")
    assert hat["scores"]["image"] is None
    assert hat["score"] == pytest.approx(0.4 * hat["scores"]["text"], abs=1e-6)


def test_get_filters_and_pages(client: httpx.Client) -> None:
    shoes = client.get("/search", params={"q": "shoe", "category": "shoes"}).json()["results"]
    assert {hit["id"] for hit in shoes} == {"shoe-1", "shoe-2"}
    in_range = client.get("/search", params={"q": "x", "min_price": 20, "max_price": 100}).json()["results"]
    assert {hit["id"] for hit in in_range} == {"shoe-1", "shoe-2", "bag/2"}
    by_field = client.get("/search", params=[("q", "x"), ("filter", "brand=Bolt")]).json()["results"]
    assert {hit["id"] for hit in by_field} == {"shoe-2", "hat-1"}
    everything = client.get("/search", params={"q": "leather"}).json()["results"]
    page = client.get("/search", params={"q": "leather", "offset": 1, "limit": 2}).json()["results"]
    assert [hit["id"] for hit in page] == [hit["id"] for hit in everything[1:3]]


def test_post_search_is_get_search_with_a_json_body(client: httpx.Client) -> None:
    params: dict[str, Any] = {
        "q": "white leather sneaker",
        "category": "shoes",
        "limit": 3,
        "w_image": 0.5,
        "w_text": 0.5,
    }
    by_get = client.get("/search", params=params).json()
    by_post = client.post("/search", json=params).json()
    assert by_post["results"] == by_get["results"]
    typed = client.post("/search", json={"q": "bag", "filters": {"brand": "Acme", "price": 120}}).json()
    assert [hit["id"] for hit in typed["results"]] == ["bag-1"]


def test_image_upload_finds_the_product_with_that_picture(client: httpx.Client) -> None:
    files = {"file": ("photo.png", png_bytes(product_image(1)), "image/png")}
    response = client.post("/search/image", files=files, params={"w_image": 1, "w_text": 0, "limit": 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["id"] == "shoe-2"
    assert results[0]["scores"]["image"] == pytest.approx(1.0, abs=1e-4)
    assert len(results) == 2


def test_image_upload_with_text_and_filters(client: httpx.Client) -> None:
    files = {"file": ("photo.png", png_bytes(product_image(0)), "image/png")}
    response = client.post(
        "/search/image", files=files, data={"text": "red running shoe"}, params={"category": "shoes"}
    )
    assert response.status_code == 200, response.text
    assert {hit["id"] for hit in response.json()["results"]} == {"shoe-1", "shoe-2"}


def test_a_text_file_is_415(client: httpx.Client) -> None:
    files = {"file": ("notes.txt", b"just some words, not a picture", "text/plain")}
    message = error_of(client.post("/search/image", files=files), 415, "UnsupportedImage")
    assert "notes.txt" in message and "not an image" in message


def test_a_truncated_image_is_415(client: httpx.Client) -> None:
    data = png_bytes(product_image(2))
    files = {"file": ("cut.png", data[: len(data) // 2], "image/png")}
    message = error_of(client.post("/search/image", files=files), 415, "UnsupportedImage")
    assert "cut.png" in message


def test_an_empty_upload_is_415(client: httpx.Client) -> None:
    error_of(
        client.post("/search/image", files={"file": ("e.png", b"", "image/png")}), 415, "UnsupportedImage"
    )


def test_an_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    files = {"file": ("big.png", b"\x89PNG" + b"\0" * MAX_UPLOAD, "image/png")}
    message = error_of(client.post("/search/image", files=files), 413, "ImageTooLarge")
    assert str(MAX_UPLOAD) in message


def test_a_declared_huge_body_is_refused_before_it_is_sent(client: httpx.Client) -> None:
    url = urlsplit(str(client.base_url))
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(
            b"POST /search/image HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
            b"boundary=xyz\r\nContent-Length: 5000000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"ImageTooLarge"' in reply and b"5000000000" in reply


def test_an_upload_without_a_file_is_422(client: httpx.Client) -> None:
    message = error_of(client.post("/search/image", data={"text": "x"}), 422, "InvalidInput")
    assert "'file'" in message


@pytest.mark.parametrize(
    ("params", "kind", "expected"),
    [
        ({"q": "x", "limit": 0}, "InvalidInput", ["'limit'", "greater than or equal to 1", "(got '0')"]),
        ({"q": "x", "limit": "many"}, "InvalidInput", ["'limit'", "valid integer", "(got 'many')"]),
        ({"q": "x", "limit": 21}, "InvalidQuery", ["limit 21 is over the largest page size 20"]),
        ({"q": "x", "offset": -3}, "InvalidInput", ["'offset'", "(got '-3')"]),
        ({"q": "x", "w_image": -1}, "InvalidInput", ["'w_image'"]),
        ({"q": "x", "w_image": 0, "w_text": 0}, "InvalidQuery", ["w_image 0.0 and w_text 0.0 are both zero"]),
        (
            {"q": "x", "min_price": 9, "max_price": 3},
            "InvalidQuery",
            ["min_price 9.0 is above max_price 3.0"],
        ),
        ({"q": "x", "in_stock": "perhaps"}, "InvalidInput", ["'in_stock'", "(got 'perhaps')"]),
        ({"q": "x", "filter": "nofield"}, "InvalidQuery", ["'filter'", "'nofield' is not FIELD=VALUE"]),
        ({}, "InvalidQuery", ["give a query text"]),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    client: httpx.Client, params: dict[str, Any], kind: str, expected: list[str]
) -> None:
    message = error_of(client.get("/search", params=params), 422, kind)
    for part in expected:
        assert part in message


def test_bad_json_bodies_are_422(client: httpx.Client) -> None:
    assert "'colour'" in error_of(
        client.post("/search", json={"q": "x", "colour": "red"}), 422, "InvalidInput"
    )
    assert "'limit'" in error_of(client.post("/search", json={"q": "x", "limit": -1}), 422, "InvalidInput")
    error_of(client.post("/search", json={"limit": 3}), 422, "InvalidQuery")
    prices = error_of(
        client.post("/search", json={"q": "x", "min_price": 9, "max_price": 3}), 422, "InvalidInput"
    )
    assert prices == "body: min_price 9.0 is above max_price 3.0; expected min_price <= max_price"
    error_of(
        client.post("/search", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "InvalidInput",
    )


def test_products_by_id(client: httpx.Client) -> None:
    response = client.get("/products/shoe-1")
    assert response.status_code == 200
    assert response.json() == PRODUCTS[0]
    assert client.get("/products/bag/2").json()["title"] == "blue canvas tote"
    message = error_of(client.get("/products/nope"), 404, "NotFound")
    assert "'nope'" in message


def test_unknown_routes_answer_in_the_same_shape(client: httpx.Client) -> None:
    error_of(client.get("/nowhere"), 404, "HTTPError")
    error_of(client.delete("/search"), 405, "HTTPError")


def test_the_openapi_schema_documents_requests_and_responses(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"SearchResponse", "SearchHit", "ProductView", "ErrorBody", "SearchBody", "RerankInfo"} <= set(components)
    get_search = schema["paths"]["/search"]["get"]
    assert {p["name"] for p in get_search["parameters"]} >= {
        "q",
        "limit",
        "offset",
        "category",
        "brand",
        "min_price",
        "max_price",
        "in_stock",
        "w_image",
        "w_text",
        "filter",
    }
    image = schema["paths"]["/search/image"]["post"]
    assert "multipart/form-data" in image["requestBody"]["content"]
    assert {"200", "413", "415", "422", "503"} <= set(image["responses"])
    assert "413" not in get_search["responses"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert image["responses"]["422"]["content"]["application/json"]["schema"] == error
