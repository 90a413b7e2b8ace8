"""Tiny random encoders built from config, for tests. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def save_tiny_open_clip(folder: Path, *, seed: int = 0) -> Path:
    """Write a random width-32 open_clip model as an open_clip local folder and return the folder.

    The folder loads as the encoder name ``str(folder)`` or ``open_clip:local-dir:FOLDER``.
    """
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": {}}), encoding="utf-8"
    )
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)  # type: ignore[arg-type]
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder
