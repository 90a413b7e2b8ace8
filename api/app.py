"""The FastAPI application.

The encoder and the store load in the ``lifespan``, in a background thread (`api.state.ServiceState`), so
``GET /health`` answers as soon as the server listens and ``GET /ready`` says 503 until the search service is
ready. Routes reach the service and the settings through the dependencies of `api.deps`; every endpoint
that runs the model or the store is a plain ``def``, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from api.auth import install_auth, require_read_key
from api.errors import error_responses, install_error_handlers
from api.limits import BodyLimitMiddleware
from api.observability import ObservabilityMiddleware
from api.openapi import install_openapi
from api.routes import admin, catalog, generate, health, images, metrics, products, search, web
from api.state import RETRY_S, Loader, ServiceState
from api.uploads import UploadLimitMiddleware
from api.wiring import open_search
from common.settings import Settings, load_settings
from store.factory import open_async_reader

logger = logging.getLogger(__name__)

IMAGE_SEARCH_PATH = "/search/image"


def create_app(
    settings: Settings | None = None,
    *,
    model: str | None = None,
    loader: Loader | None = None,
    retry_s: float = RETRY_S,
) -> FastAPI:
    """Build the app; nothing is loaded until the server starts it (lifespan).

    Args:
        settings: all settings (default: `load_settings()`: environment and TOML file).
        model: an explicit encoder name, as ``--model`` (it must be the collection's).
        loader: builds the search components from the settings in the loading thread (default:
            `api.wiring.open_search`); tests hand in one that waits, to watch ``/ready`` go from 503 to 200.
        retry_s: least time between attempts to load after a failure that can pass (no collection yet, store
            busy or unreachable); see `api.state`.
    """
    settings = settings or load_settings()
    load: Loader = loader or functools.partial(open_search, model=model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(settings, load, retry_s=retry_s)
        app.state.vitrine = state
        app.state.reader = open_async_reader(settings)
        state.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.close)
            if app.state.reader is not None:
                await app.state.reader.close()
            variants = getattr(app.state, "variants", None)
            if variants is not None:
                await run_in_threadpool(variants.close)

    app = FastAPI(
        title="Vitrine",
        summary="Multimodal product search: text and image queries over a catalog's image and text indices.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(UploadLimitMiddleware, max_upload_bytes=settings.api.max_upload_bytes,
                       paths=(IMAGE_SEARCH_PATH, *generate.UPLOAD_PATHS))
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.api.max_body_bytes,
                       max_json_depth=settings.api.max_json_depth, upload_paths=(IMAGE_SEARCH_PATH,
                       *generate.UPLOAD_PATHS), max_upload_bytes=settings.api.max_upload_bytes)
    # Read-only routes: keyed when auth.public_search is false; generate's routes choose their own (api.auth).
    keyed: dict[str, Any] = {"dependencies": [Depends(require_read_key)], "responses": error_responses(401)}
    app.include_router(health.router)
    app.include_router(search.router, **keyed)
    app.include_router(products.router, **keyed)
    app.include_router(catalog.router, **keyed)
    app.include_router(images.router, **keyed)
    app.include_router(generate.router)
    app.include_router(web.router, **keyed)
    app.include_router(metrics.router)  # keyed by auth.public_metrics (api.auth.require_metrics_key)
    app.include_router(admin.router)  # keyed, or loopback-only with auth off (api.routes.admin.require_admin)
    install_auth(app, settings)  # its CORS middleware goes outside the limits
    install_openapi(app, settings)  # the schema says the settings' bounds and which routes need a key
    # Outermost, so added last: request id, metrics and access log see every response (413s, CORS, 500s).
    app.add_middleware(ObservabilityMiddleware)
    return app
