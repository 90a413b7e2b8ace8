"""The Ray engine's stages as plain functions (no Ray needed), and its errors when Ray is missing or misused.

The engine end to end on a local Ray cluster: tests/integration/test_index_ray.py.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.cli.main import main
from common.errors import BackendNotInstalled, NotFound
from common.settings import load_settings
from indexer.fetch import FetchConfig
from indexer.ray_engine import (
    EmbedActor,
    StoreWriter,
    actor_device,
    actor_resources,
    import_ray,
    index_catalog_ray,
    prepare_images,
)
from indexer.readers import ValidRow, iter_products
from indexer.stages import Planned
from indexer.state import ContentHashes, payload_hash, text_hash
from indexer.worker import WorkerConfig
from store.factory import open_store
from store.protocol import IMAGE, TEXT
from tests.demo_shop import DEMO


def planned(catalog: Path, encoder: str) -> list[Planned]:
    items = []
    for row in iter_products(catalog):
        assert isinstance(row, ValidRow)
        product = row.product
        text = product.embedding_text()
        hashes = ContentHashes(text=text_hash(text, encoder=encoder), image=None,
                               payload=payload_hash(product.payload()), tags=None)
        items.append(Planned(row.line, product, text, hashes, product.image_refs[0] if product.image_refs else None,
                             None))
    return items


def test_the_stages_prepare_embed_and_write_a_batch_and_reject_a_bad_image(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    rows = [{"id": "a", "title": "red square", "image": "red.png"}, {"id": "b", "title": "text only"},
            {"id": "c", "title": "broken", "image": "bad.jpg"}]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = load_settings(home=tmp_path / "home")
    actor = EmbedActor(settings, "demo", settings.store.collection, None)
    items = planned(catalog, actor.encoder.name)
    config = WorkerConfig(fetch=FetchConfig.from_settings(settings, base_dir=tmp_path),
                          transform=actor.encoder.image_transform, encoder=actor.encoder.name, max_pixels=10**7)
    column = np.empty(len(items), dtype=object)
    column[:] = [pickle.dumps(item) for item in items]

    out = actor(prepare_images({"planned": column}, config=config))

    points = [pickle.loads(blob) for blob in out["point"] if blob]
    rejections = [pickle.loads(blob) for blob in out["rejection"] if blob]
    assert [point.product_id for point in points] == ["a", "b"]
    assert sorted(points[0].vectors) == [IMAGE, TEXT] and sorted(points[1].vectors) == [TEXT]
    assert [(row.line, row.product_id) for row in rejections] == [(3, "c")]
    assert "bad.jpg" in rejections[0].reason

    store = open_store(settings)
    try:
        store.ensure_collection("products", encoder=actor.encoder.name, dim=actor.encoder.dim)
        result = StoreWriter("products", batch_size=1).write(store, out)
        assert (result.points, len(result.rejections)) == (2, 1)
        assert store.count("products") == 2
    finally:
        store.close()


def test_without_ray_the_engine_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendNotInstalled, match=r"pip install 'vitrine\[ray\]'"):
        import_ray()
    with pytest.raises(BackendNotInstalled, match=r"pip install 'vitrine\[ray\]'"):
        index_catalog_ray(DEMO / "catalog.jsonl", load_settings(home=tmp_path / "home"))


def test_the_command_without_ray_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    assert main(["index", str(DEMO / "catalog.jsonl"), "--engine", "ray", "--no-progress"]) == 1
    assert "pip install 'vitrine[ray]'" in capsys.readouterr().err


def test_an_address_needs_the_ray_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VITRINE_HOME", str(tmp_path / "home"))
    assert main(["index", str(DEMO / "catalog.jsonl"), "--address", "auto", "--no-progress"]) == 1
    assert "--address 'auto' is for --engine ray" in capsys.readouterr().err


def test_a_missing_catalog_fails_before_ray_starts(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import ray

    with pytest.raises(NotFound, match="does not exist"):
        index_catalog_ray(tmp_path / "nope.jsonl", load_settings(home=tmp_path / "home"), address="ray://nowhere:1")
    assert not ray.is_initialized()


def test_embedding_actors_reserve_gpus_only_when_the_model_runs_on_cuda(tmp_path: Path) -> None:
    cpu = load_settings(home=tmp_path)
    gpu = load_settings(home=tmp_path, embed={"device": "cuda:1"}, ray={"gpus_per_actor": 0.5})
    assert actor_resources(cpu) == {}
    assert actor_resources(gpu) == {"num_gpus": 0.5}
    assert [actor_device(name) for name in ("cpu", "cuda", "cuda:1", "mps")] == ["cpu", "cuda", "cuda", "mps"]
