"""Helpers of the qdrant-client backend: connecting, reading server errors, translating filters."""

from __future__ import annotations

import math
from typing import Any

import grpc
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from common.errors import BackendUnavailable, InvalidInput, NotFound, StoreLocked, VitrineError
from common.settings import StoreSettings
from store._common import check_filter
from store.protocol import Condition, Filter, Match, MatchAny


def connect(location: str, settings: StoreSettings) -> QdrantClient:
    """A qdrant-client for ``location`` (``:memory:``, ``path:DIR`` or ``http(s)://...``); no request is sent.

    Raises:
        InvalidInput: any other location, or ``path:`` without a folder.
        StoreLocked: ``path:DIR`` is held open by another process.
        BackendUnavailable: the local folder cannot be opened.
    """
    if location == ":memory:":
        return QdrantClient(location=":memory:")
    if location.startswith("path:"):
        folder = location.removeprefix("path:")
        if not folder:
            raise InvalidInput(f"store url {location!r} names no folder; expected path:DIR")
        try:
            return QdrantClient(path=folder, force_disable_check_same_thread=True)
        except RuntimeError as e:
            if "already accessed" in str(e):
                raise StoreLocked(f"the store folder {folder} is in use by another process; is "
                                  "`vitrine serve` or another `vitrine index` running on it?") from e
            raise BackendUnavailable(f"cannot open the qdrant-client local store {folder}: {e}") from e
    if location.startswith(("http://", "https://")):
        return QdrantClient(**server_options(location, settings))
    raise InvalidInput(f"store location {location!r} is not http(s)://..., ':memory:' or 'path:DIR'")


GRPC_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}
"""gRPC channel options: a Qdrant server that went away is tried again at least every second (gRPC's default
backoff grows to two minutes, during which every call fails at once), so a restarted server is found within about
a second."""


def server_options(location: str, settings: StoreSettings) -> dict[str, Any]:
    """The keyword arguments of ``QdrantClient`` and ``AsyncQdrantClient`` for the server at URL ``location``: its
    API key and timeout, and gRPC on ``settings.grpc_port`` when ``settings.prefer_grpc``."""
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    options: dict[str, Any] = {"url": location, "api_key": api_key, "timeout": math.ceil(settings.timeout_s),
                               "check_compatibility": False}
    if settings.prefer_grpc:
        options.update(prefer_grpc=True, grpc_port=settings.grpc_port, grpc_options=dict(GRPC_CHANNEL_OPTIONS))
    return options


def server_name(location: str, settings: StoreSettings) -> str:
    """How errors name the server at URL ``location``: the URL, and the gRPC port when it is used."""
    return f"{location} (gRPC port {settings.grpc_port})" if settings.prefer_grpc else location


SERVER_ERRORS = (UnexpectedResponse, ResponseHandlingException, httpx.HTTPError, OSError, grpc.RpcError)
"""What qdrant-client raises when a request to a server fails (`server_error` turns each into Vitrine's error)."""

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def server_error(e: Exception, *, where: str, what: str) -> VitrineError | None:
    """Vitrine's error for what the client of the server ``where`` raised while ``what`` (None: not the server's).

    REST and gRPC alike: a missing collection (HTTP 404, gRPC NOT_FOUND) is `NotFound`; a server that cannot be
    reached (connection refused or cut, timeout; gRPC UNAVAILABLE, DEADLINE_EXCEEDED) or that refuses the request
    (any other status) is `BackendUnavailable`, with the server's reason and, for 401/403 (UNAUTHENTICATED,
    PERMISSION_DENIED), a hint at the API key.
    """
    key_hint = "; check VITRINE_STORE__API_KEY"
    if isinstance(e, UnexpectedResponse):
        if e.status_code == 404:
            return NotFound(f"Qdrant at {where}: {what}: not found ({error_reason(e)})")
        hint = key_hint if e.status_code in (401, 403) else ""
        return BackendUnavailable(f"Qdrant at {where}: {what} failed with HTTP {e.status_code}: "
                                  f"{error_reason(e)}{hint}")
    if isinstance(e, grpc.RpcError):
        code = e.code() if callable(getattr(e, "code", None)) else None
        details = e.details() if callable(getattr(e, "details", None)) else None
        reason = details or str(code)
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(f"Qdrant at {where}: {what}: not found ({reason})")
        if code in _UNREACHABLE or code is None:
            return BackendUnavailable(f"cannot reach the Qdrant server at {where} ({what}): {reason}")
        status = code.name if isinstance(code, grpc.StatusCode) else str(code)
        hint = key_hint if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) else ""
        return BackendUnavailable(f"Qdrant at {where}: {what} failed with gRPC status {status}: {reason}{hint}")
    if isinstance(e, (ResponseHandlingException, httpx.HTTPError, OSError)):
        source = getattr(e, "source", e)  # what ResponseHandlingException wraps
        return BackendUnavailable(f"cannot reach the Qdrant server at {where} ({what}): "
                                  f"{str(source) or type(source).__name__}")
    return None


def error_reason(e: UnexpectedResponse) -> str:
    """The server's error message in an unexpected response (or the start of its body)."""
    try:
        status = e.structured().get("status")
        if isinstance(status, dict) and "error" in status:
            return str(status["error"])
    except ValueError:
        pass
    return e.content[:200].decode("utf-8", "replace")


def to_qdrant_filter(filter: Filter | None) -> models.Filter | None:
    """A `Filter` as qdrant-client's filter (None when empty); a `Match` on a float becomes an equal range.

    Raises:
        InvalidQuery: a condition that can never be built.
    """
    checked = check_filter(filter)
    if checked is None:
        return None
    must: list[models.Condition] = [condition(c) for c in checked.must]
    must_not: list[models.Condition] = [condition(c) for c in checked.must_not]
    return models.Filter(must=must or None, must_not=must_not or None)


def condition(c: Condition) -> models.FieldCondition:
    """One condition as qdrant-client's (already checked by `to_qdrant_filter` or `check_boosts`)."""
    if isinstance(c, Match):
        if isinstance(c.value, float):
            return models.FieldCondition(key=c.field, range=models.Range(gte=c.value, lte=c.value))
        return models.FieldCondition(key=c.field, match=models.MatchValue(value=c.value))
    if isinstance(c, MatchAny):
        return models.FieldCondition(key=c.field, match=models.MatchAny(any=list(c.values)))
    return models.FieldCondition(key=c.field, range=models.Range(gte=c.gte, lte=c.lte))
