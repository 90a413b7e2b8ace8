"""Helpers of the qdrant-client backend: connecting, reading server errors, translating filters."""

from __future__ import annotations

import math

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from common.errors import BackendUnavailable, InvalidInput, StoreLocked
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
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        return QdrantClient(url=location, api_key=api_key, timeout=math.ceil(settings.timeout_s),
                            check_compatibility=False)
    raise InvalidInput(f"store location {location!r} is not http(s)://..., ':memory:' or 'path:DIR'")


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
