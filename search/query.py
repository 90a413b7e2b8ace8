"""The search request and response models.

A `SearchRequest` is checked in two steps:

1. on construction (pydantic): types, static bounds (``limit >= 1``, ``offset >= 0``, weights ``>= 0``,
   prices ``>= 0`` and finite, ``q`` at most `MAX_QUERY_CHARS` characters, filter field names), ``min_price <=
   max_price``, and that a query text or an image is given;
2. against the deployment's `SearchSettings` by `check_bounds` (``limit <= max_limit``, ``offset <=
   max_offset``, the resolved weights not both zero), which `SearchService.search` always runs.

`build_request` does both and turns pydantic's errors into one `InvalidQuery` whose message names every bad
field and value, so the CLI and the HTTP API report the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from common.errors import InvalidQuery
from common.settings import SearchSettings
from store.protocol import STATE_KEY

MAX_QUERY_CHARS = 1000
"""Longest query text accepted, in characters (CLIP-style text towers read far fewer tokens anyway)."""
MAX_FILTERS = 32
MAX_PARTS = 16
"""Most parts a composed query may have."""
MAX_PART_WEIGHT = 10.0
MAX_FACETS = 8
MAX_FILTER_VALUE_CHARS = 512
DEFAULT_LIMIT = 10

# A payload field name, optionally dotted to reach nested fields ("attributes.color").
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")

FilterValue = bool | int | float | str


def check_field_name(name: str, *, what: str) -> str:
    """A payload field name (dotted for nested fields), refusing Vitrine's own bookkeeping keys.

    Raises:
        ValueError: anything else; the message names the value and what was expected.
    """
    if not _FIELD_NAME.match(name) or name.split(".", 1)[0].startswith(STATE_KEY):
        raise ValueError(f"{what} {name!r} is not a payload field name; expected letters, digits, '_' or '-', "
                         "dotted for nested fields (e.g. 'attributes.color')")
    return name


class QueryPart(BaseModel):
    """One part of a composed query: exactly one of ``text``, ``product_id`` (that product's image) or
    ``image_url``, with a weight (negative: push results away from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    text: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS, description="Words.")
    product_id: str | None = Field(None, min_length=1, max_length=512,
                                   description="A catalog product: its image (its text when it has none).")
    image_url: str | None = Field(None, min_length=1, max_length=2048,
                                  description="An http(s) image URL (public hosts only, see docs/deployment.md).")
    weight: float = Field(1.0, ge=-MAX_PART_WEIGHT, le=MAX_PART_WEIGHT, allow_inf_nan=False,
                          description="How strongly the part pulls (negative: pushes); not 0.")

    @model_validator(mode="after")
    def _one_kind(self) -> QueryPart:
        given = [name for name in ("text", "product_id", "image_url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a query part needs exactly one of text, product_id or image_url; got "
                             f"{given or 'none'}")
        if self.weight == 0:
            raise ValueError("a query part's weight is 0, so it would change nothing; give a weight other than 0 "
                             "(negative pushes away)")
        return self


class QueryFields(BaseModel):
    """Everything a search request holds except the image: the shape of ``POST /search``'s JSON body."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    q: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="Query text.")
    limit: int = Field(DEFAULT_LIMIT, ge=1,
                       description="Results per page (at most settings search.max_limit).")
    offset: int = Field(0, ge=0, description="Results to skip (at most settings search.max_offset).")
    category: str | None = Field(None, max_length=MAX_FILTER_VALUE_CHARS, description="Only this category.")
    brand: str | None = Field(None, max_length=MAX_FILTER_VALUE_CHARS, description="Only this brand.")
    min_price: float | None = Field(None, ge=0, allow_inf_nan=False, description="Lowest price, inclusive.")
    max_price: float | None = Field(None, ge=0, allow_inf_nan=False, description="Highest price, inclusive.")
    in_stock: bool | None = Field(None, description="Only products in stock (true) or out of stock (false).")
    filters: dict[str, FilterValue] = Field(
        default_factory=dict,
        description='Any payload field by equality, e.g. {"currency": "EUR", "attributes.color": "red"}.',
    )
    w_image: float | None = Field(None, ge=0, allow_inf_nan=False,
                                  description="Weight of the image index (default: settings search.w_image).")
    w_text: float | None = Field(None, ge=0, allow_inf_nan=False,
                                 description="Weight of the text index (default: settings search.w_text).")
    w_lexical: float | None = Field(None, ge=0, allow_inf_nan=False, description="Weight of the lexical (BM25) "
                                    "match (default: settings search.w_lexical).")
    query: list[QueryPart] | None = Field(None, min_length=1, max_length=MAX_PARTS, description="A composed "
                                          "query: parts whose weighted embeddings add up to the query vector.")
    group: bool | None = Field(None, description="Collapse variants sharing a group_id into one result "
                               "(default: settings search.group_variants).")
    min_score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                    description="Drop results whose relevance (0-1) is below this.")
    facets: list[str] = Field(default_factory=list, max_length=MAX_FACETS, description="Payload fields to count "
                              "among the results (e.g. category, brand, tags.colour).")

    @field_validator("q", "category", "brand")
    @classmethod
    def _blank_is_absent(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, value: dict[str, FilterValue]) -> dict[str, FilterValue]:
        if len(value) > MAX_FILTERS:
            raise ValueError(f"{len(value)} filters given; at most {MAX_FILTERS} are accepted")
        for name, item in value.items():
            check_field_name(name, what="filter field")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"filter {name}={item!r} is not a finite number")
            if isinstance(item, str) and len(item) > MAX_FILTER_VALUE_CHARS:
                raise ValueError(f"filter {name} value is {len(item)} characters long; at most "
                                 f"{MAX_FILTER_VALUE_CHARS} are accepted")
        return value

    @field_validator("facets")
    @classmethod
    def _check_facets(cls, value: list[str]) -> list[str]:
        return [check_field_name(name, what="facet field") for name in dict.fromkeys(value)]

    @model_validator(mode="after")
    def _check_prices(self) -> QueryFields:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}; expected "
                             "min_price <= max_price")
        return self


class SearchRequest(QueryFields):
    """One search: text ``q``, an ``image``, composed ``query`` parts, or several; filters; a page; weights.

    Weights left unset take the defaults of `SearchSettings`. ``q`` and ``image`` are parts of weight 1: the
    query vector is the normalised weighted sum of all the parts' embeddings (see `search.encode.combine`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image: Image.Image | None = Field(None, exclude=True, description="A decoded RGB query image.")

    @model_validator(mode="after")
    def _check_something_to_search(self) -> SearchRequest:
        if self.q is None and self.image is None and not self.query:
            raise ValueError("nothing to search for: give a query text (q), an image, or query parts")
        return self


def resolve_weights(request: QueryFields, settings: SearchSettings) -> tuple[float, float, float]:
    """(w_image, w_text, w_lexical) of a request, unset ones taken from the settings."""
    w_image = settings.w_image if request.w_image is None else request.w_image
    w_text = settings.w_text if request.w_text is None else request.w_text
    w_lexical = settings.w_lexical if request.w_lexical is None else request.w_lexical
    return w_image, w_text, w_lexical


def check_bounds(request: QueryFields, settings: SearchSettings) -> None:
    """Check the parts of a request that depend on the deployment's settings.

    Raises:
        InvalidQuery: ``limit`` over ``max_limit``, ``offset`` over ``max_offset``, or both weights zero.
    """
    problems: list[str] = []
    if request.limit > settings.max_limit:
        problems.append(f"limit {request.limit} is over the largest page size {settings.max_limit} "
                        "(setting search.max_limit)")
    if request.offset > settings.max_offset:
        problems.append(f"offset {request.offset} is over the deepest offset {settings.max_offset} "
                        "(setting search.max_offset)")
    w_image, w_text, _ = resolve_weights(request, settings)
    if w_image == 0 and w_text == 0:
        problems.append(f"w_image {w_image} and w_text {w_text} are both zero; at least one must be above 0")
    if problems:
        raise InvalidQuery("; ".join(problems))


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every bad field, what was wrong and the value given."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = "" if err["type"] in {"value_error", "missing"} or isinstance(given, Mapping | BaseModel) \
            else f" (got {given!r})"
        parts.append(f"{where + ': ' if where else ''}{message}{shown}")
    return "; ".join(parts)


def _as_data(fields: Mapping[str, Any] | QueryFields) -> dict[str, Any]:
    return fields.model_dump(exclude_unset=True) if isinstance(fields, QueryFields) else dict(fields)


def build_fields(fields: Mapping[str, Any] | QueryFields, *, settings: SearchSettings) -> QueryFields:
    """Check a request's fields other than the image (before an upload is decoded, say).

    Raises:
        InvalidQuery: any value is bad; the message names each field and value.
    """
    try:
        checked = QueryFields(**_as_data(fields))
    except ValidationError as e:
        raise InvalidQuery(describe_validation_error(e)) from e
    check_bounds(checked, settings)
    return checked


def build_request(
    fields: Mapping[str, Any] | QueryFields,
    *,
    settings: SearchSettings,
    image: Image.Image | None = None,
) -> SearchRequest:
    """Build and fully check a request from plain values (CLI options, HTTP parameters).

    Args:
        fields: the request's fields other than the image.
        settings: the deployment's search settings (page bounds, default weights).
        image: a decoded query image, if any.

    Raises:
        InvalidQuery: any value is bad; the message names each field and value.
    """
    try:
        request = SearchRequest(**_as_data(fields), image=image)
    except ValidationError as e:
        raise InvalidQuery(describe_validation_error(e)) from e
    check_bounds(request, settings)
    return request


class ProductView(BaseModel):
    """A product as search returns it: its catalog fields, unknown ones kept.

    Fields the product does not have are unset; dump with ``exclude_unset=True`` (the API does) to leave
    them out rather than show them as null.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    title: str | None = None
    description: str | None = None
    image: str | None = None
    images: list[str] | None = None
    price: float | None = None
    currency: str | None = None
    category: str | None = None
    brand: str | None = None
    in_stock: bool | None = None
    url: str | None = None
    attributes: dict[str, Any] | None = None
    thumbnail: str | None = Field(None, description="URL path of a small WebP of the product's image (long side "
                                  "settings images.thumb_px) made at ingestion, served with long-lived caching "
                                  "(``GET /images/{key}/thumb.webp``); unset when there is none. A catalog field of "
                                  "the same name (or ``preview``) is shown only when it is text and Vitrine made "
                                  "no such file.")
    preview: str | None = Field(None, description="URL path of a larger JPEG of the product's image (long side "
                                "settings images.preview_px), like ``thumbnail``; unset when there is none.")


class IndexScores(BaseModel):
    """Cosine similarity of the query to a product on each index (null: the product has no such vector),
    its lexical match and the tag boost it got."""

    image: float | None
    text: float | None
    lexical: float | None = Field(None, description="BM25 score divided by the best among the candidates "
                                  "(0-1); null when the product shares no word with the query.")
    boost: float = Field(0.0, description="Sum of the tag boosts the product got (docs/tags.md).")
    all_words: bool = Field(False, description="Whether the product's text holds every word of the query "
                            "(it then gets settings search.w_all_words).")


class Variant(BaseModel):
    """Another product of a result's group (same group_id), as found by the same search."""

    id: str
    score: float
    product: ProductView


class RerankScore(BaseModel):
    """How a vision-language model judged one result (docs/rerank.md)."""

    vlm: float = Field(description="The model's relevance of the product to the query, 0-1 (P(yes)).")
    combined: float = Field(description="What the re-ranked top N are ordered by: (1 - weight) x the fused "
                            "score scaled to 0-1 among the top N + weight x vlm.")


class RerankInfo(BaseModel):
    """Whether and how a search was re-ranked."""

    model: str | None = Field(None, description="The re-ranker's model.")
    top_n: int = Field(description="How many of the first results were re-ranked (or were to be).")
    weight: float = Field(description="Share of the VLM score in the combined score (settings rerank.weight).")
    took_ms: float = Field(0.0, description="Time spent re-ranking, milliseconds.")
    reason: str | None = Field(None, description="Why the results are not re-ranked, when they are not.")


class SearchHit(BaseModel):
    """One result."""

    id: str = Field(description="The product id.")
    score: float = Field(description="Fused score: w_image * scores.image + w_text * scores.text + w_lexical * "
                         "scores.lexical (+ w_all_words when scores.all_words) + scores.boost.")
    relevance: float | None = Field(None, description="How far the similarities stand above those of unrelated "
                                    "products, 0-1 (docs/relevance.md); null when the collection is too small.")
    scores: IndexScores
    product: ProductView
    variants: list[Variant] = Field(default_factory=list, description="Other products of its group_id found "
                                    "by the search, best first.")
    rerank: RerankScore | None = Field(None, description="The re-ranker's judgement, when the search asked for "
                                       "re-ranking and this result was among the re-ranked top N.")


class Weights(BaseModel):
    """The weights a search used."""

    image: float
    text: float
    lexical: float = 0.0


class TagBoost(BaseModel):
    """A tag a query named, and the score products carrying it got."""

    attribute: str
    value: str
    weight: float


class FacetValue(BaseModel):
    """One value of a field and how many products have it."""

    value: str | int | bool
    count: int


class SearchResponse(BaseModel):
    """One page of results, best first."""

    results: list[SearchHit]
    took_ms: float = Field(description="Time spent in the search service (encoding included), milliseconds.")
    total_candidates: int = Field(description="Products in the union of the indices' candidate lists.")
    offset: int
    limit: int
    weights: Weights
    no_good_match: bool = Field(False, description="True when even the best candidate is not relevant "
                                "(relevance under settings search.no_match_below): results are then empty.")
    boosts: list[TagBoost] = Field(default_factory=list, description="Tags the query named, boosted.")
    facets: dict[str, list[FacetValue]] | None = Field(None, description="Counts of the asked fields' values "
                                                       "among all the results (not just this page).")
    reranked: bool | None = Field(None, description="Present when the search asked for re-ranking: whether "
                                  "the order is the re-ranker's (false: first-stage order, see rerank.reason).")
    rerank: RerankInfo | None = Field(None, description="How the search was re-ranked, or why not.")


class SimilarHit(BaseModel):
    """One product of a more-like-this or recommendation answer."""

    id: str
    score: float = Field(description="Cosine similarity to the product (recommendations: the engine's "
                         "best-score, below 0 when closer to a negative example).")
    product: ProductView


class SimilarResponse(BaseModel):
    """Products like one product (``GET /products/{id}/similar``) or like some and unlike others
    (``POST /recommend``)."""

    product_id: str | None = Field(description="The product asked about (null for recommendations).")
    source: str = Field(description="'precomputed' (stored by `vitrine similar --all`), 'search' or "
                        "'recommend'.")
    results: list[SimilarHit]
    took_ms: float
