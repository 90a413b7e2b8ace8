"""What only the qdrant-client backend has: real aliases, the record in collection metadata, a URL."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from common.errors import BackendUnavailable, ConfigError, InvalidInput, NotFound
from common.settings import StoreSettings
from store._qdrant_util import server_error
from store.qdrant_backend import QdrantServerStore

DIM = 8


def test_alias_and_metadata_in_qdrant(tmp_path: Path) -> None:
    store = QdrantServerStore(f"path:{tmp_path}", settings=StoreSettings())
    info = store.ensure_collection("products", encoder="enc", dim=DIM)
    store.close()
    client = QdrantClient(path=str(tmp_path))
    try:
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        assert aliases == {"products": info.physical}
        collection = client.get_collection(info.physical)
        record = (collection.config.metadata or {})["vitrine"]
        assert (record["encoder"], record["dim"], record["alias"]) == ("enc", DIM, "products")
        vectors = collection.config.params.vectors
        assert isinstance(vectors, dict) and set(vectors) == {"image", "text"}
        assert all(v.size == DIM and v.distance == models.Distance.COSINE for v in vectors.values())
    finally:
        client.close()


def test_foreign_collections_are_not_listed(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path))
    params = models.VectorParams(size=4, distance=models.Distance.DOT)
    client.create_collection("theirs", vectors_config=params)
    client.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name="theirs", alias_name="their-alias"))])
    client.close()
    store = QdrantServerStore(f"path:{tmp_path}", settings=StoreSettings())
    try:
        store.ensure_collection("products", encoder="enc", dim=DIM)
        assert store.list_collections() == ["products"]
        with pytest.raises(ConfigError, match="no Vitrine record"):
            store.collection_info("their-alias")
    finally:
        store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    store = QdrantServerStore(url, settings=StoreSettings(url=url, timeout_s=2))
    with pytest.raises(BackendUnavailable, match=url.replace(".", r"\.")):
        store.ensure_collection("products", encoder="enc", dim=DIM)
    with pytest.raises(BackendUnavailable, match="127"):
        store.list_collections()
    store.close()


def test_bad_locations() -> None:
    with pytest.raises(InvalidInput, match="path:"):
        QdrantServerStore("path:", settings=StoreSettings())
    with pytest.raises(InvalidInput, match="ftp://x"):
        QdrantServerStore("ftp://x", settings=StoreSettings())


def test_unreachable_grpc_server_names_the_url_and_port() -> None:
    url, port = f"http://127.0.0.1:{_free_port()}", _free_port()
    store = QdrantServerStore(url, settings=StoreSettings(url=url, timeout_s=2, prefer_grpc=True, grpc_port=port))
    with pytest.raises(BackendUnavailable, match=rf"cannot reach .*{url.replace('.', '[.]')} \(gRPC port {port}\)"):
        store.ensure_collection("products", encoder="enc", dim=DIM)
    store.close()


class _RpcError(grpc.RpcError):  # type: ignore[misc]  # grpcio has no type stubs
    """What qdrant-client's gRPC transport raises: a status code and the server's details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("error", "kind", "message"), [
    (_RpcError(grpc.StatusCode.NOT_FOUND, "Not found: Collection `x` doesn't exist!"), NotFound, "not found"),
    (_RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect"), BackendUnavailable, "cannot reach"),
    (_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), BackendUnavailable, "cannot reach"),
    (_RpcError(grpc.StatusCode.INVALID_ARGUMENT, "Wrong input: bad"), BackendUnavailable,
     "failed with gRPC status INVALID_ARGUMENT: Wrong input: bad"),
    (_RpcError(grpc.StatusCode.UNAUTHENTICATED, "Invalid api-key"), BackendUnavailable, "VITRINE_STORE__API_KEY"),
    (UnexpectedResponse(404, "Not Found", b'{"status": {"error": "Not found: x"}}', httpx.Headers()), NotFound,
     "not found"),
    (UnexpectedResponse(400, "Bad Request", b'{"status": {"error": "Wrong input: bad"}}', httpx.Headers()),
     BackendUnavailable, "failed with HTTP 400: Wrong input: bad"),
    (UnexpectedResponse(403, "Forbidden", b"{}", httpx.Headers()), BackendUnavailable, "VITRINE_STORE__API_KEY"),
    (httpx.ConnectError("refused"), BackendUnavailable, "cannot reach"),
], ids=["grpc-not-found", "grpc-unavailable", "grpc-deadline", "grpc-invalid", "grpc-key", "http-404", "http-400",
        "http-403", "http-refused"])
def test_server_errors_map_alike_over_both_transports(error: Exception, kind: type[Exception], message: str) -> None:
    mapped = server_error(error, where="http://q:6333", what="searching 'products'")
    assert type(mapped) is kind
    assert message in str(mapped) and "http://q:6333" in str(mapped) and "searching 'products'" in str(mapped)
    assert server_error(ValueError("not the server's"), where="http://q:6333", what="x") is None
