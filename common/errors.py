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
