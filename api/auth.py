"""API keys: who may call the endpoints that cost money, and, by setting, the read-only ones.

Keys come from ``auth.api_keys`` (``VITRINE_AUTH__API_KEYS``, comma-separated) and ``auth.api_keys_file`` (one
per line; blank lines and ``#`` comments skipped). With no key set, auth is off. With keys set:

- generation and imagine (`require_key`) need a valid key in the ``X-API-Key`` header;
- re-ranking (``rerank=true`` on a search, `check_rerank`) needs one unless ``auth.public_rerank``;
- read-only endpoints (`require_read_key`: search, products, facets, images, the page) need one only when
  ``auth.public_search`` is false; ``/metrics`` (`require_metrics_key`) only when ``auth.public_metrics`` is false;
- ``/health`` and ``/ready`` never do.

A refused request is answered 401 (`common.errors.Unauthorized`) with ``WWW-Authenticate``. Keys are compared
in constant time (`KeyRing.accepts`), and neither a key nor the value given is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader
from starlette.middleware.cors import CORSMiddleware

from api.deps import SettingsDep
from common.errors import ConfigError, Unauthorized
from common.settings import AuthSettings, Settings

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
CORS_METHODS = ("GET", "POST")
CORS_ALLOW_HEADERS = (API_KEY_HEADER, "Content-Type", "X-Request-ID")
CORS_EXPOSE_HEADERS = ("X-Request-ID", "Retry-After")

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (settings auth.api_keys / auth.api_keys_file); needed for generation and "
    "re-ranking once any key is set, and for read-only endpoints when auth.public_search is false.",
)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _check_key(key: str, where: str) -> str:
    """``key`` when it can be sent in an HTTP header (printable ASCII, no spaces); names only ``where``."""
    if not key.isascii() or not key.isprintable() or " " in key:
        raise ConfigError(f"{where}: an API key must be printable ASCII without spaces (it goes in the "
                          f"{API_KEY_HEADER} header); fix or remove that key")
    return key


def read_key_file(path: Path) -> list[str]:
    """The keys of a key file: one per line, surrounding spaces stripped, blank lines and ``#`` comments skipped.

    Raises:
        ConfigError: the file is missing or unreadable, not UTF-8 text, holds a key that cannot go in a header,
            or holds no key. The message names the setting and the path, never the file's contents.
    """
    where = f"setting auth.api_keys_file ({str(path)!r})"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # not chained: the error holds the file's bytes
        raise ConfigError(f"{where}: not UTF-8 text; expected one API key per line") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the file ({e.strerror or type(e).__name__}); expected a "
                          "readable file with one API key per line") from e
    keys = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.append(_check_key(line, f"{where}, line {number}"))
    if not keys:
        raise ConfigError(f"{where}: the file holds no API key; expected one key per line (blank lines and "
                          "'#' comments are skipped)")
    return keys


class KeyRing:
    """The API keys a server accepts, kept only as SHA-256 digests.

    Args:
        keys: the accepted keys (empty: auth is off).
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests = tuple(dict.fromkeys(_digest(key) for key in keys))

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> KeyRing:
        """The keys of ``auth.api_keys`` and of the file ``auth.api_keys_file``.

        Raises:
            ConfigError: a key that cannot go in a header, or a key file that cannot be read or holds no key.
        """
        keys = [_check_key(secret.get_secret_value(), f"setting auth.api_keys, key {i}")
                for i, secret in enumerate(settings.api_keys, start=1)]
        if settings.api_keys_file is not None:
            keys += read_key_file(settings.api_keys_file)
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """Whether any key is set (auth is on)."""
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self)} key(s))"

    def accepts(self, given: str | None) -> bool:
        """Whether ``given`` is one of the keys, in time that depends only on the number of keys.

        The digest of ``given`` is compared with every key's digest by `hmac.compare_digest`, without stopping
        at a match, so neither the length of a key nor which key matched shows in the time taken.
        """
        if given is None or not self._digests:
            return False
        digest = _digest(given)
        found = False
        for key in self._digests:
            found |= hmac.compare_digest(digest, key)
        return found


def describe(ring: KeyRing, settings: AuthSettings) -> tuple[int, str]:
    """The start-up log record of the auth settings (a level and a message): never a key."""
    if not ring.enabled:
        return logging.WARNING, ("auth off: no API keys set (auth.api_keys); generation and re-ranking are open "
                                 "to anyone who can reach this server")
    search = "public" if settings.public_search else "keyed"
    rerank = "public" if settings.public_rerank else "keyed"
    return logging.INFO, f"auth: {len(ring)} API key(s); search {search}; rerank {rerank}"


async def get_keyring(request: Request) -> KeyRing:
    """The app's keys (built once, by `api.app.create_app`)."""
    ring: KeyRing = request.app.state.keyring
    return ring


KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
GivenKeyDep = Annotated[str | None, Security(api_key_header)]


@dataclass(frozen=True)
class Caller:
    """Whether the request needs a key and whether it carries a valid one (never the key itself)."""

    auth_on: bool
    key_given: bool
    key_valid: bool

    def require(self, what: str, *, public: bool = False, why: str = "setting auth.api_keys") -> None:
        """Let the request through when auth is off, ``public``, or its key is valid.

        Raises:
            Unauthorized: otherwise; the message says what needs the key and whether one was given.
        """
        if not self.auth_on or public or self.key_valid:
            return
        if self.key_given:
            message = f"{what} needs an API key: the {API_KEY_HEADER} given is not a valid key"
        else:
            message = f"{what} needs an API key in the {API_KEY_HEADER} header ({why})"
        logger.info("refused: %s (%s)", what, "invalid key" if self.key_given else "no key")
        raise Unauthorized(message)


async def get_caller(ring: KeyRingDep, given: GivenKeyDep) -> Caller:
    """Who is calling, from the ``X-API-Key`` header."""
    return Caller(auth_on=ring.enabled, key_given=given is not None, key_valid=ring.accepts(given))


CallerDep = Annotated[Caller, Depends(get_caller)]


async def require_key(caller: CallerDep) -> None:
    """For endpoints that cost money (generation, imagine): 401 unless auth is off or the key is valid."""
    caller.require("this endpoint")


async def require_read_key(caller: CallerDep, settings: SettingsDep) -> None:
    """For read-only endpoints: 401 only when keys are set, ``auth.public_search`` is false and the key is not
    valid."""
    caller.require("this endpoint", public=settings.auth.public_search,
                   why="setting auth.public_search is false")


async def require_metrics_key(caller: CallerDep, settings: SettingsDep) -> None:
    """For ``GET /metrics``: 401 only when keys are set, ``auth.public_metrics`` is false and the key is not
    valid."""
    caller.require("this endpoint", public=settings.auth.public_metrics,
                   why="setting auth.public_metrics is false")


def check_rerank(caller: Caller, settings: AuthSettings, *, rerank: bool) -> None:
    """For a search: ``rerank=true`` needs a valid key when keys are set and ``auth.public_rerank`` is false.

    Raises:
        Unauthorized: re-ranking asked for without a valid key.
    """
    if rerank:
        caller.require("rerank=true", public=settings.public_rerank, why="setting auth.public_rerank is false")


def keyed_features(ring: KeyRing, settings: AuthSettings) -> list[str]:
    """The page's features that need a key on this server: ``generate`` and ``rerank`` (unless public)."""
    if not ring.enabled:
        return []
    return ["generate", *([] if settings.public_rerank else ["rerank"])]


def install_auth(app: FastAPI, settings: Settings) -> KeyRing:
    """Build the keys once (``app.state.keyring``), log how auth is set up, and allow the configured browser
    origins (CORS; none configured: no CORS headers, same origin only).

    Raises:
        ConfigError: a bad key or key file, so the server fails at start-up rather than at the first request.
    """
    ring = KeyRing.from_settings(settings.auth)
    app.state.keyring = ring
    level, message = describe(ring, settings.auth)
    logger.log(level, message)
    if settings.auth.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.auth.cors_origins),
                           allow_methods=list(CORS_METHODS), allow_headers=list(CORS_ALLOW_HEADERS),
                           expose_headers=list(CORS_EXPOSE_HEADERS), allow_credentials=False)
        logger.info("CORS: browser origins allowed: %s", ", ".join(settings.auth.cors_origins))
    return ring
