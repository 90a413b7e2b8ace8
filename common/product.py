"""The `Product` schema every part of Vitrine shares, and the point id derived from a product id."""

from __future__ import annotations

import functools
import math
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Fixed namespace: the same product id always maps to the same point id, in every store and every release.
_POINT_NAMESPACE = uuid.UUID("6f1c1f1e-9a57-4c4e-8f3a-7f0d2b9e5a11")

MAX_ID_LENGTH = 512
RESERVED_FIELD = "_vitrine"
"""Payload key Vitrine keeps its own bookkeeping under; a catalog may not use it."""
GENERATED_FIELD = "generated"
"""Payload key of the text `vitrine enrich` generated for a thin product (`api.enrich`): ``{"description": str,
"attributes": {name: value}, "model": str, "at": iso time, "source": "enrich"}``; never a catalog field's value."""
GENERATED_SOURCE = "enrich"
"""The ``source`` of a `GENERATED_FIELD` value written by `vitrine enrich` (a catalog column of that name has none)."""
_TEXT_FIELDS = ("title", "description", "category", "brand", "currency", "url", "image", "group_id")
_TRUE = {"true", "1", "yes", "y", "t", "in stock", "instock"}
_FALSE = {"false", "0", "no", "n", "f", "out of stock", "outofstock"}

# Payload fields the store indexes for filtering and faceting, with their types.
FILTERABLE_FIELDS: dict[str, str] = {
    "id": "keyword",
    "category": "keyword",
    "brand": "keyword",
    "currency": "keyword",
    "price": "float",
    "in_stock": "bool",
    "group_id": "keyword",
}


@functools.lru_cache(maxsize=1 << 16)
def point_id(product_id: str) -> str:
    """The store's point id of a product: a UUID5 of its id, so re-ingesting overwrites, never duplicates.

    Cached: every search converts its candidates' ids (hundreds) for the store's exact-score calls."""
    return str(uuid.uuid5(_POINT_NAMESPACE, product_id))


class Product(BaseModel):
    """One catalog item. Unknown fields are kept as they are.

    Values are coerced the way catalog files need: numbers and booleans may come as strings (CSV),
    empty strings mean "absent".
    """

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    title: str | None = None
    description: str | None = None
    image: str | None = None
    images: list[str] | None = None
    price: float | None = Field(None, ge=0)
    currency: str | None = Field(None, min_length=3, max_length=3)
    category: str | None = None
    brand: str | None = None
    in_stock: bool | None = None
    url: str | None = None
    group_id: str | None = Field(None, max_length=MAX_ID_LENGTH, description="Products sharing it are variants "
                                 "of one article (sizes, colours); search shows them as one result.")
    attributes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        reserved = [k for k in data if isinstance(k, str) and k.startswith(RESERVED_FIELD)]
        if reserved:  # `_vitrine` and every `_vitrine...` key (the stored neighbours): search hides them all
            raise ValueError(f"field {reserved[0]!r} is reserved for Vitrine's own bookkeeping; rename it")
        data = {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in data.items()}
        if data.get("id") is None:
            raise ValueError("id is required: expected a non-empty string or integer")
        for name in _TEXT_FIELDS:  # numbers in text fields (a JSON title of 42, a numeric brand) become text
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                data[name] = str(value)
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, str) and any(ord(c) < 32 for c in value):
            raise ValueError(f"id {value!r} contains control characters")
        return value

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().replace(",", "")
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"price {value!r} is not a number") from None
        if isinstance(value, bool):
            raise ValueError(f"price {value!r} is not a number")
        if isinstance(value, int | float) and not math.isfinite(value):
            raise ValueError(f"price {value!r} is not a finite number")
        return value

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("in_stock", mode="before")
    @classmethod
    def _in_stock(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"in_stock {value!r} is not a boolean; expected true/false, yes/no or 1/0")
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        return value

    @field_validator("images", mode="before")
    @classmethod
    def _images(cls, value: Any) -> Any:
        if isinstance(value, str):  # CSV: "a.jpg|b.jpg"
            return [part.strip() for part in value.split("|") if part.strip()]
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def image_refs(self) -> list[str]:
        """Every image of the product, the main one first, without repeats."""
        refs = [self.image] if self.image else []
        refs += [ref for ref in self.images or [] if ref not in refs]
        return refs

    @property
    def point_id(self) -> str:
        """The store's point id of this product."""
        return point_id(self.id)

    def embedding_text(self) -> str:
        """The text the text index embeds: title, brand, category and description, in that order."""
        parts = [self.title, self.brand, self.category, self.description]
        return ". ".join(p for p in parts if p)

    def payload(self) -> dict[str, Any]:
        """The product as a JSON-ready dict, absent fields left out, unknown fields kept."""
        return self.model_dump(mode="json", exclude_none=True)
