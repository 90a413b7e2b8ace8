"""Build a generation backend by name: ``recolor``, ``openai`` or ``diffusers`` (VITRINE_GENERATE__BACKEND).

Backends import lazily, so torch and diffusers load only when the diffusers backend is built. A backend that is
not installed or not configured raises `BackendNotInstalled` (HTTP 503) saying what to install or set.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from types import MappingProxyType

from common.errors import BackendNotInstalled, InvalidInput
from common.settings import GenerateSettings
from generate.protocol import Generator

logger = logging.getLogger(__name__)

Factory = Callable[[GenerateSettings], Generator]

# backend -> "module:function"
_REGISTRY: Mapping[str, str] = MappingProxyType({
    "recolor": "generate.recolor:build",
    "openai": "generate.openai_images:build",
    "diffusers": "generate.diffusers_backend:build",
})

INSTALL_HINT = "pip install 'vitrine[generate]' (diffusers, torch, accelerate)"


def known_backends() -> list[str]:
    """The backend names `build_generator` can build (``none``, which switches generation off, aside)."""
    return sorted(_REGISTRY)


def _check_configured(settings: GenerateSettings, name: str) -> None:
    if name == "diffusers" and not settings.model:
        raise BackendNotInstalled("the diffusers backend needs a model: set VITRINE_GENERATE__MODEL to a hub name "
                                  "or a local folder (Stable Diffusion 1.5, SDXL or FLUX.1-schnell), e.g. "
                                  "stabilityai/sdxl-turbo")
    if name == "openai" and not settings.base_url and not os.environ.get(settings.api_key_env, "").strip():
        raise BackendNotInstalled(f"the openai backend needs an API key: set {settings.api_key_env} "
                                  "(VITRINE_GENERATE__API_KEY_ENV names another variable), or set "
                                  "VITRINE_GENERATE__BASE_URL to a compatible server that needs none")


def build_generator(settings: GenerateSettings, backend: str | None = None) -> Generator:
    """The generator ``backend`` names (default: ``settings.backend``), built from the settings, not loaded yet.

    Raises:
        BackendNotInstalled: ``none`` (generation is off), a backend whose packages are missing, or one that is
            not configured (no model, no API key); the message says what to install or set.
        InvalidInput: an unknown backend name.
    """
    name = (backend or settings.backend).strip().lower()
    if name == "none":
        raise BackendNotInstalled("generation is off; set VITRINE_GENERATE__BACKEND to one of "
                                  f"{', '.join(known_backends())}")
    if name not in _REGISTRY:
        raise InvalidInput(f"unknown generation backend {name!r}; known: {', '.join(known_backends())}")
    _check_configured(settings, name)
    module_name, _, attr = _REGISTRY[name].partition(":")
    try:
        factory: Factory = getattr(importlib.import_module(module_name), attr)
        return factory(settings)
    except ImportError as e:  # at import, or a backend that imports its packages when built
        missing = e.name or str(e)
        raise BackendNotInstalled(f"the {name} backend needs packages that are not installed ({missing}): "
                                  f"{INSTALL_HINT}") from e
