"""What ``vitrine train`` trains, by base encoder and option, and how the result is written.

- ``--base cnn``: a small CNN from scratch (grey 28-pixel Fashion-MNIST-style input) under the frozen
  all-MiniLM-L6-v2 text tower; the whole tower trains (``--train tower``).
- ``--base efficientnet_lite0``: ImageNet EfficientNet-lite0, frozen, and a trained projection head under the
  same text tower; only the head trains (its features are computed once).
- ``--base FOLDER`` of a ``towers`` encoder (``demo`` included): ``--train tower`` fine-tunes its image tower
  from its weights; ``--train head`` trains a projection on its image embeddings.
- ``--base open_clip:...`` / ``hf:...``: ``--train tower`` fine-tunes the model's own image tower against its own
  frozen text embeddings and writes the whole model in the backend's format (an open_clip ``local-dir`` folder,
  or a transformers ``save_pretrained`` folder), with the run's metrics in ``vitrine_training.json``;
  ``--train head`` trains a projection head on the frozen image embeddings, initialised to the identity.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from common.errors import ConfigError
from common.settings import EmbedSettings
from embed.demo import DemoEncoder
from embed.demo_towers import FrozenEfficientNet, build_tower, projection, tower_transform, trainable_state
from embed.manifest import EncoderManifest, TextTowerSpec, load_weights, save_weights, write_manifest
from embed.minilm import MiniLMTextTower
from embed.protocol import Encoder, ImageTransform, Vectors
from embed.registry import build_encoder
from embed.torch_utils import torch_device
from embed.tunable import FineTunable

logger = logging.getLogger(__name__)

TrainPart = Literal["tower", "head"]
SCRATCH_BASES = ("cnn", "efficientnet_lite0")
DEFAULT_LR = 3e-3
FINE_TUNE_LR = 1e-5
TRAINING_FILE = "vitrine_training.json"
"""Beside a fine-tuned open_clip or transformers model: how it was trained and its held-out metrics."""
DEFAULT_CNN: dict[str, Any] = {"arch": "cnn", "stages": [[32, 1], [64, 2], [128, 2]], "hidden": 0,
                               "dropout": 0.0, "size": 28}


@dataclass
class Plan:
    """Everything the loop needs to train one kind of model.

    Attributes:
        module: what the optimiser updates: a whole tower (pixels in) or a head (features in).
        transform: preprocessing of one decoded image.
        featurize: maps a batch of preprocessed pixels to the module's inputs (frozen part), or None when the
            module takes pixels (and is trained with augmentation).
        embed_texts: the frozen text tower.
        dim: embedding width.
        write: writes the encoder folder from the module and the learned logit scale.
        description: what is trained, for logs.
        logit_scale: the learned log inverse temperature to start from (a fine-tuned checkpoint's), or None.
        default_lr: the peak learning rate when none is given: high for new towers and heads, low for
            pretrained image towers (a high one wipes out what they learned).
    """

    module: nn.Module
    transform: ImageTransform
    featurize: Callable[[torch.Tensor], torch.Tensor] | None
    embed_texts: Callable[[list[str]], Vectors]
    dim: int
    write: Callable[[Path, float, dict[str, Any]], Path]
    description: str
    logit_scale: float | None = None
    default_lr: float = DEFAULT_LR


def _text_tower(embed: EmbedSettings, path: str | None) -> MiniLMTextTower:
    return MiniLMTextTower(device=torch_device(embed.device), batch_size=max(embed.batch_size, 64), path=path)


def _towers_plan(tower: nn.Module, image_config: dict[str, Any], text: MiniLMTextTower, text_path: str,
                 description: str) -> Plan:
    dim = int(image_config["dim"])
    featurize: Callable[[torch.Tensor], torch.Tensor] | None = None
    module: nn.Module = tower
    if isinstance(tower, FrozenEfficientNet):
        module, featurize = tower.head, tower.features

    def write(folder: Path, logit_scale: float, training: dict[str, Any]) -> Path:
        manifest = EncoderManifest(kind="towers", dim=dim, text=TextTowerSpec(path=text_path),
                                   image=image_config, logit_scale=logit_scale, training=training)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / manifest.weights, trainable_state(tower))
        return write_manifest(folder, manifest)

    return Plan(module=module, transform=tower_transform(image_config), featurize=featurize,
                embed_texts=text.embed, dim=dim, write=write, description=description)


def _identity_head(dim: int, hidden: int) -> nn.Module:
    head = projection(dim, dim, hidden)
    if hidden == 0:
        linear = list(head.modules())[-1]
        assert isinstance(linear, nn.Linear)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(dim))
            linear.bias.zero_()
    return head


def _projection_plan(base: Encoder, name: str, hidden: int) -> Plan:
    dim = int(base.embed_texts(["a"]).shape[1])
    in_dim = int(base.embed_images([Image.new("RGB", (32, 32), (255, 255, 255))]).shape[1])
    head = _identity_head(in_dim, hidden) if in_dim == dim else projection(in_dim, dim, hidden)
    config: dict[str, Any] = {"in_dim": in_dim, "hidden": hidden, "dropout": 0.0}

    def featurize(pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(base.embed_pixels(pixels.cpu().numpy().astype(np.float32)))

    def write(folder: Path, logit_scale: float, training: dict[str, Any]) -> Path:
        manifest = EncoderManifest(kind="projection", dim=dim, base=name, image=config,
                                   logit_scale=logit_scale, training=training)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / manifest.weights, dict(head.state_dict()))
        return write_manifest(folder, manifest)

    return Plan(module=head, transform=base.image_transform, featurize=featurize,
                embed_texts=base.embed_texts, dim=dim, write=write,
                description=f"projection head over {name}")


def _fine_tune_plan(encoder: FineTunable, embed: EmbedSettings) -> Plan:
    if embed.dtype != "fp32":
        raise ConfigError(f"fine-tuning the image tower of {encoder.name!r} runs in fp32; set "
                          f"VITRINE_EMBED__DTYPE=fp32 (it is {embed.dtype!r})")
    tower = encoder.image_tower()
    tower.requires_grad_(True)

    def write(folder: Path, logit_scale: float, training: dict[str, Any]) -> Path:
        name = encoder.save_model(folder)
        record = {"encoder": name, "base": encoder.name, "logit_scale": logit_scale, "training": training}
        (folder / TRAINING_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        return folder

    return Plan(module=tower, transform=encoder.image_transform, featurize=None, embed_texts=encoder.embed_texts,
                dim=encoder.dim, write=write, description=f"image tower of {encoder.name}, fine-tuned",
                default_lr=FINE_TUNE_LR)


def build_plan(base: str, part: TrainPart, *, embed: EmbedSettings, text_model: str | None = None,
               arch: dict[str, Any] | None = None, hidden: int = 0) -> Plan:
    """The plan for training ``part`` of ``base``.

    Args:
        base: ``cnn``, ``efficientnet_lite0`` or an encoder name (``demo``, a folder, ``open_clip:...``,
            ``hf:...``).
        part: ``tower`` (the whole image tower) or ``head`` (a projection on frozen features).
        embed: device and batch size.
        text_model: folder of the MiniLM text tower for new towers (default: the bundled package).
        arch: overrides of the CNN config (``stages``, ``hidden``, ``dropout``) for ``--base cnn``.
        hidden: hidden width of a projection head (0: linear).

    Raises:
        ConfigError: a combination that cannot be trained, naming it and what is possible.
    """
    text_path = text_model or "bundled"
    if base in SCRATCH_BASES:
        text = _text_tower(embed, text_model)
        text_dim = int(text.embed(["a"]).shape[1])
        if base == "cnn":
            if part != "tower":
                raise ConfigError("--base cnn trains a new CNN from scratch: use --train tower (the default)")
            config = {**DEFAULT_CNN, **(arch or {}), "dim": text_dim}
        else:
            config = {"arch": "efficientnet_lite0", "size": 112, "hidden": hidden, "dropout": 0.0,
                      "dim": text_dim}
        tower = build_tower(config)
        return _towers_plan(tower, config, text, text_path, f"new {base} image tower under all-MiniLM-L6-v2")
    encoder = build_encoder(embed, base)
    if part == "head":
        encoder.load()
        return _projection_plan(encoder, encoder.name, hidden)
    if isinstance(encoder, DemoEncoder):
        manifest = encoder.manifest
        folder = Path(encoder.name) if encoder.name != "demo" else _demo_folder()
        tower = build_tower(manifest.image)
        tower.load_state_dict(load_weights(folder / manifest.weights), strict=False)
        assert manifest.text is not None
        text = _text_tower(embed, manifest.text.path)
        plan = _towers_plan(tower, dict(manifest.image), text, manifest.text.path,
                            f"image tower of {encoder.name}, fine-tuned")
        plan.logit_scale = manifest.logit_scale or None
        return plan
    if isinstance(encoder, FineTunable):
        encoder.load()
        return _fine_tune_plan(encoder, embed)
    raise ConfigError(f"--train tower is not available for base encoder {base!r}: its image tower cannot be "
                      "fine-tuned by vitrine train; use --train head (a projection head on its frozen "
                      "image embeddings), or --base cnn / --base efficientnet_lite0 for a new demo-style "
                      "tower")


def _demo_folder() -> Path:
    from embed.demo import demo_model_dir

    return demo_model_dir()
