"""Variant image synthesis backends (diffusers, the images API, an offline recolouring backend)."""
