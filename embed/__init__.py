"""Encoders: the `Encoder` protocol and its backends (open_clip, transformers CLIP/SigLIP, the demo model)."""

from embed.protocol import Embedder, Encoder, ImageTransform
from embed.registry import build_encoder, known_backends

__all__ = ["Embedder", "Encoder", "ImageTransform", "build_encoder", "known_backends"]
