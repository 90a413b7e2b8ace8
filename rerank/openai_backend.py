"""The chat-completions API of OpenAI or any compatible server (vLLM, Ollama, LM Studio, Gemini's endpoint).

Each candidate is one request: the query photo (if any) and the product photo as base64 JPEG data URLs (short
side at most ``image_max_side``, 768 by default), then the question of `rerank.prompt`.

How a score is computed:

1. ``yes_no`` form (first): ``max_tokens=1, logprobs=True, top_logprobs=5, temperature=0``; the score is
   P(yes) / (P(yes) + P(no)), summing the probabilities of the returned top tokens that spell "yes" and "no"
   in any case or spacing. A reply whose top tokens hold neither word is asked again in the JSON form.
2. ``json`` form: ``response_format`` is a strict JSON schema ``{"relevant": bool, "score": number}``; the
   score is ``score`` clipped to [0, 1] (or 1/0 from ``relevant`` when ``score`` is not a number). The
   re-ranker switches to this form for good when the server answers without logprobs, or refuses the
   ``yes_no`` request (HTTP 400) and accepts the JSON one.

Failures: a request answered 408, 409, 429 or 5xx, or timed out, or that could not connect, is retried up to
``retries`` times with exponential backoff and jitter, waiting what ``Retry-After`` asks when the server says;
no wait or request runs past the deadline (`RerankTimeout`). Any other error, or a malformed reply, fails the
whole call (`RerankFailed`): scores are all or nothing. At most ``max_concurrency`` requests are in flight at
once per re-ranker, across all calls.

The same client also writes product descriptions (`rerank.describe.Describer`, ``describe_product``): one
request per product with the strict JSON schema `rerank.describe.DESCRIPTION_FORMAT`, same retries and deadline,
parsed by `rerank.describe.parse_json`.

The API key is read from the environment variable named by ``api_key_env`` when the client is made; it never
appears in logs or error messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, cast

from common.errors import ConfigError, RerankFailed, RerankTimeout
from common.openai_client import KeyedClient
from common.retry import backoff_s, is_retryable, remaining_s, retry_after_s
from common.settings import RerankSettings
from rerank.api_answers import RESPONSE_FORMAT, OffFormat, json_score, yes_probability
from rerank.describe import DESCRIPTION_FORMAT, Description, parse_json
from rerank.imaging import jpeg_data_url
from rerank.prompt import AnswerForm, Part, describe_parts, parts
from rerank.protocol import Candidate, RerankQuery, check_candidates

logger = logging.getLogger(__name__)

TOP_LOGPROBS = 5
JSON_MAX_TOKENS = 64


class _Stopped(Exception):
    """Another candidate of the same call failed; this one stops before its next request."""


class OpenAIReranker:
    """A chat-completions model behind the `Reranker` protocol.

    Construction stores names only; ``load()`` (or the first ``score``) reads the key and makes the client.

    Args:
        model: the model name on the server (``gpt-4o-mini``, ``Qwen/Qwen2.5-VL-7B-Instruct`` on vLLM, ...).
        base_url: a compatible server's URL (``http://localhost:8000/v1``); ``None``: OpenAI's.
        api_key_env: the environment variable holding the key.
        max_concurrency: requests in flight at once (across calls).
        timeout_s: time limit of one request.
        retries: retries of a retryable failure.
        backoff_s: first retry delay (doubled at each retry) when the server sends no ``Retry-After``.
        image_max_side: images are shrunk to this short side before they are sent.
        max_tokens: most tokens of a product description (``describe_product``).

    Raises:
        ConfigError: an empty model name or a bad limit.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 4,
        timeout_s: float = 20.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        image_max_side: int = 768,
        max_tokens: int = 160,
    ) -> None:
        model = model.strip()
        if not model:
            raise ConfigError("the openai re-ranker needs a model name (VITRINE_RERANK__MODEL), e.g. gpt-4o-mini")
        if max_concurrency < 1 or timeout_s <= 0 or retries < 0 or backoff_s < 0 or max_tokens < 1:
            raise ConfigError(f"openai re-ranker limits must be positive: max_concurrency {max_concurrency}, "
                              f"timeout_s {timeout_s}, retries {retries}, backoff_s {backoff_s}, "
                              f"max_tokens {max_tokens}")
        self._model = model
        self._api = KeyedClient(base_url, api_key_env, timeout_s, _missing_key)
        self._max_concurrency = max_concurrency
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._image_max_side = image_max_side
        self._max_tokens = max_tokens
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._form: AnswerForm = "yes_no"

    @property
    def name(self) -> str:
        """The model name on the server."""
        return self._model

    @property
    def answer_form(self) -> AnswerForm:
        """``yes_no`` (logprobs) until the server shows it returns none, then ``json``."""
        return self._form

    def describe(self) -> dict[str, Any]:
        """Backend, model, server URL, answer form and whether the client is made (never the key)."""
        return {"backend": "openai", "model": self._model, "base_url": self._api.url,
                "answer_form": self._form, "loaded": self._api.loaded,
                "max_concurrency": self._max_concurrency}

    def load(self) -> None:
        """Read the API key from the environment and make the client (idempotent, thread-safe).

        Raises:
            ConfigError: no key in the environment for OpenAI's own API (a ``base_url`` server needs none).
        """
        self._api.client()

    def _fail(self, message: str, kind: type[RerankFailed] = RerankFailed) -> RerankFailed:
        return kind(self._api.redact(f"re-rank API {self._api.url} model {self._model!r}: {message}"))

    def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
              deadline: float | None = None) -> list[float]:
        """One request per candidate, at most ``max_concurrency`` at a time; all scores or an exception.

        Raises:
            RerankTimeout: the deadline passed before every candidate was scored.
            RerankFailed: a request failed for good, or a reply was malformed.
        """
        items = check_candidates(candidates)
        if not items:
            return []
        left = remaining_s(deadline)
        if left is not None and left <= 0:
            raise self._fail(f"the deadline passed before 0 of {len(items)} candidates were scored",
                             kind=RerankTimeout)
        self.load()
        query_url = jpeg_data_url(query.image, self._image_max_side) if query.image is not None else None
        stop = threading.Event()
        if len(items) == 1:
            return [self._score_one(query, query_url, items[0], deadline, stop)]
        errors: list[BaseException] = []

        def run(item: Candidate) -> float:
            try:
                return self._score_one(query, query_url, item, deadline, stop)
            except BaseException as e:
                if not isinstance(e, _Stopped):
                    errors.append(e)
                stop.set()
                raise

        pool = ThreadPoolExecutor(max_workers=min(self._max_concurrency, len(items)),
                                  thread_name_prefix="rerank-api")
        try:
            futures = [pool.submit(run, item) for item in items]
            left = remaining_s(deadline)
            done, pending = wait(futures, timeout=None if left is None else max(0.0, left) + 0.25,
                                 return_when=FIRST_EXCEPTION)
            if errors:
                raise errors[0]
            if pending:
                scored = sum(1 for f in done if not f.cancelled() and f.exception() is None)
                raise self._fail(f"ran out of time: {scored} of {len(items)} candidates scored before the "
                                 "deadline", kind=RerankTimeout)
            return [f.result() for f in futures]
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _score_one(self, query: RerankQuery, query_url: str | None, item: Candidate, deadline: float | None,
                   stop: threading.Event) -> float:
        if self._form == "yes_no":
            messages = self._messages(query, query_url, item, "yes_no")
            try:
                completion = self._create(messages, deadline, stop, yes_no=True)
            except _BadRequest as e:
                logger.info("re-rank API %s refused a logprobs request (%s); trying the JSON form", self._model,
                            e.message)
                score = self._json_answer(query, query_url, item, deadline, stop)
                self._switch_to_json("it refused the logprobs request")
                return score
            try:
                probability = yes_probability(completion)
            except OffFormat as e:
                logger.debug("re-rank API answer for %s off format (%s); asking for JSON", item.product_id, e)
                return self._json_answer(query, query_url, item, deadline, stop)
            except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
                message = f"malformed reply for product {item.product_id!r}: {type(e).__name__}: {e}"
                raise self._fail(message) from self._api.cause(e)
            if probability is not None:
                return probability
            self._switch_to_json("its replies carry no logprobs")
        return self._json_answer(query, query_url, item, deadline, stop)

    def _switch_to_json(self, why: str) -> None:
        if self._form != "json":
            self._form = "json"
            logger.info("re-rank API %s: %s; scoring from JSON answers from now on", self._model, why)

    def _json_answer(self, query: RerankQuery, query_url: str | None, item: Candidate, deadline: float | None,
                     stop: threading.Event) -> float:
        messages = self._messages(query, query_url, item, "json")
        try:
            completion = self._create(messages, deadline, stop, yes_no=False)
        except _BadRequest as e:
            raise self._fail(f"HTTP 400: {e.message}") from self._api.cause(e.cause)
        try:
            return json_score(completion.choices[0].message.content)
        except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
            message = f"malformed reply for product {item.product_id!r}: {type(e).__name__}: {e}"
            raise self._fail(message) from self._api.cause(e)

    def describe_product(self, item: Candidate, *, deadline: float | None = None) -> Description:
        """A description of ``item`` (`rerank.describe.Describer`): one JSON-schema request, retried like scores.

        Raises:
            RerankTimeout: the deadline passed first.
            RerankFailed: the request failed for good, or the reply holds no usable description.
        """
        check_candidates([item])
        left = remaining_s(deadline)
        if left is not None and left <= 0:
            raise self._fail(f"the deadline passed before product {item.product_id!r} was described",
                             kind=RerankTimeout)
        self.load()
        content = [self._part(part, None) for part in describe_parts(item, answer="json")]
        options = {"max_tokens": self._max_tokens, "response_format": DESCRIPTION_FORMAT, "temperature": 0}
        try:
            completion = self._create([{"role": "user", "content": content}], deadline, threading.Event(),
                                      yes_no=False, options=options)
        except _BadRequest as e:
            raise self._fail(f"HTTP 400: {e.message}") from self._api.cause(e.cause)
        try:
            return parse_json(completion.choices[0].message.content)
        except (AttributeError, IndexError, TypeError, ValueError, KeyError) as e:
            message = f"no usable description of product {item.product_id!r}: {type(e).__name__}: {e}"
            raise self._fail(message) from self._api.cause(e)

    def _part(self, part: Part, url: str | None) -> dict[str, Any]:
        if isinstance(part, str):
            return {"type": "text", "text": part}
        return {"type": "image_url", "image_url": {"url": url or jpeg_data_url(part, self._image_max_side)}}

    def _messages(self, query: RerankQuery, query_url: str | None, item: Candidate,
                  form: AnswerForm) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        for part in parts(query, item, answer=form):
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                url = query_url if part is query.image and query_url else jpeg_data_url(part, self._image_max_side)
                content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "user", "content": content}]

    def _create(self, messages: list[dict[str, Any]], deadline: float | None, stop: threading.Event, *,
                yes_no: bool, options: dict[str, Any] | None = None) -> Any:
        """One chat completion, retried on 408/409/429/5xx, timeouts and connection errors, within the deadline.

        ``options`` (max_tokens, response_format, ...) replace those of the ``yes_no`` or JSON score form.

        Raises:
            _BadRequest: the server answered 400.
            RerankTimeout, RerankFailed, _Stopped.
        """
        import openai

        form: dict[str, Any] = options if options is not None else (
            {"max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS, "temperature": 0} if yes_no
            else {"max_tokens": JSON_MAX_TOKENS, "response_format": RESPONSE_FORMAT, "temperature": 0}
        )
        attempt = 0
        while True:
            if stop.is_set():
                raise _Stopped
            timeout = self._timeout_s
            left = remaining_s(deadline)
            if left is not None:
                if left <= 0:
                    raise self._fail(f"the deadline passed after {attempt} attempt(s)", kind=RerankTimeout)
                timeout = min(timeout, left)
            retry_after: float | None = None
            cause: BaseException
            with self._slot(deadline):
                try:
                    return self._api.client().chat.completions.create(
                        model=self._model, messages=cast(Any, messages), timeout=timeout, **form)
                except openai.APITimeoutError as e:
                    problem, cause = f"no reply within {timeout:.3g} s", e
                except openai.APIConnectionError as e:
                    problem, cause = f"cannot connect: {e}", e
                except openai.APIStatusError as e:
                    if e.status_code == 400:
                        raise _BadRequest(self._api.redact(str(e))[:300], e) from None
                    if not is_retryable(e.status_code):
                        message = f"HTTP {e.status_code}: {self._api.redact(str(e))[:300]}"
                        raise self._fail(message) from self._api.cause(e)
                    problem, cause = f"HTTP {e.status_code}: {self._api.redact(str(e))[:200]}", e
                    retry_after = retry_after_s(e.response.headers)
                except openai.OpenAIError as e:  # a reply the client cannot read as a completion
                    raise self._fail(f"malformed reply: {type(e).__name__}: {e}") from self._api.cause(e)
                except (ValueError, TypeError) as e:  # a body that is not JSON
                    raise self._fail(f"malformed reply: {type(e).__name__}: {e}") from self._api.cause(e)
            if attempt >= self._retries:
                raise self._fail(f"{problem} (after {attempt + 1} attempt(s))") from self._api.cause(cause)
            delay = backoff_s(attempt, self._backoff_s, retry_after)
            left = remaining_s(deadline)
            if left is not None and delay >= left:
                raise self._fail(f"{problem}; the next try (in {delay:.3g} s) would come after the deadline",
                                 kind=RerankTimeout) from self._api.cause(cause)
            logger.debug("re-rank API %s: %s; retry %d in %.3g s", self._model, self._api.redact(problem),
                         attempt + 1, delay)
            if stop.wait(delay):
                raise _Stopped
            attempt += 1

    def _slot(self, deadline: float | None) -> _Slot:
        return _Slot(self._slots, deadline, self)


class _Slot:
    """One of the ``max_concurrency`` request slots, waited for no longer than the deadline."""

    def __init__(self, slots: threading.BoundedSemaphore, deadline: float | None, owner: OpenAIReranker) -> None:
        self._slots = slots
        self._deadline = deadline
        self._owner = owner

    def __enter__(self) -> None:
        left = remaining_s(self._deadline)
        if not self._slots.acquire(timeout=None if left is None else max(0.0, left)):
            raise self._owner._fail("all request slots stayed busy until the deadline", kind=RerankTimeout)

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


class _BadRequest(Exception):
    """The server answered 400 (the request form may be what it refuses)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


def _missing_key(api_key_env: str) -> ConfigError:
    return ConfigError(f"the openai re-ranker needs an API key in the environment variable {api_key_env} "
                       "(VITRINE_RERANK__API_KEY_ENV names another variable); or set VITRINE_RERANK__BASE_URL to a "
                       "server that needs none")


def build(settings: RerankSettings) -> OpenAIReranker:
    """The API re-ranker configured by ``settings`` (the key is read at ``load()``)."""
    return OpenAIReranker(
        settings.model or "", base_url=settings.base_url, api_key_env=settings.api_key_env,
        max_concurrency=settings.max_concurrency, timeout_s=settings.timeout_s, retries=settings.retries,
        backoff_s=settings.backoff_s, image_max_side=settings.image_max_side,
        max_tokens=settings.describe_max_tokens,
    )

