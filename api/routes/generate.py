"""Variants of a product image ("the same sneaker in red"), the files they are kept in, and imagine-then-search.

``POST /generate/variants`` (a catalog product) and ``POST /generate/variants/image`` (an uploaded picture) make
images with a generation backend (`generate.service.Variants`); ``GET /generated/{name}`` serves them (named by a
hash of what made them, so cacheable for good); ``POST /search/imagine`` (and ``/search/imagine/image``) makes a
variant and searches the catalog with it and the instruction's words. A backend that is not installed or not
configured answers 503 with what to install or set; bad parameters 422.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from api.auth import require_key, require_read_key
from api.deps import SearchServiceDep, SettingsDep
from api.errors import error_responses
from api.uploads import read_upload, upload_name
from common.errors import InvalidInput
from common.images import decode_image
from common.product import MAX_ID_LENGTH
from common.settings import Settings
from common.thumbnails import ThumbnailStore, key_of_url
from generate.cache import NAME_PATTERN
from generate.service import VariantResult, Variants
from search.query import DEFAULT_LIMIT, SearchResponse, build_request
from search.service import SearchService

router = APIRouter(tags=["generate"], responses=error_responses(401, 422, 503))
KEYED = [Depends(require_key)]
"""Generation costs GPU time or API money: a valid API key once any is set (api.auth)."""

MAX_SEED = 2**32 - 1
GENERATED_MAX_AGE_S = 31_536_000
IMAGINE_TEXT_WEIGHT = 0.1
"""Weight of the instruction's words beside the generated image (weight 1) in an imagine search. The picture says
what the product looks like; words like "the same ... in" say little to the vector (at 0.3 and more they pull the
demo's query off the catalog into no_good_match), but they take part in the lexical match in full: "in green"
favours products whose text says green."""
UPLOAD_PATHS = ("/generate/variants/image", "/search/imagine/image")
"""Routes that take an uploaded image (bounded by the upload limit middleware)."""


def get_variants(request: Request) -> Variants:
    """The app's generation service (made on first use; closed with the app)."""
    variants: Variants | None = getattr(request.app.state, "variants", None)
    if variants is None:
        variants = request.app.state.variants = Variants.from_settings(request.app.state.settings)
    return variants


VariantsDep = Annotated[Variants, Depends(get_variants)]


class VariantOptions(BaseModel):
    """How to make variants."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    instruction: str = Field(min_length=1, max_length=4000, description="What to change, e.g. 'the same "
                             "sneaker in red' (at most settings generate.max_instruction_chars characters).")
    n: int = Field(1, ge=1, description="Images to make (at most settings generate.max_n).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed (default: a random one, "
                             "returned); the same seed and parameters give the same images.")
    strength: float = Field(0.6, ge=0, le=1, allow_inf_nan=False, description="How far the variant may move "
                            "from the source image, 0-1.")
    backend: str | None = Field(None, description="recolor, diffusers or openai (default: settings "
                                "generate.backend).")


class VariantBody(VariantOptions):
    """``POST /generate/variants``: a catalog product and how to vary it."""

    product_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="The product whose image is "
                            "varied.")


class ImagineBody(VariantBody):
    """``POST /search/imagine``: a variant to make, and how many real products to find like it."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, description="Products to return (at most settings "
                       "search.max_limit).")


class GeneratedImage(BaseModel):
    """One generated image."""

    name: str
    url: str = Field(description="Where the API serves it: /generated/{name}.")


class VariantResponse(BaseModel):
    """Generated images and how they were made."""

    images: list[GeneratedImage]
    instruction: str
    prompt: str = Field(description="The prompt the model got.")
    prompt_method: str = Field(description="How the prompt was written: template or llm.")
    seed: int
    backend: str = Field(description="The generator that made them (backend and model).")
    took_ms: float
    cached: bool = Field(description="Made before for the same request: returned at once.")
    product_id: str | None = Field(None, description="The product varied (null for an upload).")


class ImagineResponse(BaseModel):
    """A generated variant and the real products nearest to it."""

    variant: VariantResponse
    search: SearchResponse


def _response(result: VariantResult, product_id: str | None) -> VariantResponse:
    return VariantResponse(
        images=[GeneratedImage(name=name, url=f"/generated/{name}") for name in result.images],
        instruction=result.instruction, prompt=result.prompt, prompt_method=result.prompt_method,
        seed=result.seed, backend=result.backend, took_ms=result.took_ms, cached=result.cached,
        product_id=product_id)


def product_source(service: SearchService, settings: Settings, product_id: str) -> tuple[Image.Image, str,
                                                                                          dict[str, Any]]:
    """A catalog product's image (its preview made at ingestion), that image's hash, and its fields.

    Raises:
        NotFound: no such product.
        InvalidInput: the product has no stored preview to vary.
    """
    product = service.get_product(product_id)
    key = key_of_url(product.get("preview"))
    if key is None:
        raise InvalidInput(f"product {product_id!r} has no image preview to vary; products get one when "
                           "`vitrine index` reads their image (images.thumbnails on)")
    return ThumbnailStore.from_settings(settings).open(key, "preview"), key, product


def _upload(file: UploadFile, settings: Settings) -> tuple[Image.Image, str]:
    """The uploaded image, decoded, and the hash of its bytes."""
    data = read_upload(file.file, filename=file.filename, max_bytes=settings.api.max_upload_bytes)
    image = decode_image(data, max_pixels=settings.indexer.max_image_pixels, source=upload_name(file.filename))
    return image, hashlib.sha256(data).hexdigest()


def imagine_search(service: SearchService, settings: Settings, variants: Variants, result: VariantResult, *,
                   limit: int, exclude: str | None) -> SearchResponse:
    """Search with the first generated image and the instruction's words; ``exclude`` (the source product)
    left out."""
    with Image.open(variants.path(result.images[0])) as generated:
        image = generated.convert("RGB")
    request = build_request({"query": [{"text": result.instruction, "weight": IMAGINE_TEXT_WEIGHT}],
                             "limit": min(limit + 1, settings.search.max_limit)}, settings=settings.search,
                            image=image)
    found = service.search(request)
    kept = [hit for hit in found.results if hit.id != exclude][:limit]
    return found.model_copy(update={"results": kept, "limit": limit})


def form_options(
    instruction: Annotated[str, Form(min_length=1, max_length=4000, description="What to change.")],
    n: Annotated[int, Form(ge=1, description="Images to make.")] = 1,
    seed: Annotated[int | SkipJsonSchema[None], Form(ge=0, le=MAX_SEED, description="Random seed.")] = None,
    strength: Annotated[float, Form(ge=0, le=1, allow_inf_nan=False, description="How far from the source, 0-1.")
                        ] = 0.6,
    backend: Annotated[str | SkipJsonSchema[None], Form(description="recolor, diffusers or openai.")] = None,
) -> VariantOptions:
    """The variant options of the upload routes, as form fields."""
    return VariantOptions(instruction=instruction, n=n, seed=seed, strength=strength, backend=backend)


FormOptionsDep = Annotated[VariantOptions, Depends(form_options)]
UploadFileField = Annotated[UploadFile, File(description="The source image (JPEG, PNG, WebP, ...).")]


def vary(variants: Variants, options: VariantOptions, image: Image.Image, digest: str,
         product: dict[str, Any] | None) -> VariantResult:
    """``options.n`` variants of ``image`` (hashed ``digest``; ``product``'s fields for the prompt, if any)."""
    return variants.make(instruction=options.instruction, image=image, source_digest=digest, product=product,
                         n=options.n, seed=options.seed, strength=options.strength, backend=options.backend)


def check_limit(limit: int, settings: Settings) -> None:
    """Raises InvalidInput when ``limit`` is over settings search.max_limit."""
    if limit > settings.search.max_limit:
        raise InvalidInput(f"limit {limit} is over {settings.search.max_limit} (setting search.max_limit)")


@router.post("/generate/variants", summary="Variants of a catalog product's image",
             responses=error_responses(404, 429), dependencies=KEYED)
def variants_of_product(body: VariantBody, service: SearchServiceDep, settings: SettingsDep,
                        variants: VariantsDep) -> VariantResponse:
    """Make ``n`` variants of the product's image following ``instruction``."""
    image, key, product = product_source(service, settings, body.product_id)
    return _response(vary(variants, body, image, key, product), body.product_id)


@router.post("/generate/variants/image", summary="Variants of an uploaded image",
             responses=error_responses(413, 415, 429), dependencies=KEYED)
def variants_of_upload(file: UploadFileField, options: FormOptionsDep, settings: SettingsDep,
                       variants: VariantsDep) -> VariantResponse:
    """Make ``n`` variants of the uploaded image following ``instruction``."""
    image, digest = _upload(file, settings)
    return _response(vary(variants, options, image, digest, None), None)


@router.get("/generated/{name}", summary="A generated image", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}, "description": "The image"}, **error_responses(404)},
            dependencies=[Depends(require_read_key)])
def generated(name: Annotated[str, Path(json_schema_extra={"pattern": f"^{NAME_PATTERN.pattern}$"})],
              variants: VariantsDep) -> FileResponse:
    """A generated image; its name is a hash of what made it, so it may be cached for good."""
    return FileResponse(variants.path(name), headers={
        "Cache-Control": f"public, max-age={GENERATED_MAX_AGE_S}, immutable"})


@router.post("/search/imagine", summary="Make a variant of a product, then find real products like it",
             responses=error_responses(404, 429), dependencies=KEYED)
def imagine(body: ImagineBody, service: SearchServiceDep, settings: SettingsDep,
            variants: VariantsDep) -> ImagineResponse:
    """Generate ``n`` variants of the product (``instruction``), then search the catalog with the first one and
    the instruction's words; the product itself is left out of the results."""
    check_limit(body.limit, settings)
    image, key, product = product_source(service, settings, body.product_id)
    result = vary(variants, body, image, key, product)
    found = imagine_search(service, settings, variants, result, limit=body.limit, exclude=body.product_id)
    return ImagineResponse(variant=_response(result, body.product_id), search=found)


@router.post("/search/imagine/image", summary="Make a variant of an uploaded image, then find products like it",
             responses=error_responses(413, 415, 429), dependencies=KEYED)
def imagine_upload(
    *,
    file: UploadFileField,
    options: FormOptionsDep,
    service: SearchServiceDep,
    settings: SettingsDep,
    variants: VariantsDep,
    limit: Annotated[int, Form(ge=1, description="Products to return.")] = DEFAULT_LIMIT,
) -> ImagineResponse:
    """Generate variants of the uploaded image, then search the catalog with the first one and the instruction's
    words."""
    check_limit(limit, settings)
    image, digest = _upload(file, settings)
    result = vary(variants, options, image, digest, None)
    found = imagine_search(service, settings, variants, result, limit=limit, exclude=None)
    return ImagineResponse(variant=_response(result, None), search=found)
