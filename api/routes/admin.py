"""Administration: re-index the catalog on the server's own store handle, without downtime.

``POST /admin/reindex`` starts `indexer.reindex.reindex` in a background thread and answers 202 with a job id;
``GET /admin/reindex/{job}`` says where it stands. The server does the work because the embedded store can be
opened by one process only: while ``vitrine serve`` holds it, ``vitrine reindex`` asks the server (see
`api.cli.reindex`). Searches keep being answered from the current version until the canary has passed and the
alias is switched; the old version is dropped by the job after the grace period.

Who may call: with API keys set (``auth.api_keys``), a valid key; with auth off, only clients on this machine
(loopback addresses). The catalog file is read by the server, so it must lie in one of the folders of setting
``indexer.catalog_roots`` (422 otherwise); relative image paths in it resolve from its folder as usual.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from api.auth import CallerDep
from api.deps import SettingsDep, StateDep
from api.errors import error_responses
from api.wiring import refresh_search
from common.errors import InvalidInput, NotFound, Overloaded, Unauthorized, VitrineError
from common.settings import Settings
from embed import Encoder
from indexer.reindex import DEFAULT_GRACE_S, MAX_CANARY_QUERIES, Canary, CanaryQuery, reindex
from store.protocol import VectorStore

logger = logging.getLogger(__name__)

MAX_GRACE_S = 86_400.0
MAX_JOBS_KEPT = 20
JobState = Literal["running", "switched", "done", "failed", "canary_failed"]
FINISHED: frozenset[str] = frozenset({"done", "failed", "canary_failed"})


def require_admin(request: Request, caller: CallerDep) -> None:
    """A valid API key when auth is on; a loopback client when it is off.

    Raises:
        Unauthorized: otherwise (401).
    """
    if caller.auth_on:
        caller.require("re-indexing")
        return
    host = request.client.host if request.client is not None else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        logger.info("refused: re-indexing asked by %s with auth off", host or "an unknown client")
        raise Unauthorized("re-indexing is accepted only from this machine (a loopback address) while auth is "
                           "off; set auth.api_keys and send a key in the X-API-Key header to call it remotely")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 422, 503))


class CanaryQueryBody(BaseModel):
    """A canary query: a text and, optionally, the product it must find in the top 10."""

    query: str = Field(min_length=1, max_length=500)
    expect: str | None = Field(None, min_length=1, max_length=500)


class ReindexRequest(BaseModel):
    """What to re-index and how to check it."""

    catalog: str = Field(min_length=1, max_length=4096, description="Catalog file on the server, inside one of "
                         "the folders of setting indexer.catalog_roots.")
    collection: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                                   description="Collection (alias); default: the one the server searches.")
    canary_queries: list[CanaryQueryBody] = Field(default_factory=list, max_length=MAX_CANARY_QUERIES,
                                                  description="Canary queries; none: the titles of a few "
                                                  "products of the new version must find themselves.")
    grace_s: float = Field(DEFAULT_GRACE_S, ge=0, le=MAX_GRACE_S,
                           description="Seconds the old version is kept after the switch.")
    allow_shrink: bool = Field(False, description="Accept a new version with under 90% of the current count.")
    keep_failed: bool = Field(False, description="Keep a version that failed its canary, for inspection.")


@dataclass
class ReindexJob:
    """One re-index run on the server."""

    id: str
    catalog: str
    collection: str
    state: JobState = "running"
    stage: str = "starting"
    version: str | None = None
    previous: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data."""
        return {"id": self.id, "catalog": self.catalog, "collection": self.collection, "state": self.state,
                "stage": self.stage, "version": self.version, "previous": self.previous, "result": self.result,
                "error": self.error, "started": self.started, "updated": self.updated}


class ReindexJobs:
    """The app's re-index jobs: at most one running; the last `MAX_JOBS_KEPT` remembered. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, ReindexJob] = {}
        self._threads: list[threading.Thread] = []

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's state.

        Raises:
            NotFound: no such job.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no re-index job {job_id!r} on this server (jobs are kept in memory until restart)")
            return job.as_dict()

    def start(self, body: ReindexRequest, catalog: Path, *, settings: Settings, store: VectorStore,
              encoder: Encoder, on_switched: Callable[[], None] | None = None) -> dict[str, Any]:
        """Start a job in a daemon thread; ``on_switched`` is called once the alias points at the new version.

        Raises:
            Overloaded: a job is already running (429).
        """
        with self._lock:
            running = [j for j in self._jobs.values() if j.state not in FINISHED]
            if running:
                raise Overloaded(f"re-index job {running[0].id} of {running[0].catalog!r} is still {running[0].stage};"
                                 " wait for it (GET /admin/reindex/{job})", retry_after=30)
            job = ReindexJob(id=uuid.uuid4().hex, catalog=str(catalog),
                             collection=body.collection or settings.store.collection)
            self._jobs[job.id] = job
            for old in list(self._jobs)[:-MAX_JOBS_KEPT]:
                if self._jobs[old].state in FINISHED:
                    del self._jobs[old]
            thread = threading.Thread(target=self._run, args=(job, body, catalog),
                                      kwargs={"settings": settings, "store": store, "encoder": encoder,
                                              "on_switched": on_switched},
                                      name=f"vitrine-reindex-{job.id[:8]}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
            return job.as_dict()

    def _update(self, job: ReindexJob, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            job.updated = time.time()

    def _run(self, job: ReindexJob, body: ReindexRequest, catalog: Path, *, settings: Settings, store: VectorStore,
             encoder: Encoder, on_switched: Callable[[], None] | None) -> None:
        def on_stage(stage: str, data: dict[str, Any]) -> None:
            changes: dict[str, Any] = {"stage": stage}
            if "version" in data:
                changes["version"] = data["version"]
            if "previous" in data:
                changes["previous"] = data["previous"]
            if stage in ("switched", "grace"):
                changes["state"] = "switched"
            self._update(job, **changes)
            if stage == "switched" and on_switched is not None:
                try:
                    on_switched()
                except Exception:  # the switch stands; searches keep the previous calibration and vocabulary
                    logger.exception("re-index job %s: the search service could not take up the new version; "
                                     "it keeps the previous one's calibration and tag vocabulary until a restart",
                                     job.id)

        canary = Canary(queries=tuple(CanaryQuery(q.query, q.expect) for q in body.canary_queries),
                        allow_shrink=body.allow_shrink)
        try:
            result = reindex(catalog, settings=settings, encoder=encoder, store=store, collection=job.collection,
                             canary=canary, grace_s=body.grace_s, keep_failed=body.keep_failed, progress=False,
                             on_stage=on_stage)
        except VitrineError as e:
            logger.error("re-index job %s failed: %s", job.id, e)
            self._update(job, state="failed", stage="failed", error=f"{type(e).__name__}: {e}")
            return
        except Exception as e:
            logger.exception("re-index job %s failed", job.id)
            self._update(job, state="failed", stage="failed", error=f"{type(e).__name__}: {e}")
            return
        self._update(job, state="done" if result.switched else "canary_failed", stage="done",
                     result=result.as_dict(), previous=result.previous)

    def join(self, timeout_s: float) -> None:
        """Wait for the running jobs' threads (at shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout_s)


def confined_catalog(catalog: str, settings: Settings) -> Path:
    """The catalog file, resolved, when it lies inside a folder of ``indexer.catalog_roots``.

    Raises:
        InvalidInput: no roots set, outside them, or not a file (422).
    """
    roots = [Path(root).resolve() for root in settings.indexer.catalog_roots]
    if not roots:
        raise InvalidInput("this server reads no catalog: setting indexer.catalog_roots is empty; set it to the "
                           "folders the server may read catalogs from (VITRINE_INDEXER__CATALOG_ROOTS)")
    path = Path(catalog)
    if not path.is_absolute():
        raise InvalidInput(f"catalog {catalog[:200]!r} is not an absolute path; expected a file inside "
                           f"{[str(r) for r in roots]}")
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InvalidInput(f"catalog {catalog[:200]!r} is outside the folders this server may read (setting "
                           f"indexer.catalog_roots: {[str(r) for r in roots]})")
    if not resolved.is_file():
        raise InvalidInput(f"catalog {catalog[:200]!r} is not a file on the server")
    return resolved


def get_jobs(request: Request) -> ReindexJobs:
    """The app's re-index jobs (made on first use)."""
    jobs: ReindexJobs | None = getattr(request.app.state, "reindex_jobs", None)
    if jobs is None:
        jobs = request.app.state.reindex_jobs = ReindexJobs()
    return jobs


JobsDep = Annotated[ReindexJobs, Depends(get_jobs)]


@router.post("/reindex", status_code=status.HTTP_202_ACCEPTED, summary="Re-index the catalog without downtime",
             responses=error_responses(429))
def start_reindex(body: ReindexRequest, settings: SettingsDep, state: StateDep, jobs: JobsDep) -> dict[str, Any]:
    """Build a new version of the collection from ``catalog``, check it with the canary, switch the alias and
    drop the old version after ``grace_s``; answers at once with the job (poll ``GET /admin/reindex/{id}``).
    429 while another re-index runs."""
    catalog = confined_catalog(body.catalog, settings)
    components = state.components()
    return jobs.start(body, catalog, settings=settings, store=components.store,
                      encoder=components.service.encoder,
                      on_switched=lambda: refresh_search(components, settings))


@router.get("/reindex/{job_id}", summary="Where a re-index job stands", responses=error_responses(404))
def reindex_status(job_id: Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")],
                   jobs: JobsDep) -> dict[str, Any]:
    """The job: ``state`` (running, switched: the alias points at the new version and the old one waits out
    its grace period; done, canary_failed, failed), ``stage``, the versions, and the result when finished."""
    return jobs.get(job_id)
