"""`store.qdrant_async.AsyncQdrantReader` gives what `QdrantServerStore` gives, over gRPC and over REST.

One `tests.qdrant_grpc.QdrantGrpcServer` serves both of Qdrant's APIs from one store; a sync store writes the
catalog, then each read is asked of the sync store and of the async reader on the same transport, and the answers
must be the same: ids, order, payloads, vectors, scores within 1e-6. Then the errors: server stopped, unknown
collection (found by the reader, or answered NOT_FOUND / 404 by the server), bad input. No pytest asyncio plugin
is installed here, so each test runs its coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from common.errors import BackendUnavailable, InvalidInput, InvalidQuery, NotFound
from common.settings import StoreSettings
from store.protocol import IMAGE, TEXT, AsyncVectorReader, Boost, Filter, Match, Range, StoredPoint
from store.qdrant_async import AsyncQdrantReader
from store.qdrant_backend import QdrantServerStore
from tests.qdrant_grpc import QdrantGrpcServer
from tests.unit.store.test_conformance import DIM, ENC, catalog

T = TypeVar("T")
TRANSPORTS = ("grpc", "rest")
FILTERS = (None, Filter(must=(Match("category", "bags"),)),
           Filter(must=(Range("price", gte=20.0),), must_not=(Match("brand", "acme"),)))


def settings_for(server: QdrantGrpcServer, transport: str, **update: Any) -> StoreSettings:
    """The settings reaching ``server`` over ``transport``."""
    grpc = {"prefer_grpc": True, "grpc_port": server.grpc_port} if transport == "grpc" else {}
    return StoreSettings(url=server.url, **grpc, **update)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QdrantGrpcServer]:
    """A server holding ``catalog(60)`` in collection ``products``."""
    server = QdrantGrpcServer(tmp_path_factory.mktemp("async-reader") / "qdrant").start()
    store = QdrantServerStore(server.url, settings=settings_for(server, "grpc"))
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    store.upsert("products", catalog(60))
    store.close()
    yield server
    server.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sync_store(server: QdrantGrpcServer, transport: str) -> Iterator[QdrantServerStore]:
    store = QdrantServerStore(server.url, settings=settings_for(server, transport))
    yield store
    store.close()


def read(server: QdrantGrpcServer, transport: str, use: Callable[[AsyncVectorReader], Awaitable[T]],
         **settings: Any) -> T:
    """What ``use`` gives with a new reader over ``transport`` (closed after), in a new event loop."""

    async def run() -> T:
        reader = AsyncQdrantReader(server.url, settings=settings_for(server, transport, **settings))
        try:
            return await use(reader)
        finally:
            await reader.close()

    return asyncio.run(run())


def assert_same(got: list[StoredPoint], expected: list[StoredPoint]) -> None:
    """The same products in the same order, with the same payloads and vectors, scores within 1e-6."""
    assert [p.product_id for p in got] == [p.product_id for p in expected]
    assert [p.payload for p in got] == [p.payload for p in expected]
    for a, b in zip(got, expected, strict=True):
        assert (a.score is None) == (b.score is None)
        if a.score is not None and b.score is not None:
            assert abs(a.score - b.score) <= 1e-6
        assert a.vectors.keys() == b.vectors.keys()
        for name in a.vectors:
            np.testing.assert_allclose(a.vectors[name], b.vectors[name], atol=1e-6)


def assert_same_scores(got: dict[str, float], expected: dict[str, float]) -> None:
    assert got.keys() == expected.keys()
    assert all(abs(got[k] - expected[k]) <= 1e-6 for k in got)


def query(seed: int) -> Any:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("flt", FILTERS, ids=["all", "bags", "price-not-acme"])
@pytest.mark.parametrize("using", [IMAGE, TEXT])
def test_search_is_the_sync_stores(server: QdrantGrpcServer, transport: str, sync_store: QdrantServerStore,
                                   using: str, flt: Filter | None) -> None:
    vector = query(1)
    boosts = (Boost(Match("brand", "zeta"), 0.3), Boost(Match("in_stock", False), -0.2))

    async def use(reader: AsyncVectorReader) -> list[list[StoredPoint]]:
        return [await reader.search("products", vector=vector, using=using, limit=12, filter=flt),
                await reader.search("products", vector=vector, using=using, limit=7, filter=flt, boosts=boosts)]

    rest_before, grpc_before = server.requests - server.grpc_requests, server.grpc_requests
    plain, boosted = read(server, transport, use)
    if transport == "grpc":  # all of it over gRPC, nothing over REST
        assert server.requests - server.grpc_requests == rest_before and server.grpc_requests > grpc_before
    else:
        assert server.grpc_requests == grpc_before
    assert plain  # the filters leave something to find
    assert_same(plain, sync_store.search("products", vector=vector, using=using, limit=12, filter=flt))
    assert_same(boosted, sync_store.search("products", vector=vector, using=using, limit=7, filter=flt,
                                           boosts=boosts))


def test_lexical_reads_are_the_sync_stores(server: QdrantGrpcServer, transport: str,
                                           sync_store: QdrantServerStore) -> None:
    ids = ["p001", "p004", "p010", "p999", "p004"]

    async def use(reader: AsyncVectorReader) -> tuple[Any, ...]:
        return (await reader.lexical_search("products", text="product 4", limit=10),
                await reader.lexical_search("products", text="product bags", limit=5, filter=FILTERS[1]),
                await reader.lexical_search("products", text="   ", limit=5),
                await reader.lexical_score("products", text="product 4", product_ids=ids))

    found, filtered, empty, scores = read(server, transport, use)
    assert found and empty == []
    assert_same(found, sync_store.lexical_search("products", text="product 4", limit=10))
    assert_same(filtered, sync_store.lexical_search("products", text="product bags", limit=5, filter=FILTERS[1]))
    assert_same_scores(scores, sync_store.lexical_score("products", text="product 4", product_ids=ids))


def test_score_and_retrieve_are_the_sync_stores(server: QdrantGrpcServer, transport: str,
                                                sync_store: QdrantServerStore) -> None:
    ids = ["p030", "p002", "p999", "p017", "p002"]  # absent and repeated ids; p017 has no text vector
    vector = query(2)

    async def use(reader: AsyncVectorReader) -> tuple[Any, ...]:
        return (await reader.score("products", vector=vector, using=TEXT, product_ids=ids),
                await reader.score("products", vector=vector, using=IMAGE, product_ids=[]),
                await reader.retrieve("products", ids),
                await reader.retrieve("products", ids, with_vectors=True),
                await reader.retrieve("products", []))

    scores, none, points, with_vectors, nothing = read(server, transport, use)
    assert_same_scores(scores, sync_store.score("products", vector=vector, using=TEXT, product_ids=ids))
    assert set(scores) == {"p030", "p002"} and none == {} and nothing == []
    assert_same(points, sync_store.retrieve("products", ids))
    assert_same(with_vectors, sync_store.retrieve("products", ids, with_vectors=True))
    assert [p.product_id for p in with_vectors] == ["p030", "p002", "p017", "p002"]
    assert set(with_vectors[0].vectors) == {IMAGE, TEXT} and set(with_vectors[2].vectors) == {IMAGE}


def test_unknown_collections_and_bad_queries(server: QdrantGrpcServer, transport: str) -> None:
    async def use(reader: AsyncVectorReader) -> list[Exception]:
        errors: list[Exception] = []
        for call in (lambda: reader.search("nope", vector=query(3), using=IMAGE, limit=3),
                     lambda: reader.retrieve("nope", ["p001"]),
                     lambda: reader.score("nope", vector=query(3), using=IMAGE, product_ids=["p001"]),
                     lambda: reader.lexical_search("nope", text="bag", limit=3),
                     lambda: reader.search("products", vector=np.ones(DIM + 1, np.float32), using=IMAGE, limit=3),
                     lambda: reader.search("products", vector=query(3), using="sound", limit=3),
                     lambda: reader.search("products", vector=query(3), using=IMAGE, limit=0),
                     lambda: reader.score("products", vector=np.zeros(DIM, np.float32), using=IMAGE,
                                          product_ids=["p001"])):
            try:
                await call()
            except Exception as e:
                errors.append(e)
        return errors

    errors = read(server, transport, use)
    assert [type(e) for e in errors] == [NotFound] * 4 + [InvalidQuery] * 4
    assert all("'nope'" in str(e) and server.url in str(e) for e in errors[:4])
    assert str(DIM + 1) in str(errors[4]) and "sound" in str(errors[5])


def test_a_collection_gone_since_it_was_read_is_not_found(tmp_path: Path, transport: str) -> None:
    """The reader keeps what a collection is; when it is dropped afterwards, the server's own answer (gRPC
    NOT_FOUND, HTTP 404) is the reader's `NotFound`."""
    with QdrantGrpcServer(tmp_path / "qdrant") as server:
        store = QdrantServerStore(server.url, settings=settings_for(server, transport))
        store.ensure_collection("products", encoder=ENC, dim=DIM)
        store.upsert("products", catalog(5))

        async def use(reader: AsyncVectorReader) -> Exception | None:
            assert len(await reader.retrieve("products", ["p001", "p002"])) == 2
            store.drop_collection("products")
            try:
                await reader.search("products", vector=query(4), using=IMAGE, limit=3)
            except Exception as e:
                return e
            return None

        error = read(server, transport, use)
        store.close()
    assert isinstance(error, NotFound), error
    assert "searching 'products'" in str(error) and server.url in str(error)


def test_a_stopped_server_is_unavailable_and_found_again(tmp_path: Path, transport: str) -> None:
    server = QdrantGrpcServer(tmp_path / "qdrant").start()
    try:
        store = QdrantServerStore(server.url, settings=settings_for(server, transport))
        store.ensure_collection("products", encoder=ENC, dim=DIM)
        store.upsert("products", catalog(5))
        store.close()

        async def use(reader: AsyncVectorReader) -> tuple[Exception | None, list[str]]:
            expected = [p.product_id for p in await reader.retrieve("products", ["p001", "p003"])]
            server.stop()
            error = None
            try:
                await reader.search("products", vector=query(5), using=IMAGE, limit=3)
            except Exception as e:
                error = e
            server.start()  # the same ports, the same data
            for _ in range(50):  # gRPC tries a lost server again after a backoff of at most a second
                try:
                    return error, [p.product_id for p in await reader.retrieve("products", ["p001", "p003"])]
                except BackendUnavailable:
                    await asyncio.sleep(0.1)
            return error, expected[:0]

        error, again = read(server, transport, use, timeout_s=2)
    finally:
        server.stop()
    assert isinstance(error, BackendUnavailable), error
    assert server.url in str(error) and "searching 'products'" in str(error)
    assert again == ["p001", "p003"]


def test_only_server_urls_and_closed_readers(tmp_path: Path) -> None:
    for location in (":memory:", f"path:{tmp_path}", "ftp://x"):
        with pytest.raises(InvalidInput, match="http"):
            AsyncQdrantReader(location, settings=StoreSettings())

    async def closed() -> None:
        reader = AsyncQdrantReader("http://127.0.0.1:9", settings=StoreSettings(prefer_grpc=True))
        await reader.close()
        await reader.retrieve("products", ["p001"])

    with pytest.raises(BackendUnavailable, match="closed"):
        asyncio.run(closed())
