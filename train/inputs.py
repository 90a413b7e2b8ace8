"""Turning pairs into tensors the training loop can index: preprocessed pixels or frozen features.

Decoding and preprocessing happen once, before the first epoch; frozen-backbone features are computed once
too. Both are cached in the run's state folder, so a resumed run starts straight away.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from embed.demo_preprocess import FashionStyle
from embed.protocol import ImageTransform
from train.data import PairData, safe_load

logger = logging.getLogger(__name__)

FEATURE_BATCH = 256


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(path: Path | None, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if path is not None and path.is_file():
        logger.info("reusing cached tensors %s", path)
        loaded: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
        return loaded
    tensors = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(tensors, tmp)
        tmp.replace(path)
    return tensors


def prepare_inputs(data: PairData, *, transform: ImageTransform,
                   featurize: Callable[[torch.Tensor], torch.Tensor] | None, cache: Path | None,
                   progress: bool, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, kept item indices): preprocessed pixels, or features of a frozen backbone.

    Pixels of Fashion-style (grey) transforms keep one channel, in float16; features are float32. Items whose
    image cannot be loaded are left out (and logged).
    """
    grey = isinstance(transform, FashionStyle)

    def build() -> dict[str, torch.Tensor]:
        kept: list[int] = []
        chunks: list[torch.Tensor] = []
        pending: list[np.ndarray[Any, Any]] = []

        def flush() -> None:
            if not pending:
                return
            batch = torch.from_numpy(np.stack(pending))
            pending.clear()
            if featurize is not None:
                with torch.no_grad():
                    chunks.append(featurize(batch).float().cpu())
            else:
                chunks.append((batch[:, :1] if grey else batch).half())

        for i in tqdm(range(len(data)), desc=f"preparing {label}", unit="img", disable=not progress,
                      mininterval=1.0):
            image = safe_load(data, i)
            if image is None:
                continue
            pending.append(transform(image))
            kept.append(i)
            if len(pending) >= FEATURE_BATCH:
                flush()
        flush()
        if not kept:
            return {"inputs": torch.zeros(0), "kept": torch.zeros(0, dtype=torch.int64)}
        return {"inputs": torch.cat(chunks), "kept": torch.tensor(kept, dtype=torch.int64)}

    tensors = _cached(cache, build)
    dropped = len(data) - len(tensors["kept"])
    if dropped:
        logger.warning("%s: %d of %d images could not be used", label, dropped, len(data))
    return tensors["inputs"], tensors["kept"]


def caption_embeddings(captions: list[str], *, embed: Callable[[list[str]], np.ndarray[Any, Any]],
                       cache: Path | None) -> torch.Tensor:
    """The frozen text embeddings of the caption bank (n, dim), cached."""
    def build() -> dict[str, torch.Tensor]:
        logger.info("embedding %d captions with the frozen text tower", len(captions))
        return {"captions": torch.from_numpy(np.asarray(embed(captions), dtype=np.float32))}

    return _cached(cache, build)["captions"]
