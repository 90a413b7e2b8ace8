"""Search, then re-rank the best results with a vision-language model (`rerank`), within a time budget.

`search` may not import `rerank` (design.md), so the two meet here, for the HTTP routes and ``vitrine search``.
`Reranking.search` asks the search service for the first ``top_n`` results, shows each to the re-ranker
(the product's preview image made at ingestion, and its text) with the query's words and photo, and orders
those ``top_n`` by

    combined = (1 - weight) x (fused score scaled to 0-1 among the top N) + weight x VLM score

(``weight``: settings rerank.weight). Results past the top N keep their order after them. When the re-ranker
is not configured, fails, or does not answer within the budget, the first-stage results come back as they
were, with ``reranked: false`` and the reason: a re-ranker never turns a search into an error. The re-ranker
keeps running in the background after a missed budget, so its scores land in its cache for the next time.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from PIL import Image

from common.errors import RerankTimeout
from common.metrics import RERANK_FAILURES, RERANK_SECONDS
from common.settings import RerankSettings, Settings
from common.thumbnails import ThumbnailStore, key_of_url
from rerank import Candidate, Reranker, RerankQuery, build_reranker
from search.query import ProductView, RerankInfo, RerankScore, SearchHit, SearchRequest, SearchResponse
from search.service import SearchService

logger = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 300
"""Characters of a product's description shown to the re-ranker."""
NOT_CONFIGURED = ("no re-ranker is configured; set VITRINE_RERANK__BACKEND (transformers or openai) and "
                  "VITRINE_RERANK__MODEL (docs/rerank.md)")
WORKERS = 4


def product_text(product: ProductView) -> str:
    """What the re-ranker reads of a product: title, brand, category, description (and a generated one)."""
    extra = product.model_extra or {}
    generated = extra.get("generated")
    parts = [product.title, f"brand: {product.brand}" if product.brand else None,
             f"category: {product.category}" if product.category else None,
             (product.description or "")[:MAX_DESCRIPTION_CHARS] or None]
    if isinstance(generated, dict) and isinstance(generated.get("description"), str) and not product.description:
        parts.append(generated["description"][:MAX_DESCRIPTION_CHARS])
    return ". ".join(part for part in parts if part) or product.id


def query_text(request: SearchRequest) -> str | None:
    """The words of a request: ``q`` and the text of its positive query parts."""
    words = [request.q] if request.q else []
    words += [part.text for part in request.query or () if part.text and part.weight > 0]
    return " ".join(words) or None


def combine(hits: Sequence[SearchHit], scores: Sequence[float], weight: float) -> list[SearchHit]:
    """``hits`` with their re-rank scores, ordered by the combined score (ties keep the first-stage order)."""
    fused = [hit.score for hit in hits]
    low, high = min(fused), max(fused)
    spread = high - low
    judged = []
    for hit, vlm in zip(hits, scores, strict=True):
        scaled = (hit.score - low) / spread if spread > 0 else 1.0
        combined = (1.0 - weight) * scaled + weight * vlm
        judged.append(hit.model_copy(update={"rerank": RerankScore(vlm=round(vlm, 6),
                                                                     combined=round(combined, 6))}))
    order = sorted(range(len(judged)), key=lambda i: -judged[i].rerank.combined)  # type: ignore[union-attr]
    return [judged[i] for i in order]


class Reranking:
    """The configured re-ranker (or why there is none) and how to apply it to a search.

    Args:
        reranker: the loaded re-ranker, or None.
        settings: the ``rerank`` settings (top N, budget, weight).
        thumbnails: where the previews shown to the re-ranker are (None: products are judged on text).
        unavailable: why there is no re-ranker, when one was configured but could not be built or loaded.
    """

    def __init__(self, reranker: Reranker | None, settings: RerankSettings, *,
                 thumbnails: ThumbnailStore | None = None, unavailable: str | None = None) -> None:
        self._reranker = reranker
        self._settings = settings
        self._thumbnails = thumbnails
        self._unavailable = unavailable if reranker is None else None
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="vitrine-rerank") if reranker else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Reranking:
        """Build and load the re-ranker the settings name; a failure leaves search working without one (logged,
        and given as the reason of every search that asks for re-ranking)."""
        thumbnails = ThumbnailStore.from_settings(settings) if settings.images.thumbnails else None
        try:
            reranker = build_reranker(settings.rerank)
            if reranker is not None:
                reranker.load()
        except Exception as e:
            logger.error("the re-ranker (%s %r) cannot be used: %s", settings.rerank.backend,
                         settings.rerank.model, e)
            return cls(None, settings.rerank, thumbnails=thumbnails,
                       unavailable=f"the re-ranker could not be loaded: {e}")
        if reranker is not None:
            logger.info("re-ranker ready: %s %s", settings.rerank.backend, reranker.name)
        return cls(reranker, settings.rerank, thumbnails=thumbnails)

    @property
    def available(self) -> bool:
        """Whether a re-ranker is loaded."""
        return self._reranker is not None

    @property
    def model(self) -> str | None:
        """The re-ranker's model, when there is one."""
        return self._reranker.name if self._reranker is not None else None

    def describe(self) -> dict[str, object]:
        """The re-ranker's state for ``/stats``."""
        if self._reranker is None:
            return {"available": False, "reason": self._unavailable or NOT_CONFIGURED}
        return {"available": True, "backend": self._settings.backend, "top_n": self._settings.top_n,
                "budget_s": self._settings.budget_s, "weight": self._settings.weight,
                **self._reranker.describe()}

    def search(self, service: SearchService, request: SearchRequest, *, top_n: int | None = None,
               budget_s: float | None = None) -> SearchResponse:
        """``service.search(request)`` with its first ``top_n`` results re-ranked.

        Args:
            service: the search service.
            request: the search; its page (offset, limit) is cut from the re-ranked order.
            top_n: how many first results to re-rank (default settings rerank.top_n; at most search.max_limit).
            budget_s: time allowed to the re-ranker (default settings rerank.budget_s).
        """
        top_n = top_n or self._settings.top_n
        budget = budget_s or self._settings.budget_s
        info = RerankInfo(model=self.model, top_n=top_n, weight=self._settings.weight)
        if self._reranker is None:
            return self._first_stage(service.search(request), info, self._unavailable or NOT_CONFIGURED)
        if request.offset >= top_n:
            return self._first_stage(service.search(request), info, f"offset {request.offset} is past the "
                                     f"re-ranked top {top_n}; this page is in first-stage order")
        words = query_text(request)
        if words is None and request.image is None:
            return self._first_stage(service.search(request), info, "the query has no words or photo to show "
                                     "the re-ranker")
        head = service.search(request.model_copy(update={"offset": 0, "limit": top_n}))
        if not head.results:
            return self._page(head, head.results, request=request, service=service, top_n=top_n,
                              info=info.model_copy(update={"reason": "nothing to re-rank"}), reranked=False)
        start = time.monotonic()
        query = RerankQuery(text=words, image=request.image)
        # in a copy of this context: the worker's log lines carry the request id
        future = self._pool.submit(  # type: ignore[union-attr]
            contextvars.copy_context().run, self._score, query, head.results, start + budget)
        reason = failure = None
        try:
            scores = future.result(timeout=budget)
        except FutureTimeout:
            reason, failure = f"the re-ranker did not answer within the budget of {budget:g} s", "timeout"
        except RerankTimeout as e:
            reason, failure = f"the re-ranker ran out of its budget of {budget:g} s: {e}", "budget"
        except Exception as e:  # any failure of the model or the API: first-stage results, never a 5xx
            logger.warning("re-ranking failed: %s", e)
            reason, failure = f"the re-ranker failed: {e}", "error"
        RERANK_SECONDS.observe(time.monotonic() - start)
        if failure is not None:
            RERANK_FAILURES.labels(failure).inc()
        took_ms = round((time.monotonic() - start) * 1000.0, 3)
        info = info.model_copy(update={"took_ms": took_ms, "reason": reason})
        if reason is not None:
            return self._page(head, head.results, request=request, service=service, top_n=top_n, info=info,
                              reranked=False)
        ordered = combine(head.results, scores, self._settings.weight)
        return self._page(head, ordered, request=request, service=service, top_n=top_n, info=info, reranked=True)

    def _score(self, query: RerankQuery, hits: Sequence[SearchHit], deadline: float) -> list[float]:
        candidates = []
        for hit in hits:
            key = key_of_url(hit.product.preview)
            candidates.append(Candidate(product_id=hit.id, text=product_text(hit.product),
                                        image=self._preview(hit.id, key), image_key=key))
        assert self._reranker is not None
        return self._reranker.score(query, candidates, deadline=deadline)

    def _preview(self, product_id: str, key: str | None) -> Image.Image | None:
        if key is None or self._thumbnails is None:
            return None
        try:
            return self._thumbnails.open(key, "preview")
        except OSError as e:
            logger.warning("cannot read the preview of product %r: %s", product_id, e)
            return None

    @staticmethod
    def _first_stage(response: SearchResponse, info: RerankInfo, reason: str) -> SearchResponse:
        return response.model_copy(update={"reranked": False, "rerank": info.model_copy(update={"reason": reason})})

    @staticmethod
    def _page(head: SearchResponse, ordered: Sequence[SearchHit], *, request: SearchRequest, service: SearchService,
              top_n: int, info: RerankInfo, reranked: bool) -> SearchResponse:
        """The requested page of ``ordered`` (the head's top N), continued with first-stage results past it."""
        page = list(ordered[request.offset:request.offset + request.limit])
        took = head.took_ms
        missing = request.offset + request.limit - top_n
        if missing > 0 and len(ordered) == top_n:
            tail = service.search(request.model_copy(update={"offset": top_n, "limit": missing}))
            page += tail.results
            took += tail.took_ms
        return head.model_copy(update={"results": page, "offset": request.offset, "limit": request.limit,
                                       "took_ms": round(took + info.took_ms, 3), "reranked": reranked,
                                       "rerank": info})

    def close(self) -> None:
        """Stop the worker threads (a re-ranking still running finishes in the background)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
