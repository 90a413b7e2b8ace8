"""The options of a ``vitrine train`` run, checked before any work, and what a run reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.errors import ConfigError
from train.inputs import cache_key
from train.models import TrainPart

# Options that may change between a run and its resumption.
_RESUMABLE_CHANGES = {"epochs", "progress", "threads", "state_dir", "restart", "save_every", "command"}


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``vitrine train`` can be told (see ``vitrine train --help`` for each)."""

    data: str
    out: Path
    base: str = "cnn"
    train: TrainPart = "tower"
    epochs: int = 3
    batch_size: int = 256
    lr: float | None = None  # None: the plan's default (`train.models.Plan.default_lr`)
    weight_decay: float = 1e-4
    temperature: float = 0.07
    learn_temperature: bool = True
    hard_negatives: float = 0.0
    image_loss: float = 0.0
    holdout: float = 0.1
    limit: int | None = None
    seed: int = 0
    captions_per_class: int = 240
    group_by: str = "category"
    text_model: str | None = None
    stages: tuple[tuple[int, int], ...] | None = None
    hidden: int = 0
    dropout: float = 0.0
    augment: Literal["none", "flip", "full"] = "flip"
    save_every: int = 0
    state_dir: Path | None = None
    restart: bool = False
    progress: bool = True
    threads: int | None = None
    command: str = ""

    def check(self) -> TrainOptions:
        """Validate the values before any work.

        Raises:
            ConfigError: a value out of range, named with what is expected.
        """
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2 (contrastive), got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"learning rate must be positive, got {self.lr}")
        if not 0 < self.temperature <= 10:
            problems.append(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0 <= self.holdout < 1:
            problems.append(f"holdout must be in [0, 1), got {self.holdout}")
        if self.augment not in ("none", "flip", "full"):
            problems.append(f"augment must be none, flip or full, got {self.augment!r}")
        if self.image_loss < 0:
            problems.append(f"image-image loss weight must be >= 0, got {self.image_loss}")
        if self.hard_negatives < 0:
            problems.append(f"hard-negative beta must be >= 0, got {self.hard_negatives}")
        if self.limit is not None and self.limit < 2:
            problems.append(f"limit must be at least 2, got {self.limit}")
        if problems:
            raise ConfigError("vitrine train: " + "; ".join(problems))
        return self

    def fingerprint(self) -> str:
        """A hash of the options that shape the run (not those that may change on resumption)."""
        values = {k: v for k, v in asdict(self).items() if k not in _RESUMABLE_CHANGES}
        return cache_key(values)


@dataclass(frozen=True)
class TrainResult:
    """What a run did."""

    out: Path
    epochs: int
    steps: int
    seconds: float
    items: int
    held_out: int
    resumed_from_epoch: int | None
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "out": str(self.out)}
