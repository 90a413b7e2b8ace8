"""The diffusers backend on tiny random pipelines saved to folders (SD 1.5-, SDXL- and FLUX-shaped, a Canny
ControlNet, an IP-Adapter): the real loading and pipeline code paths on CPU."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from common.errors import BackendNotInstalled, ConfigError, GenerationFailed, InvalidInput, ModelNotFound
from common.settings import GenerateSettings
from generate.canny import canny_edges
from generate.diffusers_backend import DiffusersGenerator, build
from generate.diffusers_models import IPAdapterSpec, family_of, fit_size, model_class_name, parse_ip_adapter
from generate.protocol import GenerationRequest, Generator
from tests.tiny_diffusers import (
    save_tiny_controlnet,
    save_tiny_flux,
    save_tiny_ip_adapter,
    save_tiny_sd,
    save_tiny_sdxl,
    tiny_sd_pipeline,
)
from tests.tiny_models import one_torch_thread

pytest.importorskip("diffusers")


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread() -> Iterator[None]:
    """Tiny models run on one thread: on a busy 2-core machine, more threads make them much slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of the tiny SD pipeline and ControlNet."""
    root = tmp_path_factory.mktemp("tiny_diffusers")
    return {"sd": save_tiny_sd(root / "sd"), "controlnet": save_tiny_controlnet(root / "controlnet")}


@pytest.fixture
def make(tiny: dict[str, Path]) -> Iterator[Callable[..., DiffusersGenerator]]:
    """``make(**settings)``: a DiffusersGenerator over the tiny SD folder (2 steps, 64 px), closed afterwards."""
    made: list[DiffusersGenerator] = []

    def build_one(max_batch_images: int = 8, **overrides: Any) -> DiffusersGenerator:
        values: dict[str, Any] = {"backend": "diffusers", "model": str(tiny["sd"]), "steps": 2, "size": 64,
                                  "batch_window_ms": 0, "guidance_scale": 5.0}
        generator = DiffusersGenerator(GenerateSettings(**{**values, **overrides}),
                                       max_batch_images=max_batch_images)
        made.append(generator)
        return generator

    yield build_one
    for generator in made:
        generator.close()


def product(color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (96, 48)) -> Image.Image:
    """A product photo: a coloured box on a white background."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(color, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    return image


def request(**changes: Any) -> GenerationRequest:
    values: dict[str, Any] = {"instruction": "in red", "prompt": "a red box", "image": product(), "n": 1,
                              "seed": 0, "strength": 0.6}
    return GenerationRequest(**{**values, **changes})


def pixels(images: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def same_but_rounding(one: list[Image.Image], other: list[Image.Image]) -> bool:
    """Equal up to a step or two of 0-255 (a batched convolution may round differently from a single one)."""
    return bool(np.abs(pixels(one) - pixels(other)).max() <= 2)


def count_denoiser_calls(generator: DiffusersGenerator) -> list[int]:
    """A one-item list counting the UNet's forward passes (shared by every pipeline of the generator)."""
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    generator.pipeline("variant").unet.register_forward_pre_hook(hook)
    return calls


# --- names, sizes, parsing ----------------------------------------------------------------------------------


def test_family_comes_from_model_index(tmp_path: Path, tiny: dict[str, Path]) -> None:
    assert model_class_name(str(tiny["sd"])) == "StableDiffusionPipeline"
    assert family_of("StableDiffusionPipeline") == "sd"
    assert family_of("StableDiffusionXLPipeline") == "sdxl"
    assert family_of("FluxPipeline") == "flux"
    with pytest.raises(ConfigError, match="StableDiffusion3Pipeline"):
        family_of("StableDiffusion3Pipeline")
    with pytest.raises(ModelNotFound, match=r"model_index\.json"):
        model_class_name(str(tmp_path))


def test_ip_adapter_setting_is_parsed() -> None:
    assert parse_ip_adapter("h94/IP-Adapter:models/ip-adapter_sd15.bin") == IPAdapterSpec(
        "h94/IP-Adapter", "models", "ip-adapter_sd15.bin")
    assert parse_ip_adapter("/data/ip:sdxl_models/a/b.safetensors") == IPAdapterSpec(
        "/data/ip", "sdxl_models/a", "b.safetensors")
    assert parse_ip_adapter("./ip:adapter.bin") == IPAdapterSpec("./ip", "", "adapter.bin")
    for bad in ("h94/IP-Adapter", ":models/x.bin", "h94/IP-Adapter:models/"):
        with pytest.raises(ConfigError, match="REPO_OR_FOLDER:SUBFOLDER/WEIGHT_FILE"):
            parse_ip_adapter(bad)


def test_sizes_keep_the_aspect_and_round_to_the_multiple() -> None:
    assert fit_size(1000, 500, long_side=768) == (768, 384)
    assert fit_size(500, 1000, long_side=768, multiple=16) == (384, 768)
    assert fit_size(640, 481, long_side=512) == (512, 384)
    assert fit_size(4000, 10, long_side=64) == (64, 8)


def test_canny_finds_the_outline_of_a_box() -> None:
    edges = np.asarray(canny_edges(product(size=(64, 64)), sigma=1.0))
    assert edges.shape == (64, 64, 3)
    on = edges[..., 0] > 0
    assert set(np.unique(edges)) <= {0, 255}
    assert on[14:50, 14:18].any() and on[14:50, 46:50].any()  # the left and right sides of the box
    assert not on[24:40, 24:40].any()  # nothing inside the flat box
    assert not on[:8].any() and not on[:, :8].any()  # nothing in the flat background
    assert not (np.asarray(canny_edges(Image.new("RGB", (32, 32), "gray"))) > 0).any()
    with pytest.raises(InvalidInput, match="low 200"):
        canny_edges(product(), low=200, high=100)


def test_build_needs_diffusers_and_a_model(monkeypatch: pytest.MonkeyPatch, tiny: dict[str, Path]) -> None:
    with pytest.raises(BackendNotInstalled, match="VITRINE_GENERATE__MODEL"):
        build(GenerateSettings(backend="diffusers"))
    generator = build(GenerateSettings(backend="diffusers", model=str(tiny["sd"])))
    assert isinstance(generator, Generator)
    assert generator.name == f"diffusers:{tiny['sd']}"
    assert generator.describe()["loaded"] is False  # construction loads nothing
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(BackendNotInstalled, match=r"pip install 'vitrine\[generate\]'"):
        build(GenerateSettings(backend="diffusers", model=str(tiny["sd"])))


# --- Stable Diffusion 1.5 ---------------------------------------------------------------------------------------


def test_img2img_makes_n_images_of_the_size_reproducibly(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make()
    images = generator.generate(request(n=2, seed=3))
    assert [image.size for image in images] == [(64, 32), (64, 32)]
    assert all(image.mode == "RGB" for image in images)
    again = generator.generate(request(n=2, seed=3))
    assert np.array_equal(pixels(images), pixels(again))
    other = generator.generate(request(n=1, seed=4))
    assert not np.array_equal(pixels(images[:1]), pixels(other))
    assert same_but_rounding(images[1:], other)  # image i uses seed + i
    assert not np.array_equal(pixels(images[:1]), pixels(images[1:]))
    described = generator.describe()
    assert described["family"] == "sd" and described["loaded"] is True
    assert described["requests"] == 3 and described["images"] == 5


def test_an_injected_pipeline_is_used_as_built() -> None:
    generator = DiffusersGenerator(GenerateSettings(backend="diffusers", steps=2, size=64, batch_window_ms=0),
                                   pipeline=tiny_sd_pipeline(seed=1))
    try:
        assert generator.name == "diffusers:StableDiffusionPipeline"
        assert generator.describe()["family"] is None
        images = generator.generate(request(n=2))
        assert [image.size for image in images] == [(64, 32), (64, 32)]
        assert generator.describe()["family"] == "sd"
    finally:
        generator.close()
    with pytest.raises(ConfigError, match="VITRINE_GENERATE__MODEL"):
        DiffusersGenerator(GenerateSettings(backend="diffusers"))


def test_the_scheduler_is_dpm_plus_plus_unless_default(make: Callable[..., DiffusersGenerator]) -> None:
    dpm = make()
    assert type(dpm.pipeline("variant")).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(dpm.pipeline("variant").scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert type(dpm.pipeline("text").scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert dpm.pipeline("variant").safety_checker is None
    default = make(scheduler="default")
    assert type(default.pipeline("variant").scheduler).__name__ == "DDIMScheduler"
    assert not np.array_equal(pixels(dpm.generate(request())), pixels(default.generate(request())))


def test_text_to_image_shares_the_weights(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make()
    text = generator.pipeline("text")
    assert type(text).__name__ == "StableDiffusionPipeline"
    assert text.unet is generator.pipeline("variant").unet  # one set of weights for both
    images = generator.generate(request(image=None, n=2))
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_controlnet_img2img_is_conditioned_on_canny_edges(
    make: Callable[..., DiffusersGenerator], tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import generate.diffusers_backend as backend

    seen: list[tuple[int, int]] = []

    def spy(image: Image.Image, **kwargs: Any) -> Image.Image:
        seen.append(image.size)
        return canny_edges(image, **kwargs)

    monkeypatch.setattr(backend, "canny_edges", spy)
    generator = make(controlnet=str(tiny["controlnet"]))
    assert type(generator.pipeline("variant")).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    images = generator.generate(request(n=2))
    assert [image.size for image in images] == [(64, 32), (64, 32)]
    assert seen == [(64, 32)]  # the edges of the resized source
    plain = make().generate(request(n=2))
    assert not np.array_equal(pixels(images), pixels(plain))
    assert len(generator.generate(request(image=None))) == 1  # text-to-image needs no edges


def test_a_bad_strength_or_an_unusable_reference_is_refused(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make()
    with pytest.raises(InvalidInput, match=r"strength 0.2 with 2 steps"):
        generator.generate(request(strength=0.2))
    with pytest.raises(InvalidInput, match="VITRINE_GENERATE__IP_ADAPTER"):
        generator.generate(request(reference=product((0, 0, 255))))


def test_ip_adapter_uses_the_reference_image(
    make: Callable[..., DiffusersGenerator], tiny: dict[str, Path], tmp_path: Path,
) -> None:
    unet_config = json.loads((tiny["sd"] / "unet" / "config.json").read_text(encoding="utf-8"))
    spec = save_tiny_ip_adapter(tmp_path / "ip", unet_config)
    generator = make(ip_adapter=spec)
    assert generator.pipeline("variant").image_encoder is not None
    blue = generator.generate(request(reference=product((0, 0, 255), (40, 40))))
    green = generator.generate(request(reference=product((0, 255, 0), (40, 40))))
    assert not np.array_equal(pixels(blue), pixels(green))
    assert len(generator.generate(request())) == 1  # a variant without a reference uses its source
    with pytest.raises(InvalidInput, match="needs a reference image"):
        generator.generate(request(image=None))
    missing = make(ip_adapter=f"{tmp_path / 'ip'}:models/nothing.safetensors")
    with pytest.raises(ModelNotFound, match=r"nothing\.safetensors"):
        missing.load()


# --- deadline, queue and batching -------------------------------------------------------------------------------


def test_a_deadline_stops_the_pipeline(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make(steps=200)
    calls = count_denoiser_calls(generator)  # loads the weights: the deadline counts from here
    with pytest.raises(GenerationFailed, match="deadline"):
        generator.generate(request(strength=1.0), deadline=time.monotonic() + 0.3)
    for _ in range(200):
        if generator.describe()["interrupted"]:
            break
        time.sleep(0.05)
    assert generator.describe()["interrupted"] == 1
    assert 0 < calls[0] < 200
    with pytest.raises(GenerationFailed, match="deadline"):
        generator.generate(request(), deadline=time.monotonic() - 1)


def test_compatible_requests_run_as_one_call_with_the_same_images(make: Callable[..., DiffusersGenerator]) -> None:
    batched = make(batch_window_ms=3000, max_batch_images=3)  # full, and run, as soon as both requests are in
    calls = count_denoiser_calls(batched)
    first, second = request(n=2, seed=1, prompt="a red box"), request(n=1, seed=7, prompt="a green box")
    results: dict[str, list[Image.Image]] = {}

    def ask(name: str, req: GenerationRequest) -> None:
        results[name] = batched.generate(req)

    threads = [threading.Thread(target=ask, args=item) for item in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert batched.describe()["pipeline_calls"] == 1
    assert calls[0] == 1  # 2 steps x strength 0.6 = 1 denoising step, one UNet pass for all three images
    alone = make()
    assert len(results["first"]) == 2 and len(results["second"]) == 1
    for name, req in (("first", first), ("second", second)):
        assert same_but_rounding(results[name], alone.generate(req)), name


def test_incompatible_requests_run_apart(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make(batch_window_ms=300)
    results: list[list[Image.Image]] = []
    threads = [threading.Thread(target=lambda req=req: results.append(generator.generate(req)))
               for req in (request(strength=0.6), request(strength=1.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2
    assert generator.describe()["pipeline_calls"] == 2


def test_workers_share_the_weights_but_not_the_scheduler(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make(max_concurrency=2, cpu_offload=True)  # cpu_offload is ignored on the CPU
    one, two = generator.pipeline("variant", worker=0), generator.pipeline("variant", worker=1)
    assert one.unet is two.unet and one.scheduler is not two.scheduler
    results: list[list[Image.Image]] = []
    threads = [threading.Thread(target=lambda seed=seed: results.append(generator.generate(request(seed=seed))))
               for seed in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 3


# --- SDXL and FLUX ----------------------------------------------------------------------------------------------


def test_sdxl_variants_and_text(make: Callable[..., DiffusersGenerator], tmp_path: Path) -> None:
    generator = make(model=str(save_tiny_sdxl(tmp_path / "sdxl")))
    assert generator.describe()["family"] is None
    assert type(generator.pipeline("variant")).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert type(generator.pipeline("variant").scheduler).__name__ == "DPMSolverMultistepScheduler"
    images = generator.generate(request(n=2))
    assert [image.size for image in images] == [(64, 32), (64, 32)]
    assert generator.generate(request(image=None))[0].size == (64, 64)
    assert generator.describe()["family"] == "sdxl"


def test_flux_schnell_text_and_variants(make: Callable[..., DiffusersGenerator], tmp_path: Path,
                                        tiny: dict[str, Path]) -> None:
    folder = save_tiny_flux(tmp_path / "flux")
    generator = DiffusersGenerator(GenerateSettings(backend="diffusers", model=str(folder), size=64,
                                                    batch_window_ms=0))
    try:
        described = (generator.load(), generator.describe())[1]
        assert described["family"] == "flux" and described["scheduler"] == "flow-matching"
        assert described["steps"] == 4 and described["guidance_scale"] == 0.0  # schnell's defaults
        assert type(generator.pipeline("text")).__name__ == "FluxPipeline"
        assert type(generator.pipeline("variant")).__name__ == "FluxImg2ImgPipeline"
        assert type(generator.pipeline("text").scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        texts = generator.generate(request(image=None, n=2))
        assert [image.size for image in texts] == [(64, 64), (64, 64)]
        variants = generator.generate(request(strength=0.5))
        assert variants[0].size == (64, 32)
        assert np.array_equal(pixels(variants), pixels(generator.generate(request(strength=0.5))))
    finally:
        generator.close()
    with pytest.raises(ConfigError, match=r"ControlNet only with SD 1\.5 and SDXL"):
        make(model=str(folder), controlnet=str(tiny["controlnet"])).load()


def test_compile_wraps_the_shared_unet(make: Callable[..., DiffusersGenerator]) -> None:
    generator = make(compile=True, max_concurrency=2)  # compiled lazily: nothing runs here (no CPU compile)
    unets = {id(generator.pipeline(mode, worker=worker).unet) for mode in ("text", "variant") for worker in (0, 1)}
    assert len(unets) == 1
    assert type(generator.pipeline("variant").unet).__name__ == "OptimizedModule"
