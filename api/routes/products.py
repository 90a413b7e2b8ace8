"""Products by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import SearchServiceDep
from api.errors import error_responses
from common.product import MAX_ID_LENGTH
from search.query import ProductView

router = APIRouter(prefix="/products", tags=["products"], responses=error_responses(404, 409, 503))


@router.get("/{product_id:path}", summary="One product by id", response_model_exclude_unset=True)
def get_product(
    product_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="The product id.")],
    service: SearchServiceDep,
) -> ProductView:
    """The product's fields as indexed; 404 when no product has that id."""
    return ProductView.model_validate(service.get_product(product_id))
