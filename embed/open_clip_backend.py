"""open_clip encoders: ``open_clip:ARCH/TAG``, ``open_clip:ARCH/PATH``, ``open_clip:hf-hub:ORG/NAME``,
``open_clip:local-dir:DIR`` and ``open_clip:ARCH/random`` (random weights, for benchmarks and tests).

A PATH is told from a TAG by its look: it holds a ``/``, starts with ``~`` or ``.``, ends in a checkpoint
suffix (``.pt``, ``.bin``, ``.safetensors``, ...) or names an existing file. Paths and folders are made
absolute in the encoder's name, which collections store.
"""

from __future__ import annotations

import difflib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from common.errors import ConfigError, InvalidInput, ModelNotFound
from common.settings import EmbedSettings
from embed.device_preprocess import PreprocessSpec, spec_from_transform
from embed.hub import hub_cache_dir, hub_hint, in_hub_cache, not_found
from embed.protocol import ImageTransform, Vectors
from embed.torch_utils import ToArray, check_pixels, check_texts, embed_batches, torch_device, torch_dtype
from embed.weights_id import files_id, folder_id

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS = "random"
HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_PRECISIONS = {"fp32": "fp32", "fp16": "pure_fp16", "bf16": "pure_bf16"}
_LOCAL_HINT = (
    "To use a local copy, point at it: open_clip:ARCH/PATH_TO_CHECKPOINT (a .pt/.bin/.safetensors file of "
    "that architecture) or open_clip:local-dir:DIR (a folder holding open_clip_config.json and "
    "open_clip_model.safetensors or open_clip_pytorch_model.bin)"
)

Kind = Literal["tag", "file", "random", "hub", "dir"]
Preprocess = Callable[[Image.Image], Any]
Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class Weights:
    """Where an open_clip model's config and weights come from.

    Attributes:
        kind: ``tag`` (a pretrained tag of ``arch``), ``file`` (a checkpoint of ``arch``), ``random``,
            ``hub`` (a Hugging Face repository) or ``dir`` (an open_clip folder).
        arch: the architecture (tag, file and random), else None.
        source: the tag, the absolute file or folder, or the repository id.
    """

    kind: Kind
    arch: str | None
    source: str

    @property
    def spec(self) -> str:
        """The canonical spec (the encoder name without ``open_clip:``)."""
        if self.kind == "hub":
            return f"{HF_HUB}{self.source}"
        if self.kind == "dir":
            return f"{LOCAL_DIR}{self.source}"
        return f"{self.arch}/{self.source}"

    @property
    def model_name(self) -> str:
        """The model name open_clip's factory and tokenizer take."""
        return self.spec if self.kind in ("hub", "dir") else str(self.arch)


def _looks_like_path(value: str) -> bool:
    return ("/" in value or "\\" in value or value.startswith(("~", "."))
            or value.endswith(_CHECKPOINT_SUFFIXES) or Path(value).expanduser().is_file())


def parse_spec(spec: str) -> Weights:
    """Parse what follows ``open_clip:`` (syntax only; nothing is imported or loaded).

    Raises:
        ConfigError: the spec is empty, names no weights, or an empty repository or folder.
    """
    spec = spec.strip()
    if spec.startswith(HF_HUB):
        repo = spec.removeprefix(HF_HUB).strip("/")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ConfigError(f"open_clip model 'open_clip:{spec}' names no Hugging Face repository; "
                              "expected open_clip:hf-hub:ORG/NAME")
        return Weights("hub", None, repo)
    if spec.startswith(LOCAL_DIR):
        folder = spec.removeprefix(LOCAL_DIR)
        if not folder:
            raise ConfigError(f"open_clip model 'open_clip:{spec}' names no folder; "
                              "expected open_clip:local-dir:DIR")
        return Weights("dir", None, str(Path(folder).expanduser().resolve()))
    arch, _, pretrained = spec.partition("/")
    if not arch or not pretrained:
        raise ConfigError(
            f"open_clip model 'open_clip:{spec}' names no weights; expected open_clip:ARCH/TAG (e.g. "
            "open_clip:ViT-B-32/laion2b_s34b_b79k), open_clip:ARCH/PATH_TO_CHECKPOINT, "
            f"open_clip:hf-hub:ORG/NAME, open_clip:local-dir:DIR, or "
            f"open_clip:{arch or 'ARCH'}/{RANDOM_WEIGHTS} for random weights"
        )
    if pretrained == RANDOM_WEIGHTS:
        return Weights("random", arch, RANDOM_WEIGHTS)
    if _looks_like_path(pretrained):
        return Weights("file", arch, str(Path(pretrained).expanduser().resolve()))
    return Weights("tag", arch, pretrained)


class OpenClipEncoder:
    """An open_clip model behind the `Encoder` protocol (and `embed.device_preprocess.DeviceEncoder`).

    Construction parses the name only; ``load()`` (or first use) checks that the weights exist and loads them.

    Speed on GPUs: ``settings.dtype`` fp16/bf16 casts the weights (open_clip's ``pure_fp16``/``pure_bf16``)
    and runs the forward passes under ``torch.autocast`` of that dtype; CPU-prepared batches go to a CUDA
    device from pinned memory with non-blocking copies; ``settings.compile`` compiles the image forward
    with ``torch.compile`` on first use.

    Args:
        spec: everything after ``open_clip:`` in the model name.
        settings: device, dtype and batch size.
        model: an already-built ``open_clip.CLIP``-like module (tests hand in a tiny one).
        preprocess: its evaluation transform (required with ``model``).
        tokenizer: its tokenizer (required with ``model``).

    Raises:
        ConfigError: the spec is malformed.
    """

    def __init__(
        self,
        spec: str,
        settings: EmbedSettings,
        *,
        model: torch.nn.Module | None = None,
        preprocess: Preprocess | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        if not spec.strip():
            raise ConfigError("open_clip encoder needs a model, e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
        self._weights = parse_spec(spec)
        self._settings = settings
        self._lock = threading.Lock()
        self._model: torch.nn.Module | None = None
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._image_forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        if model is not None:
            if preprocess is None or tokenizer is None:
                raise ValueError("an injected open_clip model needs its preprocess and tokenizer too")
            device, dtype = torch_device(settings.device), torch_dtype(settings.dtype)
            self._model = model.to(device=device, dtype=dtype).eval()

    @property
    def name(self) -> str:
        """``open_clip:`` and the canonical spec (paths made absolute)."""
        return f"open_clip:{self._weights.spec}"

    @property
    def weights_id(self) -> str:
        """Content hash of a checkpoint file or of a folder's config and weights; "" for tags, hub
        repositories and random weights."""
        weights = self._weights
        if weights.kind == "file":
            return files_id([Path(weights.source)])
        if weights.kind == "dir":
            return folder_id(Path(weights.source), ("open_clip_config.json", "open_clip_*.safetensors",
                                                    "open_clip_*.bin", "open_clip_*.pth"))
        return ""

    def load(self) -> None:
        """Check that the weights exist and load them (idempotent, thread-safe).

        Raises:
            ConfigError: unknown architecture or tag, or a checkpoint that does not fit the architecture.
            ModelNotFound: the weights (or tokenizer files) are neither local nor downloadable.
            BackendUnavailable: the configured device does not exist here.
        """
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        import open_clip

        device = torch_device(self._settings.device)
        weights = self._weights
        if weights.arch is not None:
            self._check_arch(weights.arch, open_clip.list_models())
        self._check_weights()
        pretrained = weights.source if weights.kind in ("tag", "file") else None
        try:
            tokenizer = open_clip.get_tokenizer(weights.model_name)
        except (OSError, RuntimeError, ValueError) as e:
            repo = self._side_repos().get("hf_tokenizer_name")
            where = in_hub_cache(repo) if repo else self._where()
            raise ModelNotFound(self._missing("its tokenizer files were not found", where, e)) from e
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                weights.model_name, pretrained=pretrained, precision=_PRECISIONS[self._settings.dtype],
                device=device, require_pretrained=weights.kind != "random",
            )
        except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as e:  # open_clip asserts shapes
            if _is_missing_file(e):
                text_tower = self._side_repos().get("hf_model_name")
                where = in_hub_cache(text_tower) if text_tower and weights.kind == "random" else self._where()
                raise ModelNotFound(self._missing("its files were not found", where, e)) from e
            raise ConfigError(f"could not build encoder {self.name!r}: {type(e).__name__}: {e}; check "
                              f"that the weights are an open_clip checkpoint of {weights.arch!r}") from e
        if weights.kind == "random":
            logger.warning("encoder %s has RANDOM weights: fine for benchmarks, no use for search", self.name)
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._model = model.eval()
        logger.info("loaded encoder %s on %s (%s)", self.name, device, self._settings.dtype)

    def _check_arch(self, arch: str, known: list[str]) -> None:
        if arch in known:
            return
        close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
        raise ConfigError(
            f"open_clip architecture {arch!r} (in {self.name!r}) is unknown"
            + (f"; did you mean one of {close}?" if close else "")
            + f" ({len(known)} are known: open_clip.list_models() lists them; register more with "
            "open_clip.add_model_config, or use open_clip:local-dir:DIR with its open_clip_config.json)"
        )

    def _check_weights(self) -> None:
        """Find the weights before building anything, so that a miss is a clear `ModelNotFound`."""
        import open_clip

        weights = self._weights
        if weights.kind == "file" and not Path(weights.source).is_file():
            raise ModelNotFound(self._missing("its checkpoint file was not found", self._where()))
        if weights.kind == "dir":
            self._check_dir(Path(weights.source))
        if weights.kind == "tag":
            tags = open_clip.list_pretrained_tags_by_model(weights.arch)
            cfg = open_clip.get_pretrained_cfg(weights.arch, weights.source)
            if not cfg:
                raise ConfigError(
                    f"{weights.source!r} (in {self.name!r}) is neither a pretrained tag of {weights.arch!r} "
                    f"(known: {tags}) nor an existing checkpoint file; expected open_clip:ARCH/TAG or "
                    "open_clip:ARCH/PATH_TO_CHECKPOINT"
                )
            try:
                open_clip.download_pretrained(cfg)
            except Exception as e:  # any download failure means: not found
                raise ModelNotFound(self._missing("its weights were not found", self._where(cfg), e)) from e
        if weights.kind == "hub":
            from open_clip.pretrained import download_pretrained_from_hf

            for filename in ("open_clip_config.json", None):
                try:
                    download_pretrained_from_hf(weights.source, filename=filename)
                except Exception as e:  # any download failure means: not found
                    what = filename or "open_clip_model.safetensors or open_clip_pytorch_model.bin"
                    raise ModelNotFound(self._missing(f"its {what} was not found", self._where(), e)) from e

    def _check_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            raise ModelNotFound(self._missing("its folder was not found", f"at {str(folder)!r}"))
        present = sorted(path.name for path in folder.iterdir())
        where = f"in the folder {str(folder)!r} (it holds {present})"
        if "open_clip_config.json" not in present:
            raise ModelNotFound(self._missing("its open_clip_config.json was not found", where))
        if not any(name.endswith((".safetensors", ".bin", ".pth")) for name in present):
            what = "its weights (*.safetensors, *.bin, *.pth) were not found"
            raise ModelNotFound(self._missing(what, where))

    def _repo(self, cfg: dict[str, Any] | None = None) -> str | None:
        """The hub repository the weights come from, if any."""
        if self._weights.kind == "hub":
            return self._weights.source
        repo = str((cfg or {}).get("hf_hub", "")).strip("/")
        return "/".join(repo.split("/")[:2]) if repo else None

    def _where(self, cfg: dict[str, Any] | None = None) -> str:
        weights = self._weights
        if weights.kind == "file":
            return f"at {weights.source!r}"
        if weights.kind == "dir":
            return f"in the folder {weights.source!r}"
        repo = self._repo(cfg)
        if repo:
            return in_hub_cache(repo)
        url = str((cfg or {}).get("url", ""))
        if url:
            return f"in open_clip's download cache (~/.cache/clip) as {url} and could not be downloaded"
        return "in open_clip's configs or the Hugging Face cache"

    def _side_repos(self) -> dict[str, str]:
        """Hub repositories the architecture also loads: ``hf_model_name`` (a transformers text tower) and
        ``hf_tokenizer_name``, as its config names them."""
        if self._weights.kind == "dir":
            return {}  # open_clip reads those from the folder itself
        import open_clip

        try:
            text_cfg = (open_clip.get_model_config(self._weights.model_name) or {}).get("text_cfg", {})
        except Exception:  # the config itself is missing: nothing more to say
            return {}
        keys = ("hf_model_name", "hf_tokenizer_name")
        return {key: str(text_cfg[key]) for key in keys if text_cfg.get(key)}

    def _missing(self, what: str, where: str, cause: BaseException | None = None) -> str:
        repo = self._repo(open_clip_cfg(self._weights))
        hint = f"{_LOCAL_HINT}; {hub_hint(repo)}" if repo else _LOCAL_HINT
        side = sorted(set(self._side_repos().values()))
        if side:
            hint += (f". This architecture also loads {side} from the Hugging Face hub (cache "
                     f"{str(hub_cache_dir())!r}): fetch those too")
        return not_found(encoder=self.name, what=what, where=where, hint=hint, cause=cause)

    @property
    def _loaded(self) -> tuple[torch.nn.Module, Preprocess, Tokenizer]:
        self.load()
        assert self._model is not None and self._preprocess is not None and self._tokenizer is not None
        return self._model, self._preprocess, self._tokenizer

    @property
    def dim(self) -> int:
        """Embedding width (from the text projection, else from one probe text)."""
        model, _, _ = self._loaded
        projection = getattr(model, "text_projection", None)
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        if isinstance(projection, torch.nn.Linear):
            return int(projection.out_features)
        return int(self.embed_texts(["a"]).shape[1])

    @property
    def image_size(self) -> int:
        """Side of the square image the vision tower sees."""
        model, _, _ = self._loaded
        size = getattr(getattr(model, "visual", None), "image_size", 224)
        return int(max(size) if isinstance(size, tuple | list) else size)

    @property
    def image_transform(self) -> ImageTransform:
        """open_clip's evaluation transform, returning float32 numpy arrays (picklable)."""
        _, preprocess, _ = self._loaded
        return ToArray(preprocess)

    def _param(self) -> torch.Tensor:
        model, _, _ = self._loaded
        return next(model.parameters())

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._param().device

    @property
    def preprocess_spec(self) -> PreprocessSpec | None:
        """Its evaluation transform as a `PreprocessSpec` (None when it holds steps that cannot run on a
        device batch: then images are preprocessed on the CPU)."""
        _, preprocess, _ = self._loaded
        return spec_from_transform(preprocess)

    def _autocast(self, device: torch.device) -> torch.autocast:
        """Autocast to ``settings.dtype`` (disabled for fp32, and on devices autocast does not know)."""
        dtype = torch_dtype(self._settings.dtype)
        enabled = dtype != torch.float32 and device.type in ("cuda", "cpu")
        return torch.autocast(device.type if device.type in ("cuda", "cpu") else "cpu", dtype=dtype,
                              enabled=enabled)

    def _images_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``model.encode_image``, compiled with ``torch.compile`` when ``settings.compile`` (built once)."""
        if self._image_forward is None:
            model, _, _ = self._loaded
            forward: Callable[[torch.Tensor], torch.Tensor] = model.encode_image  # type: ignore[assignment]
            if self._settings.compile:
                logger.info("compiling the image tower of %s with torch.compile (first batches are slow)", self.name)
                forward = torch.compile(forward)
            self._image_forward = forward
        return self._image_forward

    def _to_device(self, batch: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """A CPU batch on the model's device and dtype: pinned and copied without blocking on CUDA."""
        if param.device.type == "cuda" and batch.device.type == "cpu" and torch.cuda.is_available():
            batch = batch.pin_memory().to(param.device, non_blocking=True)
        return batch.to(device=param.device, dtype=param.dtype)

    def embed_tensor(self, pixels: torch.Tensor) -> Vectors:
        """Embed a float32 (n, 3, H, W) batch preprocessed on any device (`embed.device_preprocess`):
        (n, dim) float32, L2-normalised."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InvalidInput(f"pixels of shape {tuple(pixels.shape)} cannot be embedded; expected (n, 3, H, W)")
        param = self._param()
        forward = self._images_forward()

        def run(part: slice) -> torch.Tensor:
            with self._autocast(param.device):
                return forward(self._to_device(pixels[part], param))

        return embed_batches(len(pixels), self._settings.batch_size, lambda: self.dim, run)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts: (n, dim) float32, L2-normalised."""
        items = check_texts(texts)
        model, _, tokenizer = self._loaded
        device = self._param().device

        def run(part: slice) -> torch.Tensor:
            tokens = tokenizer(items[part]).to(device)
            with self._autocast(device):
                features: torch.Tensor = model.encode_text(tokens)  # type: ignore[operator]
            return features

        return embed_batches(len(items), self._settings.batch_size, lambda: self.dim, run)

    def embed_pixels(self, pixels: NDArray[np.float32]) -> Vectors:
        """Embed preprocessed images (n, 3, H, W): (n, dim) float32, L2-normalised."""
        array = check_pixels(pixels)
        param = self._param()
        forward = self._images_forward()

        def run(part: slice) -> torch.Tensor:
            batch = torch.from_numpy(np.ascontiguousarray(array[part], dtype=np.float32))
            with self._autocast(param.device):
                return forward(self._to_device(batch, param))

        return embed_batches(len(array), self._settings.batch_size, lambda: self.dim, run)

    def embed_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Preprocess and embed decoded images: (n, dim) float32, L2-normalised."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        transform = self.image_transform
        return self.embed_pixels(np.stack([transform(image) for image in images]))

    def image_tower(self) -> torch.nn.Module:
        """The model's ``visual`` module (what ``encode_image`` runs before normalising); see `FineTunable`.

        Raises:
            ConfigError: the model has no separate image tower.
        """
        model, _, _ = self._loaded
        visual = getattr(model, "visual", None)
        if not isinstance(visual, torch.nn.Module):
            raise ConfigError(f"encoder {self.name!r} is a {type(model).__name__} without a 'visual' image "
                              "tower; its image side cannot be fine-tuned")
        return visual

    def save_model(self, folder: Path) -> str:
        """Write ``open_clip_config.json`` (model and preprocessing config) and
        ``open_clip_model.safetensors`` (plus the tokenizer's files when it is a Hugging Face tokenizer): an
        open_clip ``local-dir`` folder. Returns ``open_clip:local-dir:FOLDER``.

        Raises:
            ConfigError: open_clip has no config for this model.
        """
        import open_clip
        from safetensors.torch import save_file

        model, _, tokenizer = self._loaded
        model_cfg = open_clip.get_model_config(self._weights.model_name)
        if not model_cfg:
            raise ConfigError(f"open_clip has no model config for {self.name!r}; cannot save it as a folder")
        visual = getattr(model, "visual", model)
        preprocess = dict(getattr(visual, "preprocess_cfg", None) or {})
        for key, attr in (("mean", "image_mean"), ("std", "image_std")):
            if key not in preprocess and getattr(visual, attr, None) is not None:
                preprocess[key] = list(getattr(visual, attr))
        folder = folder.expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, folder / "open_clip_model.safetensors")
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess}
        (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        save_tokenizer = getattr(tokenizer, "save_pretrained", None)
        if callable(save_tokenizer):
            save_tokenizer(str(folder))
        return f"open_clip:{LOCAL_DIR}{folder}"


def open_clip_cfg(weights: Weights) -> dict[str, Any]:
    """open_clip's pretrained config (download source, preprocessing) of a tag, else an empty dict."""
    if weights.kind != "tag":
        return {}
    import open_clip

    cfg: dict[str, Any] = open_clip.get_pretrained_cfg(weights.arch, weights.source)
    return cfg


def _is_missing_file(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a file that could not be found or fetched."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FileNotFoundError | ConnectionError) or type(seen).__name__.endswith("NotFound"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def build(spec: str, settings: EmbedSettings) -> OpenClipEncoder:
    """Registry entry: ``open_clip:SPEC``."""
    return OpenClipEncoder(spec, settings)
