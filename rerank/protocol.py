"""The re-ranker protocol: a query, the candidates to judge, and ``score`` returning one relevance per candidate.

A score is the model's probability that the product matches the query, in [0, 1]. A re-ranker either scores
every candidate or raises (`common.errors.RerankFailed`, `RerankTimeout` past the deadline): callers never get
a partial list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from common.errors import InvalidInput


@dataclass(frozen=True)
class RerankQuery:
    """What the shopper asked for: words, a photo, or both.

    Attributes:
        text: the query text (``None`` or blank: none).
        image: the query photo, if any.
        image_key: a stable id of ``image`` (e.g. the hash of the uploaded bytes) for the score cache; when
            unset, the cache hashes the pixels.

    Raises:
        InvalidInput: neither a text nor an image.
    """

    text: str | None = None
    image: Image.Image | None = None
    image_key: str | None = None

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise InvalidInput(f"re-rank query text must be a string, got {type(self.text).__name__}")
        if self.image is not None and not isinstance(self.image, Image.Image):
            raise InvalidInput(f"re-rank query image must be a PIL image, got {type(self.image).__name__}")
        if not (self.text or "").strip() and self.image is None:
            raise InvalidInput(f"a re-rank query needs a text or an image; got text {self.text!r} and no image")

    @property
    def words(self) -> str | None:
        """The query text stripped, or ``None`` when there is none."""
        stripped = (self.text or "").strip()
        return stripped or None


@dataclass(frozen=True)
class Candidate:
    """One product to judge.

    Attributes:
        product_id: the product's id (returned scores follow the order of the candidates, not this id).
        text: the product's title, brand, category and short description as one string.
        image: the product's image, if it has one (a candidate without an image is judged on its text).
        image_key: the stored hash of the product image, for the score cache.
    """

    product_id: str
    text: str
    image: Image.Image | None = None
    image_key: str | None = None


@runtime_checkable
class Reranker(Protocol):
    """A vision-language model that judges how well each candidate matches a query."""

    @property
    def name(self) -> str:
        """The model id (hub name, folder or API model name); part of the score cache key."""
        ...

    def load(self) -> None:
        """Load weights or open the API client now rather than at the first `score` (idempotent)."""
        ...

    def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
              deadline: float | None = None) -> list[float]:
        """One relevance in [0, 1] per candidate, in the candidates' order.

        Args:
            query: what the shopper asked for.
            candidates: the products to judge.
            deadline: a `time.monotonic()` instant by which to be done; ``None``: no limit.

        Raises:
            RerankTimeout: the deadline passed first.
            RerankFailed: the model or the API failed, or answered something unreadable.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Backend, model and state, for /stats."""
        ...


def check_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates as a list, checked to be `Candidate` objects.

    Raises:
        InvalidInput: an item is not a `Candidate`.
    """
    items = list(candidates)
    for index, item in enumerate(items):
        if not isinstance(item, Candidate):
            raise InvalidInput(f"re-rank candidate {index} is a {type(item).__name__}; expected a Candidate")
    return items
