"""The ``openai`` backend: OpenAI's images API (or a compatible server) through the ``openai`` client.

- A variant of a product image is ``images.edit`` (multipart: the source as PNG, plus a style or identity
  reference image when the request has one, the prompt, the model, ``n`` and a size); a picture from text alone
  is ``images.generate``. The model defaults to ``gpt-image-1``.
- Sizes: the API takes a few fixed ones, chosen from the source's aspect ratio: ``1024x1024``, ``1536x1024`` or
  ``1024x1536`` (gpt-image models and compatible servers), ``1792x1024``/``1024x1792`` for dall-e-3, 256/512/1024
  squares for dall-e-2. Images come back scaled down to the ``size`` setting's long side when larger.
- Replies: each image must come as ``b64_json`` (gpt-image models always answer so; dall-e models are asked to
  with ``response_format=b64_json``). A reply holding URLs instead is refused (`GenerationFailed`): the backend
  never fetches a URL a server names, so it cannot be sent to fetch internal addresses, and nothing is left to
  expire.
- Seeds: the images API takes no seed, so its images are not reproducible; the request's seed is returned as
  given and is part of the cache key only.
- Failures: 408, 409, 429, 5xx, timeouts and connection errors are retried up to ``retries`` times with
  exponential backoff and jitter (``Retry-After`` honoured), never past the deadline; the client's own retries
  are off. HTTP 400 (the API refused the prompt or a parameter) is `InvalidInput` with the server's message;
  any other failure, or a malformed reply, is `GenerationFailed`.
- The API key is read from the environment variable ``api_key_env`` names at ``load()``; it never appears in
  logs or error messages. A ``base_url`` server that needs no key gets a placeholder.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time
from typing import Any

from PIL import Image, UnidentifiedImageError

from common.errors import BackendNotInstalled, GenerationFailed, InvalidInput
from common.openai_client import KeyedClient
from common.retry import backoff_s, is_retryable, remaining_s, retry_after_s
from common.settings import GenerateSettings
from generate.protocol import GenerationRequest

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-image-1"
MAX_N_PER_CALL = 10


def api_size(model: str, width: int, height: int, long_side: int) -> str:
    """The API size closest to a ``width`` x ``height`` picture for ``model`` (see the module's description)."""
    ratio = width / height
    if model == "dall-e-2":
        side = 256 if long_side <= 256 else 512 if long_side <= 512 else 1024
        return f"{side}x{side}"
    wide, tall = ("1792x1024", "1024x1792") if model == "dall-e-3" else ("1536x1024", "1024x1536")
    return wide if ratio > 1.2 else tall if ratio < 1 / 1.2 else "1024x1024"


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class OpenAIImagesGenerator:
    """The images API behind the `generate.protocol.Generator` protocol.

    Construction stores names only; ``load()`` (or the first ``generate``) reads the key and makes the client.

    Args:
        model: the images model (``gpt-image-1``, ``dall-e-3``, or a compatible server's name).
        base_url: a compatible server's URL; ``None``: OpenAI's.
        api_key_env: the environment variable holding the key.
        size: the long side images are scaled down to when the API returns larger ones.
        timeout_s: time limit of one request.
        retries: retries of a retryable failure.
        backoff_s: first retry delay (doubled at each retry) when the server sends no ``Retry-After``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", size: int = 1024, timeout_s: float = 120.0,
                 retries: int = 3, backoff_s: float = 1.0) -> None:
        self._model = model.strip() or DEFAULT_MODEL
        self._api = KeyedClient(base_url, api_key_env, timeout_s, _missing_key)
        self._size = size
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s

    @property
    def name(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self._model}"

    def describe(self) -> dict[str, Any]:
        """Backend, model, server URL and whether the client is made (never the key)."""
        return {"backend": "openai", "model": self._model, "base_url": self._api.url,
                "loaded": self._api.loaded, "retries": self._retries, "timeout_s": self._timeout_s}

    def load(self) -> None:
        """Read the API key from the environment and make the client (idempotent, thread-safe).

        Raises:
            BackendNotInstalled: no key in the environment for OpenAI's own API (a ``base_url`` server needs
                none).
        """
        self._api.client()

    def _where(self) -> str:
        return f"images API {self._api.url} model {self._model!r}"

    def generate(self, request: GenerationRequest, *, deadline: float | None = None) -> list[Image.Image]:
        """``request.n`` images: edits of ``request.image``, or pictures from the prompt alone.

        Raises:
            InvalidInput: the API refused the request (HTTP 400: the prompt or a parameter).
            GenerationFailed: the API failed after its retries, ran past the deadline, or answered with a
                malformed reply or URLs.
            BackendNotInstalled: no API key (see `load`).
        """
        self.load()
        if request.image is not None:
            width, height = request.image.size
        else:
            width = height = self._size
        size = api_size(self._model, width, height, self._size)
        per_call = 1 if self._model == "dall-e-3" else MAX_N_PER_CALL
        files: list[tuple[str, bytes, str]] = []
        if request.image is not None:
            files.append(("product.png", png_bytes(request.image.convert("RGB")), "image/png"))
            if request.reference is not None:
                files.append(("reference.png", png_bytes(request.reference.convert("RGB")), "image/png"))
        images: list[Image.Image] = []
        while len(images) < request.n:
            count = min(per_call, request.n - len(images))
            options: dict[str, Any] = {"model": self._model, "prompt": request.prompt, "n": count, "size": size}
            if self._model.startswith("dall-e"):
                options["response_format"] = "b64_json"
            if files:
                options["image"] = files[0] if len(files) == 1 else files
            reply = self._call("edit" if files else "generate", options, deadline)
            images.extend(self._decode(reply, count))
        return images

    def _decode(self, reply: Any, count: int) -> list[Image.Image]:
        try:
            items = list(reply.data or [])
        except (AttributeError, TypeError) as e:
            raise GenerationFailed(f"{self._where()}: malformed reply: no data list") from self._api.cause(e)
        if len(items) != count:
            raise GenerationFailed(f"{self._where()}: asked for {count} image(s), the reply holds {len(items)}")
        images: list[Image.Image] = []
        for index, item in enumerate(items):
            encoded = getattr(item, "b64_json", None)
            if not encoded:
                if getattr(item, "url", None):
                    raise GenerationFailed(f"{self._where()}: image {index} came as a URL, not b64_json; this "
                                           "backend does not fetch URLs (use a gpt-image model, or a server that "
                                           "answers b64_json)")
                raise GenerationFailed(f"{self._where()}: malformed reply: image {index} has no b64_json")
            try:
                decoded = Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
                decoded.load()
            except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
                raise GenerationFailed(f"{self._where()}: malformed reply: image {index} is not a readable image "
                                       f"({type(e).__name__})") from None
            image = decoded.convert("RGB")
            if max(image.size) > self._size:
                image.thumbnail((self._size, self._size), Image.Resampling.LANCZOS)
            images.append(image)
        return images

    def _call(self, method: str, options: dict[str, Any], deadline: float | None) -> Any:
        """One ``images.edit`` or ``images.generate`` call, retried on 408/409/429/5xx, timeouts and connection
        errors, within the deadline."""
        import openai

        client = self._api.client()
        call = client.images.edit if method == "edit" else client.images.generate
        attempt = 0
        while True:
            timeout = self._timeout_s
            left = remaining_s(deadline)
            if left is not None:
                if left <= 0:
                    raise GenerationFailed(f"{self._where()}: the deadline passed after {attempt} attempt(s)")
                timeout = min(timeout, left)
            retry_after: float | None = None
            cause: BaseException
            try:
                return call(**options, timeout=timeout)
            except openai.APITimeoutError as e:
                problem, cause = f"no reply within {timeout:.3g} s", e
            except openai.APIConnectionError as e:
                problem, cause = f"cannot connect: {self._api.redact(str(e))}", e
            except openai.APIStatusError as e:
                message = self._api.redact(str(e))[:300]
                if e.status_code == 400:
                    raise InvalidInput(f"{self._where()} refused the request (HTTP 400): {message}") from None
                if e.status_code in (401, 403):
                    raise GenerationFailed(f"{self._where()}: HTTP {e.status_code}: {message} (check the key in "
                                           f"{self._api.api_key_env})") from None
                if not is_retryable(e.status_code):
                    raise GenerationFailed(f"{self._where()}: HTTP {e.status_code}: {message}") from self._api.cause(e)
                problem, cause = f"HTTP {e.status_code}: {message[:200]}", e
                retry_after = retry_after_s(e.response.headers)
            except (openai.OpenAIError, ValueError, TypeError) as e:  # a body the client cannot read
                raise GenerationFailed(f"{self._where()}: malformed reply: {type(e).__name__}: "
                                       f"{self._api.redact(str(e))[:200]}") from self._api.cause(e)
            if attempt >= self._retries:
                raise GenerationFailed(f"{self._where()}: {problem} (after {attempt + 1} attempt(s))") \
                    from self._api.cause(cause)
            delay = backoff_s(attempt, self._backoff_s, retry_after)
            left = remaining_s(deadline)
            if left is not None and delay >= left:
                raise GenerationFailed(f"{self._where()}: {problem}; the next try (in {delay:.3g} s) would come "
                                       "after the deadline") from self._api.cause(cause)
            logger.info("%s: %s; retry %d in %.3g s", self._where(), problem, attempt + 1, delay)
            time.sleep(delay)
            attempt += 1


def _missing_key(api_key_env: str) -> BackendNotInstalled:
    return BackendNotInstalled(f"the openai generation backend needs an API key: set {api_key_env} "
                               "(VITRINE_GENERATE__API_KEY_ENV names another variable), or set "
                               "VITRINE_GENERATE__BASE_URL to a compatible server that needs none")


def build(settings: GenerateSettings) -> OpenAIImagesGenerator:
    """The images API backend configured by ``settings`` (the key is read at ``load()``)."""
    return OpenAIImagesGenerator(settings.model or DEFAULT_MODEL, base_url=settings.base_url,
                                 api_key_env=settings.api_key_env, size=settings.size, timeout_s=settings.timeout_s,
                                 retries=settings.retries, backoff_s=settings.backoff_s)
