"""Dependencies of the routes, as ``Annotated`` aliases (full-stack-fastapi-template style).

``get_settings`` is the one settings dependency: tests override it with
``app.dependency_overrides[get_settings] = lambda: other_settings``.

Dependencies that do no I/O are ``async def`` (here, in `api.auth` and in the routes): FastAPI runs a plain
``def`` dependency in its thread pool, one thread hop per dependency per request, which cost a search about a
millisecond of CPU and a share of its latency at load (bench/serve.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.reranking import Reranking
from api.state import ServiceState
from common.settings import Settings
from search.service import SearchService
from store.protocol import AsyncVectorReader


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_state(request: Request) -> ServiceState:
    """The app's loading state (set by the lifespan)."""
    state: ServiceState = request.app.state.vitrine
    return state


SettingsDep = Annotated[Settings, Depends(get_settings)]
StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_search_service(state: StateDep) -> SearchService:
    """The ready search service.

    Raises:
        BackendUnavailable: not loaded (yet); answered 503.
        EncoderMismatch: the collection was built with another encoder; answered 409.
    """
    return state.service()


SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]


async def get_reranking(state: StateDep) -> Reranking:
    """The re-ranking of the ready service (answers why not, when no re-ranker is set up).

    Raises:
        BackendUnavailable, EncoderMismatch: as `get_search_service`.
    """
    return state.reranking()


RerankingDep = Annotated[Reranking, Depends(get_reranking)]


async def get_reader(request: Request) -> AsyncVectorReader | None:
    """The async client searches read a Qdrant server through (settings api.async_store), or None: the embedded
    store, or the setting off."""
    reader: AsyncVectorReader | None = getattr(request.app.state, "reader", None)
    return reader


ReaderDep = Annotated[AsyncVectorReader | None, Depends(get_reader)]
