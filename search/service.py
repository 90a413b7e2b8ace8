"""The search service: encode the query, take candidates from both indices, fuse, filter and page."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from common.errors import EncoderMismatch, NotFound
from common.settings import SearchSettings
from embed.protocol import Encoder
from search.encode import encode_query
from search.filters import build_filter
from search.fusion import (
    Fused,
    candidate_count,
    fuse,
    merge_candidates,
    missing_scores,
    paginate,
    rank,
    with_scores,
)
from search.query import (
    IndexScores,
    ProductView,
    QueryFields,
    SearchHit,
    SearchRequest,
    SearchResponse,
    Weights,
    check_bounds,
    resolve_weights,
)
from store.protocol import IMAGE, STATE_KEY, TEXT, CollectionInfo, StoredPoint, VectorStore, check_weights

logger = logging.getLogger(__name__)


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored payload without Vitrine's own bookkeeping (`STATE_KEY`)."""
    return {key: value for key, value in payload.items() if key != STATE_KEY}


class SearchService:
    """Answers searches over one collection with the encoder that built it.

    Construction checks the collection: it must exist and must have been built by ``encoder`` (same name and
    dim), otherwise its vectors would be compared with vectors of another space.

    Args:
        encoder: the collection's encoder (loaded here if it is not yet).
        store: an open store.
        settings: candidate count, page bounds and default weights.
        collection: the collection (alias) to search.

    Raises:
        NotFound: no such collection.
        EncoderMismatch: the collection was built by another encoder or dim, or by other weights under the
            same encoder name (a model folder retrained in place).
    """

    def __init__(
        self, *, encoder: Encoder, store: VectorStore, settings: SearchSettings, collection: str
    ) -> None:
        info = store.collection_info(collection)
        if info.encoder != encoder.name or info.dim != encoder.dim:
            raise EncoderMismatch(
                f"collection {collection!r} was built with encoder {info.encoder!r} (dim {info.dim}) but is "
                f"being searched with {encoder.name!r} (dim {encoder.dim}); search it with {info.encoder!r} "
                "or re-index it with the new encoder"
            )
        check_weights(collection, info.encoder, built=info.weights, now=encoder.weights_id)
        self._encoder = encoder
        self._store = store
        self._settings = settings
        self._collection = collection
        self._info = info

    @property
    def encoder(self) -> Encoder:
        """The encoder queries go through."""
        return self._encoder

    @property
    def collection(self) -> str:
        """The collection (alias) searched."""
        return self._collection

    @property
    def info(self) -> CollectionInfo:
        """The collection as it was when the service was built (count may have changed since)."""
        return self._info

    def search(self, request: SearchRequest) -> SearchResponse:
        """Encode the request's text and/or image and search with that vector.

        Raises:
            InvalidQuery: the request breaks the settings' bounds, or its text and image cancel out.
        """
        started = time.perf_counter()
        check_bounds(request, self._settings)
        vector = encode_query(self._encoder, text=request.q, image=request.image)
        return self._search(vector, request, started)

    def search_vector(self, *, vector: NDArray[np.float32], request: QueryFields) -> SearchResponse:
        """Search with a ready query vector (same space as the encoder); ``request.q`` is ignored.

        Raises:
            InvalidQuery: the request breaks the settings' bounds.
            ValueError: the vector's size is not the collection's dim, or it is zero.
        """
        started = time.perf_counter()
        check_bounds(request, self._settings)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.size != self._info.dim or not np.any(query):
            raise ValueError(f"query vector of size {query.size} (norm {float(np.linalg.norm(query)):.3g}) "
                             f"does not fit collection {self._collection!r}; expected a non-zero vector of "
                             f"size {self._info.dim}")
        return self._search(query, request, started)

    def _search(self, query: NDArray[np.float32], request: QueryFields, started: float) -> SearchResponse:
        w_image, w_text = resolve_weights(request, self._settings)
        k = candidate_count(candidates=self._settings.candidates, offset=request.offset, limit=request.limit)
        store_filter = build_filter(request)
        lists: list[tuple[str, list[StoredPoint]]] = []
        for using, weight in ((IMAGE, w_image), (TEXT, w_text)):
            if weight > 0:  # an index with weight 0 cannot change the order; skip its search
                lists.append((using, self._store.search(self._collection, vector=query, using=using, limit=k,
                                                        filter=store_filter)))
        candidates = merge_candidates(*lists)
        for using in (IMAGE, TEXT):  # exact similarity on the index that did not find a candidate
            unknown = missing_scores(candidates, using)
            if unknown:
                scores = self._store.score(self._collection, vector=query, using=using, product_ids=unknown)
                candidates = with_scores(candidates, using, scores)
        ranked = rank(fuse(candidates, w_image=w_image, w_text=w_text))
        page = paginate(ranked, offset=request.offset, limit=request.limit)
        took_ms = (time.perf_counter() - started) * 1000.0
        logger.debug("search %r: %d candidates, %d results in %.1f ms", request.q, len(candidates), len(page),
                     took_ms)
        return SearchResponse(
            results=[self._hit(item) for item in page],
            took_ms=round(took_ms, 3),
            total_candidates=len(candidates),
            offset=request.offset,
            limit=request.limit,
            weights=Weights(image=w_image, text=w_text),
        )

    @staticmethod
    def _hit(item: Fused) -> SearchHit:
        return SearchHit(
            id=item.product_id,
            score=item.score,
            scores=IndexScores(image=item.image, text=item.text),
            product=ProductView.model_validate({"id": item.product_id, **public_payload(dict(item.payload))}),
        )

    def get_product(self, product_id: str) -> dict[str, Any]:
        """A product's fields as indexed (bookkeeping stripped).

        Raises:
            NotFound: no product with that id in the collection.
        """
        points = self._store.retrieve(self._collection, [product_id])
        if not points:
            raise NotFound(f"product {product_id!r} is not in collection {self._collection!r}")
        return public_payload(points[0].payload)
