"""What `Variants` records in `common.metrics`: generation time and failures by backend, cache hits."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from common.errors import GenerationFailed
from common.metrics import REGISTRY
from common.settings import GenerateSettings, Settings
from generate.protocol import GenerationRequest
from generate.recolor import RecolorGenerator
from generate.service import Variants
from tests.unit.generate.photos import shaded_product


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Broken(RecolorGenerator):
    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        raise RuntimeError("CUDA out of memory")


def make(variants: Variants) -> None:
    image, _ = shaded_product(64)
    variants.make(instruction="the same in red", image=image, source_digest="digest-1", product=None, seed=1)


def test_a_job_is_timed_and_its_repeat_is_a_cache_hit(tmp_path: Path) -> None:
    variants = Variants(Settings(home=tmp_path, generate=GenerateSettings(backend="recolor")))
    before = (sample("vitrine_generate_seconds_count", backend="recolor"),
              sample("vitrine_cache_requests_total", cache="generated", result="miss"),
              sample("vitrine_cache_requests_total", cache="generated", result="hit"))
    try:
        make(variants)
        make(variants)
    finally:
        variants.close()
    assert sample("vitrine_generate_seconds_count", backend="recolor") == before[0] + 1
    assert sample("vitrine_cache_requests_total", cache="generated", result="miss") == before[1] + 1
    assert sample("vitrine_cache_requests_total", cache="generated", result="hit") == before[2] + 1


def test_a_failed_job_is_counted_by_backend(tmp_path: Path) -> None:
    variants = Variants(Settings(home=tmp_path, generate=GenerateSettings(backend="recolor")),
                        generators={"recolor": Broken()})
    failures = sample("vitrine_generate_failures_total", backend="recolor")
    try:
        with pytest.raises(GenerationFailed, match="CUDA out of memory"):
            make(variants)
    finally:
        variants.close()
    assert sample("vitrine_generate_failures_total", backend="recolor") == failures + 1
