"""Generation over HTTP (real uvicorn) on 60 demo products indexed with previews, with the offline ``recolor``
backend: variants of a product and of an upload, the files they are served from, the cache, imagine-then-search,
and the limits and failures (422, 413, 503 with what to install or set)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from api.app import create_app
from tests.demo_shop import DEMO, index_demo_subset
from tests.unit.api.http_helpers import running, wait_ready

PRODUCT = "fm-00003"  # trousers: grey on white, as every demo picture


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = index_demo_subset(tmp_path_factory.mktemp("generate"), count=60,
                                 generate={"max_n": 3, "max_instruction_chars": 80})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as http:
        wait_ready(http)
        yield http


def picture(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert "immutable" in response.headers["cache-control"]
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def redness(image: Image.Image) -> float:
    """Mean of red minus the other channels over the darker (product) pixels."""
    pixels = np.asarray(image, dtype=np.float32)
    product = pixels.mean(axis=2) < 200
    return float((pixels[..., 0] - pixels[..., 1:].mean(axis=2))[product].mean())


def test_variants_of_a_product(client: httpx.Client) -> None:
    response = client.post("/generate/variants", json={"product_id": PRODUCT, "instruction": "the same in red",
                                                       "n": 2, "seed": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "recolor" and body["seed"] == 7 and body["cached"] is False
    assert body["product_id"] == PRODUCT and body["instruction"] == "the same in red"
    assert "red" in body["prompt"] and body["prompt_method"] == "template"
    assert len(body["images"]) == 2
    for image in body["images"]:
        assert image["url"] == f"/generated/{image['name']}"
        assert redness(picture(client, image["url"])) > 30
    again = client.post("/generate/variants", json={"product_id": PRODUCT, "instruction": "the same in red",
                                                    "n": 2, "seed": 7}).json()
    assert again["cached"] is True and again["images"] == body["images"]


def test_variants_of_an_upload(client: httpx.Client) -> None:
    data = (DEMO / "images" / "fm-00010.png").read_bytes()
    response = client.post("/generate/variants/image", files={"file": ("dress.png", data, "image/png")},
                           data={"instruction": "make it navy blue", "seed": "3"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["product_id"] is None and len(body["images"]) == 1
    image = np.asarray(picture(client, body["images"][0]["url"]), dtype=np.float32)
    product = image.mean(axis=2) < 200
    assert (image[..., 2] - image[..., 0])[product].mean() > 10  # blue over red


def test_imagine_then_search(client: httpx.Client) -> None:
    response = client.post("/search/imagine", json={"product_id": PRODUCT, "instruction": "the same in green",
                                                    "limit": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["variant"]["images"][0]["url"].startswith("/generated/")
    found = body["search"]["results"]
    assert len(found) == 5 and PRODUCT not in {hit["id"] for hit in found}
    categories = [hit["product"]["category"] for hit in found]
    assert categories.count("Trouser") >= 3, categories


def test_imagine_from_an_upload(client: httpx.Client) -> None:
    data = (DEMO / "queries" / "train-02724.png").read_bytes()  # an ankle boot (not in the catalog)
    response = client.post("/search/imagine/image", files={"file": ("boot.png", data, "image/png")},
                           data={"instruction": "in brown", "limit": "3", "n": "2", "seed": "1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["variant"]["images"]) == 2 and body["variant"]["product_id"] is None
    assert len(body["search"]["results"]) == 3
    too_many = client.post("/search/imagine/image", files={"file": ("boot.png", data, "image/png")},
                           data={"instruction": "in brown", "limit": "1000"})
    assert too_many.status_code == 422 and "limit 1000" in too_many.json()["error"]["message"]


def test_limits_and_bad_parameters_are_named(client: httpx.Client) -> None:
    cases = [
        ({"product_id": PRODUCT, "instruction": "in red", "n": 4}, "n"),
        ({"product_id": PRODUCT, "instruction": "in red " * 20}, "instruction"),
        ({"product_id": PRODUCT, "instruction": "in red", "strength": 1.5}, "strength"),
        ({"product_id": PRODUCT, "instruction": "in red", "seed": -1}, "seed"),
        ({"product_id": PRODUCT, "instruction": "in red", "backend": "dalle9"}, "dalle9"),
        ({"product_id": PRODUCT, "instruction": "on a beach at sunset"}, "colour"),
        ({"instruction": "in red"}, "product_id"),
    ]
    for body, named in cases:
        response = client.post("/generate/variants", json=body)
        assert response.status_code == 422, (body, response.text)
        assert named in response.json()["error"]["message"], (named, response.json())
    assert client.post("/generate/variants", json={"product_id": "nope", "instruction": "in red"}
                       ).status_code == 404
    assert client.get("/generated/../../etc/passwd").status_code == 404
    assert client.get("/generated/" + "0" * 64 + "-0.png").status_code == 404
    bad = client.get("/generated/nope.png")
    assert bad.status_code in {404, 422}


def test_a_backend_not_installed_or_not_configured_is_503(client: httpx.Client) -> None:
    for backend, says in (("diffusers", "VITRINE_GENERATE__MODEL"), ("openai", "OPENAI_API_KEY")):
        response = client.post("/generate/variants", json={"product_id": PRODUCT, "instruction": "in red",
                                                           "backend": backend})
        assert response.status_code == 503, response.text
        assert says in response.json()["error"]["message"]


def test_an_upload_over_the_limit_is_413(client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/generate/variants/image", files={"file": ("big.png", b"0" * 11_000_000,
                                                                       "image/png")},
                           data={"instruction": "in red"})
    assert response.status_code == 413


def test_capabilities_offer_generation(client: httpx.Client) -> None:
    body = client.get("/capabilities").json()
    assert body["generate"] is True and body["generate_backends"][0] == "recolor"
    assert body["max_variants"] == 3
