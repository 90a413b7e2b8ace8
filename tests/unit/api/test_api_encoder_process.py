"""Query encoding in a child process over HTTP (settings search.encoder_process): a real uvicorn server answers
``GET /search`` and ``POST /search/image`` the same with the setting on as with it off."""

from __future__ import annotations

import multiprocessing
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.settings import Settings
from tests.unit.api.http_helpers import PRODUCTS, Catalog, png_bytes, product_image, running, wait_ready


def answers(catalog: Catalog, *, encoder_process: bool) -> dict[str, list[tuple[str, float]]]:
    """The ids and scores of a few text searches and one image search."""
    settings = Settings(home=catalog.home, search={"batch_window_ms": 5.0, "cache_size": 0,
                                                   "encoder_process": encoder_process})
    out: dict[str, list[tuple[str, float]]] = {}
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        if encoder_process:  # the server's encoder runs in a child process
            assert [child for child in multiprocessing.active_children() if child.name.startswith("vitrine-encoder-")]
        for product in PRODUCTS[:4]:
            response = http.get("/search", params={"q": str(product["title"]), "limit": 5})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            out[str(product["title"])] = [(hit["id"], hit["score"]) for hit in body["results"]]
        response = http.post("/search/image", files={"file": ("q.png", png_bytes(product_image(1, size=32)),
                                                               "image/png")})
        assert response.status_code == 200, response.text
        out["image"] = [(hit["id"], hit["score"]) for hit in response.json()["results"]]
    return out


def test_search_answers_the_same_with_the_encoder_in_a_child_process(catalog: Catalog) -> None:
    in_child = answers(catalog, encoder_process=True)
    # the server closed its search service on shutdown: no encoder process is left
    assert not [child for child in multiprocessing.active_children() if child.name.startswith("vitrine-encoder-")]
    inline = answers(catalog, encoder_process=False)
    assert in_child.keys() == inline.keys()
    for key, hits in inline.items():
        assert hits, key
        assert [pid for pid, _ in in_child[key]] == [pid for pid, _ in hits], key
        assert [score for _, score in in_child[key]] == pytest.approx([score for _, score in hits], abs=1e-5), key
