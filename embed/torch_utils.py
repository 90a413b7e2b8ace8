"""Small torch helpers shared by the encoder backends: device and dtype from settings, batching, output."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from common.errors import BackendUnavailable, ConfigError, InvalidInput
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
            raise BackendUnavailable(f"device {device!r} was asked for but CUDA is not available on this "
                                     "machine; set VITRINE_EMBED__DEVICE=cpu")
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


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, checked to be strings.

    Raises:
        InvalidInput: ``texts`` is a single string, or holds something that is not a string.
    """
    if isinstance(texts, str):
        raise InvalidInput(f"expected a list of texts, got the single string {texts[:60]!r}; pass [text]")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInput(f"text #{position} is {type(text).__name__} {text!r:.60}; expected a str")
    return items


def check_pixels(pixels: NDArray[np.float32]) -> NDArray[np.float32]:
    """A batch of preprocessed images, checked to be shaped (n, 3, H, W).

    Raises:
        InvalidInput: the array has another shape.
    """
    array = np.asarray(pixels)
    if array.ndim != 4 or array.shape[1] != 3:
        raise InvalidInput(f"pixels of shape {array.shape} cannot be embedded; expected (n, 3, H, W), "
                           "a stack of what the encoder's image_transform returns")
    return array


def embed_batches(
    count: int, batch_size: int, dim: Callable[[], int], run: Callable[[slice], torch.Tensor]
) -> NDArray[np.float32]:
    """Run ``run`` on consecutive slices of ``count`` items under ``torch.inference_mode``.

    Args:
        count: number of items.
        batch_size: items per forward pass.
        dim: embedding width, called only when ``count`` is 0 (to shape the empty result).
        run: features of the items in a slice, as a (len, dim) tensor.

    Returns:
        The L2-normalised float32 rows of all batches, (count, dim).
    """
    if count == 0:
        return np.zeros((0, dim()), np.float32)
    with torch.inference_mode():
        out = [to_unit_float32(run(slice(start, start + batch_size)))
               for start in range(0, count, batch_size)]
    return np.concatenate(out)


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
