"""Background loading of the search components, and the readiness it reports.

The app's lifespan starts `ServiceState.start`, which loads the store and the encoder in a daemon thread, so
the server accepts connections at once: ``/health`` (liveness) answers immediately, ``/ready`` answers 503
until loading is done (or 503 with the reason if it failed), and search routes answer 503 meanwhile.

A load that failed for a reason that can pass (the collection does not exist yet, the embedded store is
held by a running ``vitrine index``, the Qdrant server is unreachable) is tried again on the next request
that asks for the service or for readiness, at most every ``retry_s`` seconds; so a server started before
its catalog was indexed becomes ready once it is. A wrong model or missing weights are not retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from api.reranking import Reranking
from api.wiring import Components
from common.errors import BackendUnavailable, EncoderMismatch, NotFound, VitrineError
from common.settings import Settings
from search.service import SearchService

logger = logging.getLogger(__name__)

Status = Literal["loading", "ready", "failed", "closed"]
Loader = Callable[[Settings], Components]
"""Builds the components from settings (`api.wiring.open_search` by default); runs in the loading thread."""

CLOSE_WAIT_S = 10.0
RETRY_S = 5.0
RETRYABLE: tuple[type[VitrineError], ...] = (NotFound, BackendUnavailable)
"""Failures to load that can pass without changing the settings (see the module's docstring)."""


class ServiceState:
    """The search components of one app, and where their loading stands. Thread-safe.

    Args:
        settings: passed to the loader.
        loader: builds the components (store opened, encoder loaded).
        retry_s: least time between two attempts after a retryable failure.
    """

    def __init__(self, settings: Settings, loader: Loader, *, retry_s: float = RETRY_S) -> None:
        self._settings = settings
        self._loader = loader
        self._retry_s = retry_s
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self._status: Status = "loading"
        self._reason: str | None = None
        self._failure: VitrineError | None = None
        self._components: Components | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start loading in a daemon thread (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._start_locked()

    def _start_locked(self) -> None:
        self._status = "loading"
        self._thread = threading.Thread(target=self._load, name="vitrine-load", daemon=True)
        self._thread.start()

    def _retry_if_due(self) -> None:
        """Load again if the last attempt failed for a retryable reason long enough ago."""
        with self._lock:
            if (self._status == "failed" and isinstance(self._failure, RETRYABLE)
                    and time.monotonic() - self._failed_at >= self._retry_s):
                logger.info("retrying to load the search service (last attempt: %s)", self._reason)
                self._start_locked()

    def _load(self) -> None:
        try:
            components = self._loader(self._settings)
        except VitrineError as e:
            logger.error("search service failed to load: %s", e)
            self._fail(str(e), e)
            return
        except Exception as e:
            logger.exception("search service failed to load")
            self._fail(f"{type(e).__name__}: {e}", None)
            return
        with self._lock:
            if self._status == "closed":  # the app shut down while we were loading
                components.close()
                return
            self._components = components
            self._status = "ready"
        logger.info("search service ready")

    def _fail(self, reason: str, error: VitrineError | None) -> None:
        with self._lock:
            if self._status != "closed":
                self._status, self._reason, self._failure = "failed", reason, error
                self._failed_at = time.monotonic()

    @property
    def status(self) -> Status:
        """``loading``, ``ready``, ``failed`` or ``closed`` (asking may start a due retry: then ``loading``)."""
        self._retry_if_due()
        return self._status

    @property
    def reason(self) -> str | None:
        """Why loading failed, or what is still going on."""
        if self._status == "loading":
            return "loading the encoder and opening the store"
        return self._reason

    def service(self) -> SearchService:
        """The ready service.

        Raises:
            BackendUnavailable: still loading, failed to load, or shut down.
            EncoderMismatch: loading failed because the collection was built with another encoder.
        """
        self._retry_if_due()
        with self._lock:
            status, components, failure, reason = self._status, self._components, self._failure, self._reason
        if status == "ready" and components is not None:
            return components.service
        if status == "loading":
            raise BackendUnavailable("the search service is still loading the encoder and the store; retry "
                                     "shortly (GET /ready says when it is ready)")
        if isinstance(failure, EncoderMismatch):
            raise EncoderMismatch(str(failure))
        raise BackendUnavailable(f"the search service is unavailable: {reason or status}")

    def components(self) -> Components:
        """The ready components (the store handle and the service), for jobs that run on the server's own store
        (`api.routes.admin`).

        Raises:
            BackendUnavailable, EncoderMismatch: as `service`.
        """
        self.service()
        with self._lock:
            components = self._components
        if components is None:
            raise BackendUnavailable("the search service was shut down")
        return components

    def reranking(self) -> Reranking:
        """The re-ranking of the ready service (one that says why there is no re-ranker, if none was set up).

        Raises:
            BackendUnavailable, EncoderMismatch: as `service`.
        """
        self.service()
        with self._lock:
            components = self._components
        found = components.reranking if components is not None else None
        return found if found is not None else Reranking(None, self._settings.rerank)

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Release the components; a load still running closes what it opens when it finishes."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(wait_s)
        with self._lock:
            components, self._components = self._components, None
            self._status = "closed"
        if components is not None:
            components.close()
