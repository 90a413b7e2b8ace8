"""`open_store` picks the backend from ``settings.store.url``."""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings, StoreSettings
from store.edge_backend import EdgeStore
from store.factory import open_store, reads_in_process
from store.qdrant_backend import QdrantServerStore


def test_no_url_is_the_embedded_store_in_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = open_store(settings)
    try:
        assert isinstance(store, EdgeStore)
        store.ensure_collection("products", encoder="enc", dim=4)
        assert (settings.store_dir / "aliases.json").is_file()
    finally:
        store.close()


def test_memory_and_path_are_qdrant_client_local_mode(tmp_path: Path) -> None:
    memory = open_store(Settings(home=tmp_path, store=StoreSettings(url=":memory:")))
    path = open_store(Settings(home=tmp_path, store=StoreSettings(url=f"path:{tmp_path / 'local'}")))
    try:
        assert isinstance(memory, QdrantServerStore) and isinstance(path, QdrantServerStore)
        path.ensure_collection("products", encoder="enc", dim=4)
        assert (tmp_path / "local" / "meta.json").is_file()
        assert not (tmp_path / "store").exists()
    finally:
        memory.close()
        path.close()


def test_http_url_is_a_server_client(tmp_path: Path) -> None:
    store = open_store(Settings(home=tmp_path, store=StoreSettings(url="http://qdrant.invalid:6333")))
    assert isinstance(store, QdrantServerStore) and "qdrant.invalid" in repr(store)
    store.close()


def test_reads_in_process_unless_the_store_is_a_server(tmp_path: Path) -> None:
    def reads_here(url: str | None) -> bool:
        return reads_in_process(Settings(home=tmp_path, store=StoreSettings(url=url)))

    assert reads_here(None) and reads_here(":memory:") and reads_here(f"path:{tmp_path}")
    assert not reads_here("http://qdrant:6333") and not reads_here("https://qdrant.example.com")
