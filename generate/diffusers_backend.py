"""Local diffusion models through diffusers: Stable Diffusion 1.5, SDXL and FLUX.1 (the ``generate`` extra).

Which pipeline: the model's ``model_index.json`` (a hub name or a folder written by ``save_pretrained``) names
its class. ``StableDiffusionPipeline`` (SD 1.x/2.x) and ``StableDiffusionXLPipeline`` (SDXL, SDXL-Turbo) make
variants with their image-to-image pipelines (``StableDiffusionImg2ImgPipeline``,
``StableDiffusionXLImg2ImgPipeline``) or, when ``controlnet`` is set, with the ControlNet image-to-image ones
conditioned on the source's Canny edges (`generate.canny`), so the variant keeps the product's outline.
``FluxPipeline`` (FLUX.1-schnell: 4 steps and no guidance unless steps or guidance_scale are set; FLUX.1-dev)
makes pictures from text and variants with ``FluxImg2ImgPipeline``. One set of weights is loaded; the task
pipelines are made from it with ``from_pipe`` (no copy of the weights).

Details:
    - The scheduler is DPM++ multistep (``DPMSolverMultistepScheduler``) when scheduler is ``dpm++``; FLUX keeps
      its flow-matching Euler scheduler (DPM++ does not apply to a flow-matching model).
    - SD's safety checker is not loaded: the inputs are product photos, and a checker that blanks a false
      positive would hand back a black image instead of an error.
    - Image ``i`` of a request uses ``torch.Generator(device).manual_seed(seed + i)``: the same request on the
      same device and dtype gives the same images, alone or batched with others (batched convolutions may round
      a pixel value or two differently).
    - The source is resized so its long side is ``size``, both sides rounded to a multiple of 8 (16 for FLUX,
      whose latents are packed 2x2); text-to-image makes ``size`` x ``size`` pictures.
    - IP-Adapter (SD 1.5, SDXL): the request's reference image, or the source itself for a variant without one.
    - ``cpu_offload`` applies on CUDA only (ignored, with a log line, on CPU) and implies one worker;
      ``compile`` wraps the UNet (or FLUX transformer) in ``torch.compile``.
    - Requests wait in a `generate.diffusers_queue.JobQueue`: ``max_concurrency`` workers, and compatible
      requests (same mode, size, strength, reference) that arrive within ``batch_window_ms`` run as one call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from common.errors import (
    BackendNotInstalled,
    ConfigError,
    GenerationFailed,
    InvalidInput,
    ModelNotFound,
)
from common.settings import GenerateSettings
from generate.canny import canny_edges
from generate.diffusers_models import (
    DTYPES,
    INSTALL_HINT,
    LOCAL_HINT,
    PIPELINE_CLASSES,
    Family,
    family_of,
    fit_size,
    is_local,
    model_class_name,
    parse_ip_adapter,
    torch_device,
)
from generate.diffusers_queue import Job, JobQueue
from generate.protocol import GenerationRequest, Generator, Mode

logger = logging.getLogger(__name__)


def _image_digest(image: Image.Image) -> str:
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Inputs:
    """One request, prepared for a pipeline call."""

    request: GenerationRequest
    width: int
    height: int
    source: Image.Image | None
    control: Image.Image | None
    reference: Image.Image | None


@dataclass
class _Worker:
    """One worker's pipelines: they share every model with the other workers', but not the scheduler."""

    text: Any
    variant: Any
    offloaded: Any = None


@dataclass(frozen=True)
class _Loaded:
    family: Family
    device: torch.device
    workers: list[_Worker]
    steps: int
    guidance: float
    multiple: int
    ip_adapter: bool
    controlnet: bool


class DiffusersGenerator:
    """A diffusers pipeline behind the `Generator` protocol.

    Construction stores the settings; ``load()`` (or the first ``generate``) loads the weights and starts the
    worker threads.

    Args:
        settings: the ``generate`` settings (model, controlnet, ip_adapter, scheduler, steps, device, ...).
        pipeline: an already-built ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline`` or ``FluxPipeline``
            (tests hand in a tiny one); settings.model is then only a name.
        controlnet: an already-built ``ControlNetModel`` used instead of loading settings.controlnet.
        max_batch_images: most images one batched pipeline call makes.

    Raises:
        ConfigError: neither a model nor a pipeline, or a malformed ip_adapter.
    """

    def __init__(self, settings: GenerateSettings, *, pipeline: Any = None, controlnet: Any = None,
                 max_batch_images: int = 8) -> None:
        if pipeline is None and not settings.model:
            raise ConfigError("the diffusers backend needs a model: set VITRINE_GENERATE__MODEL to a hub name or "
                              "folder (SD 1.5, SDXL or FLUX.1-schnell)")
        self._settings = settings
        self._model = settings.model or type(pipeline).__name__
        self._ip_adapter = parse_ip_adapter(settings.ip_adapter) if settings.ip_adapter else None
        self._pipeline = pipeline
        self._controlnet = controlnet
        self._lock = threading.Lock()
        self._state: _Loaded | None = None
        self._stats = {"pipeline_calls": 0, "requests": 0, "images": 0, "interrupted": 0}
        self._stats_lock = threading.Lock()
        offload = settings.cpu_offload and torch.device(settings.device).type == "cuda"
        self._workers = 1 if offload else settings.max_concurrency  # offload hooks move shared models around
        self._queue = JobQueue(self._run_batch, workers=self._workers,
                               batch_window_s=settings.batch_window_ms / 1000, max_batch_images=max_batch_images,
                               name="vitrine-diffusers")

    @property
    def name(self) -> str:
        """``diffusers:MODEL``."""
        return f"diffusers:{self._model}"

    def load(self) -> None:
        """Load the weights, build the task pipelines and start the workers (idempotent, thread-safe).

        Raises:
            BackendNotInstalled: diffusers is not installed.
            ModelNotFound: the model, ControlNet or IP-Adapter files are neither local nor downloadable.
            ConfigError: a model class or combination this backend does not drive.
            BackendUnavailable: the configured device does not exist here.
        """
        if self._state is not None:
            return
        with self._lock:
            if self._state is None:
                self._state = self._load()
                self._queue.start()

    def pipeline(self, mode: Mode, *, worker: int = 0) -> Any:
        """The diffusers pipeline a worker runs for ``mode`` (loading first): e.g. a
        ``StableDiffusionControlNetImg2ImgPipeline`` for ``variant`` when a ControlNet is set."""
        self.load()
        assert self._state is not None
        pipes = self._state.workers[worker]
        return pipes.variant if mode == "variant" else pipes.text

    def close(self) -> None:
        """Stop the worker threads; requests still queued fail."""
        self._queue.close()

    def describe(self) -> dict[str, Any]:
        """Backend, model, family, device, dtype, steps, queue and counters."""
        s, state = self._settings, self._state
        with self._stats_lock:
            stats = dict(self._stats)
        return {
            "backend": "diffusers", "model": self._model, "loaded": state is not None,
            "family": state.family if state else None, "device": s.device, "dtype": s.dtype,
            "scheduler": "flow-matching" if state and state.family == "flux" else s.scheduler,
            "steps": state.steps if state else s.steps, "guidance_scale": state.guidance if state else s.guidance_scale,
            "size": s.size, "controlnet": s.controlnet, "ip_adapter": s.ip_adapter, "cpu_offload": s.cpu_offload,
            "compile": s.compile, "max_concurrency": s.max_concurrency, "batch_window_ms": s.batch_window_ms,
            "queued": self._queue.queued, **stats,
        }

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        """``request.n`` images, made by a worker (possibly in one call with other compatible requests).

        Raises:
            InvalidInput: too small a strength for the steps, or a reference image without an IP-Adapter.
            GenerationFailed: the pipeline failed or the deadline passed.
        """
        self.load()
        state = self._state
        assert state is not None
        inputs = self._prepare(request, state)
        reference = _image_digest(inputs.reference) if inputs.reference is not None else None
        strength = request.strength if inputs.source is not None else None
        key: Hashable = (request.mode, inputs.width, inputs.height, strength,
                         request.negative_prompt is None, reference)
        job = Job(payload=inputs, key=key, size=request.n, deadline=deadline)
        self._queue.submit(job)
        return job.wait()

    # --- preparing a request ----------------------------------------------------------------------------------

    def _prepare(self, request: GenerationRequest, state: _Loaded) -> _Inputs:
        size = self._settings.size
        if request.image is None:
            width, height = fit_size(size, size, long_side=size, multiple=state.multiple)
            source = control = None
        else:
            if int(state.steps * request.strength) < 1:
                raise InvalidInput(f"strength {request.strength} with {state.steps} steps leaves no denoising step; "
                                   f"use a strength of at least {1 / state.steps:.2f} or more steps")
            width, height = fit_size(*request.image.size, long_side=size, multiple=state.multiple)
            source = request.image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
            control = canny_edges(source) if state.controlnet else None
        reference = request.reference
        if reference is not None and not state.ip_adapter:
            raise InvalidInput("a reference image needs an IP-Adapter: set VITRINE_GENERATE__IP_ADAPTER (e.g. "
                               "h94/IP-Adapter:models/ip-adapter_sd15.bin), or send no reference")
        if state.ip_adapter and reference is None:
            if source is None:
                raise InvalidInput("with an IP-Adapter loaded, a text-to-image request needs a reference image")
            reference = source
        return _Inputs(request=request, width=width, height=height, source=source, control=control,
                       reference=reference.convert("RGB") if reference is not None else None)

    # --- loading ----------------------------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        try:
            import diffusers
        except ImportError as e:
            raise BackendNotInstalled(f"the diffusers backend needs the diffusers package: {INSTALL_HINT}") from e
        s = self._settings
        dtype = DTYPES[s.dtype]
        device = torch_device(s.device)
        offload = s.cpu_offload and device.type == "cuda"
        if s.cpu_offload and not offload:
            logger.info("cpu_offload is ignored on %s (it moves models between a GPU and the CPU)", device)
        base = self._pipeline if self._pipeline is not None else self._load_base(dtype)
        family = family_of(type(base).__name__)
        base_name, variant_name, controlnet_name = PIPELINE_CLASSES[family]
        controlnet = self._load_controlnet(family, dtype) if (s.controlnet or self._controlnet is not None) else None
        if self._ip_adapter is not None:
            self._load_ip_adapter(base, family)
        if not offload:
            base.to(device)
            if controlnet is not None:
                controlnet.to(device)
        text_cls = getattr(diffusers, base_name)
        variant_cls = getattr(diffusers, controlnet_name if controlnet is not None and controlnet_name else
                              variant_name)
        extra = {"controlnet": controlnet} if controlnet is not None else {}
        workers = []
        for _ in range(self._workers):
            scheduler = self._scheduler(base, family)
            text = text_cls.from_pipe(base, scheduler=scheduler, dtype=dtype)
            variant = variant_cls.from_pipe(base, scheduler=scheduler, dtype=dtype, **extra)
            for pipe in (text, variant):
                pipe.set_progress_bar_config(disable=True)
            workers.append(_Worker(text=text, variant=variant))
        if s.compile:
            self._compile(workers, family)
        steps, guidance = self._defaults(base, family)
        multiple = max(8, int(getattr(base, "vae_scale_factor", 8)) * (2 if family == "flux" else 1))
        logger.info("diffusers %s (%s) loaded on %s, %s, %d steps, %d worker(s)", self._model, family, device,
                    s.dtype, steps, len(workers))
        return _Loaded(family=family, device=device, workers=workers, steps=steps, guidance=guidance,
                       multiple=multiple, ip_adapter=self._ip_adapter is not None, controlnet=controlnet is not None)

    def _load_base(self, dtype: torch.dtype) -> Any:
        import diffusers

        model = str(self._settings.model)
        family = family_of(model_class_name(model))
        cls = getattr(diffusers, PIPELINE_CLASSES[family][0])
        kwargs: dict[str, Any] = {"dtype": dtype}
        if family == "sd":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        source = str(Path(model).expanduser()) if is_local(model) else model
        try:
            return cls.from_pretrained(source, **kwargs)
        except OSError as e:
            raise ModelNotFound(f"diffusers model {model!r}: its files were not found ({e}); {LOCAL_HINT}") from e

    def _load_controlnet(self, family: Family, dtype: torch.dtype) -> Any:
        if PIPELINE_CLASSES[family][2] is None:
            raise ConfigError(f"controlnet {self._settings.controlnet!r} is set but this backend drives a Canny "
                              "ControlNet only with SD 1.5 and SDXL models; unset VITRINE_GENERATE__CONTROLNET "
                              "for FLUX")
        if self._controlnet is not None:
            return self._controlnet
        from diffusers import ControlNetModel

        name = str(self._settings.controlnet)
        try:
            return ControlNetModel.from_pretrained(  # type: ignore[no-untyped-call]
                str(Path(name).expanduser()) if is_local(name) else name, dtype=dtype)
        except OSError as e:
            raise ModelNotFound(f"controlnet {name!r}: its files were not found ({e}); {LOCAL_HINT}") from e

    def _load_ip_adapter(self, base: Any, family: Family) -> None:
        spec = self._ip_adapter
        assert spec is not None
        if family == "flux":
            raise ConfigError(f"ip_adapter {self._settings.ip_adapter!r} is set but this backend loads IP-Adapters "
                              "for SD 1.5 and SDXL only; unset VITRINE_GENERATE__IP_ADAPTER for FLUX")
        repo = str(Path(spec.repo).expanduser()) if is_local(spec.repo) else spec.repo
        try:
            base.load_ip_adapter(repo, subfolder=spec.subfolder, weight_name=spec.weight_name)
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"ip_adapter {self._settings.ip_adapter!r} could not be loaded ({e}); expected "
                                f"REPO_OR_FOLDER:SUBFOLDER/WEIGHT_FILE with an image_encoder folder beside the "
                                f"weights; {LOCAL_HINT}") from e

    def _scheduler(self, base: Any, family: Family) -> Any:
        """A fresh scheduler for one worker (schedulers keep per-call state, so workers may not share one)."""
        if family != "flux" and self._settings.scheduler == "dpm++":
            from diffusers import DPMSolverMultistepScheduler

            return DPMSolverMultistepScheduler.from_config(base.scheduler.config)  # type: ignore[no-untyped-call]
        return type(base.scheduler).from_config(base.scheduler.config)

    def _defaults(self, base: Any, family: Family) -> tuple[int, float]:
        """Steps and guidance: the settings', except the FLUX defaults where they were left unset."""
        s = self._settings
        if family != "flux":
            return s.steps, s.guidance_scale
        distilled = not getattr(base.transformer.config, "guidance_embeds", False)  # schnell: no guidance input
        steps = s.steps if "steps" in s.model_fields_set else (4 if distilled else 28)
        guidance = s.guidance_scale if "guidance_scale" in s.model_fields_set else (0.0 if distilled else 3.5)
        return steps, guidance

    def _compile(self, workers: list[_Worker], family: Family) -> None:
        attribute = "transformer" if family == "flux" else "unet"
        compiled = torch.compile(getattr(workers[0].text, attribute))
        for worker in workers:
            for pipe in (worker.text, worker.variant):
                setattr(pipe, attribute, compiled)

    # --- running a batch (on a worker thread) -----------------------------------------------------------------

    def _run_batch(self, index: int, batch: list[Job]) -> None:
        state = self._state
        assert state is not None
        worker = state.workers[index]
        first: _Inputs = batch[0].payload
        pipe = worker.text if first.source is None else worker.variant
        if self._settings.cpu_offload and state.device.type == "cuda" and worker.offloaded is not pipe:
            pipe.enable_model_cpu_offload(device=state.device)  # hooks follow the pipeline in use
            worker.offloaded = pipe
        kwargs = self._call_arguments(batch, state)
        interrupted = False

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal interrupted
            if all(job.expired() for job in batch):
                pipeline._interrupt = True
                interrupted = True
            return tensors

        started = time.monotonic()
        try:
            images = pipe(**kwargs, callback_on_step_end=on_step_end).images
        except torch.cuda.OutOfMemoryError as e:
            raise GenerationFailed(f"diffusers ran out of GPU memory for {len(kwargs['prompt'])} image(s) of "
                                   f"{first.width}x{first.height}; lower size, n or max_concurrency, or set "
                                   "VITRINE_GENERATE__CPU_OFFLOAD=true") from e
        with self._stats_lock:
            self._stats["pipeline_calls"] += 1
            self._stats["interrupted"] += interrupted
            if not interrupted:
                self._stats["requests"] += len(batch)
                self._stats["images"] += len(images)
        if interrupted:
            for job in batch:
                job.fail(GenerationFailed("diffusers generation was stopped at its deadline"))
            return
        logger.info("diffusers made %d image(s) for %d request(s) in %.2f s", len(images), len(batch),
                    time.monotonic() - started)
        offset = 0
        for job in batch:
            job.resolve([image.convert("RGB") for image in images[offset:offset + job.size]])
            offset += job.size

    def _call_arguments(self, batch: list[Job], state: _Loaded) -> dict[str, Any]:
        """The pipeline's keyword arguments for ``batch``: one list entry per image."""
        first: _Inputs = batch[0].payload
        prompts: list[str] = []
        negatives: list[str] = []
        sources: list[Image.Image] = []
        controls: list[Image.Image] = []
        generators: list[torch.Generator] = []
        for job in batch:
            inputs: _Inputs = job.payload
            for i in range(job.size):
                prompts.append(inputs.request.prompt)
                negatives.append(inputs.request.negative_prompt or "")
                generators.append(torch.Generator(state.device).manual_seed(inputs.request.seed + i))
                if inputs.source is not None:
                    sources.append(inputs.source)
                if inputs.control is not None:
                    controls.append(inputs.control)
        kwargs: dict[str, Any] = {
            "prompt": prompts, "num_inference_steps": state.steps, "guidance_scale": state.guidance,
            "generator": generators, "width": first.width, "height": first.height, "output_type": "pil",
        }
        if first.request.negative_prompt is not None and state.family != "flux":
            kwargs["negative_prompt"] = negatives
        if state.family == "flux":
            kwargs["max_sequence_length"] = 256
        if first.source is not None:
            kwargs.update(image=sources, strength=first.request.strength)
        if controls:
            kwargs["control_image"] = controls
        if first.reference is not None:
            kwargs["ip_adapter_image"] = first.reference
        return kwargs


def build(settings: GenerateSettings) -> Generator:
    """The diffusers backend of ``settings`` (weights load at ``load()`` or the first request).

    Raises:
        BackendNotInstalled: diffusers is not installed, or no model is set.
    """
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        raise BackendNotInstalled(f"the diffusers backend needs the 'generate' extra: {INSTALL_HINT}") from e
    if not settings.model:
        raise BackendNotInstalled("the diffusers backend needs a model: set VITRINE_GENERATE__MODEL to a hub name "
                                  "or folder (e.g. stabilityai/sdxl-turbo, black-forest-labs/FLUX.1-schnell)")
    return DiffusersGenerator(settings)
