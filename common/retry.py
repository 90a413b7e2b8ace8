"""Retry timing of the API clients (the re-ranker's chat API, the images API): exponential backoff with jitter,
``Retry-After``, and the deadline."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime

MAX_DELAY_S = 60.0
RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx


def is_retryable(status: int) -> bool:
    """Whether an HTTP status is worth another try: 408, 409, 429 and 5xx."""
    return status in RETRYABLE_STATUS or status >= 500


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait, seconds: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date.

    Header names are matched without regard to case; an unreadable value counts as absent.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff_s(attempt: int, base_s: float, retry_after: float | None = None) -> float:
    """The wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    ``Retry-After`` wins when given (plus up to 10 % jitter, never less); otherwise ``base_s * 2**attempt``
    with "equal jitter" (between half and all of it), so that clients that failed together retry apart.
    Never more than `MAX_DELAY_S`.
    """
    if retry_after is not None:
        return min(MAX_DELAY_S, retry_after * (1.0 + 0.1 * random.random()))
    delay = min(MAX_DELAY_S, base_s * (2.0 ** attempt))
    return delay / 2.0 + random.uniform(0.0, delay / 2.0)


def remaining_s(deadline: float | None) -> float | None:
    """Seconds left until a `time.monotonic()` deadline (negative once past), or ``None`` without one."""
    return None if deadline is None else deadline - time.monotonic()
