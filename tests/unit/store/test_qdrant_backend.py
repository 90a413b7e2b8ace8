"""What only the qdrant-client backend has: real aliases, the record in collection metadata, a URL."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from common.errors import BackendUnavailable, ConfigError, InvalidInput
from common.settings import StoreSettings
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
