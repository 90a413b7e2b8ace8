"""The demo encoder: the committed checkpoint, Fashion-MNIST-style preprocessing of photos, loading rules."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from common.errors import ConfigError, InvalidInput, ModelNotFound
from common.settings import EmbedSettings
from embed.demo import DEMO_MODEL_ENV, DemoEncoder, demo_model_dir
from embed.demo_preprocess import FASHION_MEAN, FASHION_STD, FashionStyle
from embed.demo_towers import build_tower, for_inference
from embed.protocol import Encoder
from embed.registry import build_encoder
from tests.tiny_models import save_tiny_demo_encoder

TINY_IMAGE = {"arch": "cnn", "stages": [[4, 1], [8, 1]], "hidden": 0, "dim": 32, "size": 28}  # the folder's
BACKGROUND = -FASHION_MEAN / FASHION_STD  # a black pixel after normalisation


def colour_photo(*, size: tuple[int, int] = (400, 300), background: tuple[int, int, int] = (250, 250, 250)) \
        -> Image.Image:
    """A colour product photo: a red boot-like shape, off-centre, on a light background with noise."""
    rng = np.random.default_rng(0)
    noise = rng.integers(-4, 5, (size[1], size[0], 3))
    pixels = np.clip(np.full((size[1], size[0], 3), background) + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.rectangle((60, 40, 140, 220), fill=(180, 20, 30))
    draw.rectangle((60, 180, 260, 240), fill=(150, 10, 20))
    return image


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``towers`` encoder folder with a tiny random CNN and a tiny text tower."""
    return save_tiny_demo_encoder(tmp_path_factory.mktemp("tiny_demo"))


def test_a_colour_photo_lands_in_the_grey_28_pixel_domain() -> None:
    style = FashionStyle()
    prepared = style.prepare(colour_photo())
    assert prepared.mode == "L" and prepared.size == (28, 28)
    grey = np.asarray(prepared)
    assert grey[0, -1] < 10  # the light background (top right of the L-shaped boot) became black
    assert grey[-1, 0] > 150  # the dark red product (its sole) became light
    rows, cols = np.flatnonzero(grey.max(axis=1) > 24), np.flatnonzero(grey.max(axis=0) > 24)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= 27  # trimmed, longest side fills the square

    pixels = style(colour_photo())
    assert pixels.shape == (3, 28, 28) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels[0], pixels[2])
    assert pixels[0, 0, -1] == pytest.approx(BACKGROUND, abs=0.1)


def test_a_dark_background_photo_is_not_inverted_and_sizes_follow_the_settings() -> None:
    photo = colour_photo(background=(5, 5, 5))
    grey = np.asarray(FashionStyle().prepare(photo))
    assert grey[0, -1] < 10 and grey[-1, 0] > 20  # background stays dark, the red product is lighter
    assert FashionStyle(size=112, mean=0.5, std=0.5)(photo).shape == (3, 112, 112)
    with pytest.raises(ValueError, match="fit=30, canvas=28"):
        FashionStyle(fit=30)


def test_the_transform_pickles() -> None:
    style = FashionStyle()
    photo = colour_photo()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(style))(photo), style(photo))


def test_a_folder_encoder_meets_the_contract(tiny_folder: Path) -> None:
    settings = EmbedSettings(batch_size=3)
    encoder = build_encoder(settings, str(tiny_folder))
    assert isinstance(encoder, DemoEncoder) and isinstance(encoder, Encoder)
    assert encoder.name == str(tiny_folder.resolve()) and encoder.dim == 32 and encoder.image_size == 28
    photos = [colour_photo(), colour_photo(size=(120, 200)), Image.new("L", (40, 30), 200), colour_photo()]
    vectors = encoder.embed_images(photos)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[3], atol=1e-6)
    alone = np.concatenate([encoder.embed_images([p]) for p in photos])
    np.testing.assert_allclose(vectors, alone, atol=2e-5)
    texts = encoder.embed_texts(["red bag", "a", "", "running shoes", "boots"])
    assert texts.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.embed_texts([]).shape == (0, 32) and encoder.embed_images([]).shape == (0, 32)
    with pytest.raises(InvalidInput, match="single string"):
        encoder.embed_texts("shoes")
    with pytest.raises(InvalidInput, match=r"shape \(2, 28, 28\)"):
        encoder.embed_pixels(np.zeros((2, 28, 28), np.float32))


def test_inference_folding_keeps_what_the_tower_computes() -> None:
    torch.manual_seed(0)
    tower = build_tower({"arch": "cnn", "stages": [[8, 2], [16, 2]], "hidden": 16, "dim": 32})
    for module in tower.modules():  # trained-looking batch-norm statistics, so the fold is not trivial
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    pixels = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        expected = tower.eval()(pixels)
        fast = for_inference(tower)
        got = fast(pixels.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in fast.modules()) == 4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_injected_towers_need_no_files(tiny_folder: Path) -> None:
    from embed.minilm import MiniLMTextTower

    text = MiniLMTextTower(device=torch.device("cpu"), path=str(tiny_folder / "text"))
    tower = build_tower(TINY_IMAGE)
    encoder = DemoEncoder(tiny_folder, EmbedSettings(), image_tower=tower, text_tower=text)
    (tiny_folder / "weights.safetensors").rename(tiny_folder / "moved.safetensors")
    try:
        assert encoder.embed_images([colour_photo()]).shape == (1, 32)
    finally:
        (tiny_folder / "moved.safetensors").rename(tiny_folder / "weights.safetensors")


def test_the_demo_name_follows_the_environment(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv(DEMO_MODEL_ENV, str(tiny_folder))
    encoder = build_encoder(EmbedSettings(), "demo")
    assert encoder.name == "demo" and encoder.dim == 32
    monkeypatch.setenv(DEMO_MODEL_ENV, str(tmp_path))
    with pytest.raises(ModelNotFound, match=rf"{DEMO_MODEL_ENV}=.*vitrine_encoder\.json"):
        demo_model_dir()


def test_broken_folders_are_named(tmp_path: Path, tiny_folder: Path) -> None:
    (tmp_path / "vitrine_encoder.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not readable JSON"):
        build_encoder(EmbedSettings(), str(tmp_path))
    manifest_path = tmp_path / "vitrine_encoder.json"
    manifest_path.write_text(json.dumps({"kind": "towers", "dim": 32}), encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a 'text' section"):
        build_encoder(EmbedSettings(), str(tmp_path))
    manifest = json.loads((tiny_folder / "vitrine_encoder.json").read_text(encoding="utf-8"))
    (tmp_path / "vitrine_encoder.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelNotFound, match=r"weights\.safetensors.*do not exist"):
        build_encoder(EmbedSettings(), str(tmp_path)).embed_images([colour_photo()])
    (tmp_path / "vitrine_encoder.json").write_text(json.dumps(manifest | {"image": {"arch": "vit"}}),
                                                   encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown image tower arch 'vit'"):
        build_encoder(EmbedSettings(), str(tmp_path))


DEMO_CATALOG = Path(__file__).resolve().parents[3] / "data" / "demo" / "catalog.jsonl"


def demo_pictures() -> dict[str, Image.Image]:
    """The first picture of each category in the committed demo catalog."""
    found: dict[str, Image.Image] = {}
    for line in DEMO_CATALOG.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["category"] not in found:
            found[row["category"]] = Image.open(DEMO_CATALOG.parent / row["image"]).convert("RGB")
    return found


@pytest.mark.slow
def test_the_committed_demo_checkpoint_loads_and_separates_classes() -> None:
    """The real thing: data/demo_model with all-MiniLM-L6-v2, on pictures of the committed demo catalog."""
    assert (demo_model_dir() / "vitrine_encoder.json").is_file()
    encoder = build_encoder(EmbedSettings(), "demo")
    assert encoder.name == "demo" and encoder.dim == 384 and encoder.image_size == 28
    texts = encoder.embed_texts(["running shoes", "a leather handbag", "summer dress"])
    assert texts.shape == (3, 384) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    images = encoder.embed_images([colour_photo(), colour_photo(size=(300, 300))])
    assert images.shape == (2, 384) and images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert float(texts[0] @ texts[1]) < 0.9

    pictures = demo_pictures()
    names = ["Sneaker", "Bag", "Dress", "Trouser"]
    queries = encoder.embed_texts(["running shoes", "a leather handbag", "summer dress", "jeans"])
    scores = queries @ encoder.embed_images([pictures[name] for name in names]).T
    assert scores.argmax(axis=1).tolist() == [0, 1, 2, 3], scores  # each query finds its own category


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_gives_unit_float32_near_fp32(tiny_folder: Path, dtype: str) -> None:
    full = build_encoder(EmbedSettings(), str(tiny_folder))
    half = build_encoder(EmbedSettings(dtype=dtype), str(tiny_folder))
    photos, texts = [colour_photo(), colour_photo(size=(100, 220))], ["red bag", "boots"]
    for vectors, reference in ((half.embed_images(photos), full.embed_images(photos)),
                               (half.embed_texts(texts), full.embed_texts(texts))):
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.sum(vectors * reference, axis=1).min() > 0.95


def test_a_missing_gpu_is_reported_at_load(tiny_folder: Path) -> None:
    from common.errors import BackendUnavailable

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    encoder = build_encoder(EmbedSettings(device="cuda"), str(tiny_folder))  # construction stays cheap
    with pytest.raises(BackendUnavailable, match="CUDA is not available"):
        encoder.load()
