"""Download from URLs that others chose without letting them reach inside our network (no SSRF).

`SafeClient` applies the address policy of `common.netpolicy` to every URL, redirect and connection:

- Only ``http`` and ``https``; hosts on non-public addresses are refused unless allowlisted (see
  `common.netpolicy`; ``VITRINE_FETCH__ALLOW_HOSTS``).
- The address checked is the address connected to: the check runs inside the connection set-up (an
  httpcore network backend), on the very addresses the socket then connects to, so a DNS answer that
  changes between a check and the connection (DNS rebinding) cannot slip a private address through. The
  URL keeps its hostname, so the Host header, TLS SNI and certificate verification are the hostname's, and
  kept-alive connections are pooled per hostname (each one was checked when it was opened).
- Redirects are followed here, not by httpx: at most ``max_redirects``, each hop's URL checked again (and
  its connection, as above).
- A total deadline over all hops and the body, with connect and read timeouts that never outlast it, and a
  byte cap: a ``Content-Length`` over it is refused before reading, and a body is read in chunks and dropped
  as soon as it passes the cap.

Residual risks: the DNS lookup itself (``getaddrinfo``) is not bounded by the deadline (the system resolver's
timeouts apply). Proxy environment variables (``HTTP_PROXY``, ...) are ignored on purpose: a proxy would
connect to addresses this module never sees. Any port is allowed on a public host.

Refusals raise `common.errors.UnsafeURL`; other failures raise `common.errors.FetchFailed` (with
``retryable``), `common.errors.ImageTooLarge` or `common.errors.UnsupportedImage`; every message names the URL.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from common.errors import FetchFailed, ImageTooLarge, InvalidInput, UnsafeURL, UnsupportedImage
from common.netpolicy import Allowlist, Resolver, check_host, resolve_checked, system_resolver

if TYPE_CHECKING:
    from common.settings import FetchSettings

logger = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NEUTRAL_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", ""})


def is_image_type(content_type: str) -> bool:
    """Whether a ``Content-Type`` may carry an image.

    ``image/*`` may, and so may ``application/octet-stream`` and a missing type, which object stores often
    send (the image decoder has the last word).
    """
    kind = content_type.partition(";")[0].strip().lower()
    return kind.startswith("image/") or kind in _NEUTRAL_TYPES


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves, checks and connects in one step: the addresses checked are the addresses connected to."""

    def __init__(self, allow: Allowlist, resolve: Resolver) -> None:
        self._allow = allow
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            addresses = resolve_checked(host, port, allow=self._allow, resolve=self._resolve)
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve host {host!r}: {e}") from e
        error: httpcore.ConnectError | None = None
        for address in addresses:  # a timeout is not worth another address: the deadline would not hold
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as e:
                error = e
        assert error is not None
        raise error


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose connections go through `_CheckedBackend`."""

    def __init__(self, backend: _CheckedBackend, *, verify: ssl.SSLContext | str | bool = True) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=context, trust_env=False)
        limits = httpx.Limits()
        # httpx offers no public way to hand its pool a network backend; tests prove this one is used.
        self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=backend,
                                             max_connections=limits.max_connections,
                                             max_keepalive_connections=limits.max_keepalive_connections,
                                             keepalive_expiry=limits.keepalive_expiry)


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and allowlist of a `SafeClient`; picklable, so worker processes can build their own client."""

    allow_hosts: tuple[str, ...] = ()
    """Allowlist entries, as in ``VITRINE_FETCH__ALLOW_HOSTS``."""
    max_bytes: int = 10_000_000
    timeout_s: float = 10.0
    """Deadline of one fetch, redirects and body included."""
    max_redirects: int = 5
    max_bytes_setting: str = "VITRINE_FETCH__MAX_BYTES"
    """The setting named when a body is too large."""
    allow: Allowlist = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow", Allowlist.parse(self.allow_hosts))

    @classmethod
    def from_settings(cls, settings: FetchSettings) -> FetchPolicy:
        """The policy of query image URLs under ``settings``."""
        return cls(allow_hosts=tuple(settings.allow_hosts), max_bytes=settings.max_bytes,
                   timeout_s=settings.timeout_s, max_redirects=settings.max_redirects)


class SafeClient:
    """An HTTP(S) client that applies the module's policy to every URL, redirect and connection.

    Thread-safe; keeps connections alive per host. Use as a context manager, or call `close`.

    Args:
        policy: allowlist, limits.
        headers: sent with every request (``User-Agent``, ``Accept``...).
        resolve: hostname lookup; the system resolver unless a test passes its own.
        verify: TLS verification, as httpx takes it (True, a CA bundle path, an ``ssl.SSLContext``).
    """

    def __init__(self, policy: FetchPolicy, *, headers: Mapping[str, str] | None = None,
                 resolve: Resolver = system_resolver, verify: ssl.SSLContext | str | bool = True) -> None:
        self.policy = policy
        transport = _CheckedTransport(_CheckedBackend(policy.allow, resolve), verify=verify)
        self._client = httpx.Client(transport=transport, follow_redirects=False, trust_env=False,
                                    headers={"Accept-Encoding": "identity", **(headers or {})})

    def __enter__(self) -> SafeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._client.close()

    def fetch(self, url: str) -> bytes:
        """The body of ``url``, which must answer 200 with an image (or neutral) content type.

        Raises:
            UnsafeURL: the URL, a redirect or an address is refused by the policy.
            FetchFailed: timeout, connection error, HTTP status other than 200, too many redirects.
            ImageTooLarge: a body over ``max_bytes``.
            UnsupportedImage: a content type that is not an image.
            InvalidInput: not a URL.
        """
        deadline = time.monotonic() + self.policy.timeout_s
        with self.open(url, deadline=deadline) as response:
            status = response.status_code
            if status != 200:
                retryable = status == 429 or status >= 500
                raise FetchFailed(url, f"HTTP {status} {response.reason_phrase}; expected 200 with the image",
                                  retryable=retryable)
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not is_image_type(kind):
                raise UnsupportedImage(f"URL {url!r} is served as {kind!r}, not as an image (expected image/*)")
            return self.read(response, url=url, deadline=deadline)

    @contextmanager
    def open(self, url: str, *, deadline: float | None = None) -> Iterator[httpx.Response]:
        """GET ``url``, following redirects under the policy; yields the final response, body not read yet.

        Args:
            url: an http(s) URL.
            deadline: a `time.monotonic` time by which everything must be done; default ``timeout_s`` from now.

        Raises:
            UnsafeURL: the URL, a redirect or an address is refused by the policy.
            FetchFailed: timeout, connection error, too many redirects, a bad redirect.
            InvalidInput: not a URL.
        """
        deadline = time.monotonic() + self.policy.timeout_s if deadline is None else deadline
        response = self._follow(url, deadline)
        try:
            yield response
        finally:
            response.close()

    def read(self, response: httpx.Response, *, url: str, deadline: float | None = None) -> bytes:
        """The body of ``response`` (from `open`), stopped as soon as it passes ``max_bytes``.

        Raises:
            ImageTooLarge: ``Content-Length`` or the body over ``max_bytes``.
            FetchFailed: the deadline passed or the connection failed while reading.
        """
        limit, setting = self.policy.max_bytes, self.policy.max_bytes_setting
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise ImageTooLarge(f"URL {url!r} is {int(length)} bytes (Content-Length), over the limit of "
                                f"{limit} bytes ({setting})")
        chunks: list[bytes] = []
        size = 0
        with self._errors(url):
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ImageTooLarge(f"URL {url!r} is over the limit of {limit} bytes (stopped reading; "
                                        f"{setting})")
                if deadline is not None and time.monotonic() > deadline:
                    raise FetchFailed(url, f"timed out after {self.policy.timeout_s:g} s (reading the body)",
                                      retryable=True)
                chunks.append(chunk)
        return b"".join(chunks)

    def _follow(self, url: str, deadline: float) -> httpx.Response:
        target = self._checked_url(url, url)
        for _ in range(self.policy.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchFailed(url, f"timed out after {self.policy.timeout_s:g} s (following redirects)",
                                  retryable=True)
            request = self._client.build_request("GET", target,
                                                 timeout=httpx.Timeout(min(self.policy.timeout_s, remaining)))
            with self._errors(url, target):
                response = self._client.send(request, stream=True)
            location = response.headers.get("Location")
            if response.status_code not in _REDIRECTS or location is None:
                return response
            response.close()
            try:
                following = target.join(location)
            except httpx.InvalidURL as e:
                raise FetchFailed(url, f"redirects to {location!r}, which is not a URL ({e})") from e
            logger.debug("%s redirects to %s", target, following)
            target = self._checked_url(url, str(following))
        raise FetchFailed(url, f"more than {self.policy.max_redirects} redirects")

    def _checked_url(self, url: str, target: str) -> httpx.URL:
        where = _where(url, target)
        try:
            parsed = httpx.URL(target)
        except httpx.InvalidURL as e:
            raise InvalidInput(f"{where} is not a valid URL ({e})") from e
        if parsed.scheme not in ("http", "https"):
            raise UnsafeURL(f"{where} refused: scheme {parsed.scheme + ':'!r} is not allowed; only http and "
                            "https URLs are fetched")
        if not parsed.host:
            raise InvalidInput(f"{where} has no host; expected http(s)://host/...")
        try:
            check_host(parsed.raw_host.decode("ascii"), allow=self.policy.allow)
        except UnsafeURL as e:
            raise UnsafeURL(f"{where} refused: {e}") from e
        return parsed

    @contextmanager
    def _errors(self, url: str, target: httpx.URL | None = None) -> Iterator[None]:
        """Turn httpx's errors (and refusals from inside the connection set-up) into Vitrine's."""
        where = _where(url, url if target is None else str(target))
        try:
            yield
        except UnsafeURL as e:
            raise UnsafeURL(f"{where} refused: {e}") from e
        except httpx.TimeoutException as e:
            raise FetchFailed(url, f"timed out after {self.policy.timeout_s:g} s ({type(e).__name__})",
                              retryable=True) from e
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise FetchFailed(url, f"cannot be fetched ({e}); only http(s) URLs are fetched") from e
        except httpx.TransportError as e:
            raise FetchFailed(url, f"{type(e).__name__}: {e}", retryable=True) from e


def _where(url: str, target: str) -> str:
    return f"URL {url!r}" if target == url else f"URL {url!r} (redirected to {target!r})"
