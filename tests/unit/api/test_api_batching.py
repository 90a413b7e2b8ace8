"""Micro-batched query encoding over HTTP: concurrent searches through a real uvicorn server answer the same with
batching on (the default) as with it off (``search.batch_window_ms=0``)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.metrics import REGISTRY
from common.settings import Settings
from tests.unit.api.http_helpers import PRODUCTS, Catalog, png_bytes, product_image, running, wait_ready

CLIENTS = 8


def concurrent_searches(catalog: Catalog, window_ms: float, *,
                        rank_on_loop: bool = True) -> dict[str, list[tuple[str, float]]]:
    """Each of `CLIENTS` threads sends its own text search and image search at the same moment; the ids and
    scores each answer ranked."""
    settings = Settings(home=catalog.home, search={"batch_window_ms": window_ms, "cache_size": 0,
                                                   "rank_on_loop": rank_on_loop})
    answers: dict[str, list[tuple[str, float]]] = {}
    errors: list[BaseException] = []
    with running(create_app(settings)) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_ready(http)
        start = threading.Barrier(CLIENTS)

        def client(number: int) -> None:
            try:
                with httpx.Client(base_url=url, timeout=60) as http:
                    start.wait()
                    text = http.get("/search", params={"q": f"{PRODUCTS[number % len(PRODUCTS)]['title']} {number}"})
                    image = http.post("/search/image", files={"file": (
                        "q.png", png_bytes(product_image(number, size=32)), "image/png")})
                    for kind, response in (("text", text), ("image", image)):
                        assert response.status_code == 200, response.text
                        body: dict[str, Any] = response.json()
                        answers[f"{kind}{number}"] = [(hit["id"], hit["score"]) for hit in body["results"]]
            except BaseException as error:  # handed to the test thread
                errors.append(error)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not errors, errors
    return answers


def test_concurrent_searches_answer_the_same_with_and_without_batching(catalog: Catalog) -> None:
    def calls() -> float:
        return sum(REGISTRY.get_sample_value("vitrine_encode_batch_size_count", {"kind": k}) or 0.0
                   for k in ("text", "image"))

    before = calls()
    batched = concurrent_searches(catalog, window_ms=50.0)
    batched_calls = calls() - before
    inline = concurrent_searches(catalog, window_ms=0.0)
    assert batched.keys() == inline.keys() and len(inline) == 2 * CLIENTS
    for key, hits in inline.items():
        assert [pid for pid, _ in batched[key]] == [pid for pid, _ in hits], key
        assert [score for _, score in batched[key]] == pytest.approx([score for _, score in hits], abs=1e-4), key
    assert batched_calls <= 2 * CLIENTS  # never more encoder calls than queries (usually far fewer)
    threaded = concurrent_searches(catalog, window_ms=50.0, rank_on_loop=False)  # GET /search ranked in threads
    for key, hits in inline.items():
        assert [pid for pid, _ in threaded[key]] == [pid for pid, _ in hits], key


def test_the_event_loop_answers_while_a_search_waits_for_its_encoding(catalog: Catalog) -> None:
    """Ranked on the event loop (the default with the embedded store), a search awaits its query's encoding
    without holding the loop: with a 1 s batch window, /health answers while the search still waits."""
    settings = Settings(home=catalog.home, search={"batch_window_ms": 1000.0, "cache_size": 0})
    order: list[str] = []
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)

        def search() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                response = own.get("/search", params={"q": PRODUCTS[0]["title"]})
            order.append(f"search {response.status_code} {response.json()['results'][0]['id']}")

        def misses() -> float:
            return REGISTRY.get_sample_value("vitrine_cache_requests_total",
                                             {"cache": "query_embedding", "result": "miss"}) or 0.0

        before = misses()
        searching = threading.Thread(target=search)
        searching.start()
        while misses() == before:  # until the search has asked for its encoding
            threading.Event().wait(0.01)
        order.append(f"health {http.get('/health').status_code}")
        searching.join(60)
    assert order == ["health 200", f"search 200 {PRODUCTS[0]['id']}"]
