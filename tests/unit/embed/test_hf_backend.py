"""The transformers backend: CLIP and SigLIP from a folder and from an offline hub cache, text conventions,
transformers 5 outputs, and clear errors for missing files."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.hf_backend import HfEncoder, features, is_local
from embed.protocol import Encoder
from embed.registry import build_encoder
from tests.unit.embed.conftest import HUB_CLIP, HUB_SIGLIP

TEXTS = ["white running shoes", "red summer dress", "a", ""]


@pytest.mark.parametrize(("repo", "kind"), [(HUB_CLIP, "hf-clip"), (HUB_SIGLIP, "hf-siglip")])
def test_hub_repository_loads_offline_from_the_cache(
    repo: str, kind: str, settings: EmbedSettings, encoders: dict[str, Encoder]
) -> None:
    encoder = build_encoder(settings, f"hf:{repo}")
    assert encoder.name == f"hf:{repo}"
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), encoders[kind].embed_texts(TEXTS), atol=1e-6)
    np.testing.assert_allclose(
        encoder.embed_pixels(np.ones((2, 3, 32, 32), np.float32)),
        encoders[kind].embed_pixels(np.ones((2, 3, 32, 32), np.float32)),
        atol=1e-6,
    )


def test_folder_names_are_absolute(
    tiny_hf_clip_dir: Path, settings: EmbedSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_hf_clip_dir.parent)
    for spec in (f"./{tiny_hf_clip_dir.name}", tiny_hf_clip_dir.name, str(tiny_hf_clip_dir) + "/"):
        assert HfEncoder(spec, settings).name == f"hf:{tiny_hf_clip_dir}"


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        ("google/siglip-base-patch16-224", False),
        ("/models/clip", True),
        ("./clip", True),
        ("~/clip", True),
        ("a/b/c", True),
    ],
)
def test_is_local(spec: str, local: bool) -> None:
    assert is_local(spec) is local


def test_dims_and_sizes(encoders: dict[str, Encoder]) -> None:
    assert encoders["hf-clip"].dim == 24  # projection_dim
    assert encoders["hf-siglip"].dim == 32  # the text head's width
    assert encoders["hf-clip"].image_size == encoders["hf-siglip"].image_size == 32


def test_siglip_texts_are_padded_to_max_length_without_a_mask(
    tiny_siglip_dir: Path, encoders: dict[str, Encoder]
) -> None:
    """SigLIP pools the last position and was trained on max_length-padded texts with no attention mask."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_siglip_dir).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_siglip_dir)(
        TEXTS, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        plain = features(model.get_text_features(input_ids=tokens["input_ids"]))
        masked = features(model.get_text_features(**tokens))
    vectors = encoders["hf-siglip"].embed_texts(TEXTS)
    np.testing.assert_allclose(vectors, torch.nn.functional.normalize(plain, dim=-1).numpy(), atol=1e-6)
    # the mask would change them
    assert np.abs(vectors - torch.nn.functional.normalize(masked, dim=-1).numpy()).max() > 1e-3


def test_clip_texts_are_padded_to_the_longest_with_a_mask(
    tiny_hf_clip_dir: Path, encoders: dict[str, Encoder]
) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_hf_clip_dir).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_hf_clip_dir)(
        TEXTS, padding=True, max_length=16, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(features(model.get_text_features(**tokens)), dim=-1).numpy()
    np.testing.assert_allclose(encoders["hf-clip"].embed_texts(TEXTS), expected, atol=1e-6)


def test_long_texts_are_truncated(encoders: dict[str, Encoder]) -> None:
    long = " ".join(["shoes"] * 200)
    for kind in ("hf-clip", "hf-siglip"):
        assert encoders[kind].embed_texts([long]).shape == (1, encoders[kind].dim)


def test_features_of_transformers_4_and_5_outputs() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tensor = torch.ones(2, 3)
    assert features(tensor) is tensor  # transformers 4: the embeddings themselves
    assert features(BaseModelOutputWithPooling(pooler_output=tensor)) is tensor  # transformers 5
    assert features((torch.zeros(2, 5, 3), tensor)) is tensor  # return_dict=False
    with pytest.raises(TypeError, match="no embeddings in a dict"):
        features({"x": tensor})


def test_injected_model(
    tiny_hf_clip_dir: Path, settings: EmbedSettings, encoders: dict[str, Encoder]
) -> None:
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    encoder = HfEncoder(
        "acme/injected",
        settings,
        model=AutoModel.from_pretrained(tiny_hf_clip_dir),
        tokenizer=AutoTokenizer.from_pretrained(tiny_hf_clip_dir),
        image_processor=AutoImageProcessor.from_pretrained(tiny_hf_clip_dir),  # type: ignore[no-untyped-call]
    )
    assert encoder.name == "hf:acme/injected"
    np.testing.assert_allclose(encoder.embed_texts(TEXTS), encoders["hf-clip"].embed_texts(TEXTS), atol=1e-6)
    with pytest.raises(ValueError, match="needs its tokenizer and image_processor"):
        HfEncoder("acme/injected", settings, model=AutoModel.from_pretrained(tiny_hf_clip_dir))


def test_text_only_model_is_refused(tiny_hf_clip_dir: Path, settings: EmbedSettings) -> None:
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPTextConfig, CLIPTextModel

    text_only = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=74
        )
    )
    with pytest.raises(
        ConfigError, match=r"'hf:acme/text' is a CLIPTextModel, which has no get_\w+_features"
    ):
        HfEncoder(
            "acme/text",
            settings,
            model=text_only,
            tokenizer=AutoTokenizer.from_pretrained(tiny_hf_clip_dir),
            image_processor=AutoImageProcessor.from_pretrained(tiny_hf_clip_dir),  # type: ignore[no-untyped-call]
        )


def test_siglip2_naflex_is_refused(tmp_path: Path, settings: EmbedSettings) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "siglip2"}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'siglip2' model: SigLIP 2 NaFlex.*fixed-resolution"):
        HfEncoder(str(tmp_path), settings).load()


def assert_not_found(error: pytest.ExceptionInfo[ModelNotFound], *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_hub_repository(settings: EmbedSettings, offline_hub: Path) -> None:
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, "hf:google/siglip-base-patch16-224").load()
    assert_not_found(
        error,
        "'hf:google/siglip-base-patch16-224'",
        "config.json was not found",
        str(offline_hub / "models--google--siglip-base-patch16-224"),
        "HF_HUB_OFFLINE=1 is set",
        "hf:/path/to/dir",
        "hf download google/siglip-base-patch16-224",
    )


def test_missing_folder(settings: EmbedSettings, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, f"hf:{tmp_path / 'gone'}").load()
    assert_not_found(
        error,
        f"'hf:{tmp_path / 'gone'}'",
        f"its folder was not found at '{tmp_path / 'gone'}'",
        "hf:/path/to/dir",
    )


@pytest.mark.parametrize(
    ("base", "removed", "what"),
    [
        ("clip", "config.json", "its config.json was not found"),
        ("clip", "model.safetensors", "its weights were not found"),
        (
            "clip",
            "tokenizer.json",
            "its tokenizer files (tokenizer.json, vocab.json and merges.txt, or spiece.model)",
        ),
        ("clip", "preprocessor_config.json", "its preprocessor_config.json was not found"),
        ("siglip", "spiece.model", "its tokenizer files"),
    ],
)
def test_missing_file_in_a_folder(  # noqa: PLR0917 - parameters and fixtures
    base: str,
    removed: str,
    what: str,
    settings: EmbedSettings,
    tmp_path: Path,
    tiny_hf_clip_dir: Path,
    tiny_siglip_dir: Path,
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_hf_clip_dir if base == "clip" else tiny_siglip_dir, folder)
    (folder / removed).unlink()
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, f"hf:{folder}").load()
    assert_not_found(
        error, f"'hf:{folder}'", what, f"in the folder '{folder}' (it holds [", "hf:/path/to/dir"
    )
    listed = str(error.value).split("(it holds ")[1].split("]")[0] + "]"
    assert removed not in ast.literal_eval(listed)


def test_missing_file_in_the_hub_cache(
    settings: EmbedSettings, offline_hub: Path, tmp_path: Path, tiny_hf_clip_dir: Path
) -> None:
    from tests.tiny_models import put_in_hf_cache

    shutil.copytree(tiny_hf_clip_dir, tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").unlink()
    put_in_hf_cache(offline_hub, "acme/no-weights", tmp_path / "model")
    with pytest.raises(ModelNotFound) as error:
        build_encoder(settings, "hf:acme/no-weights").load()
    assert_not_found(
        error, "its weights were not found", str(offline_hub / "models--acme--no-weights"), "set HF_HUB_CACHE"
    )
