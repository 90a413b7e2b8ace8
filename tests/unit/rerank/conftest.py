"""Fixtures of the re-ranker tests: a tiny random LLaVA (in memory and saved to a folder) and product images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.tiny_models import offline_hf_hub, one_torch_thread, put_in_hf_cache
from tests.tiny_vlm import save_tiny_llava, tiny_llava


@pytest.fixture(scope="session")
def tiny_llava_parts() -> tuple[Any, Any]:
    """(model, processor) of the tiny random LLaVA, built once per session."""
    return tiny_llava()


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LLaVA saved with save_pretrained; load it by the folder's path."""
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


def product_image(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A plain product photo with a stripe, so that images differ in more than their colour."""
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, size[1] // 3, size[0], size[1] // 2))
    return image


@pytest.fixture
def offline_hub(tmp_path: Path, tiny_llava_dir: Path) -> Iterator[Path]:
    """HF_HUB_OFFLINE=1 against a hand-built hub cache holding the tiny LLaVA as ``acme/tiny-llava``."""
    put_in_hf_cache(tmp_path, "acme/tiny-llava", tiny_llava_dir)
    with offline_hf_hub(tmp_path) as cache:
        yield cache


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread() -> Iterator[None]:
    """Tiny models run on one thread: on a busy 2-core machine, more threads make them much slower."""
    with one_torch_thread():
        yield
