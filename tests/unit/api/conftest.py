"""Fixtures of the API tests: the tiny encoder and a VITRINE_HOME holding an indexed catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import EmbedSettings, Settings
from embed import Encoder, build_encoder
from tests.unit.api.http_helpers import Catalog, fill_store


@pytest.fixture(scope="session")
def tiny_encoder(tiny_clip_dir: Path) -> Encoder:
    encoder = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    encoder.load()
    return encoder


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> Catalog:
    home = tmp_path_factory.mktemp("vitrine_home")
    fill_store(Settings(home=home), tiny_encoder)
    return Catalog(home=home, encoder_name=tiny_encoder.name)
