"""Settings come from env (VITRINE_, nested with __), a TOML file, and keyword overrides, and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from common.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("VITRINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./vitrine.toml unless a test writes one


def test_defaults() -> None:
    settings = load_settings()
    assert settings.home == Path(".vitrine")
    assert settings.store_dir == Path(".vitrine/store")
    assert settings.embed.model == "demo"
    assert (settings.search.w_image, settings.search.w_text) == (0.6, 0.4)
    assert settings.store.url is None


def test_env_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_HOME", "/srv/vitrine")
    monkeypatch.setenv("VITRINE_EMBED__DEVICE", "cuda:1")
    monkeypatch.setenv("VITRINE_EMBED__DTYPE", "bf16")
    monkeypatch.setenv("VITRINE_STORE__URL", "http://qdrant:6333")
    monkeypatch.setenv("VITRINE_INDEXER__IMAGE_ROOTS", '["/data/a", "/data/b"]')
    settings = load_settings()
    assert settings.home == Path("/srv/vitrine")
    assert settings.embed.device == "cuda:1"
    assert settings.embed.dtype == "bf16"
    assert settings.store.url == "http://qdrant:6333"
    assert settings.indexer.image_roots == (Path("/data/a"), Path("/data/b"))


def test_toml_file_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('home = "/from/toml"\n[embed]\nbatch_size = 8\nmodel = "hf:org/name"\n', encoding="utf-8")
    monkeypatch.setenv("VITRINE_CONFIG", str(config))
    monkeypatch.setenv("VITRINE_EMBED__BATCH_SIZE", "16")
    settings = load_settings()
    assert settings.home == Path("/from/toml")
    assert settings.embed.model == "hf:org/name"
    assert settings.embed.batch_size == 16  # env beats the file
    assert load_settings(home=Path("/kw")).home == Path("/kw")  # keywords beat env


def test_default_toml_in_working_directory(tmp_path: Path) -> None:
    (tmp_path / "vitrine.toml").write_text('[search]\nw_image = 0.9\nw_text = 0.1\n', encoding="utf-8")
    assert load_settings().search.w_image == 0.9


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("VITRINE_EMBED__DEVICE", "gpu", "'gpu'"),
        ("VITRINE_EMBED__DTYPE", "int4", "embed.dtype"),
        ("VITRINE_EMBED__BATCH_SIZE", "0", "embed.batch_size"),
        ("VITRINE_STORE__URL", "qdrant:6333", "'qdrant:6333'"),
        ("VITRINE_STORE__COLLECTION", "bad name!", "store.collection"),
        ("VITRINE_SEARCH__W_IMAGE", "-1", "search.w_image"),
        ("VITRINE_EMBED__MODLE", "x", "modle"),
    ],
)
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_CONFIG", "/nope/vitrine.toml")
    with pytest.raises(ConfigError, match=r"/nope/vitrine\.toml"):
        load_settings()
