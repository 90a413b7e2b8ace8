"""`Variants`: limits, the cache, the concurrency bound, the time limit, and backends that cannot be used; and
the registry behind it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from common.errors import BackendNotInstalled, GenerationFailed, InvalidInput, Overloaded
from common.settings import GenerateSettings, Settings
from generate.protocol import GenerationRequest, Generator
from generate.recolor import RecolorGenerator
from generate.registry import build_generator, known_backends
from generate.service import MAX_SEED, Variants, fit_image
from tests.unit.generate.photos import demo_image, shaded_product

PRODUCT = {"id": "fm-00000", "title": "Western ankle booties", "brand": "Saltmarsh", "category": "Ankle boot"}
KEY_ENV = "VITRINE_TEST_VARIANTS_KEY"


class Counting:
    """The recolor backend, counting calls, tracking how many run at once, and optionally slow."""

    def __init__(self, delay_s: float = 0.0, name: str = "recolor") -> None:
        self.inner = RecolorGenerator()
        self.delay_s = delay_s
        self.calls = 0
        self.loads = 0
        self.running = 0
        self.most_at_once = 0
        self.requests: list[GenerationRequest] = []
        self._name = name
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def load(self) -> None:
        self.loads += 1

    def describe(self) -> dict[str, Any]:
        return {"backend": "counting"}

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.requests.append(request)
        try:
            time.sleep(self.delay_s)
            return self.inner.generate(request, deadline=None)
        finally:
            with self._lock:
                self.running -= 1


def _settings(tmp_path: Path, **generate: Any) -> Settings:
    return Settings(home=tmp_path, generate=GenerateSettings(**generate))


@pytest.fixture
def counting() -> Counting:
    return Counting()


@pytest.fixture
def variants(tmp_path: Path, counting: Counting) -> Iterator[Variants]:
    service = Variants(_settings(tmp_path), generators={"recolor": counting})
    yield service
    service.close()


def _make(variants: Variants, **options: Any) -> Any:
    image, _ = shaded_product(64)
    arguments: dict[str, Any] = {"instruction": "the same in red", "image": image, "source_digest": "digest-1",
                                 "product": PRODUCT, "n": 1, "seed": 42}
    arguments.update(options)
    return variants.make(**arguments)


def test_makes_stores_and_serves(variants: Variants, counting: Counting, tmp_path: Path) -> None:
    result = _make(variants, n=2)
    assert not result.cached
    assert len(result.images) == 2
    assert result.backend == "recolor" and result.seed == 42 and result.instruction == "the same in red"
    assert result.prompt_method == "template"
    assert result.prompt.startswith("Studio product photo of a Western ankle booties by Saltmarsh (Ankle boot)")
    assert result.took_ms > 0
    for name in result.images:
        path = variants.path(name)
        assert path.parent == tmp_path / "generated"
        with Image.open(path) as image:
            assert image.size == (64, 64)
    assert counting.calls == 1 and counting.loads == 1


def test_a_repeated_request_is_a_cache_hit(variants: Variants, counting: Counting) -> None:
    first = _make(variants)
    again = _make(variants)
    assert again.cached and not first.cached
    assert again.images == first.images and again.prompt == first.prompt and again.seed == first.seed
    assert counting.calls == 1
    _make(variants, seed=43)
    _make(variants, source_digest="digest-2")
    _make(variants, strength=0.7)
    _make(variants, instruction="the same in blue")
    _make(variants, product={**PRODUCT, "title": "Chelsea boots"})
    assert counting.calls == 6


def test_without_a_seed_one_is_drawn_and_the_repeat_is_cached(variants: Variants, counting: Counting) -> None:
    first = _make(variants, seed=None)
    assert 0 <= first.seed <= MAX_SEED
    again = _make(variants, seed=None)
    assert again.cached and again.seed == first.seed and counting.calls == 1


def test_cache_off_makes_again(tmp_path: Path, counting: Counting) -> None:
    variants = Variants(_settings(tmp_path, cache=False), generators={"recolor": counting})
    first, second = _make(variants), _make(variants)
    assert not second.cached and counting.calls == 2
    assert first.images != second.images  # earlier images stay where they were


def test_a_source_without_digest_is_keyed_by_its_pixels(variants: Variants, counting: Counting) -> None:
    _make(variants, source_digest=None)
    assert _make(variants, source_digest=None).cached
    assert not _make(variants, source_digest=None, image=demo_image("fm-00003")).cached


@pytest.mark.parametrize(("options", "says"), [
    ({"instruction": "x" * 301}, "instruction of 301 characters is over the limit of 300"),
    ({"instruction": "   "}, "instruction is empty"),
    ({"n": 5}, "n 5 must be a whole number from 1 to 4"),
    ({"n": 0}, "n 0 must be"),
    ({"strength": 1.5}, "strength 1.5 must be a number from 0 to 1"),
    ({"strength": float("nan")}, "strength nan"),
    ({"seed": -1}, "seed -1 must be a whole number from 0 to 4294967295"),
    ({"seed": 2**32}, "seed 4294967296"),
    ({"backend": "dalle"}, "unknown generation backend 'dalle'; known: diffusers, openai, recolor"),
])
def test_limits(variants: Variants, counting: Counting, options: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _make(variants, **options)
    assert says in str(caught.value)
    assert counting.calls == 0


def test_backend_refusals_pass_through(variants: Variants) -> None:
    with pytest.raises(InvalidInput, match="only changes the product's colour"):
        _make(variants, instruction="on a beach")
    with pytest.raises(InvalidInput, match="recolor needs a product image"):
        _make(variants, image=None, source_digest=None)


def test_images_are_fitted_before_the_generator(tmp_path: Path, counting: Counting) -> None:
    variants = Variants(_settings(tmp_path, size=64), generators={"recolor": counting})
    big = Image.new("RGBA", (300, 150), (0, 0, 0, 0))
    big.paste((200, 40, 40, 255), (100, 30, 200, 120))
    _make(variants, image=big)
    [request] = counting.requests
    assert request.image is not None and request.image.size == (64, 32) and request.image.mode == "RGB"
    assert request.image.getpixel((0, 0)) == (255, 255, 255)  # transparent parts on white
    assert fit_image(Image.new("L", (10, 20)), 64).size == (10, 20)


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    slow = Counting(delay_s=0.3)
    variants = Variants(_settings(tmp_path, max_concurrency=2), generators={"recolor": slow})
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            _make(variants, seed=seed)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert slow.calls == 5
    assert slow.most_at_once == 2


def test_time_limit(tmp_path: Path) -> None:
    slow = Counting(delay_s=1.5)
    variants = Variants(_settings(tmp_path, time_limit_s=0.3), generators={"recolor": slow})
    started = time.monotonic()
    with pytest.raises(GenerationFailed, match=r"ran past the time limit of 0.3 s \(VITRINE_GENERATE__TIME_LIMIT_S\)"):
        _make(variants)
    assert time.monotonic() - started < 1.2


def test_waiting_in_the_queue_counts(tmp_path: Path) -> None:
    slow = Counting(delay_s=1.0)
    variants = Variants(_settings(tmp_path, time_limit_s=0.4, max_concurrency=1), generators={"recolor": slow})
    outcome: list[BaseException] = []

    def first_request() -> None:
        try:
            _make(variants, seed=1)
        except GenerationFailed as e:
            outcome.append(e)

    first = threading.Thread(target=first_request)
    first.start()
    time.sleep(0.2)
    with pytest.raises(GenerationFailed, match=r"no generation slot came free within the time limit of 0\.4 s"):
        _make(variants, seed=2)
    first.join()
    assert slow.calls == 1
    assert len(outcome) == 1 and "ran past the time limit" in str(outcome[0])
    deadline = time.monotonic() + 5
    while variants._admitted and time.monotonic() < deadline:  # the late job leaves when its generator returns
        time.sleep(0.02)
    assert variants._admitted == 0


def test_a_full_queue_refuses_at_once(tmp_path: Path) -> None:
    slow = Counting(delay_s=0.8)
    variants = Variants(_settings(tmp_path, max_concurrency=1, max_queued=1), generators={"recolor": slow})
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            _make(variants, seed=seed)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in (1, 2)]  # one runs, one waits
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while slow.running < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(Overloaded, match=r"1 at once \(VITRINE_GENERATE__MAX_CONCURRENCY\) and 1 waiting "
                       r"\(VITRINE_GENERATE__MAX_QUEUED\)") as refused:
        _make(variants, seed=3)
    assert time.monotonic() - started < 0.3 and refused.value.retry_after > 0
    for thread in threads:
        thread.join()
    assert not errors and slow.calls == 2
    _make(variants, seed=4)  # the places are given back
    assert slow.calls == 3 and variants.describe()["max_queued"] == 1


def test_a_generator_error_becomes_generation_failed(tmp_path: Path) -> None:
    class Broken(Counting):
        def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
            raise RuntimeError("CUDA out of memory")

    class Short(Counting):
        def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
            return []

    for generator, says in ((Broken(), "recolor failed: RuntimeError: CUDA out of memory"),
                            (Short(), "returned 0 image")):
        variants = Variants(_settings(tmp_path), generators={"recolor": generator})
        with pytest.raises(GenerationFailed, match=says):
            _make(variants)


def test_backends_say_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    variants = Variants(_settings(tmp_path, api_key_env=KEY_ENV))
    status = variants.backends()
    assert set(status) == {"diffusers", "openai", "recolor"}
    assert status["recolor"] is None
    assert status["openai"] is not None and KEY_ENV in status["openai"]
    assert status["diffusers"] is not None and "VITRINE_GENERATE__MODEL" in status["diffusers"]
    with pytest.raises(BackendNotInstalled, match=KEY_ENV):
        _make(variants, backend="openai")


def test_off_means_not_installed(tmp_path: Path) -> None:
    variants = Variants(_settings(tmp_path, backend="none"))
    with pytest.raises(BackendNotInstalled, match="generation is off; set VITRINE_GENERATE__BACKEND"):
        _make(variants)


def test_generators_are_built_once(tmp_path: Path) -> None:
    variants = Variants.from_settings(_settings(tmp_path))
    assert variants.generator("recolor") is variants.generator() is variants.generator("RECOLOR")
    assert _make(variants).backend == "recolor"
    assert "recolor" in variants.describe()["generators"]


# --- the registry ---------------------------------------------------------------------------------------------------


def test_registry_builds_the_offline_backend() -> None:
    assert known_backends() == ["diffusers", "openai", "recolor"]
    generator = build_generator(GenerateSettings())
    assert isinstance(generator, Generator) and generator.name == "recolor"


def test_registry_builds_openai_with_a_key_or_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-x")
    assert build_generator(GenerateSettings(api_key_env=KEY_ENV), "openai").name == "openai:gpt-image-1"
    monkeypatch.delenv(KEY_ENV)
    settings = GenerateSettings(api_key_env=KEY_ENV, base_url="http://127.0.0.1:9/v1", model="my-images")
    assert build_generator(settings, "openai").name == "openai:my-images"
    with pytest.raises(BackendNotInstalled, match=f"set {KEY_ENV}"):
        build_generator(GenerateSettings(api_key_env=KEY_ENV), "openai")


def test_registry_diffusers_needs_its_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("torch", "diffusers"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "generate.diffusers_backend", raising=False)
    with pytest.raises(BackendNotInstalled, match=r"pip install 'vitrine\[generate\]'"):
        build_generator(GenerateSettings(model="some/model"), "diffusers")
