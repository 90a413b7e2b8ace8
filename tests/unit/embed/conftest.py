"""Fixtures of the encoder tests: an offline Hugging Face hub cache holding tiny repositories, a tiny
open_clip architecture registered by config, and loaded encoders of every backend."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import EmbedSettings
from embed.protocol import Encoder
from embed.registry import build_encoder
from tests.tiny_models import TINY_OPEN_CLIP_CFG, offline_hf_hub, one_torch_thread, put_in_hf_cache

# open_clip names an architecture after its config file; this one is registered for the tests only.
TINY_ARCH = "vitrine-tiny-test"
HUB_OPEN_CLIP = "acme/tiny-open-clip"
HUB_CLIP = "acme/tiny-clip"
HUB_SIGLIP = "acme/tiny-siglip"


@pytest.fixture(scope="session")
def hub_cache(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_clip_dir: Path,
    tiny_hf_clip_dir: Path,
    tiny_siglip_dir: Path,
) -> Path:
    """A hand-built Hugging Face hub cache holding the tiny models as acme/tiny-open-clip, -clip, -siglip."""
    cache = tmp_path_factory.mktemp("hf_hub_cache")
    put_in_hf_cache(cache, HUB_OPEN_CLIP, tiny_clip_dir)
    put_in_hf_cache(cache, HUB_CLIP, tiny_hf_clip_dir)
    put_in_hf_cache(cache, HUB_SIGLIP, tiny_siglip_dir)
    return cache


@pytest.fixture(scope="module", autouse=True)
def offline_hub(hub_cache: Path) -> Iterator[Path]:
    """Every encoder test runs with HF_HUB_OFFLINE=1 against ``hub_cache``: nothing can be downloaded. Module
    scope: the settings do not leak into other packages' tests."""
    with offline_hf_hub(hub_cache) as cache:
        yield cache


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread() -> Iterator[None]:
    """Tiny models run on one thread: on a busy 2-core machine, two threads make them ~50x slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The name of a tiny open_clip architecture, registered with ``open_clip.add_model_config``."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP_CFG), encoding="utf-8")
    open_clip.add_model_config(folder / f"{TINY_ARCH}.json")
    return TINY_ARCH


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Path:
    """A checkpoint file of ``tiny_arch`` (the weights of ``tiny_clip_dir``), alone in its folder."""
    path = tmp_path_factory.mktemp("open_clip_checkpoint") / "tiny.bin"
    shutil.copyfile(tiny_clip_dir / "open_clip_pytorch_model.bin", path)
    return path


@pytest.fixture(scope="session")
def settings() -> EmbedSettings:
    """CPU, fp32, batches of 3 (so that 5 or 7 inputs take several batches)."""
    return EmbedSettings(device="cpu", dtype="fp32", batch_size=3)


BACKENDS = ["open_clip-dir", "open_clip-file", "hf-clip", "hf-siglip"]


@pytest.fixture(scope="session")
def model_names(
    tiny_clip_dir: Path, tiny_arch: str, tiny_checkpoint: Path, tiny_hf_clip_dir: Path, tiny_siglip_dir: Path
) -> dict[str, str]:
    """An encoder name of each backend kind in ``BACKENDS``."""
    return {
        "open_clip-dir": str(tiny_clip_dir),
        "open_clip-file": f"open_clip:{tiny_arch}/{tiny_checkpoint}",
        "hf-clip": f"hf:{tiny_hf_clip_dir}",
        "hf-siglip": str(tiny_siglip_dir),
    }


@pytest.fixture(scope="session")
def encoders(model_names: dict[str, str], settings: EmbedSettings) -> dict[str, Encoder]:
    """Loaded encoders, one per backend kind (loaded once; encoders hold no per-call state)."""
    built = {kind: build_encoder(settings, name) for kind, name in model_names.items()}
    for encoder in built.values():
        encoder.load()
    return built


@pytest.fixture(params=BACKENDS)
def encoder(request: pytest.FixtureRequest, encoders: dict[str, Encoder]) -> Encoder:
    """Each loaded tiny encoder in turn."""
    return encoders[request.param]
