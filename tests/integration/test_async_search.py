"""Searches through the async client of a Qdrant server (`SearchService.asearch`, settings ``api.async_store``)
answer exactly what the sync client answers, over gRPC and REST, in the service and over HTTP.

The server is `tests.qdrant_grpc.QdrantGrpcServer`: Qdrant's gRPC and REST APIs on sockets, over qdrant-client's
local mode, holding part of the demo catalog indexed with the demo encoder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.wiring import Components, open_search
from common.settings import Settings
from search.query import QueryPart, SearchRequest
from store.qdrant_async import AsyncQdrantReader
from tests.demo_shop import index_demo_subset
from tests.qdrant_grpc import QdrantGrpcServer
from tests.unit.api.http_helpers import running, wait_ready

PRODUCTS = 80

REQUESTS = [
    SearchRequest(q="leather bag"),
    SearchRequest(q="white sneakers", limit=5, offset=3),
    SearchRequest(q="summer dress", category="Dress", facets=["brand"]),
    SearchRequest(q="black joggers", group=False, w_image=0.0),
    SearchRequest(q="bag", w_lexical=0.0, min_score=0.2),
    SearchRequest(query=[QueryPart(text="shoes", weight=1.0), QueryPart(text="black", weight=-0.5)]),
]


@dataclass
class Shop:
    server: QdrantGrpcServer
    settings: Settings

    def over(self, transport: str, **api: Any) -> Settings:
        """The settings reaching the server over ``transport`` (``rest`` or ``grpc``), with ``api`` settings."""
        store = self.settings.store.model_copy(update={"prefer_grpc": transport == "grpc",
                                                       "grpc_port": self.server.grpc_port})
        return self.settings.model_copy(update={"store": store,
                                                "api": self.settings.api.model_copy(update=api)})


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    folder = tmp_path_factory.mktemp("async-search")
    server = QdrantGrpcServer(folder / "qdrant").start()
    try:
        yield Shop(server, index_demo_subset(folder, count=PRODUCTS, store={"url": server.url}))
    finally:
        server.stop()


def same(body: Any) -> Any:
    """A response body without its timing, floats rounded (the engine's scores vary in the 7th digit)."""
    if isinstance(body, dict):
        return {k: same(v) for k, v in body.items() if k != "took_ms"}
    if isinstance(body, list):
        return [same(v) for v in body]
    return round(body, 5) if isinstance(body, float) else body


@pytest.fixture
def components(shop: Shop, request: pytest.FixtureRequest) -> Iterator[tuple[Components, Settings]]:
    settings = shop.over(request.param)
    opened = open_search(settings, rerank=False)
    try:
        yield opened, settings
    finally:
        opened.close()


@pytest.mark.parametrize("components", ["grpc", "rest"], indirect=True)
def test_asearch_answers_what_search_answers(components: tuple[Components, Settings]) -> None:
    opened, settings = components
    assert settings.store.url is not None

    async def both() -> list[tuple[Any, Any]]:
        reader = AsyncQdrantReader(settings.store.url or "", settings=settings.store)
        try:
            pairs = []
            for request in REQUESTS:
                asynced = await opened.service.asearch(request, reader)
                pairs.append((same(asynced.model_dump()), same(opened.service.search(request).model_dump())))
            return pairs
        finally:
            await reader.close()

    pairs = asyncio.run(both())
    for (asynced, synced), request in zip(pairs, REQUESTS, strict=True):
        assert asynced == synced, request
    assert all(synced["results"] for _, synced in pairs[:4])  # real results were compared


def test_the_api_searches_through_the_async_client_with_the_same_answers(shop: Shop) -> None:
    gets = [{"q": "leather bag"}, {"q": "white sneakers", "limit": 4, "in_stock": "true"},
            {"q": "trench coat", "facet": "category", "group": "false"}]
    posts = [{"q": "summer dress", "filters": {"currency": "EUR"}},
             {"query": [{"text": "shoes", "weight": 1.0}, {"text": "black", "weight": -0.5}]}]
    answers: dict[bool, list[Any]] = {}
    for async_store in (True, False):
        app = create_app(shop.over("grpc", async_store=async_store))
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            wait_ready(http)
            assert (app.state.reader is not None) is async_store
            got = [http.get("/search", params=params) for params in gets]
            got += [http.post("/search", json=body) for body in posts]
            assert all(r.status_code == 200 for r in got), [r.text for r in got]
            answers[async_store] = [same(r.json()) for r in got]
    assert answers[True] == answers[False]
    assert all(body["results"] for body in answers[True][:3])


def test_the_async_client_reports_a_server_gone_as_503_and_finds_it_again(shop: Shop, tmp_path: Path) -> None:
    app = create_app(shop.over("grpc"), retry_s=0.2)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        assert http.get("/search", params={"q": "bag"}).status_code == 200
        shop.server.stop()
        try:
            down = http.get("/search", params={"q": "bag"})
        finally:
            shop.server.start()
        assert down.status_code == 503, down.text
        assert down.json()["error"]["type"] == "BackendUnavailable"
        assert shop.server.url.removeprefix("http://") in down.json()["error"]["message"]
        deadline = time.monotonic() + 30  # the client reconnects after its backoff (at most 1 s, see store)
        while (back := http.get("/search", params={"q": "bag"})).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert back.status_code == 200, back.text
