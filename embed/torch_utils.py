"""Small torch helpers shared by the encoder backends: device and dtype from settings, batching, output."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from common.errors import BackendUnavailable, ConfigError
from common.settings import Dtype

T = TypeVar("T")

_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(dtype: Dtype) -> torch.dtype:
    """The torch dtype of a settings dtype name."""
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not supported; expected one of {sorted(_DTYPES)}") from None


def torch_device(device: str) -> torch.device:
    """The torch device named in settings, checked to exist on this machine.

    Raises:
        BackendUnavailable: a CUDA device is asked for and there is none (or not that many).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(f"device {device!r} was asked for but CUDA is not available on this machine; "
                                     "set VITRINE_EMBED__DEVICE=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailable(f"device {device!r} was asked for but only {torch.cuda.device_count()} "
                                     "CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BackendUnavailable(f"device {device!r} was asked for but MPS is not available on this machine")
    return dev


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_unit_float32(features: torch.Tensor) -> NDArray[np.float32]:
    """L2-normalise rows in float32 and return them as a numpy array."""
    features = features.detach().to(torch.float32)
    features = torch.nn.functional.normalize(features, dim=-1)
    return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)


class ToArray:
    """Picklable wrapper that runs a torchvision-style transform and returns a float32 numpy array."""

    def __init__(self, transform: object) -> None:
        self.transform = transform

    def __call__(self, image: object) -> NDArray[np.float32]:
        out = self.transform(image)  # type: ignore[operator]
        if isinstance(out, torch.Tensor):
            return np.ascontiguousarray(out.detach().cpu().numpy(), dtype=np.float32)
        return np.ascontiguousarray(np.asarray(out), dtype=np.float32)
