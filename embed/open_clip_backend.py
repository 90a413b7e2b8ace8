"""open_clip encoders: ``open_clip:ARCH/TAG``, ``open_clip:ARCH/PATH``, ``open_clip:hf-hub:ORG/NAME``,
``open_clip:local-dir:DIR`` and ``open_clip:ARCH/random`` (random weights, for benchmarks and tests)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from common.errors import ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.protocol import ImageTransform, Vectors
from embed.torch_utils import ToArray, batched, to_unit_float32, torch_device

logger = logging.getLogger(__name__)

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
RANDOM_WEIGHTS = "random"


def _precision(dtype: str) -> str:
    return {"fp32": "fp32", "fp16": "pure_fp16", "bf16": "pure_bf16"}[dtype]


class OpenClipEncoder:
    """An open_clip model behind the `Encoder` protocol.

    Args:
        spec: everything after ``open_clip:`` in the model name.
        settings: device, dtype and batch size.
        model: an already-built ``open_clip.CLIP``-like module (tests hand in a tiny one).
        preprocess: its evaluation transform (required with ``model``).
        tokenizer: its tokenizer (required with ``model``).
    """

    def __init__(
        self,
        spec: str,
        settings: EmbedSettings,
        *,
        model: torch.nn.Module | None = None,
        preprocess: Callable[[Image.Image], Any] | None = None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        if not spec:
            raise ConfigError("open_clip encoder needs a model, e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
        self._spec = spec
        self._settings = settings
        self._lock = threading.Lock()
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        if model is not None:
            if preprocess is None or tokenizer is None:
                raise ValueError("an injected open_clip model needs its preprocess and tokenizer too")
            self._model = model.to(torch_device(settings.device)).eval()

    @property
    def name(self) -> str:
        return f"open_clip:{self._spec}"

    def _split(self) -> tuple[str, str | None]:
        """(model_name, pretrained) as open_clip's factory takes them."""
        if self._spec.startswith(("hf-hub:", "local-dir:")):
            return self._spec, None
        arch, sep, pretrained = self._spec.partition("/")
        if not sep or not pretrained:
            raise ConfigError(
                f"open_clip model {self.name!r} names no weights; expected open_clip:ARCH/TAG "
                f"(tags for {arch!r}: {self._known_tags(arch)}), open_clip:ARCH/PATH_TO_CHECKPOINT, "
                f"open_clip:hf-hub:ORG/NAME, or open_clip:{arch}/{RANDOM_WEIGHTS} for random weights"
            )
        return arch, pretrained

    @staticmethod
    def _known_tags(arch: str) -> list[str]:
        import open_clip

        try:
            return list(open_clip.list_pretrained_tags_by_model(arch))
        except Exception:  # noqa: BLE001 - only used to word an error message
            return []

    def load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        import open_clip

        model_name, pretrained = self._split()
        arch = model_name.split(":", 1)[0] if ":" not in model_name else model_name
        if pretrained is not None and arch not in open_clip.list_models():
            raise ConfigError(f"open_clip architecture {arch!r} (in {self.name!r}) is unknown; known: "
                              f"{open_clip.list_models()}")
        if pretrained == RANDOM_WEIGHTS:
            logger.warning("encoder %s has RANDOM weights: fine for benchmarks, useless for search", self.name)
            pretrained = None
        elif pretrained is not None and self._looks_like_path(pretrained):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise ModelNotFound(f"open_clip checkpoint {str(path)!r} (from encoder {self.name!r}) does not exist; "
                                    "expected a local .pt/.bin/.safetensors file of that architecture")
            pretrained = str(path)
        device = torch_device(self._settings.device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, precision=_precision(self._settings.dtype), device=device
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as e:
            raise ModelNotFound(self._not_found_message(model_name, pretrained, e)) from e
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._model = model.eval()
        logger.info("loaded encoder %s on %s (%s)", self.name, device, self._settings.dtype)

    @staticmethod
    def _looks_like_path(pretrained: str) -> bool:
        return "/" in pretrained or "\\" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES) \
            or Path(pretrained).expanduser().exists()

    def _not_found_message(self, model_name: str, pretrained: str | None, cause: Exception) -> str:
        from huggingface_hub import constants

        where = f"the Hugging Face cache {constants.HF_HUB_CACHE!r}"
        if model_name.startswith("local-dir:"):
            where = f"the folder {model_name.removeprefix('local-dir:')!r}"
        elif pretrained and Path(pretrained).is_file():
            where = f"the file {pretrained!r}"
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        return (
            f"could not load encoder {self.name!r}: its weights were not found in {where} and could not be "
            f"downloaded{offline}: {cause}. To use a local copy, point at it: "
            "open_clip:ARCH/PATH_TO_CHECKPOINT.pt, or open_clip:local-dir:DIR for a folder holding "
            "open_clip_config.json and the weights"
        )

    @property
    def _loaded(self) -> tuple[torch.nn.Module, Callable[[Image.Image], Any], Callable[[list[str]], torch.Tensor]]:
        self.load()
        assert self._model is not None and self._preprocess is not None and self._tokenizer is not None
        return self._model, self._preprocess, self._tokenizer

    @property
    def dim(self) -> int:
        model, _, _ = self._loaded
        projection = getattr(model, "text_projection", None)
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        if isinstance(projection, torch.nn.Linear):
            return int(projection.out_features)
        with torch.inference_mode():
            return int(self.embed_texts(["a"]).shape[1])

    @property
    def image_size(self) -> int:
        model, _, _ = self._loaded
        size = getattr(getattr(model, "visual", None), "image_size", 224)
        return int(max(size) if isinstance(size, tuple | list) else size)

    @property
    def image_transform(self) -> ImageTransform:
        _, preprocess, _ = self._loaded
        return ToArray(preprocess)

    def _param(self) -> torch.Tensor:
        model, _, _ = self._loaded
        return next(model.parameters())

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        model, _, tokenizer = self._loaded
        param = self._param()
        out: list[Vectors] = []
        with torch.inference_mode():
            for chunk in batched(list(texts), self._settings.batch_size):
                tokens = tokenizer(list(chunk)).to(param.device)
                out.append(to_unit_float32(model.encode_text(tokens)))  # type: ignore[operator]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        model, _, _ = self._loaded
        param = self._param()
        out: list[Vectors] = []
        with torch.inference_mode():
            for start in range(0, len(pixels), self._settings.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + self._settings.batch_size]))
                batch = batch.to(param.device, non_blocking=True).to(param.dtype)
                out.append(to_unit_float32(model.encode_image(batch)))  # type: ignore[operator]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        transform = self.image_transform
        return self.embed_pixels(np.stack([transform(image) for image in images]))


def build(spec: str, settings: EmbedSettings) -> OpenClipEncoder:
    """Registry entry: ``open_clip:SPEC``."""
    return OpenClipEncoder(spec, settings)

