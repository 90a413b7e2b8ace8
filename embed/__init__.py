"""Encoders: the `Encoder` protocol and its backends (open_clip, transformers CLIP/SigLIP, the demo model)."""

from embed.protocol import Encoder, ImageTransform
from embed.registry import build_encoder, known_backends

__all__ = ["Encoder", "ImageTransform", "build_encoder", "known_backends"]
