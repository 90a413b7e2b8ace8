"""`EdgeStore`: the store on Qdrant's embedded engine (``qdrant-edge-py``), in a local folder.

Collections (aliases, records, shards, locking between processes) are kept by
`store.edge_collections.EdgeCollections`; this module turns the store's operations into shard calls.
Writes go through the shard's write-ahead log: an upsert that returned survives a ``kill -9``.

Threads: EdgeShard is safe to call from several threads at once (it locks inside, as Qdrant's segment
holder does; ``test_threads_share_a_store`` in the conformance suite hammers it from threads), so reads
and writes take no lock of ours; only opening, creating, dropping and closing collections do.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from common.errors import InvalidInput
from common.product import point_id
from common.settings import StoreSettings
from store._common import (
    check_boosts,
    check_dim,
    check_encoder,
    check_examples,
    check_facet,
    check_filter,
    check_limit,
    check_name,
    check_payload_index,
    check_payload_updates,
    check_points,
    check_product_ids,
    check_query,
    check_vector_selection,
    order_by_request,
    require_found,
    stored_points,
)
from store.edge_collections import EdgeCollection, EdgeCollections
from store.frozen import freeze
from store.lexical import LEXICAL, document_vector, query_vector, reads_words
from store.point_cache import CachedPoint
from store.protocol import (
    VECTOR_NAMES,
    Boost,
    CollectionInfo,
    Condition,
    FacetCount,
    Filter,
    Match,
    MatchAny,
    PointWrite,
    StoredPoint,
)

logger = logging.getLogger(__name__)


class EdgeStore:
    """A `store.protocol.VectorStore` on qdrant-edge shards in ``folder``."""

    def __init__(self, folder: Path, *, settings: StoreSettings) -> None:
        """Prepare a store in ``folder`` (created if absent); collections open on first use.

        Args:
            folder: the store folder (``settings.store_dir``).
            settings: HNSW parameters (``hnsw_m``, ``hnsw_ef_construct`` for new collections, ``hnsw_ef``
                for searches).

        Raises:
            BackendUnavailable: the folder cannot be created.
        """
        self._settings = settings
        self._collections = EdgeCollections(Path(folder), settings=settings)

    def __repr__(self) -> str:
        return f"EdgeStore({str(self._collections.folder)!r})"

    # -- collections -------------------------------------------------------------------------------

    def ensure_collection(self, name: str, *, encoder: str, dim: int, weights: str = "") -> CollectionInfo:
        """Open the collection behind alias ``name``, creating it if absent (see `VectorStore`).

        Raises:
            EncoderMismatch: it exists and was built by another encoder or dim, or by other weights.
            StoreLocked: another process holds the collection open.
        """
        check_name(name)
        check_dim(encoder, dim)
        opened = self._collections.get_or_create(name, encoder=encoder, dim=dim, weights=weights)
        check_encoder(name, opened.record, encoder=encoder, dim=dim, weights=weights)
        return self._info(name, opened)

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe the collection behind alias ``name``.

        Raises:
            NotFound: no such collection.
        """
        return self._info(name, self._collections.get(name))

    def list_collections(self) -> list[str]:
        """Aliases of every collection in the folder."""
        return self._collections.names()

    def drop_collection(self, name: str) -> None:
        """Remove alias ``name`` and its collection folder; nothing happens if it does not exist.

        Raises:
            StoreLocked: another process holds the collection open.
        """
        self._collections.drop(name)

    def create_version(self, alias: str, *, encoder: str, dim: int, weights: str = "") -> str:
        """A new, empty version of ``alias`` that the alias does not point at (see `VectorStore.create_version`).

        Raises:
            InvalidInput: a bad alias name, encoder name or dim.
        """
        check_name(alias)
        check_dim(encoder, dim)
        return self._collections.create_version(alias, encoder=encoder, dim=dim, weights=weights).physical

    def switch_alias(self, alias: str, physical: str) -> str | None:
        """Point ``alias`` at ``physical`` by one atomic rewrite of the aliases file; the version it pointed at
        before (see `VectorStore.switch_alias`). Other processes see the switch on their next call.

        Raises:
            NotFound: ``physical`` is not a version of ``alias``.
        """
        return self._collections.switch(alias, physical)

    def list_versions(self, alias: str) -> list[str]:
        """The versions made for ``alias``, oldest first."""
        return self._collections.versions(alias)

    def drop_version(self, physical: str) -> None:
        """Remove the version ``physical`` and its folder (see `VectorStore.drop_version`).

        Raises:
            InvalidInput: an alias points at it.
            StoreLocked: another process holds it open.
        """
        self._collections.drop_version(physical)

    def ensure_payload_index(self, name: str, field: str, kind: str) -> None:
        """Index payload ``field`` (dotted paths reach in) as ``kind``; idempotent (see `VectorStore`).

        Raises:
            NotFound: no such collection.
            InvalidInput: an unknown kind or a bad field name.
        """
        check_payload_index(field, kind)
        self._collections.ensure_index(self._collections.get(name), field, kind)

    def record_tags(self, name: str, vocabulary: Mapping[str, Any] | None) -> None:
        """Remember the collection's tag vocabulary in its record (see `VectorStore.record_tags`).

        Raises:
            NotFound: no such collection.
        """
        opened = self._collections.get(name)
        tags = None if vocabulary is None else dict(vocabulary)
        if opened.record.tags != tags:
            self._collections.set_record(opened, replace(opened.record, tags=tags))

    def optimize(self, name: str) -> None:
        """Merge segments and build the HNSW and payload indexes now (minutes for 100k+ products)."""
        opened = self._collections.get(name)
        with self._collections.engine(f"optimizing {name!r}"):
            opened.shard.optimize()
            opened.shard.flush()

    def close(self) -> None:
        """Close every open shard, releasing their locks; the store cannot be used afterwards."""
        self._collections.close()

    # -- points ------------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[PointWrite]) -> None:
        """Write whole points, replacing earlier versions; in the WAL (durable) when this returns.

        Raises:
            InvalidInput: a bad point (nothing is written).
        """
        opened = self._collections.get(name)
        checked = check_points(points, dim=opened.record.dim)
        if not checked:
            return
        edge_points = [qe.Point(p.point_id, _edge_vectors(p.vectors, p.payload, lexical=opened.record.lexical),
                                p.payload) for p in checked]
        try:
            with self._collections.engine(f"upserting {len(checked)} points into {name!r}"):
                opened.shard.update(qe.UpdateOperation.upsert_points(edge_points))
        finally:
            opened.points.forget(_point_key(p.point_id) for p in checked)

    def set_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Replace the payload of existing products, keeping their vectors.

        Raises:
            NotFound: some product ids are not in the collection (nothing is written).
            InvalidInput: a payload ``id`` that differs from its product id.
        """
        opened = self._collections.get(name)
        checked = check_points([PointWrite(pid, payload) for pid, payload in payloads.items()],
                               dim=opened.record.dim)
        with self._collections.engine(f"setting payloads in {name!r}"):
            records = opened.shard.retrieve([p.point_id for p in checked], with_payload=False,
                                            with_vector=False)
            require_found([(p.point_id, p.payload["id"]) for p in checked], {str(r.id) for r in records},
                          action="set", name=name)
            try:
                for p in checked:
                    opened.shard.update(qe.UpdateOperation.overwrite_payload([p.point_id], p.payload))
                    if opened.record.lexical:
                        self._write_lexical(opened, p.point_id, p.payload)
            finally:
                opened.points.forget(_point_key(p.point_id) for p in checked)

    def update_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Set the given top-level keys on existing products, keeping their other keys and vectors.

        Raises:
            NotFound: some product ids are not in the collection (nothing is written); the message lists them.
            InvalidInput: an empty product id, a payload that is not a dict, or an ``id`` that differs.
        """
        updates = check_payload_updates(payloads)
        opened = self._collections.get(name)
        if not updates:
            return
        words = opened.record.lexical and any(reads_words(u.payload) for u in updates)
        with self._collections.engine(f"updating payloads in {name!r}"):
            records = opened.shard.retrieve([u.point_id for u in updates], with_payload=words, with_vector=False)
            require_found([(u.point_id, u.product_id) for u in updates], {str(r.id) for r in records},
                          action="update", name=name)
            before = {str(r.id): r.payload or {} for r in records} if words else {}
            try:
                for u in updates:
                    if u.payload:
                        opened.shard.update(qe.UpdateOperation.set_payload([u.point_id], u.payload))
                    if words and reads_words(u.payload):  # its words changed: so does its lexical vector
                        self._write_lexical(opened, u.point_id, {**before[u.point_id], **u.payload})
            finally:
                opened.points.forget(_point_key(u.point_id) for u in updates)

    @staticmethod
    def _write_lexical(opened: EdgeCollection, pid: str, payload: Mapping[str, Any]) -> None:
        """Rebuild one product's lexical vector from its new payload (removed when it has no text)."""
        sparse = document_vector(payload)
        if sparse:
            vector = qe.SparseVector(sparse.indices, sparse.values)
            opened.shard.update(qe.UpdateOperation.update_vectors([qe.PointVectors(pid, {LEXICAL: vector})]))
        else:
            opened.shard.update(qe.UpdateOperation.delete_vectors([pid], [LEXICAL]))

    def delete(self, name: str, product_ids: Sequence[str]) -> None:
        """Remove products; ids not present are ignored."""
        ids = [point_id(pid) for pid in check_product_ids(product_ids)]
        opened = self._collections.get(name)
        if ids:
            try:
                with self._collections.engine(f"deleting {len(ids)} points from {name!r}"):
                    opened.shard.update(qe.UpdateOperation.delete_points(list(ids)))
            finally:
                opened.points.forget(_point_key(pid) for pid in ids)

    def retrieve(
        self, name: str, product_ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Products by id, in the order asked, absent ones left out."""
        asked = check_product_ids(product_ids)
        opened = self._collections.get(name)
        if not asked:
            return []
        ids = list(dict.fromkeys(point_id(pid) for pid in asked))
        if with_vectors:
            with self._collections.engine(f"retrieving from {name!r}"):
                records: Sequence[Any] = opened.shard.retrieve(list[Any](ids), with_payload=False, with_vector=True)
        else:  # the payloads alone: `_stored` takes them from the cache or reads them, and leaves out the absent
            records = [_Found(uuid.UUID(pid)) for pid in ids]
        points = self._stored(opened, records, name, with_vectors=with_vectors)
        found = {point_id(point.product_id): point for point in points}
        return order_by_request([point_id(pid) for pid in asked], found)

    def search(
        self,
        name: str,
        *,
        vector: NDArray[np.float32],
        using: str,
        limit: int,
        filter: Filter | None = None,
        with_vectors: bool = False,
        exact: bool = False,
        boosts: Sequence[Boost] = (),
    ) -> list[StoredPoint]:
        """Nearest products to ``vector`` on the named vector ``using``, best first (cosine); with ``boosts``,
        by cosine plus the boosts each matches (see `VectorStore.search`).

        Raises:
            InvalidQuery: unknown vector name, bad limit, vector of the wrong shape, a bad filter or boost.
        """
        opened = self._collections.get(name)
        query = check_query(vector, using=using, limit=limit, dim=opened.record.dim)
        checked_boosts = check_boosts(boosts)
        edge_filter = to_edge_filter(filter)
        params = self._search_params(exact=exact)
        nearest = qe.Query.Nearest(query.tolist(), using=using)
        if checked_boosts:
            pools = [edge_filter, *_boost_pools(edge_filter, checked_boosts)]
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[qe.Prefetch(limit=limit, query=nearest, params=params, filter=f) for f in pools],
                query=_boost_formula(checked_boosts, len(pools)),
                with_payload=False,
                with_vector=with_vectors,
            )
        else:
            request = qe.QueryRequest(limit=limit, query=nearest, filter=edge_filter, with_payload=False,
                                      with_vector=with_vectors, params=params)
        with self._collections.engine(f"searching {name!r}"):
            scored = opened.shard.query(request)
        return self._stored(opened, scored, name, with_vectors=with_vectors)

    def score(
        self, name: str, *, vector: NDArray[np.float32], using: str, product_ids: Sequence[str]
    ) -> dict[str, float]:
        """Exact cosine of ``vector`` with the ``using`` vector of each listed product.

        Products that are absent or lack that vector are left out.

        Raises:
            InvalidQuery: unknown vector name, or a vector of the wrong shape.
        """
        asked = {_product_key(pid): pid for pid in check_product_ids(product_ids)}
        opened = self._collections.get(name)
        query = check_query(vector, using=using, limit=max(len(asked), 1), dim=opened.record.dim)
        if not asked:
            return {}
        cached, missing = opened.points.get(list(asked))
        out: dict[str, float] = {}
        known: list[str] = []
        rows: list[NDArray[np.float32]] = []
        for key, point in cached.items():
            row = point.vectors.get(using)
            if row is not None:
                known.append(asked[key])
                rows.append(row)
        if rows:  # the engine's cosine: stored vectors are unit length, the query is made so
            similarities = np.array(rows) @ (query / np.linalg.norm(query))  # np.array: a third of np.stack's time
            out.update(zip(known, similarities.tolist(), strict=True))
        if missing:
            request = qe.QueryRequest(
                limit=len(missing),
                query=qe.Query.Nearest(query.tolist(), using=using),
                filter=qe.Filter(must=[qe.HasIdCondition({str(uuid.UUID(int=pid)) for pid in missing})]),
                with_payload=False,
                with_vector=False,
                params=self._search_params(exact=True),
            )
            with self._collections.engine(f"scoring {len(missing)} products of {name!r}"):
                scored = opened.shard.query(request)
            out.update((asked[_key_of(p)], float(p.score)) for p in scored)
        return {pid: out[pid] for pid in asked.values() if pid in out}

    def lexical_search(
        self, name: str, *, text: str, limit: int, filter: Filter | None = None
    ) -> list[StoredPoint]:
        """Products sharing words with ``text``, best BM25 score first (see `VectorStore.lexical_search`).

        Raises:
            InvalidQuery: bad limit or filter.
        """
        check_limit(limit)
        opened = self._collections.get(name)
        sparse = query_vector(text)
        if not sparse or not opened.record.lexical:
            return []
        request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(qe.SparseVector(sparse.indices, sparse.values),
                                                                      using=LEXICAL),
                                  filter=to_edge_filter(filter), with_payload=False, with_vector=False)
        with self._collections.engine(f"searching {name!r} by words"):
            scored = opened.shard.query(request)
        return self._stored(opened, scored, name, with_vectors=False)

    def lexical_score(self, name: str, *, text: str, product_ids: Sequence[str]) -> dict[str, float]:
        """BM25 score of ``text`` for each listed product sharing a word with it."""
        by_key = {_product_key(pid): pid for pid in check_product_ids(product_ids)}
        opened = self._collections.get(name)
        sparse = query_vector(text)
        if not by_key or not sparse or not opened.record.lexical:
            return {}
        request = qe.QueryRequest(
            limit=len(by_key),
            query=qe.Query.Nearest(qe.SparseVector(sparse.indices, sparse.values), using=LEXICAL),
            filter=qe.Filter(must=[qe.HasIdCondition({_product_uuid(pid) for pid in by_key.values()})]),
            with_payload=False,
            with_vector=False,
        )
        with self._collections.engine(f"scoring {len(by_key)} products of {name!r} by words"):
            scored = opened.shard.query(request)
        return {by_key[_key_of(p)]: float(p.score) for p in scored}

    def recommend(
        self,
        name: str,
        *,
        positive: Sequence[NDArray[np.float32]],
        negative: Sequence[NDArray[np.float32]] = (),
        using: str,
        limit: int,
        filter: Filter | None = None,
    ) -> list[StoredPoint]:
        """The engine's best-score recommendation from example vectors (see `VectorStore.recommend`).

        Raises:
            InvalidQuery: no positive example, a bad vector, limit or filter.
        """
        opened = self._collections.get(name)
        examples = check_examples(positive, negative, using=using, limit=limit, dim=opened.record.dim)
        pos: list[Any] = list(examples[0])
        neg: list[Any] = list(examples[1])
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.RecommendBestScore(qe.RecommendQuery(positives=pos, negatives=neg), using=using),
            filter=to_edge_filter(filter),
            with_payload=True,
            with_vector=False,
            params=self._search_params(exact=False),
        )
        with self._collections.engine(f"recommending from {name!r}"):
            scored = opened.shard.query(request)
        return stored_points(scored, with_vectors=False)

    def facet(self, name: str, field: str, *, filter: Filter | None = None, limit: int = 20) -> list[FacetCount]:
        """The most common values of an indexed payload field, with exact counts.

        Raises:
            InvalidQuery: the field has no payload index, or a bad limit or filter.
        """
        opened = self._collections.get(name)
        with self._collections.engine(f"reading the payload indexes of {name!r}"):
            indexed = opened.shard.info().payload_schema
        check_facet(field, limit, indexed=indexed)
        request = qe.FacetRequest(key=field, limit=limit, exact=True, filter=to_edge_filter(filter))
        with self._collections.engine(f"counting values of {field!r} in {name!r}"):
            hits = opened.shard.facet(request).hits
        counts = [FacetCount(_facet_value(hit.value), int(hit.count)) for hit in hits]
        return sorted(counts, key=lambda c: (-c.count, str(c.value)))

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of products (matching ``filter``), exactly."""
        opened = self._collections.get(name)
        request = qe.CountRequest(exact=True, filter=to_edge_filter(filter))
        with self._collections.engine(f"counting {name!r}"):
            return int(opened.shard.count(request))

    def scroll(
        self,
        name: str,
        *,
        fields: Sequence[str] | None = None,
        batch: int = 1024,
        with_vectors: bool | Sequence[str] = False,
    ) -> Iterator[StoredPoint]:
        """Every product (in point id order), payload limited to ``fields`` (and ``id``) when given; vectors
        as ``with_vectors`` asks (all, none, or the named ones)."""
        if batch < 1:
            raise InvalidInput(f"scroll batch {batch!r} must be a positive integer")
        vectors = check_vector_selection(with_vectors)
        opened = self._collections.get(name)
        with_payload: bool | list[str] = True if fields is None else ["id", *[f for f in fields if f != "id"]]
        offset: Any = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=with_payload,
                                       with_vector=vectors)
            with self._collections.engine(f"scrolling {name!r}"):
                records, offset = opened.shard.scroll(request)
            yield from stored_points(records, with_vectors=bool(vectors))
            if offset is None:
                return

    # -- internals ---------------------------------------------------------------------------------

    def _cached(self, opened: EdgeCollection, ids: Sequence[int], name: str) -> dict[int, CachedPoint]:
        """The points ``ids`` (absent points left out): from the cache, the rest read in one call and cached
        (see `store.point_cache`)."""
        found, missing = opened.points.get(ids)
        if missing:
            generation = opened.points.generation
            with self._collections.engine(f"reading {len(missing)} products of {name!r}"):
                records = opened.shard.retrieve([uuid.UUID(int=pid) for pid in missing], with_payload=True,
                                                with_vector=list(VECTOR_NAMES))
            read = {_key_of(r): CachedPoint(freeze(r.payload or {}), _dense(r.vector)) for r in records}
            opened.points.put(read, generation=generation)
            found.update(read)
        return found

    def _stored(self, opened: EdgeCollection, records: Sequence[Any], name: str, *,
                with_vectors: bool) -> list[StoredPoint]:
        """Points the engine returned without their payloads, with them (frozen, shared with the cache: see
        `store.frozen`); a point deleted since it was found (it is gone) is left out."""
        ids = [_key_of(r) for r in records]
        cached = self._cached(opened, ids, name)
        if with_vectors:
            kept = [(r, cached[pid].payload) for r, pid in zip(records, ids, strict=True) if pid in cached]
            return stored_points([r for r, _ in kept], with_vectors=True, payloads=[p for _, p in kept])
        out = []  # the usual case, a search's results: built here, in one pass (a search makes hundreds)
        for record, pid in zip(records, ids, strict=True):
            point = cached.get(pid)
            if point is not None:
                product_id, score = point.payload.get("id"), getattr(record, "score", None)  # records have none
                out.append(StoredPoint(product_id if isinstance(product_id, str) else str(record.id), point.payload,
                                       {}, None if score is None else float(score)))
        return out

    def _info(self, name: str, opened: EdgeCollection) -> CollectionInfo:
        with self._collections.engine(f"counting {name!r}"):
            count = int(opened.shard.count(qe.CountRequest(exact=True)))
        return CollectionInfo(name=name, physical=opened.physical, encoder=opened.record.encoder,
                              dim=opened.record.dim, count=count, weights=opened.record.weights,
                              lexical=opened.record.lexical, tags=opened.record.tags,
                              quantization=self._collections.quantization(opened))

    def _search_params(self, *, exact: bool) -> qe.SearchParams:
        """HNSW search with the settings' rescoring and oversampling (used by quantized collections, ignored by
        others); ``exact``: every original vector, quantization ignored."""
        if exact:
            return qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
        return qe.SearchParams(hnsw_ef=self._settings.hnsw_ef, quantization=qe.QuantizationSearchParams(
            rescore=self._settings.rescore, oversampling=self._settings.oversampling))


def _edge_vectors(vectors: Mapping[str, NDArray[np.float32]], payload: Mapping[str, Any], *,
                  lexical: bool) -> dict[str, Any]:
    """A point's dense vectors as lists, and its lexical vector built from its payload (when it has text)."""
    out: dict[str, Any] = {k: v.tolist() for k, v in vectors.items()}
    sparse = document_vector(payload) if lexical else None
    if sparse:
        out[LEXICAL] = qe.SparseVector(sparse.indices, sparse.values)
    return out


def _boost_formula(boosts: Sequence[Boost], pools: int) -> qe.Formula:
    """``best prefetch score + sum(weight * condition)``: the similarity plus each matched boost.

    A candidate may come from any of the ``pools`` prefetches (all score the same cosine); a prefetch that
    did not find it counts -2, below any cosine, so the ``max`` takes one that did.
    """
    scores = [f"$score[{i}]" for i in range(pools)]
    terms = [qe.Expression.Max([qe.Expression.Variable(v) for v in scores])]
    terms += [qe.Expression.Mult([qe.Expression.Constant(float(b.weight)),
                                  qe.Expression.Condition(_edge_condition(b.condition))]) for b in boosts]
    return qe.Formula(qe.Expression.Sum(terms), defaults=dict.fromkeys(scores, -2.0))


def _boost_pools(base: qe.Filter | None, boosts: Sequence[Boost]) -> list[qe.Filter]:
    """Extra candidate pools of a boosted search: products matching a raised boost, and products matching no
    lowered one (so pushing some products down leaves enough others to fill the page)."""
    raised: list[Any] = [_edge_condition(b.condition) for b in boosts if b.weight > 0]
    lowered: list[Any] = [_edge_condition(b.condition) for b in boosts if b.weight < 0]
    pools = []
    if raised:
        should = qe.Filter(should=raised)
        pools.append(qe.Filter(must=[should] if base is None else [base, should]))
    if lowered:
        pools.append(qe.Filter(must=None if base is None else [base], must_not=lowered))
    return pools


def _facet_value(value: Any) -> str | int | bool:
    """A facet value as a plain Python value (qdrant-edge wraps keywords)."""
    if isinstance(value, str | int | bool):
        return value
    return str(getattr(value, "value", value))


def to_edge_filter(filter: Filter | None) -> qe.Filter | None:
    """A `Filter` as qdrant-edge's filter (None when empty).

    A `Match` on a float becomes a range with equal bounds (Qdrant matches only strings, integers and
    booleans by value).

    Raises:
        InvalidQuery: a condition that can never be built.
    """
    checked = check_filter(filter)
    if checked is None:
        return None
    must = [_edge_condition(c) for c in checked.must]
    must_not = [_edge_condition(c) for c in checked.must_not]
    return qe.Filter(must=list(must) or None, must_not=list(must_not) or None)


def _edge_condition(c: Condition) -> qe.FieldCondition:
    if isinstance(c, Match):
        if isinstance(c.value, float):
            return qe.FieldCondition(key=c.field, range=qe.RangeFloat(gte=c.value, lte=c.value))
        if isinstance(c.value, bool):
            # qdrant-edge 0.9 reads a Python bool as the integer 1/0 (bool is an int), which never matches a
            # boolean payload; numpy's bool is not an int, so it arrives as a boolean.
            return qe.FieldCondition(key=c.field, match=qe.MatchValue(np.bool_(c.value)))  # type: ignore[arg-type]
        return qe.FieldCondition(key=c.field, match=qe.MatchValue(c.value))
    if isinstance(c, MatchAny):
        strings = all(isinstance(v, str) for v in c.values)
        values: list[str] | list[int] = [str(v) for v in c.values] if strings else [int(v) for v in c.values]
        return qe.FieldCondition(key=c.field, match=qe.MatchAny(values))
    return qe.FieldCondition(key=c.field, range=qe.RangeFloat(gte=c.gte, lte=c.lte))


@functools.lru_cache(maxsize=1 << 16)
def _point_key(point: str) -> int:
    """A point id (a UUID string) as the point cache keys it: its UUID's integer (cached: searches convert
    hundreds)."""
    return uuid.UUID(point).int


@functools.lru_cache(maxsize=1 << 16)
def _product_uuid(product_id: str) -> uuid.UUID:
    """A product's point id (`common.product.point_id`) as a ``uuid.UUID`` (cached: the engine takes it in half
    the time of the string)."""
    return uuid.UUID(point_id(product_id))


@functools.lru_cache(maxsize=1 << 16)
def _product_key(product_id: str) -> int:
    """A product's point cache key, cached in one step."""
    return _product_uuid(product_id).int


def _key_of(record: Any) -> int:
    """A record's id as the point cache keys it (the engine hands our UUID point ids over as ``uuid.UUID``)."""
    pid = record.id
    return pid.int if isinstance(pid, uuid.UUID) else _point_key(str(pid))


def _dense(vectors: Any) -> dict[str, NDArray[np.float32]]:
    """A record's dense vectors (name -> list of floats) as float32 arrays."""
    if not isinstance(vectors, Mapping):
        return {}
    return {name: np.asarray(vectors[name], dtype=np.float64).astype(np.float32)
            for name in VECTOR_NAMES if name in vectors}


@dataclass(frozen=True)
class _Found:
    """A point known to exist, by id: what `EdgeStore.retrieve` hands `stored_points` when the payloads come
    from the cache (``.payload``, ``.vector`` and ``.score`` as an engine record has them)."""

    id: uuid.UUID
    payload: None = None
    vector: None = None
    score: None = None
