"""What only the embedded store has: its files (aliases, collection records), swaps and damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import BackendUnavailable, NotFound, StoreLocked
from common.settings import StoreSettings
from store._files import write_aliases
from store.edge_backend import EdgeStore
from store.edge_collections import _pool_config
from store.protocol import IMAGE, PointWrite

DIM = 8


def edge(folder: Path) -> EdgeStore:
    """An embedded store in ``folder``."""
    return EdgeStore(folder, settings=StoreSettings())


def test_layout_on_disk(tmp_path: Path) -> None:
    store = edge(tmp_path)
    try:
        info = store.ensure_collection("products", encoder="enc", dim=DIM)
        aliases = json.loads((tmp_path / "aliases.json").read_text())
        assert aliases == {"format": 1, "aliases": {"products": info.physical}}
        record = json.loads((tmp_path / "collections" / info.physical / "vitrine.json").read_text())
        assert {k: record[k] for k in ("format", "alias", "encoder", "dim")} == \
            {"format": 1, "alias": "products", "encoder": "enc", "dim": DIM}
        assert (tmp_path / "collections" / info.physical / "shard" / "wal").is_dir()
        assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporary file
    finally:
        store.close()


def test_alias_swap_by_another_writer_is_seen(tmp_path: Path) -> None:
    reader, writer = edge(tmp_path), edge(tmp_path)
    try:
        old = reader.ensure_collection("products", encoder="enc", dim=DIM)
        new = writer.ensure_collection("products-next", encoder="enc", dim=DIM)
        writer.upsert("products-next", [PointWrite("a", {}, {IMAGE: np.ones(DIM, np.float32)})])
        writer.close()
        assert reader.list_collections() == ["products", "products-next"]
        write_aliases(tmp_path / "aliases.json", {"products": new.physical})  # what a rebuild's swap does
        info = reader.collection_info("products")
        assert (info.physical, info.count) == (new.physical, 1)
        assert old.physical != new.physical
        assert reader.list_collections() == ["products"]
    finally:
        reader.close()


def test_second_store_on_the_same_collection_is_locked(tmp_path: Path) -> None:
    first, second = edge(tmp_path), edge(tmp_path)
    try:
        first.ensure_collection("products", encoder="enc", dim=DIM)
        with pytest.raises(StoreLocked, match="vitrine serve"):
            second.count("products")
        with pytest.raises(StoreLocked):
            second.drop_collection("products")  # never deletes files another store has open
        assert first.count("products") == 0 and second.list_collections() == ["products"]
    finally:
        first.close()
        second.close()


def test_drop_removes_the_folder(tmp_path: Path) -> None:
    store = edge(tmp_path)
    try:
        physical = store.ensure_collection("products", encoder="enc", dim=DIM).physical
        store.drop_collection("products")
        assert not (tmp_path / "collections" / physical).exists()
        with pytest.raises(NotFound, match="products"):
            store.count("products")
    finally:
        store.close()


def test_damaged_files_are_named(tmp_path: Path) -> None:
    store = edge(tmp_path)
    physical = store.ensure_collection("products", encoder="enc", dim=DIM).physical
    store.close()
    (tmp_path / "collections" / physical / "vitrine.json").unlink()
    with pytest.raises(BackendUnavailable, match=r"vitrine\.json"):
        edge(tmp_path).count("products")
    (tmp_path / "aliases.json").write_text("{not json")
    with pytest.raises(BackendUnavailable, match=r"aliases\.json"):
        edge(tmp_path).list_collections()
    (tmp_path / "aliases.json").write_text(json.dumps({"format": 99, "aliases": {}}))
    with pytest.raises(BackendUnavailable, match="format"):
        edge(tmp_path).list_collections()


def test_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(BackendUnavailable, match="file"):
        edge(tmp_path / "file" / "store")


def test_payload_index_is_made_once_and_its_kind_replaced(tmp_path: Path) -> None:
    import qdrant_edge as qe

    store = edge(tmp_path)
    try:
        store.ensure_collection("products", encoder="enc", dim=DIM)
        schema = store._collections.get("products").shard.info
        store.ensure_payload_index("products", "tags.colour", "keyword")
        store.ensure_payload_index("products", "tag_confidence.colour", "float")
        assert schema().payload_schema["tags.colour"].data_type == qe.PayloadSchemaType.Keyword
        assert schema().payload_schema["tag_confidence.colour"].data_type == qe.PayloadSchemaType.Float
        store.ensure_payload_index("products", "tags.colour", "integer")
        assert schema().payload_schema["tags.colour"].data_type == qe.PayloadSchemaType.Integer
    finally:
        store.close()


def pool_of(folder: Path, physical: str) -> object:
    """The search pool size the engine keeps in the collection's configuration (None: its default)."""
    return json.loads((folder / "collections" / physical / "shard" / "edge_config.json").read_text()) \
        .get("max_search_threads")


def test_the_search_pool_follows_the_setting(tmp_path: Path) -> None:
    """store.search_threads: set at creation, changed when the collection is opened with another (searches
    unchanged), kept as it is with 0."""
    point = PointWrite("a", {"title": "red shoe"}, {IMAGE: np.ones(DIM, np.float32)})
    for opening, (threads, want) in enumerate(((1, 1), (3, 3), (0, 3), (1, 1))):
        store = EdgeStore(tmp_path, settings=StoreSettings(search_threads=threads))
        try:
            physical = store.ensure_collection("products", encoder="enc", dim=DIM).physical
            if opening == 0:
                store.upsert("products", [point])
            assert pool_of(tmp_path, physical) == want
            assert [p.product_id for p in store.search("products", vector=np.ones(DIM, np.float32), using=IMAGE,
                                                        limit=3)] == ["a"]
            assert [p.product_id for p in store.lexical_search("products", text="shoe", limit=3)] == ["a"]
        finally:
            store.close()


def test_a_collection_without_the_lexical_vector_keeps_its_pool(tmp_path: Path) -> None:
    """The engine takes a new pool size only with a vector configuration; the lexical one is given back, and a
    collection without it is loaded as it is."""
    shard = tmp_path / "shard"
    shard.mkdir()
    (shard / "edge_config.json").write_text(json.dumps({"vectors": {"image": {"size": DIM, "distance": "Cosine"}}}))
    assert _pool_config(shard, 1) is None
    (shard / "edge_config.json").write_text(json.dumps({"sparse_vectors": {"lexical": {"modifier": "idf"}},
                                                        "max_search_threads": 2}))
    assert _pool_config(shard, 2) is None  # already so
    assert _pool_config(shard, 0) is None  # keep
    config = _pool_config(shard, 1)
    assert config is not None and config.max_search_threads == 1
