"""Weights ids: content hashes of local weight files, "" for names that pin their weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.errors import ModelNotFound
from common.settings import EmbedSettings
from embed.registry import build_encoder
from embed.weights_id import files_id
from tests.tiny_models import save_tiny_demo_encoder, save_tiny_open_clip


def test_names_that_pin_their_weights_have_no_id() -> None:
    for name in ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:hf-hub:org/model", "hf:org/model"):
        assert build_encoder(EmbedSettings(), name).weights_id == ""  # nothing loaded or downloaded


def test_local_folders_are_identified_by_their_files(tmp_path: Path, tiny_hf_clip_dir: Path) -> None:
    demo = save_tiny_demo_encoder(tmp_path / "demo", seed=0)
    first = build_encoder(EmbedSettings(), str(demo)).weights_id
    assert first.startswith("sha256:") and first == build_encoder(EmbedSettings(), str(demo)).weights_id
    save_tiny_demo_encoder(demo, seed=1)  # retrained in place
    assert build_encoder(EmbedSettings(), str(demo)).weights_id not in ("", first)

    clip = save_tiny_open_clip(tmp_path / "clip", seed=0)
    moved = tmp_path / "elsewhere"
    shutil.copytree(clip, moved)  # the same files in another place: the same weights
    ids = {build_encoder(EmbedSettings(), name).weights_id
           for name in (str(clip), f"open_clip:local-dir:{clip}", str(moved))}
    assert len(ids) == 1 and "" not in ids
    assert build_encoder(EmbedSettings(), f"hf:{tiny_hf_clip_dir}").weights_id.startswith("sha256:")


def test_a_checkpoint_file_is_hashed_and_a_missing_one_is_named(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"weights v1")
    encoder = build_encoder(EmbedSettings(), f"open_clip:ViT-B-32/{checkpoint}")
    before = encoder.weights_id
    checkpoint.write_bytes(b"weights v2, retrained")
    assert encoder.weights_id != before
    with pytest.raises(ModelNotFound, match=r"nowhere\.bin"):
        files_id([tmp_path / "nowhere.bin"])
