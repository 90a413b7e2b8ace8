"""The search service: encode the query, take candidates from the indices, fuse, boost, group, filter and page.

Beside searches it answers the catalog questions built on the same collection: a product's nearest others
(`similar`), recommendations from liked and disliked products (`recommend`), value counts (`facets`) and
its own statistics (`stats`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from common.errors import EncoderMismatch, InvalidQuery, NotFound
from common.metrics import STORE_SECONDS, timed_calls
from common.settings import EmbedSettings, SearchSettings
from common.thumbnails import ThumbnailStore
from common.vocabulary import TAGS_FIELD, Vocabulary
from embed.protocol import Encoder
from search.batching import MicroBatcher
from search.calibration import Calibration, calibrate
from search.encode import CacheStats, Part, QueryEncoder, combine
from search.encoder_process import ProcessEncoder
from search.filters import build_filter
from search.fusion import (
    Fused,
    Group,
    candidate_count,
    fuse,
    group_variants,
    merge_candidates,
    missing_scores,
    paginate,
    rank,
    value_counts,
    with_scores,
)
from search.query import (
    FacetValue,
    IndexScores,
    ProductView,
    QueryFields,
    QueryPart,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SimilarHit,
    SimilarResponse,
    TagBoost,
    Variant,
    Weights,
    check_bounds,
    resolve_weights,
)
from search.steps import Steps, StoreCall, run, run_async
from store.lexical import LEXICAL, covers, query_vector
from store.protocol import (
    IMAGE,
    STATE_KEY,
    TEXT,
    AsyncVectorReader,
    Boost,
    CollectionInfo,
    Filter,
    Match,
    MatchAny,
    StoredPoint,
    VectorStore,
    boost_of,
    check_weights,
)

logger = logging.getLogger(__name__)


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored payload without Vitrine's own bookkeeping (`STATE_KEY`, `store.protocol.SIMILAR_KEY`:
    every key starting with `STATE_KEY`)."""
    return {key: value for key, value in payload.items() if not key.startswith(STATE_KEY)}


class SearchService:
    """Answers searches over one collection with the encoder that built it.

    Construction checks the collection: it must exist and must have been built by ``encoder`` (same name and
    dim), otherwise its vectors would be compared with vectors of another space. It then calibrates the
    collection's scores (`search.calibration`), unless a calibration is given.

    Args:
        encoder: the collection's encoder (loaded here if it is not yet).
        store: an open store.
        settings: candidate count, page bounds, default weights, cache size, micro-batching of query encodings
            (batch_window_ms > 0: a worker thread that `close` stops; with encoder_process also a child process
            running a copy of the encoder, see `search.encoder_process`).
        collection: the collection (alias) to search.
        vocabulary: the tag vocabulary the catalog was tagged with; a query naming one of its values boosts
            the products carrying that tag by ``tag_boost``.
        tag_boost: score added for each tag the query names (settings tags.boost).
        image_loader: fetches and decodes an ``image_url`` query part (None: such parts are refused).
        calibration: the collection's calibration; measured here when not given.
        thumbnails: where the ingestion put thumbnails and previews: products shown get the URLs of theirs
            (``thumbnail``, ``preview``) when the files exist (None: no URLs).
        embed_settings: the embed settings the encoder was built with; a child process builds its copy from them
            (settings search.encoder_process). None: queries are encoded in this process whatever that setting.
        gate_reads: whether the store's reads count against settings ``parallel_searches`` with the ranking:
            true for a store whose engine runs in this process (the embedded one: its reads are CPU work here,
            and interleaving them with other searches costs as much as interleaving the ranking), false for a
            server, whose reads wait on the network.

    Raises:
        NotFound: no such collection.
        EncoderMismatch: the collection was built by another encoder or dim, or by other weights under the
            same encoder name (a model folder retrained in place).
    """

    def __init__(
        self,
        *,
        encoder: Encoder,
        store: VectorStore,
        settings: SearchSettings,
        collection: str,
        vocabulary: Vocabulary | None = None,
        tag_boost: float = 0.0,
        image_loader: Callable[[str], Image.Image] | None = None,
        calibration: Calibration | None = None,
        thumbnails: ThumbnailStore | None = None,
        embed_settings: EmbedSettings | None = None,
        gate_reads: bool = True,
    ) -> None:
        info = store.collection_info(collection)
        _check_encoder(collection, info, encoder)
        self._encoder = encoder
        self._process: ProcessEncoder | None = None
        if settings.encoder_process and settings.batch_window_ms > 0:
            if embed_settings is None:
                logger.warning("search.encoder_process is on but no embed settings were given to the search "
                               "service; query encodings run in this process")
            else:  # the batcher's encoder calls run in a child process (another core, no fight for the GIL)
                self._process = ProcessEncoder(encoder, embed_settings, call_timeout_s=settings.encoder_timeout_s)
        batcher = MicroBatcher(self._process or encoder, window_ms=settings.batch_window_ms,
                               max_batch=settings.max_batch) \
            if settings.batch_window_ms > 0 else None  # one worker thread per service (and its encoder)
        self._queries = QueryEncoder(encoder, cache_size=settings.cache_size, batcher=batcher)
        self._store = timed_calls(store, STORE_SECONDS)  # every store call timed, by operation
        self._settings = settings
        self._gate = threading.BoundedSemaphore(settings.parallel_searches)  # see settings search.parallel_searches
        self._gate_reads = gate_reads
        self._collection = collection
        self._info = info
        self._vocabulary = vocabulary
        self._tag_boost = tag_boost
        self._image_loader = image_loader
        self._thumbnails = thumbnails
        try:
            self._calibration = calibration if calibration is not None else calibrate(store, collection)
        except BaseException:
            self.close()  # the batcher's worker and the encoder process, if any
            raise

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
        """The collection as it was when the service was built or last refreshed (count may have changed since)."""
        return self._info

    @property
    def calibration(self) -> Calibration:
        """The collection's score calibration."""
        return self._calibration

    @property
    def tag_attributes(self) -> tuple[str, ...]:
        """The attributes of the tag vocabulary queries are matched against (empty when there is none); their
        values are stored as ``tags.<attribute>``."""
        return self._vocabulary.names if self._vocabulary is not None else ()

    def close(self) -> None:
        """Stop the query encoding worker (settings search.batch_window_ms) and the encoder process (settings
        search.encoder_process); queries still queued fail with `common.errors.BackendUnavailable`. The store is the
        caller's to close. Idempotent."""
        self._queries.close()
        if self._process is not None:
            self._process.close()

    def refresh(self, vocabulary: Vocabulary | None) -> None:
        """Take up the version of the collection its alias points at now (after a re-index switched it): its
        description (count, lexical index), a new calibration, and ``vocabulary`` for tag boosts. Searches
        meanwhile go on with the previous ones.

        Raises:
            EncoderMismatch: the new version was built by another encoder or weights (nothing is changed).
        """
        info = self._store.collection_info(self._collection)
        _check_encoder(self._collection, info, self._encoder)
        calibration = calibrate(self._store, self._collection)
        self._info, self._calibration, self._vocabulary = info, calibration, vocabulary
        logger.info("search took up version %s of %r (%d products)", info.physical, self._collection, info.count)

    def cache_stats(self) -> CacheStats:
        """How the query embedding cache has done."""
        return self._queries.stats()

    # -- searching ---------------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> SearchResponse:
        """Embed the request's text, image and query parts (cached), combine them and search.

        Raises:
            InvalidQuery: the request breaks the settings' bounds, names a product that is not in the
                collection, its parts cancel out, or an ``image_url`` cannot be used.
        """
        started = time.perf_counter()
        query, plan = self._query(request)  # outside the gate: concurrent queries share the encoder's batches
        return self._rank(self._search(query, request, started, plan=plan))

    @property
    def ranks_on_loop(self) -> bool:
        """Whether an event loop should rank this service's searches itself (`asearch_on_loop`): the store's reads
        run in this process and settings ``search.rank_on_loop`` is on."""
        return self._gate_reads and self._settings.rank_on_loop

    async def asearch_on_loop(self, request: SearchRequest) -> SearchResponse:
        """`search`, for an event loop and a store whose reads run in this process (`ranks_on_loop`): the
        query's texts are encoded without blocking the loop (micro-batched with other searches'), then the
        ranking and its reads run in the calling thread, holding the turn (settings ``parallel_searches``).

        A worker thread would not rank any sooner (the reads and the ranking hold the GIL, and searches take
        turns), it would only add two thread hand-offs per search. Queries with an image or an ``image_url``
        part are embedded in a worker thread (hashing pixels, fetching URLs).

        Raises:
            As `search`.
        """
        started = time.perf_counter()
        if request.image is not None or any(part.image_url is not None for part in request.query or ()):
            query, plan = await asyncio.to_thread(self._query, request)
        else:
            query, plan = await self._aquery(request)
        # may wait for the turn of a search ranking in a worker thread (an upload, a re-rank): a few ms at most
        return self._rank(self._search(query, request, started, plan=plan))

    def _rank(self, steps: Steps[SearchResponse]) -> SearchResponse:
        """Drive a search's steps with the sync store, in its turn (settings ``parallel_searches``): the whole
        search when the store's reads are CPU work in this process too (``gate_reads``), otherwise the logic
        between the reads only."""

        def read(name: str, kwargs: dict[str, Any]) -> Any:
            return getattr(self._store, name)(self._collection, **kwargs)

        if self._gate_reads:
            with self._gate:
                return run(steps, read)
        return run(steps, read, gate=self._gate)

    async def asearch(self, request: SearchRequest, reader: AsyncVectorReader) -> SearchResponse:
        """`search`, with the reads of the ranking made through ``reader``, an async client of the same
        collection's store (a Qdrant server): the reads of each phase go out together and no thread waits on the
        network (`search.steps`). Encoding and fusion run in worker threads, off the event loop.

        Raises:
            As `search`, and what ``reader`` raises (`common.errors.BackendUnavailable`, ...).
        """
        started = time.perf_counter()
        query, plan = await asyncio.to_thread(self._query, request)

        async def read(name: str, kwargs: dict[str, Any]) -> Any:
            begun = time.perf_counter()
            try:
                return await getattr(reader, name)(self._collection, **kwargs)
            finally:
                STORE_SECONDS.labels(name).observe(time.perf_counter() - begun)

        return await run_async(self._search(query, request, started, plan=plan), read, gate=self._gate)

    def _query(self, request: SearchRequest) -> tuple[NDArray[np.float32], Plan]:
        """The request's query vector (its parts embedded, cached, and combined) and what else its parts ask."""
        check_bounds(request, self._settings)
        parts: list[Part] = []
        if request.q:
            parts.append(Part(self._queries.text(request.q), 1.0, "text", request.q))
        if request.image is not None:
            parts.append(Part(self._queries.image(request.image), 1.0, "image"))
        for number, part in enumerate(request.query or [], start=1):
            parts.append(self._resolve(number, part))
        return combine(parts), self._plan(parts)

    async def _aquery(self, request: SearchRequest) -> tuple[NDArray[np.float32], Plan]:
        """`_query` for an event loop, for requests without images: the texts awaited together."""
        check_bounds(request, self._settings)
        texts = ([request.q] if request.q else []) + [p.text for p in request.query or () if p.text is not None]
        distinct = list(dict.fromkeys(texts))
        vectors = dict(zip(distinct, await asyncio.gather(*(self._queries.atext(t) for t in distinct)), strict=True))
        parts: list[Part] = [Part(vectors[request.q], 1.0, "text", request.q)] if request.q else []
        for number, part in enumerate(request.query or [], start=1):
            parts.append(Part(vectors[part.text], part.weight, "text", part.text) if part.text is not None
                         else self._resolve(number, part))
        return combine(parts), self._plan(parts)

    def _resolve(self, number: int, part: QueryPart) -> Part:
        """Embed one query part."""
        if part.text is not None:
            return Part(self._queries.text(part.text), part.weight, "text", part.text)
        if part.product_id is not None:
            found = self._store.retrieve(self._collection, [part.product_id], with_vectors=True)
            if not found:
                raise InvalidQuery(f"query part {number}: product {part.product_id!r} is not in collection "
                                   f"{self._collection!r}")
            vectors = found[0].vectors
            kind = IMAGE if IMAGE in vectors else TEXT
            if kind not in vectors:
                raise InvalidQuery(f"query part {number}: product {part.product_id!r} has no vector to search "
                                   "with")
            return Part(np.asarray(vectors[kind], dtype=np.float32), part.weight,
                        "image" if kind == IMAGE else "text")
        assert part.image_url is not None
        if self._image_loader is None:
            raise InvalidQuery(f"query part {number}: image_url parts are not enabled in this service")
        image = self._image_loader(part.image_url)  # its errors name the URL and the reason
        return Part(self._queries.image(image), part.weight, "image")

    def _plan(self, parts: Sequence[Part]) -> Plan:
        """What a query's parts ask beside their vector: words to match, tags to boost, its text share."""
        words = " ".join(p.text for p in parts if p.kind == "text" and p.weight > 0 and p.text)
        boosts: dict[tuple[str, str], float] = {}
        if self._vocabulary is not None and self._tag_boost > 0:
            for part in parts:
                if part.kind != "text" or not part.text:
                    continue
                for attribute, value in self._vocabulary.mentions(part.text):
                    key = (attribute, value)
                    boosts[key] = boosts.get(key, 0.0) + math.copysign(self._tag_boost, part.weight)
        positive = sum(p.weight for p in parts if p.weight > 0)
        text_share = sum(p.weight for p in parts if p.weight > 0 and p.kind == "text") / positive \
            if positive else 1.0
        negative = [p for p in parts if p.weight < 0]
        return Plan(words=words, boosts=tuple(Boost(Match(f"{TAGS_FIELD}.{a}", v), w)
                                              for (a, v), w in boosts.items() if w), text_share=text_share,
                    avoid=tuple(p.text for p in negative if p.kind == "text" and p.text),
                    wanted=combine([p for p in parts if p.weight > 0]) if negative else None)

    def _search(self, query: NDArray[np.float32], request: QueryFields, started: float, *,
                plan: Plan) -> Steps[SearchResponse]:
        """The search of ``query`` as steps (`search.steps`): the indices' candidates, then their missing
        exact scores, then (with negative parts) the scores that judge relevance; fused, ranked and paged."""
        w_image, w_text, w_lexical = resolve_weights(request, self._settings)
        if not (plan.words and self._info.lexical):
            w_lexical = 0.0
        grouped = self._settings.group_variants if request.group is None else request.group
        k = candidate_count(candidates=self._settings.candidates, offset=request.offset, limit=request.limit)
        store_filter = build_filter(request)
        reads: list[StoreCall] = []
        indices: list[str] = []
        for using, weight in ((IMAGE, w_image), (TEXT, w_text)):
            if weight > 0:  # an index with weight 0 cannot change the order; skip its search
                reads.append(("search", {"vector": query, "using": using, "limit": k, "filter": store_filter,
                                         "boosts": plan.boosts}))
                indices.append(using)
        if w_lexical > 0:
            reads.append(("lexical_search", {"text": plan.words, "limit": k, "filter": store_filter}))
            indices.append(LEXICAL)
        found: list[list[StoredPoint]] = (yield reads) if reads else []
        boosted: dict[str, float] = {}  # each candidate's tag boosts, worked out once
        if plan.boosts:
            for points in found:
                for point in points:
                    if point.product_id not in boosted:
                        boosted[point.product_id] = boost_of(point.payload, plan.boosts)
        candidates = merge_candidates(*zip(indices, found, strict=True), boosted=boosted)
        reads, indices = [], []
        for using in (IMAGE, TEXT):  # exact similarity on the index that did not find a candidate
            unknown = missing_scores(candidates, using)
            if unknown:
                reads.append(("score", {"vector": query, "using": using, "product_ids": unknown}))
                indices.append(using)
        if w_lexical > 0:
            unknown = missing_scores(candidates, LEXICAL)
            if unknown:
                reads.append(("lexical_score", {"text": plan.words, "product_ids": unknown}))
                indices.append(LEXICAL)
        if reads:
            for index, scores in zip(indices, (yield reads), strict=True):
                candidates = with_scores(candidates, index, scores)
        words, avoided = query_vector(plan.words), [query_vector(text) for text in plan.avoid]
        complete = {c.product_id for c in candidates if c.scores.get(LEXICAL) and covers(words, c.payload)
                    and not any(covers(a, c.payload) for a in avoided)  # it holds words the query avoids
                    and boosted.get(c.product_id, 0.0) >= 0} if w_lexical > 0 else set()  # or a tag it avoids
        ranked = rank(fuse(candidates, w_image=w_image, w_text=w_text, w_lexical=w_lexical, boosts=plan.boosts,
                           boosted=boosted, all_words=complete, w_all_words=self._settings.w_all_words))
        relevance = yield from self._relevances(ranked, w_image, w_text, plan)
        best = max((r for r in relevance.values() if r is not None), default=None)
        calibrated = bool(self._calibration.noise)
        no_good_match = not ranked or (calibrated and (best is None or best < self._settings.no_match_below))
        kept = [] if no_good_match else [
            item for item in ranked
            if request.min_score is None or _at_least(relevance[item.product_id], request.min_score)]
        groups = group_variants(kept) if grouped else [Group(item) for item in kept]
        page = paginate(groups, offset=request.offset, limit=request.limit)
        took_ms = (time.perf_counter() - started) * 1000.0
        logger.debug("search %r: %d candidates, %d results in %.1f ms", request.q, len(candidates), len(page),
                     took_ms)
        counted = {"facets": {name: [FacetValue(value=v, count=c) for v, c in value_counts(
            (i.payload for i in kept), name)] for name in request.facets}} if request.facets else {}
        return SearchResponse(
            results=[self._hit(group, relevance, self._thumbnails) for group in page],
            took_ms=round(took_ms, 3),
            total_candidates=len(candidates),
            offset=request.offset,
            limit=request.limit,
            weights=Weights(image=w_image, text=w_text, lexical=w_lexical),
            no_good_match=no_good_match,
            boosts=[TagBoost(attribute=b.condition.field.removeprefix(f"{TAGS_FIELD}."),
                             value=str(b.condition.value), weight=b.weight) for b in plan.boosts],
            **counted,  # left out of the JSON unless asked for
        )

    def _relevances(self, ranked: Sequence[Fused], w_image: float, w_text: float, plan: Plan
                    ) -> Steps[dict[str, float | None]]:
        """Each ranked item's relevance: the weighted mean of its per-index relevances (see
        `search.calibration`), or 1 when its text holds every word of the query (an exact brand, SKU or
        model-number match).

        A query with negative parts is judged by what it asks for: the similarities to its positive parts
        alone (the negative ones lower every similarity, relevant or not).
        """
        if not ranked or not self._calibration.noise:
            return dict.fromkeys((item.product_id for item in ranked), None)
        ids = [item.product_id for item in ranked]
        if plan.wanted is None:
            scores = {IMAGE: [item.image for item in ranked], TEXT: [item.text for item in ranked]}
        else:
            found = yield [("score", {"vector": plan.wanted, "using": index, "product_ids": ids})
                           for index in (IMAGE, TEXT)]
            scores = {index: [by_id.get(pid) for pid in ids] for index, by_id in zip((IMAGE, TEXT), found, strict=True)}
        total = np.zeros(len(ids))
        weight = np.zeros(len(ids))
        for index, w in ((IMAGE, w_image), (TEXT, w_text)):
            if w <= 0:
                continue
            values = np.array([np.nan if v is None else v for v in scores[index]], dtype=np.float64)
            percentiles = self._calibration.percentiles(values, index=index, text_share=plan.text_share)
            if percentiles is None:
                continue
            present = ~np.isnan(percentiles)
            total[present] += w * percentiles[present]
            weight[present] += w
        out: dict[str, float | None] = {}
        for item, t, w in zip(ranked, total.tolist(), weight.tolist(), strict=True):  # floats: numpy's scalars are slow
            out[item.product_id] = 1.0 if item.all_words else round(t / w, 6) if w else None
        return out

    @staticmethod
    def _hit(group: Group, relevance: Mapping[str, float | None], thumbnails: ThumbnailStore | None) -> SearchHit:
        item = group.lead
        return SearchHit(
            id=item.product_id,
            score=item.score,
            relevance=relevance.get(item.product_id),
            scores=IndexScores(image=item.image, text=item.text, lexical=item.lexical, boost=item.boost,
                               all_words=item.all_words),
            product=_view(item.product_id, item.payload, thumbnails),
            variants=[Variant(id=v.product_id, score=v.score, product=_view(v.product_id, v.payload, thumbnails))
                      for v in group.variants],
        )

    # -- products ----------------------------------------------------------------------------------

    def get_product(self, product_id: str) -> dict[str, Any]:
        """A product's fields as indexed (bookkeeping stripped), with the URLs of its thumbnail and preview
        when they exist (see `ProductView`).

        Raises:
            NotFound: no product with that id in the collection.
        """
        points = self._store.retrieve(self._collection, [product_id])
        if not points:
            raise NotFound(f"product {product_id!r} is not in collection {self._collection!r}")
        return _shown_fields(points[0].payload, self._thumbnails)

    def similar(self, product_id: str, *, limit: int) -> SimilarResponse:
        """The products nearest to one product (itself left out), best first.

        Uses the neighbours `vitrine similar --all` stored when there are enough of them (a lookup), and
        otherwise searches with the product's image vector (its text vector without one).

        Raises:
            NotFound: no product with that id.
            InvalidQuery: ``limit`` outside 1..search.max_limit.
        """
        from search.neighbours import live_similar, similar_of  # here: it loads faiss, which searches never need

        started = time.perf_counter()
        self._check_limit(limit)
        stored = similar_of(self._store, self._collection, product_id)
        source = "precomputed" if stored is not None and len(stored) >= limit else "search"
        pairs = stored[:limit] if stored is not None and source == "precomputed" else \
            live_similar(self._store, self._collection, product_id, k=limit)
        points = {p.product_id: p for p in self._store.retrieve(self._collection, [pid for pid, _ in pairs])}
        hits = [SimilarHit(id=pid, score=score, product=_view(pid, points[pid].payload, self._thumbnails))
                for pid, score in pairs if pid in points]  # neighbours deleted since the job ran are left out
        return SimilarResponse(product_id=product_id, source=source, results=hits, took_ms=_ms(started))

    def recommend(self, *, positive: Sequence[str], negative: Sequence[str] = (), limit: int,
                  request: QueryFields | None = None) -> SimilarResponse:
        """Products like the ``positive`` ones and unlike the ``negative`` ones (the engine's recommendation
        query on the image index, best-score strategy); the given products are left out.

        Raises:
            InvalidQuery: no positive product, an id in both lists, a product that is not in the collection or
                has no image vector, or ``limit`` outside 1..search.max_limit.
        """
        started = time.perf_counter()
        self._check_limit(limit)
        if not positive:
            raise InvalidQuery("positive: give at least one product id to recommend from")
        both = sorted(set(positive) & set(negative))
        if both:
            raise InvalidQuery(f"product ids {both!r} are both positive and negative")
        asked = list(dict.fromkeys([*positive, *negative]))
        points = {p.product_id: p for p in self._store.retrieve(self._collection, asked, with_vectors=True)}
        missing = [pid for pid in asked if pid not in points]
        if missing:
            raise InvalidQuery(f"product ids {missing!r} are not in collection {self._collection!r}")
        imageless = [pid for pid in asked if IMAGE not in points[pid].vectors]
        if imageless:
            raise InvalidQuery(f"products {imageless!r} have no image vector to recommend from")
        base = build_filter(request) if request is not None else None
        exclude = MatchAny("id", tuple(asked))
        store_filter = Filter(must=base.must if base else (), must_not=(*(base.must_not if base else ()), exclude))
        found = self._store.recommend(self._collection, positive=[points[p].vectors[IMAGE] for p in positive],
                                      negative=[points[p].vectors[IMAGE] for p in negative], using=IMAGE,
                                      limit=limit, filter=store_filter)
        return SimilarResponse(product_id=None, source="recommend", results=_similar_hits(found, self._thumbnails),
                               took_ms=_ms(started))

    def facets(self, field: str, *, request: QueryFields | None = None, limit: int = 20) -> list[FacetValue]:
        """Counts of a field's values over the catalog, or over the products matching ``request``'s filters.

        Raises:
            InvalidQuery: the field has no payload index, or a bad limit.
        """
        store_filter = build_filter(request) if request is not None else None
        return [FacetValue(value=c.value, count=c.count)
                for c in self._store.facet(self._collection, field, filter=store_filter, limit=limit)]

    def stats(self) -> dict[str, Any]:
        """The collection, the query cache and the calibration, as JSON-ready data."""
        cache = self._queries.stats()
        info = self._store.collection_info(self._collection)
        return {
            "collection": {"name": info.name, "physical": info.physical, "encoder": info.encoder, "dim": info.dim,
                           "count": info.count, "lexical": info.lexical},
            "cache": {"capacity": cache.capacity, "size": cache.size, "hits": cache.hits, "misses": cache.misses,
                      "hit_rate": round(cache.hit_rate, 4)},
            "calibration": self._calibration.describe(),
        }

    def _check_limit(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self._settings.max_limit:
            raise InvalidQuery(f"limit {limit!r} must be between 1 and {self._settings.max_limit} "
                               "(setting search.max_limit)")


@dataclass(frozen=True)
class Plan:
    """What a search does beside its vector."""

    words: str = ""
    """Words for the lexical match (the query's positive text parts)."""
    boosts: tuple[Boost, ...] = ()
    text_share: float = 1.0
    avoid: tuple[str, ...] = ()
    """The negative text parts: a product holding all the words of one gets no all-words bonus."""
    wanted: NDArray[np.float32] | None = None
    """The positive parts' vector, when the query also has negative ones (relevance is judged by it)."""


def _check_encoder(collection: str, info: CollectionInfo, encoder: Encoder) -> None:
    """Refuse to search a collection built by another encoder (name or dim) or by other weights under its name:
    the query vectors would be compared with vectors of another space.

    Raises:
        EncoderMismatch: it was.
    """
    if info.encoder != encoder.name or info.dim != encoder.dim:
        raise EncoderMismatch(
            f"collection {collection!r} was built with encoder {info.encoder!r} (dim {info.dim}) but is "
            f"being searched with {encoder.name!r} (dim {encoder.dim}); search it with {info.encoder!r} "
            "or re-index it with the new encoder"
        )
    check_weights(collection, info.encoder, built=info.weights, now=encoder.weights_id)


def _at_least(relevance: float | None, minimum: float) -> bool:
    """Whether a result passes ``min_score`` (an uncalibrated collection gives no relevance: everything passes)."""
    return relevance is None or relevance >= minimum


def _shown_fields(payload: Mapping[str, Any], thumbnails: ThumbnailStore | None) -> dict[str, Any]:
    """A product's public fields, with the URLs of its thumbnail and preview when ``thumbnails`` has them.

    The files are named by the image hash kept in the bookkeeping (``_vitrine.image``). Vitrine's URLs take the
    place of catalog fields of the same names; a catalog's own ``thumbnail`` or ``preview`` is kept when it is
    text and Vitrine has no such file, and left out otherwise (a `ProductView` holds a URL there).
    """
    fields = public_payload(dict(payload))
    state = payload.get(STATE_KEY)
    made = thumbnails.urls(state.get("image")) if thumbnails is not None and isinstance(state, Mapping) else {}
    for size, name in (("thumb", "thumbnail"), ("preview", "preview")):
        if size in made:
            fields[name] = made[size]
        elif name in fields and not (fields[name] is None or isinstance(fields[name], str)):
            del fields[name]
    return fields


def _view(product_id: str, payload: Mapping[str, Any], thumbnails: ThumbnailStore | None = None) -> ProductView:
    return ProductView.model_validate({"id": product_id, **_shown_fields(payload, thumbnails)})


def _similar_hits(points: Sequence[StoredPoint], thumbnails: ThumbnailStore | None = None) -> list[SimilarHit]:
    return [SimilarHit(id=p.product_id, score=float(p.score or 0.0),
                       product=_view(p.product_id, p.payload, thumbnails)) for p in points]


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
