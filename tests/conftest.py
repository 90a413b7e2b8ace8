"""Session-wide fixtures: tiny random encoders built from config (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_open_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random width-32 open_clip model; pass ``str(folder)`` as the model name."""
    return save_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random transformers CLIPModel, its tokenizer and image processor (``hf:FOLDER``)."""
    from tests.tiny_models import save_tiny_hf_clip

    return save_tiny_hf_clip(tmp_path_factory.mktemp("tiny_hf_clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a random transformers SiglipModel, its tokenizer and image processor (hf:FOLDER)."""
    from tests.tiny_models import save_tiny_siglip

    return save_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"))
