"""The search page (``GET /``), its static files, and ``GET /capabilities``, which tells the page what to show.

The page is plain HTML, CSS and an ES module in ``api/web/``: nothing to build. The HTML names each static file
with a hash of its content (``/static/app.js?v=1a2b...``), so the files are cached for a year and a new release
is fetched at once. A Content-Security-Policy keeps the page to its own origin: it can load nothing from
outside the API (no fonts, CDNs or trackers), which the browser tests check too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.auth import KeyRingDep, keyed_features
from api.deps import RerankingDep, SearchServiceDep, SettingsDep
from api.errors import error_responses
from api.routes.generate import VariantsDep
from api.routes.images import etag_matches
from common.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
STATIC_MAX_AGE_S = 31_536_000
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
PAGE_FACETS = ("category", "brand")
"""Fields the page offers as facets, before the tag attributes of the collection."""

router = APIRouter(tags=["page"])


@dataclass(frozen=True)
class Asset:
    """A static file of the page, read once."""

    body: bytes
    media_type: str
    etag: str


@dataclass(frozen=True)
class WebAssets:
    """The page and its static files, with the page's links pointing at content-hashed URLs."""

    page: bytes
    files: dict[str, Asset]

    @classmethod
    def load(cls, folder: Path = WEB_DIR) -> WebAssets:
        """Read ``index.html`` and the static files of ``folder``; ``{{name}}`` in the page becomes the file's
        content hash."""
        files: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            media_type = STATIC_TYPES.get(path.suffix)
            if media_type is None or not path.is_file():
                continue
            body = path.read_bytes()
            files[path.name] = Asset(body, media_type, hashlib.sha256(body).hexdigest()[:16])
        page = (folder / "index.html").read_text(encoding="utf-8")
        for name, asset in files.items():
            page = page.replace("{{" + name + "}}", asset.etag)
        return cls(page=page.encode(), files=files)


def get_assets(request: Request) -> WebAssets:
    """The app's page assets, read on first use."""
    assets: WebAssets | None = getattr(request.app.state, "web_assets", None)
    if assets is None:
        assets = request.app.state.web_assets = WebAssets.load()
    return assets


AssetsDep = Annotated[WebAssets, Depends(get_assets)]


@router.get("/", include_in_schema=False)
async def page(assets: AssetsDep) -> HTMLResponse:
    """The search page; always revalidated, so a new release shows at once."""
    return HTMLResponse(assets.page, headers={
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    })


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, request: Request, assets: AssetsDep) -> Response:
    """A static file of the page, cached for a year (its URL changes with its content); 304 when the browser
    already holds this version."""
    asset = assets.files.get(name)
    if asset is None:
        raise NotFound(f"no static file {name!r}; the page has {sorted(assets.files)}")
    etag = f'"{asset.etag}"'
    headers = {"Cache-Control": f"public, max-age={STATIC_MAX_AGE_S}, immutable", "ETag": etag,
               "X-Content-Type-Options": "nosniff"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


class Capabilities(BaseModel):
    """What this server offers, for clients (the search page) to show only what works."""

    facets: list[str] = Field(description="Fields worth offering as filters with counts: category, brand and "
                              "the collection's tag attributes (tags.<attribute>).")
    max_limit: int = Field(description="Largest page size (settings search.max_limit).")
    max_upload_bytes: int = Field(description="Largest image upload (settings api.max_upload_bytes).")
    rerank: bool = Field(False, description="Whether a re-ranker is loaded (rerank=true re-ranks).")
    rerank_model: str | None = Field(None, description="The re-ranker's model.")
    generate: bool = Field(False, description="Whether variant generation works with the default backend "
                           "(settings generate.backend).")
    generate_backends: list[str] = Field(default_factory=list, description="Generation backends that can be "
                                         "used, the default first.")
    max_variants: int = Field(1, description="Most images one generation request may ask for.")
    keyed: list[str] = Field(default_factory=list, description="Features that need an API key in the "
                             "X-API-Key header on this server (generate, rerank); a client without one should "
                             "not offer them.")


@router.get("/capabilities", summary="What this server offers (facets, limits, optional features)",
            responses=error_responses(503))
def capabilities(service: SearchServiceDep, reranking: RerankingDep, variants: VariantsDep,
                 settings: SettingsDep, keyring: KeyRingDep) -> Capabilities:
    """The facet fields, limits and optional features of this server."""
    tags = [f"tags.{attribute}" for attribute in service.tag_attributes]
    usable = [name for name, why_not in variants.backends().items() if why_not is None]
    default = settings.generate.backend
    return Capabilities(facets=[*PAGE_FACETS, *tags], max_limit=settings.search.max_limit,
                        max_upload_bytes=settings.api.max_upload_bytes, rerank=reranking.available,
                        rerank_model=reranking.model, generate=default in usable,
                        generate_backends=sorted(usable, key=lambda name: name != default),
                        max_variants=settings.generate.max_n, keyed=keyed_features(keyring, settings.auth))
