"""`Variants`: what the API and the command line call to make product variants.

``make`` checks the limits, picks the backend (built once per name, then shared), looks in the cache of
generated images (`generate.cache`), and otherwise writes the prompt (`generate.prompts`), waits for one of
``max_concurrency`` generation slots and runs the generator within the time limit, then stores the images.

- Limits: the instruction's length (``max_instruction_chars``), ``n`` (``max_n``), ``strength`` (0-1), the seed
  (0 to 2**32 - 1); a breach is `InvalidInput` naming the value and the limit. Source images are scaled down so
  that their long side is at most ``size`` (and flattened onto white when transparent) before a generator sees
  them.
- Queue: at most ``max_queued`` requests wait for a slot; past that (``max_concurrency`` running and
  ``max_queued`` waiting) a request is refused at once with `Overloaded`, before any work, naming both settings.
- Time: the ``time_limit_s`` clock starts once the generator is loaded (loading a model the first time is not
  counted); writing the prompt, waiting in the queue and generating count. Past it the caller gets
  `GenerationFailed`; a generator still running keeps its slot until it ends, so the concurrency bound holds.
- Cache: the key covers the source image's digest, the instruction, n, seed, strength, size, steps, guidance,
  the backend and model, the configured prompt method and the template prompt (so the product's fields count).
  A request without a seed is keyed with "any seed": repeating it returns the images made before (with their
  seed); pass a seed for another variant. ``cache=false`` stores every result under a fresh key.
"""

from __future__ import annotations

import contextvars
import logging
import math
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from common.errors import BackendNotInstalled, ConfigError, GenerationFailed, InvalidInput, Overloaded, VitrineError
from common.images import pixel_digest, to_rgb
from common.metrics import GENERATE_FAILURES, GENERATE_SECONDS, cache_lookup
from common.settings import Settings
from generate.cache import GeneratedStore, key_for
from generate.prompts import LLMPromptRewriter, build_rewriter, template_prompt
from generate.protocol import GenerationRequest, Generator
from generate.registry import build_generator, known_backends

logger = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class VariantResult:
    """The answer to one `Variants.make`.

    Attributes:
        images: names under the store; the API serves them as ``/generated/{name}``.
        prompt: the prompt the model got.
        prompt_method: ``template`` or ``llm``.
        instruction: the instruction as taken (stripped).
        seed: the seed used (drawn at random when none was given).
        backend: the generator's name (backend and model).
        took_ms: the time this call took, milliseconds.
        cached: whether the images were made by an earlier request.
    """

    images: list[str]
    prompt: str
    prompt_method: str
    instruction: str
    seed: int
    backend: str
    took_ms: float
    cached: bool


def fit_image(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` as RGB (transparent parts on white), scaled down so that its long side is at most
    ``long_side``."""
    image = to_rgb(image)
    if max(image.size) > long_side:
        image = image.copy()
        image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return image


class Variants:
    """Product variants: generators by backend name, the prompt rewriter, the store of generated images.

    Args:
        settings: all settings (``settings.generate`` and ``settings.generated_dir`` are used).
        generators: backend name -> a ready generator to use instead of building one (tests, embedding apps).
    """

    def __init__(self, settings: Settings, *, generators: Mapping[str, Generator] | None = None) -> None:
        self._settings = settings
        self._config = settings.generate
        self._injected = {name.lower(): generator for name, generator in (generators or {}).items()}
        self._built: dict[str, Generator] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._config.max_concurrency)
        self._admitted = 0  # jobs holding or waiting for a slot (guarded by _lock)
        self._rewriter: LLMPromptRewriter | None = build_rewriter(self._config)
        self.store = GeneratedStore(settings.generated_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> Variants:
        """The service configured by ``settings`` (generators are built at their first use)."""
        return cls(settings)

    def generator(self, backend: str | None = None) -> Generator:
        """The generator of ``backend`` (default: the configured one), built once and shared; not loaded.

        Raises:
            BackendNotInstalled, InvalidInput: as `generate.registry.build_generator`.
        """
        name = (backend or self._config.backend).strip().lower()
        if name in self._injected:
            return self._injected[name]
        with self._lock:
            if name not in self._built:
                self._built[name] = build_generator(self._config, name)
            return self._built[name]

    def backends(self) -> dict[str, str | None]:
        """Each known backend -> ``None`` when it can be used, else why not (what to install or set)."""
        status: dict[str, str | None] = {}
        for name in sorted({*known_backends(), *self._injected}):
            try:
                self.generator(name)
            except (BackendNotInstalled, ConfigError, InvalidInput) as e:
                status[name] = str(e)
            else:
                status[name] = None
        return status

    def describe(self) -> dict[str, Any]:
        """The default backend, the generators built so far, the folder and the limits (JSON-ready)."""
        with self._lock:
            built = {name: generator.describe() for name, generator in {**self._built, **self._injected}.items()}
        return {"backend": self._config.backend, "generators": built, "dir": str(self.store.root),
                "cache": self._config.cache, "rewrite": self._config.rewrite,
                "max_concurrency": self._config.max_concurrency, "max_queued": self._config.max_queued,
                "time_limit_s": self._config.time_limit_s,
                "max_n": self._config.max_n, "max_instruction_chars": self._config.max_instruction_chars}

    def path(self, name: str) -> Path:
        """The file of a generated image (`generate.cache.GeneratedStore.path`: `InvalidInput`, `NotFound`)."""
        return self.store.path(name)

    def close(self) -> None:
        """Let the built generators go (those with a ``close`` method are closed)."""
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for generator in built:
            close = getattr(generator, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    logger.exception("closing generator %s failed", generator.name)

    def _check(self, instruction: str, n: int, seed: int | None, strength: float) -> str:
        text = " ".join(instruction.split()) if isinstance(instruction, str) else ""
        if not text:
            raise InvalidInput("instruction is empty; say what to change, e.g. 'the same sneaker in red'")
        limit = self._config.max_instruction_chars
        if len(text) > limit:
            raise InvalidInput(f"instruction of {len(text)} characters is over the limit of {limit} "
                               "(VITRINE_GENERATE__MAX_INSTRUCTION_CHARS)")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self._config.max_n:
            raise InvalidInput(f"n {n!r} must be a whole number from 1 to {self._config.max_n} "
                               "(VITRINE_GENERATE__MAX_N)")
        if isinstance(strength, bool) or not isinstance(strength, int | float) or not math.isfinite(strength) \
                or not 0.0 <= strength <= 1.0:
            raise InvalidInput(f"strength {strength!r} must be a number from 0 to 1")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
            raise InvalidInput(f"seed {seed!r} must be a whole number from 0 to {MAX_SEED}")
        return text

    def make(self, *, instruction: str, image: Image.Image | None, source_digest: str | None,
             product: Mapping[str, Any] | None, n: int = 1, seed: int | None = None, strength: float = 0.6,
             backend: str | None = None) -> VariantResult:
        """Make (or find in the cache) ``n`` variants of ``image`` as ``instruction`` asks.

        Args:
            instruction: the wish ("the same sneaker in red").
            image: the product image; ``None`` for text-to-image.
            source_digest: a digest of the source image's bytes (the cache key's part); ``None``: a digest of the
                decoded pixels is used.
            product: the product's fields (title, brand, category, attributes) for the prompt.
            n: how many images.
            seed: the random seed; ``None``: one is drawn (and returned).
            strength: how far the picture may move from the source, 0-1.
            backend: the backend's name; ``None``: ``settings.generate.backend``.

        Raises:
            InvalidInput: a parameter outside its limits, an unknown backend, or a request the backend cannot do.
            BackendNotInstalled: the backend is off, not installed or not configured.
            GenerationFailed: the backend failed or the time limit passed.
        """
        started = time.monotonic()
        text = self._check(instruction, n, seed, strength)
        strength = float(strength)
        generator = self.generator(backend)
        name = (backend or self._config.backend).strip().lower()
        source = fit_image(image, self._config.size) if image is not None else None
        if source is not None and source_digest is None:
            source_digest = pixel_digest(source)
        params: dict[str, Any] = {
            "n": n, "seed": seed, "strength": round(strength, 6), "size": self._config.size,
            "steps": self._config.steps, "guidance": self._config.guidance_scale, "backend": name,
            "prompt_method": self._config.rewrite, "prompt_basis": template_prompt(text, product),
        }
        if not self._config.cache:
            params["nonce"] = uuid.uuid4().hex
        key = key_for(source_digest, text, params, generator.name)
        found = self.store.get(key) if self._config.cache else None
        if self._config.cache:
            cache_lookup("generated", hit=found is not None)
        if found is not None:
            meta = found.meta
            logger.info("variants of %r with %s: cache hit %s", text, generator.name, key[:12])
            return VariantResult(images=found.names, prompt=str(meta.get("prompt", "")),
                                 prompt_method=str(meta.get("prompt_method", "template")), instruction=text,
                                 seed=int(meta.get("seed", seed or 0)), backend=str(meta.get("backend",
                                                                                            generator.name)),
                                 took_ms=(time.monotonic() - started) * 1000.0, cached=True)
        self._admit()
        try:
            generator.load()
            deadline = time.monotonic() + self._config.time_limit_s
            prompt, method = (self._rewriter.rewrite(text, product) if self._rewriter is not None
                              else (template_prompt(text, product), "template"))
            used_seed = seed if seed is not None else secrets.randbelow(MAX_SEED + 1)
            request = GenerationRequest(instruction=text, prompt=prompt, image=source, n=n, seed=used_seed,
                                        strength=strength)
        except BaseException:
            self._leave()
            raise
        try:
            with GENERATE_SECONDS.labels(name).time():
                images = self._run(generator, request, deadline)
        except Exception:
            GENERATE_FAILURES.labels(name).inc()
            raise
        took_ms = (time.monotonic() - started) * 1000.0
        meta = {"prompt": prompt, "prompt_method": method, "instruction": text, "seed": used_seed,
                "backend": generator.name, "took_ms": round(took_ms, 1), "n": n, "strength": strength,
                "source_digest": source_digest, "created": time.time()}
        names = self.store.put(key, images, meta)
        logger.info("variants of %r with %s: %d image(s) in %.0f ms", text, generator.name, n, took_ms)
        return VariantResult(images=names, prompt=prompt, prompt_method=method, instruction=text, seed=used_seed,
                             backend=generator.name, took_ms=took_ms, cached=False)

    def _admit(self) -> None:
        """Count a job in (running or waiting), or refuse it at once when ``max_concurrency`` + ``max_queued``
        are in.

        Raises:
            Overloaded: the queue is full.
        """
        running, queued = self._config.max_concurrency, self._config.max_queued
        with self._lock:
            if self._admitted >= running + queued:
                raise Overloaded(f"{self._admitted} generation job(s) are running or waiting, the most this "
                                 f"service takes: {running} at once (VITRINE_GENERATE__MAX_CONCURRENCY) and "
                                 f"{queued} waiting (VITRINE_GENERATE__MAX_QUEUED); try again later")
            self._admitted += 1

    def _leave(self) -> None:
        """Count a job out (it ended, or gave up waiting)."""
        with self._lock:
            self._admitted -= 1

    def _run(self, generator: Generator, request: GenerationRequest, deadline: float) -> list[Image.Image]:
        """``generator.generate`` in a worker thread, after a slot is free, until the deadline.

        The caller has been admitted (`_admit`); the job leaves when it gives up waiting or when the worker
        thread ends (a job past the time limit keeps its slot and its place until its generator returns).
        """
        limit = self._config.time_limit_s
        queued = time.monotonic()
        if not self._slots.acquire(timeout=max(0.0, deadline - queued)):
            self._leave()
            raise GenerationFailed(f"no generation slot came free within the time limit of {limit:g} s "
                                   f"(VITRINE_GENERATE__TIME_LIMIT_S; {self._config.max_concurrency} job(s) run at "
                                   "once, VITRINE_GENERATE__MAX_CONCURRENCY)")
        future: Future[list[Image.Image]] = Future()

        def work() -> None:
            try:
                future.set_result(generator.generate(request, deadline=deadline))
            except BaseException as e:
                future.set_exception(e)
            finally:
                self._slots.release()
                self._leave()

        try:
            # In a copy of the caller's context, so the generator's log lines carry the request id.
            threading.Thread(target=contextvars.copy_context().run, args=(work,), name=f"generate-{generator.name}",
                             daemon=True).start()
        except BaseException:
            self._slots.release()
            self._leave()
            raise
        try:
            images = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise GenerationFailed(f"{generator.name} ran past the time limit of {limit:g} s "
                                   "(VITRINE_GENERATE__TIME_LIMIT_S)") from None
        except VitrineError:
            raise
        except Exception as e:
            raise GenerationFailed(f"{generator.name} failed: {type(e).__name__}: {e}") from e
        if len(images) != request.n or not all(isinstance(image, Image.Image) for image in images):
            raise GenerationFailed(f"{generator.name} returned {len(images)} image(s) for n={request.n}")
        return [image.convert("RGB") for image in images]
