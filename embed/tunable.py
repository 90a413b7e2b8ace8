"""Encoders whose image tower ``vitrine train --train tower`` can fine-tune in place.

The open_clip and transformers backends implement it: the trainer optimises the module `image_tower` returns
(it shares its weights with the encoder, so the encoder's text tower and preprocessing stay as they are), then
`save_model` writes the whole model as a folder the same backend loads by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from embed.protocol import Encoder


@runtime_checkable
class FineTunable(Encoder, Protocol):
    """An encoder whose image side can be trained and saved."""

    def image_tower(self) -> torch.nn.Module:
        """The loaded model's image side: preprocessed pixels (n, 3, H, W) in, unnormalised (n, dim)
        embeddings out; its parameters are the encoder's own (training it changes the encoder)."""
        ...

    def save_model(self, folder: Path) -> str:
        """Write the model, as it is now, to ``folder`` in this backend's own format; returns the encoder name
        that loads it."""
        ...
