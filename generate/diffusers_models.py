"""What a diffusers model is and where its parts are: the pipeline family from ``model_index.json``, the
task pipeline classes of each family, the IP-Adapter setting, output sizes and the torch device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from common.errors import BackendUnavailable, ConfigError, ModelNotFound

Family = Literal["sd", "sdxl", "flux"]

INSTALL_HINT = "pip install 'vitrine[generate]'"
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd", "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl", "FluxPipeline": "flux", "FluxImg2ImgPipeline": "flux",
}
# family -> (base and text-to-image, image-to-image, ControlNet image-to-image) pipeline classes of diffusers
PIPELINE_CLASSES: dict[Family, tuple[str, str, str | None]] = {
    "sd": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionControlNetImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
             "StableDiffusionXLControlNetImg2ImgPipeline"),
    "flux": ("FluxPipeline", "FluxImg2ImgPipeline", None),
}
LOCAL_HINT = ("nothing is downloaded when HF_HUB_OFFLINE=1; point VITRINE_GENERATE__MODEL at a local copy (as "
               "`hf download ORG/NAME --local-dir DIR` or save_pretrained write it)")


def family_of(class_name: str) -> Family:
    """The model family of a pipeline class name from ``model_index.json``.

    Raises:
        ConfigError: a class this backend does not drive.
    """
    if class_name not in _FAMILIES:
        raise ConfigError(f"diffusers pipeline class {class_name!r} is not supported; expected one of "
                          f"{sorted(_FAMILIES)} (SD 1.5 / 2.x, SDXL, FLUX.1)")
    return _FAMILIES[class_name]


def is_local(name: str) -> bool:
    """Whether ``name`` is a local path rather than a hub name (``ORG/NAME``)."""
    return name.startswith(("/", "~", ".", "\\")) or Path(name).expanduser().is_dir() or name.count("/") > 1


def model_class_name(model: str) -> str:
    """The ``_class_name`` of ``model``'s ``model_index.json`` (a folder, or a hub name through the hub cache).

    Raises:
        ModelNotFound: no ``model_index.json`` there.
    """
    if is_local(model):
        index = Path(model).expanduser() / "model_index.json"
        if not index.is_file():
            raise ModelNotFound(f"diffusers model folder {model!r} has no model_index.json; expected a folder "
                                "written by save_pretrained or `hf download ORG/NAME --local-dir DIR`")
        config: dict[str, Any] = json.loads(index.read_text(encoding="utf-8"))
    else:
        from diffusers import DiffusionPipeline

        try:
            config = dict(DiffusionPipeline.load_config(model))
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"diffusers model {model!r}: its model_index.json was not found ({e}); "
                                f"{LOCAL_HINT}") from e
    return str(config.get("_class_name", ""))


@dataclass(frozen=True)
class IPAdapterSpec:
    """Where an IP-Adapter's weights are: ``load_ip_adapter(repo, subfolder=..., weight_name=...)``."""

    repo: str
    subfolder: str
    weight_name: str


def parse_ip_adapter(value: str) -> IPAdapterSpec:
    """Parse ``REPO_OR_FOLDER:SUBFOLDER/WEIGHT_FILE`` (``h94/IP-Adapter:models/ip-adapter_sd15.bin``; the
    subfolder may be left out: ``FOLDER:ip-adapter.safetensors``).

    Raises:
        ConfigError: no ``:``, or an empty repository or file name.
    """
    repo, sep, path = value.strip().rpartition(":")
    subfolder, _, weight = path.rpartition("/")
    if not sep or not repo or not weight:
        raise ConfigError(f"ip_adapter {value!r} is not REPO_OR_FOLDER:SUBFOLDER/WEIGHT_FILE, e.g. "
                          "h94/IP-Adapter:models/ip-adapter_sd15.bin")
    return IPAdapterSpec(repo=repo, subfolder=subfolder, weight_name=weight)


def fit_size(width: int, height: int, *, long_side: int, multiple: int = 8) -> tuple[int, int]:
    """``(width, height)`` scaled so the long side is ``long_side``, each side rounded to ``multiple`` (at least
    ``multiple``)."""
    scale = long_side / max(width, height)

    def fit(side: int) -> int:
        return max(multiple, round(side * scale / multiple) * multiple)

    return fit(width), fit(height)


def torch_device(device: str) -> torch.device:
    """``device`` as a torch device, checked to exist here.

    Raises:
        BackendUnavailable: a CUDA or MPS device this machine does not have.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise BackendUnavailable(f"generate device {device!r} was asked for but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s); set VITRINE_GENERATE__DEVICE")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BackendUnavailable(f"generate device {device!r} was asked for but MPS is not available here")
    return dev
