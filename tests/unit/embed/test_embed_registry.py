"""Encoder names: prefixes, bare folders told apart by their files, errors for names that match nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed import build_encoder, known_backends
from embed.hf_backend import HfEncoder
from embed.open_clip_backend import OpenClipEncoder
from embed.protocol import Encoder
from embed.registry import parse_model_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", ("open_clip", "ViT-B-32/laion2b_s34b_b79k")),
        (
            "open_clip:hf-hub:Marqo/marqo-ecommerce-embeddings-B",
            ("open_clip", "hf-hub:Marqo/marqo-ecommerce-embeddings-B"),
        ),
        ("open_clip:ViT-B-32//models/clip.pt", ("open_clip", "ViT-B-32//models/clip.pt")),
        ("hf:google/siglip-base-patch16-224", ("hf", "google/siglip-base-patch16-224")),
        ("hf:/models/siglip", ("hf", "/models/siglip")),
        ("  hf:org/name  ", ("hf", "org/name")),
        ("demo", ("demo", "")),
    ],
)
def test_prefixed_names(name: str, expected: tuple[str, str]) -> None:
    assert parse_model_name(name) == expected


def test_bare_folders_are_told_apart_by_their_files(
    tiny_clip_dir: Path,
    tiny_hf_clip_dir: Path,
    tiny_siglip_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_model_name(str(tiny_clip_dir)) == ("open_clip", f"local-dir:{tiny_clip_dir}")
    assert parse_model_name(str(tiny_hf_clip_dir)) == ("hf", str(tiny_hf_clip_dir))
    assert parse_model_name(str(tiny_siglip_dir)) == ("hf", str(tiny_siglip_dir))
    (tmp_path / "vitrine_encoder.json").write_text("{}", encoding="utf-8")
    assert parse_model_name(str(tmp_path)) == ("demo", str(tmp_path))
    assert parse_model_name(str(tmp_path / "vitrine_encoder.json")) == ("demo", str(tmp_path))
    monkeypatch.chdir(tiny_hf_clip_dir.parent)
    assert parse_model_name(f"./{tiny_hf_clip_dir.name}") == ("hf", str(tiny_hf_clip_dir))


def test_a_folder_of_nothing_known(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(
        ConfigError, match=r"holds neither open_clip_config.json .* config.json .*vitrine_encoder"
    ):
        parse_model_name(str(tmp_path))


def test_unknown_names_list_the_known_backends() -> None:
    assert known_backends() == ["demo", "hf", "open_clip"]
    with pytest.raises(
        ConfigError, match=r"unknown encoder 'clip:ViT-B-32'; known: \['demo', 'hf', 'open_clip'\]"
    ):
        parse_model_name("clip:ViT-B-32")


def test_a_hub_id_without_prefix_gets_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match=r"did you mean 'hf:google/siglip' or 'open_clip:hf-hub:google/siglip'"
    ):
        parse_model_name("google/siglip")


def test_a_missing_folder_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=rf"encoder folder '{tmp_path / 'gone'}' .*was not found"):
        parse_model_name(str(tmp_path / "gone"))


def test_build_encoder_is_cheap_and_canonical(tiny_clip_dir: Path, tiny_hf_clip_dir: Path) -> None:
    settings = EmbedSettings(model=f"hf:{tiny_hf_clip_dir}")
    by_setting = build_encoder(settings)
    assert isinstance(by_setting, HfEncoder)
    assert isinstance(by_setting, Encoder)
    assert by_setting.name == f"hf:{tiny_hf_clip_dir}"
    by_folder = build_encoder(settings, str(tiny_clip_dir))
    assert isinstance(by_folder, OpenClipEncoder)
    assert by_folder.name == f"open_clip:local-dir:{tiny_clip_dir}"
    # nothing is looked for before load(): missing weights fail there, not at construction
    assert build_encoder(settings, "hf:acme/not-here").name == "hf:acme/not-here"
    assert build_encoder(settings, "open_clip:hf-hub:acme/not-here").name == "open_clip:hf-hub:acme/not-here"


def test_folder_moved_after_build_is_model_not_found(tiny_hf_clip_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_hf_clip_dir, folder)
    encoder = build_encoder(EmbedSettings(), str(folder))
    shutil.rmtree(folder)
    with pytest.raises(ModelNotFound, match="its folder was not found"):
        encoder.load()
