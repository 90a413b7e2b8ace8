"""Catalog-wide answers: value counts of a field (facets) and the service's statistics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import RerankingDep, SearchServiceDep, SettingsDep
from api.errors import error_responses
from api.routes.generate import VariantsDep
from api.routes.search import FIELD_NAME_PATTERN, FilterOption, FilterText, Price, filter_params
from common.errors import InvalidQuery
from search.query import FacetValue, build_fields, check_field_name

router = APIRouter(tags=["catalog"], responses=error_responses(409, 422, 503))

MAX_FACET_VALUES = 1000


@router.get("/facets", summary="Counts of a field's values", response_model_exclude_unset=True)
def facets(
    *,
    service: SearchServiceDep,
    settings: SettingsDep,
    field: Annotated[str, Query(min_length=1, max_length=200, json_schema_extra={"pattern": FIELD_NAME_PATTERN},
                                description="category, brand, tags.<attribute>, or another indexed field.")],
    limit: Annotated[int, Query(ge=1, le=MAX_FACET_VALUES, description="Most values returned.")] = 20,
    category: FilterText = None,
    brand: FilterText = None,
    min_price: Price = None,
    max_price: Price = None,
    in_stock: bool | None = None,
    filter_options: Annotated[list[FilterOption] | None, Query(alias="filter", description="FIELD=VALUE; repeatable.")
                              ] = None,
) -> list[FacetValue]:
    """The most common values of ``field`` over the whole catalog, or over the products that match the
    given filters, most common first. 422 for a field without a payload index (the message lists them)."""
    try:
        check_field_name(field, what="facet field")
    except ValueError as e:
        raise InvalidQuery(str(e)) from e
    given: dict[str, Any] = {key: value for key, value in (
        ("category", category), ("brand", brand), ("min_price", min_price), ("max_price", max_price),
        ("in_stock", in_stock)) if value is not None}
    if filter_options:
        given["filters"] = filter_params(filter_options)
    return service.facets(field, request=build_fields(given, settings=settings.search), limit=limit)


@router.get("/stats", summary="Collection, query cache and calibration statistics")
def stats(service: SearchServiceDep, reranking: RerankingDep, variants: VariantsDep) -> dict[str, Any]:
    """Product count, the query embedding cache's size, hits and misses, the score calibration, the re-ranker
    (its model and score cache, or why there is none) and the generation backends."""
    return {**service.stats(), "rerank": reranking.describe(), "generate": variants.describe()}
