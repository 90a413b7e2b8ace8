"""Build an encoder from its name.

Names: ``open_clip:ARCH/TAG`` (or ``/PATH`` or ``/random``), ``open_clip:hf-hub:ORG/NAME``,
``open_clip:local-dir:DIR``, ``hf:ORG/NAME`` or ``hf:DIR`` (transformers CLIP or SigLIP), ``demo``, or
a bare local directory (its files say which backend it needs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.protocol import Encoder

Factory = Callable[[str, EmbedSettings], Encoder]

# prefix -> "module:function"; modules import lazily so that a missing optional backend only fails when used.
_REGISTRY: Mapping[str, str] = MappingProxyType({
    "open_clip": "embed.open_clip_backend:build",
    "hf": "embed.hf_backend:build",
    "demo": "embed.demo:build",
})


def known_backends() -> list[str]:
    """The name prefixes the registry understands."""
    return sorted(_REGISTRY)


def _factory(prefix: str) -> Factory:
    module_name, _, attr = _REGISTRY[prefix].partition(":")
    factory: Factory = getattr(importlib.import_module(module_name), attr)
    return factory


def _from_directory(path: Path) -> tuple[str, str]:
    """(backend, spec) of a local model folder, from the files in it."""
    if (path / "open_clip_config.json").is_file():
        return "open_clip", f"local-dir:{path}"
    if (path / "vitrine_encoder.json").is_file():
        return "demo", str(path)
    if (path / "config.json").is_file():
        return "hf", str(path)
    raise ConfigError(
        f"model folder {str(path)!r} holds neither open_clip_config.json (open_clip), config.json "
        "(transformers) nor vitrine_encoder.json (vitrine train); expected one of them"
    )


def parse_model_name(name: str) -> tuple[str, str]:
    """Split an encoder name into (backend, spec).

    Raises:
        ConfigError: the name matches no backend.
        ModelNotFound: the name is a path (starts with ``/``, ``~`` or ``.``) to no existing folder.
    """
    name = name.strip()
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _REGISTRY:
        return prefix, rest
    if name in _REGISTRY:
        return name, ""
    path = Path(name).expanduser()
    if path.is_dir():
        return _from_directory(path.resolve())
    if path.is_file() and path.name == "vitrine_encoder.json":
        return "demo", str(path.parent.resolve())
    if name.startswith(("/", "~", ".")):
        raise ModelNotFound(f"encoder folder {str(path.resolve())!r} (from {name!r}) was not found; expected "
                            "a folder holding open_clip_config.json, config.json or vitrine_encoder.json, or "
                            "a name such as 'hf:ORG/NAME' or 'open_clip:ARCH/TAG'")
    did_you_mean = ""
    if not sep and name.count("/") == 1:
        did_you_mean = f"; did you mean 'hf:{name}' or 'open_clip:hf-hub:{name}'?"
    raise ConfigError(
        f"unknown encoder {name!r}{did_you_mean}; known: {known_backends()} (as 'open_clip:ARCH/TAG', "
        "'open_clip:hf-hub:ORG/NAME', 'hf:ORG/NAME', 'hf:/local/dir', 'demo') or an existing model folder"
    )


def build_encoder(settings: EmbedSettings, model: str | None = None) -> Encoder:
    """Build (without loading) the encoder named by ``model``, or by ``settings.model``.

    Raises:
        ConfigError: the name matches no backend, or its spec is malformed.
        ModelNotFound: the name is a path to no existing folder.
    """
    backend, spec = parse_model_name(model or settings.model)
    return _factory(backend)(spec, settings)
