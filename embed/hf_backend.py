"""Hugging Face transformers encoders: ``hf:ORG/NAME`` (hub repository) or ``hf:DIR`` (a local folder).

CLIP (``CLIPModel``) and SigLIP (``SiglipModel``, including SigLIP 2's fixed-resolution checkpoints) are
supported; other transformers models with ``get_text_features``/``get_image_features`` run with CLIP's
conventions and a warning. Text conventions follow how each family was trained:

- CLIP: pad to the longest text with an attention mask (pooling takes the first end-of-text token, which
  sees no padding through the causal mask, so batching does not change a text's vector).
- SigLIP: pad to ``max_length`` (the text tower's position count) and pass NO attention mask: the text
  tower pools the last position, and Google's checkpoints were trained on exactly such padded inputs.

In transformers 5, ``get_text_features``/``get_image_features`` return a ``BaseModelOutputWithPooling``
whose ``pooler_output`` is the projected embedding (4.x returned the tensor itself); both are accepted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from common.errors import BackendUnavailable, ConfigError, ModelNotFound
from common.settings import EmbedSettings
from embed.hf_transform import image_transform_for
from embed.hub import hub_hint, in_hub_cache, not_found
from embed.protocol import ImageTransform, Vectors
from embed.torch_utils import check_pixels, check_texts, embed_batches, torch_device, torch_dtype
from embed.weights_id import folder_id

logger = logging.getLogger(__name__)

_LOCAL_HINT = (
    "To use a local copy, point at its folder: hf:/path/to/dir (holding config.json, model.safetensors, "
    "the tokenizer files and preprocessor_config.json, as `hf download ORG/NAME --local-dir DIR` or "
    "save_pretrained write them)"
)
_TOKENIZER_FILES = "tokenizer.json, vocab.json and merges.txt, or spiece.model"


@dataclass(frozen=True)
class TextConvention:
    """How a model family's texts are tokenised: padding strategy and whether the mask is passed."""

    padding: str
    attention_mask: bool


CONVENTIONS: dict[str, TextConvention] = {
    "clip": TextConvention(padding="longest", attention_mask=True),
    "siglip": TextConvention(padding="max_length", attention_mask=False),
}
_UNSUPPORTED = {
    "siglip2": "SigLIP 2 NaFlex models need variable-size patches; use a fixed-resolution SigLIP 2 "
    "checkpoint (e.g. google/siglip2-base-patch16-224, a SiglipModel)",
}


def is_local(spec: str) -> bool:
    """Whether an ``hf:`` spec names a local folder rather than a hub repository."""
    return spec.startswith(("/", "~", ".", "\\")) or Path(spec).expanduser().is_dir() or spec.count("/") > 1


def features(output: Any) -> torch.Tensor:
    """The embedding tensor of ``get_*_features``: a tensor (transformers 4) or ``pooler_output`` (5)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    if isinstance(output, tuple) and len(output) > 1 and isinstance(output[1], torch.Tensor):
        return output[1]
    raise TypeError(f"no embeddings in a {type(output).__name__}; expected a tensor or a pooler_output")


@dataclass(frozen=True)
class _Loaded:
    model: Any
    tokenizer: Any
    processor: Any
    transform: ImageTransform
    image_size: int
    convention: TextConvention
    max_length: int
    device: torch.device
    dtype: torch.dtype


class HfEncoder:
    """A transformers image-text model (CLIP, SigLIP) behind the `Encoder` protocol.

    Construction parses the name only; ``load()`` (or first use) loads config, weights, tokenizer and image
    processor with ``from_pretrained`` (honouring ``HF_HUB_OFFLINE`` and the hub cache).

    Args:
        spec: everything after ``hf:``: ``ORG/NAME`` or a folder.
        settings: device, dtype and batch size.
        model: an already-built model (tests hand in a tiny one); needs ``tokenizer`` and ``image_processor``.
        tokenizer: its tokenizer.
        image_processor: its image processor.

    Raises:
        ConfigError: the spec is empty.
    """

    def __init__(
        self,
        spec: str,
        settings: EmbedSettings,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        image_processor: Any = None,
    ) -> None:
        spec = spec.strip()
        if not spec:
            raise ConfigError("hf encoder needs a model: hf:ORG/NAME (e.g. "
                              "hf:google/siglip-base-patch16-224) or hf:/path/to/folder")
        self._local = is_local(spec)
        self._source = str(Path(spec).expanduser().resolve()) if self._local else spec.strip("/")
        self._settings = settings
        self._lock = threading.Lock()
        self._state: _Loaded | None = None
        if model is not None:
            if tokenizer is None or image_processor is None:
                raise ValueError("an injected transformers model needs its tokenizer and image_processor too")
            device, dtype = torch_device(settings.device), torch_dtype(settings.dtype)
            self._state = self._install(model.to(device=device, dtype=dtype), tokenizer, image_processor)

    @property
    def name(self) -> str:
        """``hf:`` and the repository id or the absolute folder."""
        return f"hf:{self._source}"

    def load(self) -> None:
        """Load config, weights, tokenizer and image processor (idempotent, thread-safe).

        Raises:
            ModelNotFound: the files are neither local nor downloadable.
            ConfigError: the model is not an image-text model this backend supports.
            BackendUnavailable: the configured device does not exist here, or a tokenizer library is missing.
        """
        if self._state is not None:
            return
        with self._lock:
            if self._state is None:
                self._state = self._load()

    def _load(self) -> _Loaded:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        device, dtype = torch_device(self._settings.device), torch_dtype(self._settings.dtype)
        self._check_folder()
        try:
            config = AutoConfig.from_pretrained(self._source)
        except OSError as e:
            raise ModelNotFound(self._missing("its config.json was not found", e)) from e
        except ValueError as e:
            raise ConfigError(f"encoder {self.name!r} has a config that transformers cannot read: {e}") from e
        self._refuse_unsupported(str(getattr(config, "model_type", "")))
        try:
            tokenizer = AutoTokenizer.from_pretrained(self._source)
        except ImportError as e:
            raise BackendUnavailable(f"the tokenizer of encoder {self.name!r} needs a library that is not "
                                     f"installed: {e}") from e
        except (OSError, ValueError) as e:  # sentencepiece tokenizers raise ValueError without their file
            what = f"its tokenizer files ({_TOKENIZER_FILES}) were not found"
            raise ModelNotFound(self._missing(what, e)) from e
        self._check_tokenizer(tokenizer, config)
        try:
            processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
                self._source, backend="pil")
        except OSError as e:
            raise ModelNotFound(self._missing("its preprocessor_config.json was not found", e)) from e
        try:  # the weights last: they are the slow part
            model = AutoModel.from_pretrained(self._source, dtype=dtype)
        except OSError as e:
            raise ModelNotFound(self._missing("its weights were not found", e)) from e
        state = self._install(model.to(device), tokenizer, processor)
        logger.info("loaded encoder %s (%s) on %s (%s)", self.name, type(model).__name__, device,
                    self._settings.dtype)
        return state

    def _check_folder(self) -> None:
        if not self._local:
            return
        folder = Path(self._source)
        if not folder.is_dir():
            raise ModelNotFound(self._missing("its folder was not found"))
        if not (folder / "config.json").is_file():
            raise ModelNotFound(self._missing("its config.json was not found"))

    def _check_tokenizer(self, tokenizer: Any, config: Any) -> None:
        """Refuse the near-empty default vocabulary transformers 5 builds when tokenizer files are absent."""
        expected = int(getattr(getattr(config, "text_config", config), "vocab_size", 0) or 0)
        if len(tokenizer) < min(expected // 2, 1000):
            raise ModelNotFound(self._missing(
                f"its tokenizer files ({_TOKENIZER_FILES}) were not found (the tokenizer built without them "
                f"has {len(tokenizer)} tokens, the model {expected})"))

    def _refuse_unsupported(self, model_type: str) -> None:
        if model_type in _UNSUPPORTED:
            raise ConfigError(f"encoder {self.name!r} is a {model_type!r} model: {_UNSUPPORTED[model_type]}")

    def _where(self) -> str:
        if not self._local:
            return in_hub_cache(self._source)
        folder = Path(self._source)
        if not folder.is_dir():
            return f"at {self._source!r}"
        return f"in the folder {self._source!r} (it holds {sorted(path.name for path in folder.iterdir())})"

    def _missing(self, what: str, cause: BaseException | None = None) -> str:
        hint = _LOCAL_HINT if self._local else f"{_LOCAL_HINT}; {hub_hint(self._source)}"
        return not_found(encoder=self.name, what=what, where=self._where(), hint=hint, cause=cause)

    def _install(self, model: Any, tokenizer: Any, processor: Any) -> _Loaded:
        config = model.config
        model_type = str(getattr(config, "model_type", ""))
        self._refuse_unsupported(model_type)
        if model_type not in CONVENTIONS:
            logger.warning("encoder %s is a %r model; it runs with CLIP's text conventions (known: %s)",
                           self.name, model_type, sorted(CONVENTIONS))
        for method in ("get_text_features", "get_image_features"):
            if not callable(getattr(model, method, None)):
                raise ConfigError(f"encoder {self.name!r} is a {type(model).__name__}, which has no "
                                  f"{method}; expected an image-text model such as CLIPModel or SiglipModel")
        text_config = getattr(config, "text_config", config)
        vision_config = getattr(config, "vision_config", config)
        positions = int(getattr(text_config, "max_position_embeddings", 77))
        tokenizer_limit = int(getattr(tokenizer, "model_max_length", positions) or positions)
        transform, image_size = image_transform_for(
            processor, default_size=int(getattr(vision_config, "image_size", 224))
        )
        parameter = next(model.parameters())
        return _Loaded(
            model=model.eval(), tokenizer=tokenizer, processor=processor, transform=transform,
            image_size=image_size,
            convention=CONVENTIONS.get(model_type, CONVENTIONS["clip"]),
            max_length=min(positions, tokenizer_limit), device=parameter.device, dtype=parameter.dtype,
        )

    @property
    def weights_id(self) -> str:
        """Content hash of a local folder's config and weight files; "" for a hub repository."""
        if not self._local:
            return ""
        return folder_id(Path(self._source), ("config.json", "*.safetensors", "*.bin"))

    @property
    def _loaded(self) -> _Loaded:
        self.load()
        assert self._state is not None
        return self._state

    @property
    def dim(self) -> int:
        """Embedding width (CLIP's projection_dim, SigLIP's text head, else one probe text)."""
        model = self._loaded.model
        text_head = getattr(getattr(model, "text_model", None), "head", None)
        for head in (getattr(model, "text_projection", None), text_head):
            if isinstance(head, torch.nn.Linear):
                return int(head.out_features)
        return int(self.embed_texts(["a"]).shape[1])

    @property
    def image_size(self) -> int:
        """Side of the image the model sees (from the image processor, else the vision config)."""
        return self._loaded.image_size

    @property
    def image_transform(self) -> ImageTransform:
        """The image processor's resize, crop and normalisation as a picklable float32 (3, H, W) transform."""
        return self._loaded.transform

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts: (n, dim) float32, L2-normalised."""
        items = check_texts(texts)
        state = self._loaded

        def run(part: slice) -> torch.Tensor:
            inputs = state.tokenizer(items[part], padding=state.convention.padding, truncation=True,
                                     max_length=state.max_length, return_tensors="pt")
            kwargs = {"input_ids": inputs["input_ids"].to(state.device)}
            if state.convention.attention_mask and "attention_mask" in inputs:
                kwargs["attention_mask"] = inputs["attention_mask"].to(state.device)
            return features(state.model.get_text_features(**kwargs))

        return embed_batches(len(items), self._settings.batch_size, lambda: self.dim, run)

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        """Embed preprocessed images (n, 3, H, W): (n, dim) float32, L2-normalised."""
        array = check_pixels(pixels)
        state = self._loaded

        def run(part: slice) -> torch.Tensor:
            batch = torch.from_numpy(np.ascontiguousarray(array[part], dtype=np.float32))
            return features(state.model.get_image_features(pixel_values=batch.to(state.device, state.dtype)))

        return embed_batches(len(array), self._settings.batch_size, lambda: self.dim, run)

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Preprocess and embed decoded images: (n, dim) float32, L2-normalised."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        transform = self.image_transform
        return self.embed_pixels(np.stack([transform(image) for image in images]))

    def image_tower(self) -> torch.nn.Module:
        """The model's image side (its ``vision*`` and ``visual*`` submodules, run by
        ``get_image_features``); see `FineTunable`.

        Raises:
            ConfigError: the model has no submodule named like an image tower.
        """
        return HfImageTower(self._loaded.model, name=self.name)

    def save_model(self, folder: Path) -> str:
        """``save_pretrained`` of the model, its tokenizer and its image processor into ``folder`` (safetensors).
        Returns ``hf:FOLDER``."""
        state = self._loaded
        folder = folder.expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        state.model.save_pretrained(folder)
        state.tokenizer.save_pretrained(folder)
        state.processor.save_pretrained(folder)
        return f"hf:{folder}"


class HfImageTower(torch.nn.Module):
    """A transformers CLIP/SigLIP model's image side as a module: pixels in, ``get_image_features`` out.

    Only the image submodules (``vision_model``, ``visual_projection``, ...) are registered, so parameters,
    ``state_dict`` and ``.to()`` cover them alone; the text side is left out of training.
    """

    def __init__(self, model: Any, *, name: str) -> None:
        super().__init__()
        parts = {key: child for key, child in model.named_children() if key.startswith(("vision", "visual"))}
        if not parts:
            raise ConfigError(f"encoder {name!r} is a {type(model).__name__} with no vision_* or visual_* "
                              "submodule; its image side cannot be fine-tuned")
        self.parts = torch.nn.ModuleDict(parts)
        self._model = [model]  # a plain list: not registered as a submodule

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return features(self._model[0].get_image_features(pixel_values=pixels))


def build(spec: str, settings: EmbedSettings) -> HfEncoder:
    """Registry entry: ``hf:SPEC``."""
    return HfEncoder(spec, settings)
