"""An ``openai.OpenAI`` client made on first use from a key in an environment variable, and kept out of messages.

`KeyedClient` is shared by the API re-ranker (`rerank.openai_backend`), the images API backend
(`generate.openai_images`) and the prompt rewriter (`generate.prompts`):

- the key is read from the environment variable ``api_key_env`` names when the client is first asked for, not
  at construction; a ``base_url`` server (vLLM, Ollama, LM Studio) that needs no key gets a placeholder, while
  OpenAI's own API without a key raises what ``missing_key`` makes;
- the client's own retries are off (``max_retries=0``): callers retry within their deadlines;
- `KeyedClient.redact` replaces the key in a text, and `KeyedClient.cause` drops an exception to chain when its
  chain would show the key in a traceback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "unused"  # local servers (vLLM, Ollama, LM Studio) accept any key; the client needs one


class KeyedClient:
    """A lazily made, thread-safe ``openai.OpenAI`` client holder that keeps its key secret.

    Args:
        base_url: a compatible server's URL (a trailing ``/`` is dropped); ``None``: OpenAI's.
        api_key_env: the environment variable holding the key.
        timeout_s: the client's default time limit of one request.
        missing_key: makes the exception raised when OpenAI's own API is used and ``api_key_env`` is unset or
            empty; it gets the variable's name.
    """

    def __init__(self, base_url: str | None, api_key_env: str, timeout_s: float,
                 missing_key: Callable[[str], Exception]) -> None:
        self._base_url = base_url.rstrip("/") if base_url else None
        self._api_key_env = api_key_env
        self._timeout_s = timeout_s
        self._missing_key = missing_key
        self._lock = threading.Lock()
        self._client: Any = None
        self._secret: str | None = None

    @property
    def base_url(self) -> str | None:
        """The server's URL without a trailing ``/``; ``None``: OpenAI's."""
        return self._base_url

    @property
    def url(self) -> str:
        """The server's URL, OpenAI's (`DEFAULT_BASE_URL`) when no ``base_url`` is set."""
        return self._base_url or DEFAULT_BASE_URL

    @property
    def api_key_env(self) -> str:
        """The environment variable holding the key."""
        return self._api_key_env

    @property
    def loaded(self) -> bool:
        """Whether the client is made."""
        return self._client is not None

    def client(self) -> Any:
        """The ``openai.OpenAI`` client, made at the first call (thread-safe).

        Raises:
            Exception: what ``missing_key`` makes, when there is no key for OpenAI's own API.
        """
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
        return self._client

    def _make(self) -> Any:
        import openai

        key = os.environ.get(self._api_key_env, "").strip()
        if not key:
            if self._base_url is None:
                raise self._missing_key(self._api_key_env)
            key = NO_KEY
        else:
            self._secret = key
        return openai.OpenAI(base_url=self._base_url, api_key=key, max_retries=0, timeout=self._timeout_s)

    def redact(self, text: str) -> str:
        """``text`` with the key replaced by ``***``."""
        return text.replace(self._secret, "***") if self._secret else text

    def cause(self, error: BaseException | None) -> BaseException | None:
        """``error`` to chain as the cause, or ``None`` when its chain would show the key in a traceback."""
        link = error
        while link is not None and self._secret:
            if self._secret in str(link) or self._secret in repr(link):
                return None
            link = link.__cause__ or link.__context__
        return error
