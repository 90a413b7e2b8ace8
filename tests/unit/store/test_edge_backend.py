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
