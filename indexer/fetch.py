"""Fetch the bytes of a catalog image: a local path, or an http(s) URL.

Local paths are relative to the catalog file's folder (absolute paths are fine too). Wherever a path
points, after resolving ``..`` and symlinks it must land inside the catalog's folder or one of
``settings.indexer.image_roots``: a catalog cannot make the indexer read ``/etc/passwd``.

URLs are fetched by `common.netfetch.SafeClient`, under its address policy: hosts that resolve to loopback,
private, link-local, cloud-metadata or other non-public addresses are refused unless
``VITRINE_FETCH__ALLOW_HOSTS`` allows them (an internal CDN), and every redirect is checked again (at most
``VITRINE_FETCH__MAX_REDIRECTS``). On top of it: a total time limit per attempt (``fetch_timeout_s``), retries
with exponential backoff and jitter on connection errors, timeouts, 429 and 5xx (a ``Retry-After`` header is
honoured, up to `MAX_RETRY_AFTER_S`), a byte cap enforced while streaming (``max_image_bytes``), and a
content-type check (`common.netfetch.is_image_type`). Any other scheme (``file:``, ``ftp:``, ``data:``,
``s3:``...) is refused.

Every failure raises a `common.errors.VitrineError` whose message names the image; the pipeline reports
it against the row.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from common.errors import BackendUnavailable, FetchFailed, ImageTooLarge, InvalidInput, UnsupportedImage
from common.netfetch import FetchPolicy, SafeClient, is_image_type
from common.settings import Settings

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 30.0
_URL_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class FetchConfig:
    """Everything a fetcher needs; picklable, so worker processes build their own fetcher from it."""

    base_dir: Path
    """The catalog file's folder: relative paths start here, and paths may point inside it."""
    roots: tuple[Path, ...] = ()
    """Other folders local paths may point into."""
    timeout_s: float = 10.0
    retries: int = 3
    max_bytes: int = 20_000_000
    backoff_s: float = 0.5
    """First retry delay; doubled on each retry (with jitter), capped at `MAX_RETRY_AFTER_S`."""
    allow_hosts: tuple[str, ...] = ()
    """Non-public hosts and networks URLs may point at (``VITRINE_FETCH__ALLOW_HOSTS``)."""
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings, *, base_dir: Path) -> FetchConfig:
        """The fetch configuration of a catalog in ``base_dir`` under ``settings`` (indexer and fetch groups)."""
        options = settings.indexer
        return cls(base_dir=base_dir, roots=tuple(options.image_roots), timeout_s=options.fetch_timeout_s,
                   retries=options.fetch_retries, max_bytes=options.max_image_bytes,
                   allow_hosts=tuple(settings.fetch.allow_hosts), max_redirects=settings.fetch.max_redirects)

    def policy(self) -> FetchPolicy:
        """The address policy and limits of one download attempt."""
        return FetchPolicy(allow_hosts=self.allow_hosts, max_bytes=self.max_bytes, timeout_s=self.timeout_s,
                           max_redirects=self.max_redirects, max_bytes_setting="VITRINE_INDEXER__MAX_IMAGE_BYTES")


def is_url(ref: str) -> bool:
    """Whether ``ref`` is an http(s) URL (as opposed to a local path)."""
    return urlsplit(ref).scheme.lower() in _URL_SCHEMES


def resolve_local_path(ref: str, *, base_dir: Path, roots: Sequence[Path] = ()) -> Path:
    """The real path of a local image reference, checked to lie inside the allowed folders.

    Raises:
        InvalidInput: another URL scheme, or a path that resolves outside ``base_dir`` and ``roots``.
    """
    scheme = urlsplit(ref).scheme.lower()
    if len(scheme) > 1:  # one letter would be a Windows drive
        raise InvalidInput(f"image {ref!r}: scheme {scheme + ':'!r} is not supported; expected an http(s) "
                           "URL or a file path (relative to the catalog's folder)")
    base = base_dir.resolve()
    try:
        path = Path(ref)
        resolved = (path if path.is_absolute() else base / path).resolve()
    except (OSError, ValueError) as e:
        raise InvalidInput(f"image path {ref!r} is not a usable path ({e})") from e
    allowed = [base, *(Path(root).resolve() for root in roots)]
    if not any(resolved.is_relative_to(folder) for folder in allowed):
        raise InvalidInput(
            f"image path {ref!r} resolves to {str(resolved)!r}, outside the catalog's folder {str(base)!r}"
            f" and the image roots {[str(r) for r in roots]}; move it there or add its folder to "
            "VITRINE_INDEXER__IMAGE_ROOTS"
        )
    return resolved


class _RetryableError(Exception):
    """A failure worth another attempt."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ImageFetcher:
    """Reads local images and downloads remote ones under the limits of a `FetchConfig`.

    Thread-safe; one per process. Use as a context manager, or call `close`.

    Args:
        config: folders, limits and retry policy.
        sleep: how to wait between retries (tests may pass a recorder).
    """

    def __init__(self, config: FetchConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self._client: SafeClient | None = None

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (if any were opened)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> SafeClient:
        """The HTTP client, created on first use."""
        if self._client is None:
            self._client = SafeClient(self.config.policy(),
                                      headers={"User-Agent": "vitrine-indexer", "Accept": "image/*"})
        return self._client

    def fetch(self, ref: str) -> bytes:
        """The bytes of the image ``ref`` (a path or an http(s) URL).

        Raises:
            UnsafeURL: a URL (or a redirect) to a host on a non-public address that is not allowlisted.
            InvalidInput: refused path or scheme, missing file, HTTP 4xx, bad redirect.
            ImageTooLarge: over ``max_bytes``.
            UnsupportedImage: served with a content type that is not an image.
            BackendUnavailable: the server kept failing (connection errors, timeouts, 429, 5xx) after retries.
        """
        if is_url(ref):
            return self._download(ref)
        return self._read_local(ref)

    def _read_local(self, ref: str) -> bytes:
        path = resolve_local_path(ref, base_dir=self.config.base_dir, roots=self.config.roots)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise InvalidInput(f"image path {ref!r} ({str(path)!r}) is not a file")
            if size > self.config.max_bytes:
                raise ImageTooLarge(f"image file {ref!r} is {size} bytes, over the limit of "
                                    f"{self.config.max_bytes} bytes (VITRINE_INDEXER__MAX_IMAGE_BYTES)")
            with path.open("rb") as file:
                data = file.read(self.config.max_bytes + 1)
        except FileNotFoundError as e:
            raise InvalidInput(f"image file {ref!r} not found (looked at {str(path)!r})") from e
        except OSError as e:
            raise InvalidInput(f"image file {ref!r} cannot be read ({e})") from e
        if len(data) > self.config.max_bytes:
            raise ImageTooLarge(f"image file {ref!r} grew past the limit of {self.config.max_bytes} bytes")
        return data

    def _download(self, url: str) -> bytes:
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            try:
                return self._get_once(url)
            except _RetryableError as e:
                if attempt + 1 == attempts:
                    raise BackendUnavailable(f"image {url!r}: {e.reason} (gave up after {attempts} "
                                             f"attempt{'s' if attempts > 1 else ''})") from e
                delay = self._delay(attempt, e.retry_after)
                if delay is None:
                    raise BackendUnavailable(
                        f"image {url!r}: {e.reason}, and the server asks to retry after "
                        f"{e.retry_after:.0f} s, longer than the {MAX_RETRY_AFTER_S:.0f} s the indexer waits"
                    ) from e
                logger.debug("image %s: %s; retry %d/%d in %.2f s", url, e.reason, attempt + 1,
                             self.config.retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Exponential backoff with jitter (half to full of the step), at least ``Retry-After``."""
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            return None
        step = min(MAX_RETRY_AFTER_S, self.config.backoff_s * 2**attempt)
        delay = step * (0.5 + random.random() / 2)  # jitter, not cryptography
        return float(max(delay, retry_after or 0.0))

    def _get_once(self, url: str) -> bytes:
        deadline = time.monotonic() + self.config.timeout_s
        try:
            with self.client.open(url, deadline=deadline) as response:
                self._check_response(url, response)
                return self.client.read(response, url=url, deadline=deadline)
        except FetchFailed as e:  # UnsafeURL, too many redirects and the like are final: no retry
            if e.retryable:
                raise _RetryableError(e.reason, e.retry_after) from e
            raise

    def _check_response(self, url: str, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise _RetryableError(f"HTTP {status} {response.reason_phrase}",
                             parse_retry_after(response.headers.get("Retry-After")))
        if status >= 400:
            raise InvalidInput(f"image {url!r}: HTTP {status} {response.reason_phrase}")
        if status != 200:
            raise InvalidInput(f"image {url!r}: HTTP {status} {response.reason_phrase}; expected 200 with "
                               "the image")
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not is_image_type(kind):
            raise UnsupportedImage(f"image {url!r} is served as {kind!r}, not as an image (expected image/*)")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.config.max_bytes:
            raise ImageTooLarge(f"image {url!r} is {int(length)} bytes (Content-Length), over the limit of "
                                f"{self.config.max_bytes} bytes (VITRINE_INDEXER__MAX_IMAGE_BYTES)")
