"""Products by id, their nearest others, and recommendations from liked and disliked products."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SearchServiceDep, SettingsDep
from api.errors import error_responses
from common.product import MAX_ID_LENGTH
from search.query import DEFAULT_LIMIT, ProductView, QueryFields, SimilarResponse, build_fields

router = APIRouter(tags=["products"], responses=error_responses(404, 409, 503))

ProductId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="The product id.")]
MAX_EXAMPLES = 32


@router.get("/products/{product_id:path}/similar", summary="More like this product",
            response_model_exclude_unset=True, responses=error_responses(422))
def similar(
    product_id: ProductId,
    service: SearchServiceDep,
    limit: Annotated[int, Query(ge=1, description="Products to return.")] = DEFAULT_LIMIT,
) -> SimilarResponse:
    """The products nearest to this one (itself left out): neighbours stored by ``vitrine similar --all`` when
    there are, a search with its image vector otherwise. 404 when no product has that id."""
    return service.similar(product_id, limit=limit)


@router.get("/products/{product_id:path}", summary="One product by id", response_model_exclude_unset=True)
def get_product(product_id: ProductId, service: SearchServiceDep) -> ProductView:
    """The product's fields as indexed; 404 when no product has that id."""
    return ProductView.model_validate(service.get_product(product_id))


class RecommendBody(BaseModel):
    """``POST /recommend``: products like the positive ones and unlike the negative ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    positive: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] = Field(
        min_length=1, max_length=MAX_EXAMPLES, description="Ids of products the shopper liked.")
    negative: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] = Field(
        default_factory=list, max_length=MAX_EXAMPLES, description="Ids of products the shopper did not like.")
    limit: int = Field(DEFAULT_LIMIT, ge=1, description="Products to return.")
    category: str | None = None
    brand: str | None = None
    in_stock: bool | None = None
    filters: dict[str, bool | int | float | str] = Field(default_factory=dict,
                                                         description="Any payload field by equality.")


@router.post("/recommend", summary="Recommend from liked and disliked products", response_model_exclude_unset=True,
             responses=error_responses(422))
def recommend(body: RecommendBody, service: SearchServiceDep, settings: SettingsDep) -> SimilarResponse:
    """The engine's recommendation query on the image index (best-score strategy): close to some positive
    product and not closer to a negative one; the given products are left out. 422 when a product is unknown."""
    fields: QueryFields = build_fields(body.model_dump(include={"category", "brand", "in_stock", "filters"},
                                                       exclude_none=True), settings=settings.search)
    return service.recommend(positive=body.positive, negative=body.negative, limit=body.limit, request=fields)
