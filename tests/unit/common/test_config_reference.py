"""docs/configuration.md is generated from the settings model; this keeps the committed page true."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_configuration_reference_matches_the_settings_model() -> None:
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == module.render(), "regenerate: .venv/bin/python scripts/config_reference.py > docs/configuration.md"
    assert "VITRINE_EMBED__MODEL" in page and "VITRINE_STORE__URL" in page
