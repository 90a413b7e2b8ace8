"""Quantization and cluster settings of new collections, on every backend.

The store settings decide how a collection is made when it is CREATED (int8 scalar quantization, originals on
disk; shards and replicas on a server); an existing collection keeps its own. The engine's configuration is read
back here from the engine itself (qdrant-edge's ``edge_config.json``, qdrant-client's collection config), not
from Vitrine's record. Searches still rank like brute-force cosine. Whether the quantized search keeps its
recall on real-sized data is measured by ``bench/recall.py`` (docs/benchmarks.md): the embedded engine quantizes
only indexed segments, which small test collections never reach.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from common.errors import InvalidQuery
from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, TEXT, Quantization, VectorStore
from store.qdrant_backend import search_params
from tests.unit.store.conftest import BACKENDS, Opener, unit_vectors
from tests.unit.store.test_conformance import DIM, ENC, brute_force, catalog

INT8 = StoreSettings(quantization="int8", quantization_quantile=0.95, quantization_always_ram=True,
                     on_disk_vectors=True)
PLAIN = StoreSettings(quantization="none")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend's name in turn."""
    return str(request.param)


def open_with(kind: str, folder: Path, settings: StoreSettings, opened: list[Opener]) -> VectorStore:
    """A store of backend ``kind`` on ``folder`` with ``settings`` (its server, if any, stopped at teardown)."""
    opener = Opener(kind, folder, settings)
    opened.append(opener)
    return opener()


@pytest.fixture
def openers() -> Any:
    """Openers to stop after the test."""
    opened: list[Opener] = []
    yield opened
    for opener in opened:
        opener.stop()


def engine_vector_config(store: VectorStore, opener: Opener, physical: str) -> dict[str, Any]:
    """The engine's own configuration of the ``image`` vector, as JSON-ready data."""
    if isinstance(store, EdgeStore):
        path = opener.folder / "collections" / physical / "shard" / "edge_config.json"
        vector: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["vectors"][IMAGE]
        return vector
    if opener.kind in ("rest", "grpc"):
        assert opener.server is not None
        client = opener.server.client
    else:
        client = store._client  # type: ignore[attr-defined]  # memory/path: the store's own local client
    params = client.get_collection(physical).config.params.vectors
    assert isinstance(params, dict)
    return params[IMAGE].model_dump(mode="json", exclude_none=True)


def test_new_collections_are_int8_quantized_with_originals_on_disk(
        backend: str, tmp_path: Path, openers: list[Opener]) -> None:
    store = open_with(backend, tmp_path / "store", INT8, openers)
    info = store.ensure_collection("products", encoder=ENC, dim=DIM)
    assert info.quantization == Quantization(kind="int8", quantile=0.95, always_ram=True, originals_on_disk=True)
    assert str(info.quantization) == "int8 (quantile 0.95, quantized vectors in RAM, originals on disk)"
    config = engine_vector_config(store, openers[-1], info.physical)
    scalar = config["quantization_config"]["scalar"]
    assert (scalar["type"], scalar["quantile"]) == ("int8", pytest.approx(0.95))  # gRPC sends a float32
    assert scalar.get("always_ram") is True or scalar.get("memory") == "pinned"
    assert config.get("on_disk") is True or config.get("memory") == "cold"
    store.close()


def test_quantization_none_makes_plain_collections(backend: str, tmp_path: Path, openers: list[Opener]) -> None:
    store = open_with(backend, tmp_path / "store", PLAIN, openers)
    info = store.ensure_collection("products", encoder=ENC, dim=DIM)
    assert info.quantization == Quantization()
    assert str(info.quantization) == "none"
    assert "quantization_config" not in engine_vector_config(store, openers[-1], info.physical)
    store.close()


def test_existing_collections_keep_their_quantization(tmp_path: Path, openers: list[Opener]) -> None:
    folder = tmp_path / "store"
    first = open_with("edge", folder, INT8, openers)
    first.ensure_collection("products", encoder=ENC, dim=DIM)
    first.close()
    again = open_with("edge", folder, PLAIN, openers)
    assert again.ensure_collection("products", encoder=ENC, dim=DIM).quantization.kind == "int8"
    assert again.ensure_collection("other", encoder=ENC, dim=DIM).quantization.kind == "none"
    again.close()


@pytest.mark.parametrize("settings", [INT8, INT8.model_copy(update={"rescore": False, "oversampling": 1.0}),
                                      INT8.model_copy(update={"oversampling": 4.0})],
                         ids=["rescore", "no-rescore", "oversampling-4"])
def test_quantized_collections_find_the_true_top_results(
        backend: str, tmp_path: Path, openers: list[Opener], settings: StoreSettings) -> None:
    store = open_with(backend, tmp_path / "store", settings, openers)
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    points = catalog(120)
    store.upsert("products", points)
    store.optimize("products")
    for seed in range(5):
        query = unit_vectors(1, DIM, seed=100 + seed)[0]
        for using in (IMAGE, TEXT):
            expected = brute_force(points, query, using)[:10]
            for exact in (False, True):
                hits = store.search("products", vector=query, using=using, limit=10, exact=exact)
                assert [h.product_id for h in hits] == expected
                truth = {p.product_id: float(np.dot(p.vectors[using], query)) for p in points if using in p.vectors}
                assert all(abs((h.score or 0.0) - truth[h.product_id]) < 1e-4 for h in hits)
        scores = store.score("products", vector=query, using=IMAGE, product_ids=["p001", "p002"])
        assert scores == pytest.approx({pid: float(np.dot(points[i].vectors[IMAGE], query))
                                        for i, pid in ((1, "p001"), (2, "p002"))}, abs=1e-5)
    with pytest.raises(InvalidQuery):
        store.search("products", vector=np.zeros(DIM + 1, np.float32), using=IMAGE, limit=10)
    store.close()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_cluster_settings_reach_the_server(tmp_path: Path, openers: list[Opener], transport: str) -> None:
    settings = INT8.model_copy(update={"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2})
    store = open_with(transport, tmp_path / "store", settings, openers)
    info = store.ensure_collection("products", encoder=ENC, dim=DIM)
    server = openers[-1].server
    assert server is not None
    body = server.created[info.physical]  # the CreateCollection request as the server received it
    assert (body.shard_number, body.replication_factor, body.write_consistency_factor) == (6, 2, 2)
    assert isinstance(body.vectors, dict)
    image = body.vectors[IMAGE]
    assert image.on_disk is True
    assert isinstance(image.quantization_config, models.ScalarQuantization)
    assert image.quantization_config.scalar.type == models.ScalarType.INT8
    store.close()


def test_server_searches_ask_for_rescoring_and_exact_ignores_quantization() -> None:
    settings = INT8.model_copy(update={"oversampling": 3.0})
    approx = search_params(settings, exact=False)
    exact = search_params(settings, exact=True)
    assert approx.quantization == models.QuantizationSearchParams(rescore=True, oversampling=3.0)
    assert approx.hnsw_ef == INT8.hnsw_ef and not approx.exact
    assert exact.exact and exact.quantization is not None and exact.quantization.ignore


def test_write_consistency_cannot_exceed_replication() -> None:
    with pytest.raises(ValueError, match="write_consistency_factor 3 must be at most replication_factor 2"):
        StoreSettings(replication_factor=2, write_consistency_factor=3)


@pytest.mark.parametrize(("config", "expected"), [
    ({"vectors": {IMAGE: {"size": 4, "on_disk": True, "quantization_config": {
        "scalar": {"type": "int8", "quantile": 0.9, "always_ram": True}}}}},
     Quantization(kind="int8", quantile=0.9, always_ram=True, originals_on_disk=True)),
    ({"vectors": {IMAGE: {"size": 4, "memory": "cached"}}}, Quantization()),
    ({"vectors": {}}, Quantization()),
    ("not json {", Quantization()),
], ids=["older-flags", "plain", "no-vectors", "unreadable"])
def test_the_embedded_engines_config_is_read_back(tmp_path: Path, config: Any, expected: Quantization) -> None:
    from store.edge_collections import read_quantization

    path = tmp_path / "edge_config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config), encoding="utf-8")
    assert read_quantization(path) == expected
    assert read_quantization(tmp_path / "absent.json") == Quantization()
