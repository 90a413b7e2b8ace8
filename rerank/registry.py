"""Build the configured re-ranker: ``none``, ``transformers`` or ``openai`` (VITRINE_RERANK__BACKEND)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

from common.settings import RerankSettings
from rerank.cache import CachedReranker, ScoreCache
from rerank.describe import Describer
from rerank.protocol import Reranker

Factory = Callable[[RerankSettings], Reranker]

# backend -> "module:function"; modules import lazily, so torch or openai load only for the backend in use.
_REGISTRY: Mapping[str, str] = MappingProxyType({
    "transformers": "rerank.hf_backend:build",
    "openai": "rerank.openai_backend:build",
})


def known_backends() -> list[str]:
    """The backend names `build_reranker` understands, ``none`` included."""
    return sorted([*_REGISTRY, "none"])


def _build(settings: RerankSettings) -> Reranker | None:
    """The backend ``settings.backend`` names, built from the settings (None for ``none``).

    Raises:
        ValueError: an unknown backend name.
    """
    name = settings.backend
    if name == "none":
        return None
    if name not in _REGISTRY:
        raise ValueError(f"unknown re-ranker backend {name!r}; known: {known_backends()}")
    module_name, _, attr = _REGISTRY[name].partition(":")
    factory: Factory = getattr(importlib.import_module(module_name), attr)
    return factory(settings)


def build_describer(settings: RerankSettings) -> Describer | None:
    """The configured backend as a product `Describer` (``vitrine enrich``), not loaded yet; ``None`` when the
    backend is ``none``. It is a model or client of its own (no score cache), configured like `build_reranker`'s.

    Raises:
        ValueError: an unknown backend name.
        common.errors.ConfigError: a backend's settings cannot work (no model name, ...).
    """
    backend = _build(settings)
    if backend is None:
        return None
    if not isinstance(backend, Describer):
        raise ValueError(f"the {settings.backend!r} backend ({type(backend).__name__}) cannot describe products")
    return backend


def build_reranker(settings: RerankSettings, *, cache: bool = True) -> Reranker | None:
    """The re-ranker ``settings`` describe, not loaded yet; ``None`` when the backend is ``none``.

    Args:
        settings: the ``rerank`` settings group.
        cache: wrap it in a `CachedReranker` holding ``settings.cache_size`` scores (when that is above 0).

    Raises:
        ValueError: an unknown backend name.
        common.errors.ConfigError: a backend's settings cannot work (no model name, ...).
    """
    reranker = _build(settings)
    if reranker is None:
        return None
    if cache and settings.cache_size > 0:
        return CachedReranker(reranker, ScoreCache(settings.cache_size))
    return reranker
