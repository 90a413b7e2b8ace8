"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from api.deps import StateDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether searches can be answered, and if not, why."""

    status: Literal["loading", "ready", "failed", "closed"]
    reason: str | None = None
    collection: str | None = None
    encoder: str | None = None
    dim: int | None = None


@router.get("/health", summary="Liveness: the process answers")
async def health() -> Health:
    """Always 200 while the process runs, even while models load."""
    return Health()


@router.get("/ready", summary="Readiness: encoder and store loaded",
            responses={503: {"model": Readiness, "description": "Loading, or loading failed (see reason)"}})
async def ready(state: StateDep, response: Response) -> Readiness:
    """200 once the encoder and the store are loaded; 503 before, or with the reason if loading failed."""
    if state.status != "ready":
        response.status_code = 503
        response.headers["Retry-After"] = "2"
        return Readiness(status=state.status, reason=state.reason)
    info = state.service().info
    return Readiness(status="ready", collection=info.name, encoder=info.encoder, dim=info.dim)
