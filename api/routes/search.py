"""Search by text (GET or POST JSON) and by uploaded image (multipart), with filters, pages and weights."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool

from api.auth import CallerDep, check_rerank
from api.deps import ReaderDep, RerankingDep, SearchServiceDep, SettingsDep
from api.errors import error_responses
from api.reranking import Reranking
from api.uploads import read_image_upload
from common.errors import InvalidQuery
from common.settings import Settings
from search.filters import parse_filter_option
from search.query import (
    DEFAULT_LIMIT,
    MAX_FILTER_VALUE_CHARS,
    MAX_QUERY_CHARS,
    QueryFields,
    SearchRequest,
    SearchResponse,
    build_fields,
    build_request,
)
from search.service import SearchService
from store.protocol import AsyncVectorReader

router = APIRouter(prefix="/search", tags=["search"], responses=error_responses(401, 409, 422, 503))

FilterText = Annotated[str | None, Query(max_length=MAX_FILTER_VALUE_CHARS)]
Price = Annotated[float | None, Query(ge=0, allow_inf_nan=False)]
Weight = Annotated[float | None, Query(ge=0, allow_inf_nan=False)]
_FIELD = r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*"
FIELD_NAME_PATTERN = f"^{_FIELD}$"
FieldName = Annotated[str, WithJsonSchema({"type": "string", "pattern": FIELD_NAME_PATTERN})]
"""A payload field name, as `search.query.check_field_name` accepts it (the schema says it; the route checks it, with
a message naming the value)."""
FilterOption = Annotated[str, WithJsonSchema({"type": "string", "pattern": rf"^\s*{_FIELD}\s*[=:]"})]
"""A ``FIELD=VALUE`` (or ``FIELD:VALUE``) query-string filter, as `filter_params` accepts it."""


async def search_params(
    *,
    limit: Annotated[int, Query(ge=1, description="Results per page.")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, description="Results to skip.")] = 0,
    category: FilterText = None,
    brand: FilterText = None,
    min_price: Price = None,
    max_price: Price = None,
    in_stock: bool | None = None,
    w_image: Weight = None,
    w_text: Weight = None,
    w_lexical: Weight = None,
    group: Annotated[bool | None, Query(description="Collapse variants sharing a group_id.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False,
                                             description="Drop results of lower relevance (0-1).")] = None,
    facet: Annotated[list[FieldName] | None, Query(description="A field to count among the results; repeatable.")
                     ] = None,
    filter_options: Annotated[
        list[FilterOption] | None,
        Query(alias="filter", description="Any payload field by equality, FIELD=VALUE (string value); "
              "repeatable."),
    ] = None,
) -> dict[str, Any]:
    """The query-string parameters shared by ``GET /search`` and ``POST /search/image`` (given ones only)."""
    given: dict[str, Any] = {
        key: value
        for key, value in (("limit", limit), ("offset", offset), ("category", category), ("brand", brand),
                           ("min_price", min_price), ("max_price", max_price), ("in_stock", in_stock),
                           ("w_image", w_image), ("w_text", w_text), ("w_lexical", w_lexical),
                           ("group", group), ("min_score", min_score), ("facets", facet))
        if value is not None
    }
    if filter_options:
        given["filters"] = filter_params(filter_options)
    return given


def filter_params(options: list[str]) -> dict[str, str]:
    """Repeated ``filter=FIELD=VALUE`` query parameters as a filters dict.

    Raises:
        InvalidQuery: an option that is not FIELD=VALUE.
    """
    try:
        return dict(parse_filter_option(option) for option in options)
    except ValueError as e:
        raise InvalidQuery(f"query parameter 'filter': {e}") from e


SearchParamsDep = Annotated[dict[str, Any], Depends(search_params)]

MAX_RERANK_BUDGET_S = 120.0
RerankTopN = Annotated[int | None, Query(ge=1, description="Results to re-rank (default settings rerank.top_n; "
                                         "at most settings search.max_limit).")]
RerankBudget = Annotated[float | None, Query(gt=0, le=MAX_RERANK_BUDGET_S, allow_inf_nan=False,
                                             description="Seconds the re-ranker may take (default settings "
                                             "rerank.budget_s).")]


class RerankOptions(BaseModel):
    """Whether and how to re-rank a search with the vision-language model (docs/rerank.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rerank: bool = Field(False, description="Re-rank the first results with the configured re-ranker; when it "
                         "is not configured, fails or runs out of time the first-stage order comes back with "
                         "reranked: false and the reason.")
    rerank_top_n: int | None = Field(None, ge=1, description="Results to re-rank (default settings "
                                     "rerank.top_n; at most settings search.max_limit).")
    rerank_budget_s: float | None = Field(None, gt=0, le=MAX_RERANK_BUDGET_S, allow_inf_nan=False,
                                          description="Seconds the re-ranker may take (default settings "
                                          "rerank.budget_s).")


async def rerank_params(caller: CallerDep, settings: SettingsDep, rerank: bool = False, rerank_top_n: RerankTopN = None,
                  rerank_budget_s: RerankBudget = None) -> RerankOptions:
    """The re-rank query parameters of ``GET /search`` and ``POST /search/image``.

    Raises:
        Unauthorized: rerank=true without a valid API key, when one is needed (`api.auth.check_rerank`).
    """
    check_rerank(caller, settings.auth, rerank=rerank)
    return RerankOptions(rerank=rerank, rerank_top_n=rerank_top_n, rerank_budget_s=rerank_budget_s)


RerankParamsDep = Annotated[RerankOptions, Depends(rerank_params)]


SEARCH_EXAMPLES: dict[str, Any] = {
    "text": {"summary": "Words, filters and facets",
             "value": {"q": "white sneakers", "limit": 10, "in_stock": True, "filters": {"currency": "EUR"},
                       "facets": ["category", "brand"]}},
    "weights": {"summary": "Words with the text index weighted up, second page",
                "value": {"q": "warm winter coat", "w_text": 0.8, "w_image": 0.2, "offset": 10}},
}
"""Examples of ``POST /search`` bodies (the API docs show them; schemathesis's examples phase sends them)."""


class SearchBody(QueryFields, RerankOptions):
    """The JSON body of ``POST /search``: the search and its re-rank options."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


async def respond(request: SearchRequest, options: RerankOptions, *, service: SearchService, reranking: Reranking,
                  settings: Settings, reader: AsyncVectorReader | None) -> SearchResponse:
    """The search, when no re-ranking is asked: through the store's async client when there is one (settings
    api.async_store), ranked on the event loop with the embedded store (settings search.rank_on_loop);
    otherwise `answer` in a worker thread."""
    if reader is not None and not options.rerank:
        return await service.asearch(request, reader)
    if service.ranks_on_loop and not options.rerank:
        return await service.asearch_on_loop(request)
    return await run_in_threadpool(answer, request, options, service=service, reranking=reranking,
                                   settings=settings)


def answer(request: SearchRequest, options: RerankOptions, *, service: SearchService, reranking: Reranking,
           settings: Settings) -> SearchResponse:
    """The search, re-ranked when the options ask for it."""
    if not options.rerank:
        return service.search(request)
    top_n = options.rerank_top_n
    if top_n is not None and top_n > settings.search.max_limit:
        raise InvalidQuery(f"rerank_top_n {top_n} is over {settings.search.max_limit} (setting search.max_limit)")
    return reranking.search(service, request, top_n=top_n, budget_s=options.rerank_budget_s)


@router.get("", summary="Search by text", response_model_exclude_unset=True)
async def search_get(
    *,
    service: SearchServiceDep,
    settings: SettingsDep,
    reranking: RerankingDep,
    reader: ReaderDep,
    params: SearchParamsDep,
    rerank: RerankParamsDep,
    q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description="Query text.")] = None,
) -> SearchResponse:
    """Search with the text ``q``; filters, page, weights, grouping, facets and re-ranking as query
    parameters."""
    return await respond(build_request({**params, "q": q}, settings=settings.search), rerank, service=service,
                         reranking=reranking, settings=settings, reader=reader)


@router.post("", summary="Search by text or a composed query (JSON body)", response_model_exclude_unset=True,
             responses=error_responses(400, 413, 415))
async def search_post(body: Annotated[SearchBody, Body(openapi_examples=SEARCH_EXAMPLES)], *,
                      service: SearchServiceDep, settings: SettingsDep, reranking: RerankingDep, caller: CallerDep,
                      reader: ReaderDep) -> SearchResponse:
    """The same as ``GET /search``, with the parameters as a JSON body, which may also hold any-field
    ``filters`` and a composed ``query``: a list of parts ``{"text" | "product_id" | "image_url": ..., "weight":
    w}`` whose weighted embeddings add up to the query vector (negative weights push away)."""
    check_rerank(caller, settings.auth, rerank=body.rerank)
    fields = body.model_dump(exclude_unset=True, exclude=set(RerankOptions.model_fields))
    options = RerankOptions(**body.model_dump(include=set(RerankOptions.model_fields)))
    return await respond(build_request(fields, settings=settings.search), options, service=service,
                         reranking=reranking, settings=settings, reader=reader)


@router.post("/image", summary="Search by an uploaded image, optionally with text",
             responses=error_responses(413, 415), response_model_exclude_unset=True)
def search_image(
    *,
    file: Annotated[UploadFile, File(description="The query image (JPEG, PNG, WebP, GIF, BMP, TIFF).")],
    service: SearchServiceDep,
    settings: SettingsDep,
    reranking: RerankingDep,
    params: SearchParamsDep,
    rerank: RerankParamsDep,
    text: Annotated[str | SkipJsonSchema[None], Form(max_length=MAX_QUERY_CHARS,
                                     description="Words to combine with the image.")] = None,
) -> SearchResponse:
    """Search both indices with the image (and ``text``: the query is their normalised mean).

    413 over the upload limit, 415 for anything that is not a supported image, 422 for bad parameters.
    """
    fields = build_fields({**params, "q": text}, settings=settings.search)  # parameters before the upload
    image = read_image_upload(
        file.file,
        filename=file.filename,
        max_bytes=settings.api.max_upload_bytes,
        max_pixels=settings.indexer.max_image_pixels,
        draft_size=service.encoder.image_size,
    )
    return answer(build_request(fields, settings=settings.search, image=image), rerank, service=service,
                  reranking=reranking, settings=settings)
