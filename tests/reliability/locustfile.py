"""The load test's shoppers, for a headless locust run against a served demo index (tests/reliability/test_load.py).

Run only by locust, in its own process (locust imports gevent, which monkeypatches the standard library: never
import this module from pytest)::

    .venv/bin/locust -f tests/reliability/locustfile.py --headless -u 8 -r 8 -t 15s --host http://127.0.0.1:8000

Each simulated shopper mixes what the web page does: text searches from the demo's shoppers' queries (some with
filters, a later page or facets) and the thumbnails of the hits they show, a product's page, its "more like this",
the facet counts, an image-upload search with one of the demo's query pictures, and a composed JSON search.
Any answer other than 200 (or a body that is not what the route promises) counts as a failure.

Environment: ``VITRINE_LOAD_PRODUCTS`` (how many demo products are indexed: ids ``fm-00000`` onward; default
600), ``VITRINE_LOAD_API_KEY`` (sent as ``X-API-Key`` when set).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
QUERIES = [row for row in map(json.loads, (DEMO / "queries.jsonl").read_text(encoding="utf-8").splitlines())
           if row.get("query")]
QUERY_IMAGES = sorted((DEMO / "queries").glob("*.png"))
PRODUCTS = [f"fm-{i:05d}" for i in range(int(os.environ.get("VITRINE_LOAD_PRODUCTS", "600")))]
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]
API_KEY = os.environ.get("VITRINE_LOAD_API_KEY", "")


class Shopper(HttpUser):
    """One shopper: a search, then a look at what it found, with short pauses."""

    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["X-API-Key"] = API_KEY
        self.thumbnails: list[str] = []

    def _json(self, method: str, url: str, *, name: str, **kwargs: Any) -> Any:
        """The JSON body of a 200 answer; anything else is marked as a failure (and None returned)."""
        with self.client.request(method, url, name=name, catch_response=True, **kwargs) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            try:
                body = response.json()
            except ValueError:
                response.failure(f"not JSON: {response.text[:200]}")
                return None
            response.success()
            return body

    def _search_results(self, body: Any, name: str) -> list[dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            self.environment.events.request.fire(request_type="CHECK", name=name, response_time=0,
                                                 response_length=0, exception=ValueError(f"no results: {body}"))
            return []
        results: list[dict[str, Any]] = body["results"]
        return results

    @task(8)
    def text_search(self) -> None:
        params: dict[str, Any] = {"q": random.choice(QUERIES)["query"]}
        roll = random.random()
        if roll < 0.2:
            params["category"] = random.choice(CATEGORIES)
        elif roll < 0.35:
            params.update(min_price=10, max_price=random.choice([40, 80, 150]))
        elif roll < 0.45:
            params["in_stock"] = "true"
        if random.random() < 0.25:
            params["offset"] = random.choice([10, 20])
        if random.random() < 0.2:
            params["facet"] = ["category", "brand"]
        body = self._json("GET", "/search", name="/search?q", params=params)
        if body is None:
            return
        for hit in self._search_results(body, "/search?q")[:4]:
            thumbnail = hit["product"].get("thumbnail")
            if thumbnail:
                self.thumbnails.append(thumbnail)
                with self.client.get(thumbnail, name="/images/[key]/thumb.webp", catch_response=True) as response:
                    if response.status_code != 200 or not response.content:
                        response.failure(f"{response.status_code}: {len(response.content)} bytes")
        del self.thumbnails[:-50]

    @task(3)
    def product_page(self) -> None:
        product = random.choice(PRODUCTS)
        body = self._json("GET", f"/products/{product}", name="/products/[id]")
        if body is not None and body.get("id") != product:
            self.environment.events.request.fire(request_type="CHECK", name="/products/[id]", response_time=0,
                                                 response_length=0, exception=ValueError(f"not {product}: {body}"))

    @task(2)
    def more_like_this(self) -> None:
        self._json("GET", f"/products/{random.choice(PRODUCTS)}/similar", name="/products/[id]/similar",
                   params={"limit": 8})

    @task(1)
    def facets(self) -> None:
        params: dict[str, Any] = {"field": random.choice(["category", "brand"])}
        if random.random() < 0.5:
            params["in_stock"] = "true"
        self._json("GET", "/facets", name="/facets", params=params)

    @task(2)
    def image_search(self) -> None:
        picture = random.choice(QUERY_IMAGES)
        params = {"limit": 12} if random.random() < 0.5 else {"limit": 12, "category": random.choice(CATEGORIES)}
        body = self._json("POST", "/search/image", name="/search/image", params=params,
                          files={"file": (picture.name, picture.read_bytes(), "image/png")})
        if body is not None:
            self._search_results(body, "/search/image")

    @task(1)
    def composed_search(self) -> None:
        query = [{"text": random.choice(QUERIES)["query"], "weight": 1.0},
                 {"product_id": random.choice(PRODUCTS), "weight": 0.5}]
        body = self._json("POST", "/search", name="/search (JSON)", json={"query": query, "limit": 10})
        if body is not None:
            self._search_results(body, "/search (JSON)")
