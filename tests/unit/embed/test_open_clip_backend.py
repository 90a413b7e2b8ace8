"""The open_clip backend: every way of naming weights, loaded offline from tiny models, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.open_clip_backend import OpenClipEncoder, Weights, parse_spec
from embed.protocol import Encoder
from embed.registry import build_encoder
from tests.unit.embed.conftest import HUB_OPEN_CLIP

TEXTS = ["white running shoes", "red dress", ""]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ViT-B-32/laion2b_s34b_b79k", Weights("tag", "ViT-B-32", "laion2b_s34b_b79k")),
        ("ViT-B-32/random", Weights("random", "ViT-B-32", "random")),
        ("ViT-B-32//abs/model.pt", Weights("file", "ViT-B-32", "/abs/model.pt")),
        (
            "ViT-B-32/weights.safetensors",
            Weights("file", "ViT-B-32", str(Path("weights.safetensors").resolve())),
        ),
        (
            "hf-hub:Marqo/marqo-ecommerce-embeddings-B",
            Weights("hub", None, "Marqo/marqo-ecommerce-embeddings-B"),
        ),
        ("local-dir:/models/x/", Weights("dir", None, "/models/x")),
    ],
)
def test_parse_spec(spec: str, expected: Weights) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("ViT-B-32", r"'open_clip:ViT-B-32' names no weights.*open_clip:ViT-B-32/random"),
        ("ViT-B-32/", "names no weights"),
        ("hf-hub:", "names no Hugging Face repository"),
        ("hf-hub:just-a-name", "names no Hugging Face repository.*hf-hub:ORG/NAME"),
        ("local-dir:", "names no folder"),
    ],
)
def test_malformed_specs_are_config_errors(spec: str, match: str, settings: EmbedSettings) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenClipEncoder(spec, settings)


def test_relative_and_absolute_checkpoints_load_the_same_weights(
    tiny_arch: str,
    tiny_checkpoint: Path,
    settings: EmbedSettings,
    encoders: dict[str, Encoder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tiny_checkpoint.parent.parent)
    relative = f"{tiny_checkpoint.parent.name}/{tiny_checkpoint.name}"
    for spec in (f"{tiny_arch}/{relative}", f"{tiny_arch}/./{relative}", f"{tiny_arch}/{tiny_checkpoint}"):
        encoder = build_encoder(settings, f"open_clip:{spec}")
        assert encoder.name == f"open_clip:{tiny_arch}/{tiny_checkpoint}"
        np.testing.assert_allclose(
            encoder.embed_texts(TEXTS), encoders["open_clip-dir"].embed_texts(TEXTS), atol=1e-6
        )


def test_hf_hub_loads_offline_from_the_cache(settings: EmbedSettings, encoders: dict[str, Encoder]) -> None:
    encoder = build_encoder(settings, f"open_clip:hf-hub:{HUB_OPEN_CLIP}")
    assert encoder.name == f"open_clip:hf-hub:{HUB_OPEN_CLIP}"
    np.testing.assert_allclose(
        encoder.embed_texts(TEXTS), encoders["open_clip-dir"].embed_texts(TEXTS), atol=1e-6
    )


def test_local_dir_name_is_absolute(
    tiny_clip_dir: Path, settings: EmbedSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_clip_dir.parent)
    encoder = build_encoder(settings, f"open_clip:local-dir:{tiny_clip_dir.name}")
    assert encoder.name == f"open_clip:local-dir:{tiny_clip_dir}"
    assert build_encoder(settings, str(tiny_clip_dir)).name == encoder.name
    assert encoder.dim == 32


def test_random_weights_need_no_files(
    tiny_arch: str, settings: EmbedSettings, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = build_encoder(settings, f"open_clip:{tiny_arch}/random")
    assert encoder.embed_texts(["a"]).shape == (1, 32)
    assert "RANDOM weights" in caplog.text


def test_injected_model(settings: EmbedSettings, encoders: dict[str, Encoder]) -> None:
    import open_clip
    import torch

    from tests.tiny_models import TINY_OPEN_CLIP_CFG

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    encoder = OpenClipEncoder(
        "ViT-B-32/random", settings, model=model, preprocess=preprocess, tokenizer=tokenizer
    )
    np.testing.assert_allclose(
        encoder.embed_texts(TEXTS), encoders["open_clip-dir"].embed_texts(TEXTS), atol=1e-6
    )
    with pytest.raises(ValueError, match="needs its preprocess and tokenizer"):
        OpenClipEncoder("ViT-B-32/random", settings, model=model)


def test_unknown_architecture_suggests_close_names(settings: EmbedSettings) -> None:
    with pytest.raises(ConfigError, match=r"'ViT-B-33'.*unknown; did you mean.*'ViT-B-32'.*add_model_config"):
        build_encoder(settings, "open_clip:ViT-B-33/laion2b_s34b_b79k").load()


def test_unknown_tag_lists_the_known_ones(settings: EmbedSettings) -> None:
    with pytest.raises(
        ConfigError, match=r"'laion9b' .*neither a pretrained tag of 'ViT-B-32' \(known: \[.*'openai'"
    ):
        build_encoder(settings, "open_clip:ViT-B-32/laion9b").load()


def test_checkpoint_that_does_not_fit_is_a_config_error(
    tiny_arch: str, tiny_checkpoint: Path, settings: EmbedSettings, tmp_path: Path
) -> None:
    import torch

    state = torch.load(tiny_checkpoint, weights_only=True)
    torch.save({**state, "positional_embedding": state["positional_embedding"][:, :8]}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=rf"other.pt'.*checkpoint of '{tiny_arch}'"):
        build_encoder(settings, f"open_clip:{tiny_arch}/{tmp_path / 'other.pt'}").load()
    torch.save({k: v for k, v in state.items() if k != "logit_scale"}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match=r"Missing key.*logit_scale"):
        build_encoder(settings, f"open_clip:{tiny_arch}/{tmp_path / 'partial.pt'}").load()


def assert_not_found(error: pytest.ExceptionInfo[ModelNotFound], *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_pretrained_tag_offline(settings: EmbedSettings, offline_hub: Path) -> None:
    name = "open_clip:ViT-B-32/laion2b_s34b_b79k"
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, name).load()
    assert_not_found(
        error,
        repr(name),
        "its weights were not found",
        str(offline_hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"),
        "HF_HUB_OFFLINE=1 is set",
        "open_clip:ARCH/PATH_TO_CHECKPOINT",
        "open_clip:local-dir:DIR",
        "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    )


def test_missing_hub_repository(settings: EmbedSettings, offline_hub: Path) -> None:
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, "open_clip:hf-hub:acme/nothing-here").load()
    assert_not_found(
        error,
        "'open_clip:hf-hub:acme/nothing-here'",
        "open_clip_config.json was not found",
        str(offline_hub / "models--acme--nothing-here"),
        "open_clip:local-dir:DIR",
        "set HF_HUB_CACHE",
    )


def test_hub_repository_without_weights(
    settings: EmbedSettings, offline_hub: Path, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from tests.tiny_models import put_in_hf_cache

    shutil.copy(tiny_clip_dir / "open_clip_config.json", tmp_path)
    put_in_hf_cache(offline_hub, "acme/config-only", tmp_path)
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, "open_clip:hf-hub:acme/config-only").load()
    assert_not_found(
        error, "open_clip_pytorch_model.bin was not found", str(offline_hub / "models--acme--config-only")
    )


def test_missing_checkpoint_file(tiny_arch: str, settings: EmbedSettings, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, f"open_clip:{tiny_arch}/{missing}").load()
    assert_not_found(
        error,
        f"'open_clip:{tiny_arch}/{missing}'",
        f"checkpoint file was not found at '{missing}'",
        "open_clip:ARCH/PATH_TO_CHECKPOINT",
    )


def test_missing_folder(settings: EmbedSettings, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, f"open_clip:local-dir:{tmp_path / 'gone'}").load()
    assert_not_found(error, f"its folder was not found at '{tmp_path / 'gone'}'", "open_clip:local-dir:DIR")


def test_folder_without_weights(settings: EmbedSettings, tmp_path: Path, tiny_clip_dir: Path) -> None:
    shutil.copy(tiny_clip_dir / "open_clip_config.json", tmp_path)
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, str(tmp_path)).load()
    assert_not_found(
        error,
        f"'open_clip:local-dir:{tmp_path}'",
        "weights (*.safetensors, *.bin, *.pth) were not found",
        f"in the folder '{tmp_path}' (it holds ['open_clip_config.json'])",
        "open_clip:ARCH/PATH",
    )


def test_architecture_whose_tokenizer_is_on_the_hub(
    settings: EmbedSettings, offline_hub: Path, tmp_path: Path
) -> None:
    """Like open_clip's SigLIP configs, whose tokenizer comes from another hub repository."""
    import json

    import open_clip

    from tests.tiny_models import TINY_OPEN_CLIP_CFG

    config = json.loads(json.dumps(TINY_OPEN_CLIP_CFG))
    config["text_cfg"]["hf_tokenizer_name"] = "acme/tokenizer-elsewhere"
    (tmp_path / "vitrine-tiny-hf-tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    open_clip.add_model_config(tmp_path / "vitrine-tiny-hf-tokenizer.json")
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, "open_clip:vitrine-tiny-hf-tokenizer/random").load()
    assert_not_found(
        error,
        "its tokenizer files were not found",
        str(offline_hub / "models--acme--tokenizer-elsewhere"),
        "also loads ['acme/tokenizer-elsewhere'] from the Hugging Face hub",
    )
