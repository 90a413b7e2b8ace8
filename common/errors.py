"""The domain errors of Vitrine.

Services raise these; only `api/` maps them to HTTP status codes and exit codes.
Every message names the offending value and says what was expected.
"""

from __future__ import annotations


class VitrineError(Exception):
    """Base class of every error Vitrine raises on purpose."""


class ConfigError(VitrineError):
    """A setting or option has a value that cannot work."""


class InvalidInput(VitrineError):
    """A request, query parameter, catalog row or file has a bad value."""


class InvalidQuery(InvalidInput):
    """A search request cannot be answered as given."""


class UnsupportedImage(InvalidInput):
    """Bytes that are not an image Vitrine can decode (wrong type, truncated, corrupt)."""


class ImageTooLarge(InvalidInput):
    """An image over the byte or pixel limit (decompression bombs included)."""


class UnsafeURL(InvalidInput):
    """A URL Vitrine refuses to fetch: not http(s), or a host on an address that is not public.

    Loopback, private, link-local, cloud-metadata and reserved addresses are refused unless
    ``VITRINE_FETCH__ALLOW_HOSTS`` permits the host or the address.
    """


class FetchFailed(InvalidInput):
    """A URL that could not be fetched: a timeout, a connection error, an HTTP error, too many redirects.

    Attributes:
        url: the URL as given (before redirects).
        reason: what went wrong, without the URL.
        retryable: whether trying again later may help (timeouts, connection errors, HTTP 429 and 5xx).
        retry_after: the server's ``Retry-After``, in seconds, when it sent one.
    """

    def __init__(self, url: str, reason: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(f"URL {url!r}: {reason}")
        self.url = url
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[FetchFailed], tuple[str, str], dict[str, object]]:
        return type(self), (self.url, self.reason), self.__dict__


class Unauthorized(VitrineError):
    """A request without a valid API key to an endpoint that needs one (settings group ``auth``).

    The message says what needs the key and where it goes, never the value given.
    """


class NotFound(VitrineError):
    """A product, collection or file that does not exist."""


class ModelNotFound(VitrineError):
    """Encoder weights that cannot be found locally and cannot be downloaded."""


class EncoderMismatch(VitrineError):
    """A collection built with one encoder used with another one."""


class BackendUnavailable(VitrineError):
    """A store, model server or other backend that cannot be reached or opened right now."""


class StoreLocked(BackendUnavailable):
    """The embedded store is held open by another process."""


class RequestTooLarge(InvalidInput):
    """A request body over the size limit (setting ``api.max_body_bytes``)."""


class Overloaded(VitrineError):
    """A request refused at once because the work it needs is already queued to the limit (generation jobs
    running and waiting); the message names the limits.

    Attributes:
        retry_after: seconds after which trying again may succeed.
    """

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[Overloaded], tuple[str], dict[str, object]]:
        return type(self), (str(self),), self.__dict__


class RerankFailed(BackendUnavailable):
    """A re-ranker that could not score the candidates.

    The model failed, or the API answered with an error or a malformed reply; search keeps the first-stage order.
    """


class RerankTimeout(RerankFailed):
    """A re-ranker that did not finish before its deadline (the search's re-ranking budget)."""


class GenerationFailed(BackendUnavailable):
    """A generation backend failed (an API error after its retries, a model error, out of memory) or ran past its
    time limit."""


class BackendNotInstalled(BackendUnavailable):
    """A backend whose package is not installed, or that is not configured; the message says what to install or
    set."""
