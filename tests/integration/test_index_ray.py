"""Both ingestion engines index the same catalog to the same collection: the in-process pipeline and the Ray
Data engine (`indexer.ray_engine`) on a local Ray cluster of 2 CPUs with a small object store.

The catalog: 60 demo products (real pictures, the demo vocabulary's tags, thumbnails) and a few bad rows of
each kind (unparsable, invalid, repeated id, nothing to embed, missing image, undecodable image).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.cli.main import main
from common.settings import EmbedSettings, Settings, load_settings
from embed import build_encoder
from indexer.pipeline import index_catalog
from indexer.report import IndexSummary, last_job
from store.factory import open_store
from tests.demo_shop import DEMO, demo_subset
from tests.qdrant_rest import QdrantRestServer

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

PRODUCTS = 60
OBJECT_STORE_BYTES = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
             logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-catalog")
    path = demo_subset(folder, PRODUCTS)
    (folder / "broken.jpg").write_bytes(b"not a picture at all")
    bad: list[str] = [
        "{not json",
        json.dumps({"id": "bad-price", "title": "a price that is text", "price": "cheap"}),
        json.dumps({"id": "empty", "price": 3.0}),
        json.dumps({"id": "no-file", "title": "a missing picture", "image": "nowhere/missing.jpg"}),
        json.dumps({"id": "broken", "title": "an undecodable picture", "image": "broken.jpg"}),
    ]
    lines = path.read_text(encoding="utf-8").splitlines()
    repeated = lines[3]
    rows = lines[:10] + bad[:3] + lines[10:40] + [repeated] + bad[3:] + lines[40:]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def shop_settings(home: Path, **groups: Any) -> Settings:
    return load_settings(home=home, indexer={"workers": 0, "batch_size": 16, "image_roots": [str(DEMO / "images")]},
                         tags={"vocabulary": DEMO / "vocabulary.toml"}, **groups)


def snapshot(settings: Settings) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    store = open_store(settings)
    try:
        return {point.product_id: (point.payload, dict(point.vectors))
                for point in store.scroll(settings.store.collection, with_vectors=True)}
    finally:
        store.close()


def rejected_rows(summary: IndexSummary) -> list[dict[str, Any]]:
    assert summary.report is not None
    return [json.loads(line) for line in summary.report.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def in_process(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, IndexSummary]:
    settings = shop_settings(tmp_path_factory.mktemp("in-process") / "home")
    store = open_store(settings)
    try:
        summary = index_catalog(catalog, settings=settings, encoder=build_encoder(EmbedSettings(), "demo"),
                                store=store, progress=False)
    finally:
        store.close()
    return settings, summary


@pytest.mark.usefixtures("cluster")
def test_both_engines_build_the_same_collection(catalog: Path, in_process: tuple[Settings, IndexSummary],
                                                tmp_path: Path) -> None:
    from indexer.ray_engine import NOTE_NOT_INCREMENTAL, index_catalog_ray

    expected_settings, expected = in_process
    settings = shop_settings(tmp_path / "home", ray={"block_rows": 20, "actors": 1})
    summary = index_catalog_ray(catalog, settings, progress=False)

    assert (summary.rows, summary.indexed, summary.rejected) == (expected.rows, expected.indexed, expected.rejected)
    assert (summary.rows, summary.indexed, summary.rejected) == (PRODUCTS + 6, PRODUCTS, 6)
    assert summary.thumbnails == expected.thumbnails == PRODUCTS
    assert summary.notes == (NOTE_NOT_INCREMENTAL,)
    assert rejected_rows(summary) == rejected_rows(expected)

    ours, theirs = snapshot(settings), snapshot(expected_settings)
    assert sorted(ours) == sorted(theirs)
    for product_id, (payload, vectors) in theirs.items():
        got_payload, got_vectors = ours[product_id]
        assert got_payload == payload, product_id
        assert sorted(got_vectors) == sorted(vectors), product_id
        for name, vector in vectors.items():
            np.testing.assert_allclose(got_vectors[name], vector, atol=1e-5, err_msg=f"{product_id} {name}")

    record = last_job(settings.jobs_dir)
    assert record is not None
    assert (record["status"], record["engine"], record["indexed"]) == ("done", "ray", PRODUCTS)


@pytest.mark.usefixtures("cluster")
def test_the_command_writes_to_a_qdrant_server_through_the_datasink(catalog: Path,
                                                                   in_process: tuple[Settings, IndexSummary],
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``vitrine index --engine ray`` with a Qdrant server: Ray's write tasks upsert in parallel
    (`store_datasink`); the collection is the same."""
    expected_settings, expected = in_process
    server = QdrantRestServer(tmp_path / "qdrant").start()
    try:
        for name in [name for name in os.environ if name.startswith("VITRINE_")]:
            monkeypatch.delenv(name)
        environment = {"HOME": str(tmp_path / "home"), "STORE__URL": server.url, "RAY__BLOCK_ROWS": "15",
                       "RAY__WRITERS": "2", "INDEXER__IMAGE_ROOTS": json.dumps([str(DEMO / "images")]),
                       "TAGS__VOCABULARY": str(DEMO / "vocabulary.toml")}
        for name, value in environment.items():
            monkeypatch.setenv(f"VITRINE_{name}", value)

        code = main(["--log-level", "WARNING", "index", str(catalog), "--engine", "ray", "--no-progress", "--json"])

        assert code == 3, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert (summary["indexed"], summary["unchanged"], summary["rejected"]) == (PRODUCTS, 0, 6)
        report = Path(summary["report"]).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in report] == rejected_rows(expected)
        ours = snapshot(shop_settings(tmp_path / "home", store={"url": server.url}))
    finally:
        server.stop()
    theirs = snapshot(expected_settings)
    assert sorted(ours) == sorted(theirs)
    for product_id, (payload, vectors) in theirs.items():
        assert ours[product_id][0] == payload, product_id
        for name, vector in vectors.items():
            np.testing.assert_allclose(ours[product_id][1][name], vector, atol=1e-5, err_msg=f"{product_id} {name}")
