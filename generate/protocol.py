"""The generation protocol: a request for variants of a product image (or a picture from text alone), and
``generate`` returning the images.

A generator makes ``request.n`` images or raises (`common.errors.GenerationFailed`; `InvalidInput` for a request
it cannot do, such as a recolouring instruction that names no colour): callers never get fewer images than
asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image

from common.errors import InvalidInput

Mode = Literal["variant", "text"]
"""``variant``: a new picture of the source image (image-to-image); ``text``: a picture from the prompt alone."""


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate.

    Attributes:
        instruction: the shopper's or merchant's terse wish ("the same sneaker in red").
        prompt: the detailed prompt the model gets (`generate.prompts` makes it from the instruction and the
            product's fields).
        image: the source product image (RGB); None for text-to-image.
        n: how many images.
        seed: the random seed (the same request with the same seed gives the same images).
        strength: how far image-to-image may move from the source, 0-1 (0: the source, 1: ignore it).
        negative_prompt: what the picture must not show, if the backend takes one.
        reference: a style or identity reference image (IP-Adapter), if any.
    """

    instruction: str
    prompt: str
    image: Image.Image | None = None
    n: int = 1
    seed: int = 0
    strength: float = 0.6
    negative_prompt: str | None = None
    reference: Image.Image | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise InvalidInput("instruction is empty; say what to change, e.g. 'the same sneaker in red'")
        if self.n < 1:
            raise InvalidInput(f"n {self.n} must be at least 1")
        if not 0.0 <= self.strength <= 1.0:
            raise InvalidInput(f"strength {self.strength} must be between 0 and 1")

    @property
    def mode(self) -> Mode:
        """``variant`` when there is a source image, ``text`` otherwise."""
        return "variant" if self.image is not None else "text"


@runtime_checkable
class Generator(Protocol):
    """A backend that makes product images."""

    @property
    def name(self) -> str:
        """The backend and model, e.g. ``diffusers:stabilityai/sdxl-turbo`` or ``recolor``; part of the cache
        key."""
        ...

    def load(self) -> None:
        """Load weights or open the API client now rather than at the first request (idempotent)."""
        ...

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        """``request.n`` RGB images.

        Args:
            request: what to make.
            deadline: a `time.monotonic` instant after which the backend gives up (`GenerationFailed`).

        Raises:
            InvalidInput: a request this backend cannot do (the message says why and what would work).
            GenerationFailed: the backend failed or ran out of time.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """The backend's settings and state, JSON-ready, without secrets (for ``/stats``)."""
        ...
