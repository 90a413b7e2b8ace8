"""`QdrantServerStore`: the store on a Qdrant server (or cluster) through ``qdrant-client``.

Locations: ``http(s)://host:6333`` (a server; ``settings.api_key`` and ``settings.timeout_s`` apply), or
qdrant-client's local mode, ``:memory:`` or ``path:DIR``, the stand-in for a server in tests.

Each catalog is a collection ``<alias>-<timestamp>`` behind a real Qdrant alias ``<alias>``, so a rebuild
can be swapped in with one alias operation. Vitrine's record (alias, encoder name, dim) lives in the
collection's ``metadata`` under the key ``"vitrine"`` (local mode keeps it in its ``meta.json``; a server
needs Qdrant 1.16 or later to keep collection metadata). Writes wait until applied (``wait=True``).

Threads: the remote client is thread-safe; local mode is not (SQLite, plain dicts), so there every call
holds the store's lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient, models

from common.errors import BackendUnavailable, ConfigError, InvalidInput, NotFound, VitrineError
from common.product import FILTERABLE_FIELDS, point_id
from common.settings import StoreSettings
from store._common import (
    METADATA_KEY,
    CollectionRecord,
    check_boosts,
    check_dim,
    check_encoder,
    check_examples,
    check_facet,
    check_limit,
    check_name,
    check_payload_index,
    check_payload_updates,
    check_points,
    check_product_ids,
    check_query,
    check_vector_selection,
    new_record,
    order_by_request,
    physical_name,
    require_found,
    stored_points,
    wanted_quantization,
)
from store._qdrant_util import SERVER_ERRORS, connect, server_error, server_name, to_qdrant_filter
from store._qdrant_util import condition as _condition
from store.lexical import LEXICAL, Sparse, document_vector, query_vector, reads_words
from store.protocol import (
    IMAGE,
    VECTOR_NAMES,
    Boost,
    CollectionInfo,
    FacetCount,
    Filter,
    PointWrite,
    Quantization,
    StoredPoint,
)

logger = logging.getLogger(__name__)

_SCHEMA = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "float": models.PayloadSchemaType.FLOAT,
    "integer": models.PayloadSchemaType.INTEGER,
    "bool": models.PayloadSchemaType.BOOL,
}


class QdrantServerStore:
    """A `store.protocol.VectorStore` over ``qdrant_client.QdrantClient``."""

    def __init__(self, location: str, *, settings: StoreSettings) -> None:
        """Connect (lazily) to ``location``: ``http(s)://...``, ``:memory:`` or ``path:DIR``.

        Raises:
            InvalidInput: ``location`` is none of those.
            StoreLocked: ``path:DIR`` is held open by another process.
        """
        self._location = location
        self._settings = settings
        self._local = not location.startswith(("http://", "https://"))
        self._where = location if self._local else server_name(location, settings)
        self._lock = threading.RLock()
        self._dims: dict[str, int] = {}
        self._has_lexical: dict[str, bool] = {}
        self._closed = False
        self._client: QdrantClient = connect(location, settings)

    def __repr__(self) -> str:
        return f"QdrantServerStore({self._location!r})"

    # -- collections -------------------------------------------------------------------------------

    def ensure_collection(self, name: str, *, encoder: str, dim: int, weights: str = "") -> CollectionInfo:
        """Open the collection behind alias ``name``, creating it (and the alias) if absent.

        Raises:
            EncoderMismatch: it exists and was built by another encoder or dim, or by other weights.
            BackendUnavailable: the server cannot be reached.
        """
        check_name(name)
        check_dim(encoder, dim)
        with self._call(f"opening collection {name!r}"):
            physical = self._resolve(name)
            if physical is None:
                physical = self._create(name, encoder=encoder, dim=dim, weights=weights)
            record = self._record(name, physical)
            check_encoder(name, record, encoder=encoder, dim=dim, weights=weights)
            self._ensure_indexes(physical)
            return self._info(name, physical, record)

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe the collection behind alias ``name``.

        Raises:
            NotFound: no such collection.
        """
        with self._call(f"describing collection {name!r}"):
            physical = self._existing(name)
            return self._info(name, physical, self._record(name, physical))

    def list_collections(self) -> list[str]:
        """Aliases pointing at collections Vitrine created (other collections on the server are left out)."""
        with self._call("listing collections"):
            names = []
            for alias in self._client.get_aliases().aliases:
                meta = self._client.get_collection(alias.collection_name).config.metadata or {}
                if METADATA_KEY in meta:
                    names.append(alias.alias_name)
            return sorted(names)

    def drop_collection(self, name: str) -> None:
        """Remove alias ``name`` and the collection behind it; nothing happens if it does not exist."""
        with self._call(f"dropping collection {name!r}"):
            self._dims.pop(name, None)
            self._has_lexical.pop(name, None)
            physical = self._target(name)
            if physical is None:
                return
            self._client.update_collection_aliases(change_aliases_operations=[
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=name))])
            self._client.delete_collection(physical)
            logger.info("dropped collection %r (%s) on %s", name, physical, self._location)

    def create_version(self, alias: str, *, encoder: str, dim: int, weights: str = "") -> str:
        """A new, empty version of ``alias`` that the alias does not point at (see `VectorStore.create_version`).

        Raises:
            InvalidInput: a bad alias name, encoder name or dim.
            BackendUnavailable: the server cannot be reached.
        """
        check_name(alias)
        check_dim(encoder, dim)
        with self._call(f"creating a new version of {alias!r}"):
            return self._create(alias, encoder=encoder, dim=dim, weights=weights, point_alias=False)

    def switch_alias(self, alias: str, physical: str) -> str | None:
        """Point ``alias`` at ``physical`` with one ``update_collection_aliases`` call (delete + create, applied
        atomically by Qdrant); the version it pointed at before (see `VectorStore.switch_alias`).

        Raises:
            NotFound: ``physical`` is not a version of ``alias``.
        """
        with self._call(f"switching collection {alias!r} to {physical!r}"):
            if alias not in self._version_aliases().get(physical, ()):
                raise NotFound(f"no version {physical!r} of collection {alias!r} on {self._location}; it has "
                               f"{self.list_versions(alias) or 'none'}")
            previous = self._target(alias)
            operations: list[models.AliasOperations] = []
            if previous is not None:
                operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
            operations.append(models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=physical, alias_name=alias)))
            self._client.update_collection_aliases(change_aliases_operations=operations)
            self._dims.pop(alias, None)
            self._has_lexical.pop(alias, None)
            logger.info("collection %r now points at %s (was %s) on %s", alias, physical, previous, self._location)
            return previous

    def list_versions(self, alias: str) -> list[str]:
        """The collections Vitrine made for ``alias``, oldest first."""
        with self._call(f"listing the versions of {alias!r}"):
            return sorted(p for p, made_for in self._version_aliases().items() if alias in made_for)

    def drop_version(self, physical: str) -> None:
        """Remove the collection ``physical`` (see `VectorStore.drop_version`).

        Raises:
            InvalidInput: an alias points at it.
        """
        with self._call(f"dropping version {physical!r}"):
            users = sorted(a.alias_name for a in self._client.get_aliases().aliases if a.collection_name == physical)
            if users:
                raise InvalidInput(f"version {physical!r} is in use by collection {users[0]!r}; switch the "
                                   "collection to another version first, or drop the collection")
            if self._client.collection_exists(physical):
                self._client.delete_collection(physical)
                logger.info("dropped version %s on %s", physical, self._location)
            self._dims.pop(physical, None)
            self._has_lexical.pop(physical, None)

    def ensure_payload_index(self, name: str, field: str, kind: str) -> None:
        """Index payload ``field`` (dotted paths reach in) as ``kind``; idempotent (see `VectorStore`). Local
        mode keeps no payload indexes (it scans): there only the checks run.

        Raises:
            NotFound: no such collection.
            InvalidInput: an unknown kind or a bad field name.
        """
        check_payload_index(field, kind)
        with self._call(f"creating the payload index of {field!r} in {name!r}"):
            physical = self._existing(name)
            existing = (self._client.get_collection(physical).payload_schema or {}).get(field)
            if existing is not None and existing.data_type == _SCHEMA[kind]:
                return
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
                self._client.create_payload_index(physical, field, field_schema=_SCHEMA[kind], wait=True)

    def record_tags(self, name: str, vocabulary: Mapping[str, Any] | None) -> None:
        """Remember the collection's tag vocabulary in its metadata (see `VectorStore.record_tags`).

        Raises:
            NotFound: no such collection.
        """
        with self._call(f"recording the tag vocabulary of {name!r}"):
            physical = self._existing(name)
            record = replace(self._record(name, physical), tags=None if vocabulary is None else dict(vocabulary))
            self._client.update_collection(physical, metadata={METADATA_KEY: record.as_dict()})

    def optimize(self, name: str) -> None:
        """Nothing to do: a Qdrant server builds its indexes in the background; local mode has none."""
        self._dim(name)

    def close(self) -> None:
        """Close the client (and release a ``path:`` folder)."""
        with self._lock:
            self._closed = True
            self._client.close()

    # -- points ------------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[PointWrite]) -> None:
        """Write whole points, replacing earlier versions; applied when this returns.

        Raises:
            InvalidInput: a bad point (nothing is written).
        """
        checked = check_points(points, dim=self._dim(name))
        if not checked:
            return
        lexical = self._lexical(name)
        structs = [models.PointStruct(id=p.point_id, vector=_vectors(p.vectors, p.payload, lexical=lexical),
                                      payload=p.payload) for p in checked]
        with self._call(f"upserting {len(structs)} points into {name!r}"):
            self._client.upsert(name, points=structs, wait=True)

    def set_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Replace the payload of existing products, keeping their vectors.

        Raises:
            NotFound: some product ids are not in the collection (nothing is written).
            InvalidInput: a payload ``id`` that differs from its product id.
        """
        checked = check_points([PointWrite(pid, payload) for pid, payload in payloads.items()],
                               dim=self._dim(name))
        if not checked:
            return
        with self._call(f"setting payloads in {name!r}"):
            records = self._client.retrieve(name, [p.point_id for p in checked], with_payload=False,
                                            with_vectors=False)
            require_found([(p.point_id, p.payload["id"]) for p in checked], {str(r.id) for r in records},
                          action="set", name=name)
            operations: list[models.UpdateOperation] = [
                models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload=p.payload,
                                                                                     points=[p.point_id]))
                for p in checked
            ]
            if self._lexical(name):
                operations += [_lexical_operation(p.point_id, p.payload) for p in checked]
            self._client.batch_update_points(name, operations, wait=True)

    def update_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Set the given top-level keys on existing products, keeping their other keys and vectors.

        Raises:
            NotFound: some product ids are not in the collection (nothing is written); the message lists them.
            InvalidInput: an empty product id, a payload that is not a dict, or an ``id`` that differs.
        """
        updates = check_payload_updates(payloads)
        self._dim(name)
        if not updates:
            return
        words = any(reads_words(u.payload) for u in updates) and self._lexical(name)
        with self._call(f"updating payloads in {name!r}"):
            records = self._client.retrieve(name, [u.point_id for u in updates], with_payload=words,
                                            with_vectors=False)
            require_found([(u.point_id, u.product_id) for u in updates], {str(r.id) for r in records},
                          action="update", name=name)
            before = {str(r.id): r.payload or {} for r in records} if words else {}
            operations: list[models.UpdateOperation] = [
                models.SetPayloadOperation(set_payload=models.SetPayload(payload=u.payload, points=[u.point_id]))
                for u in updates if u.payload
            ]
            if words:  # the products whose words changed get their lexical vector rebuilt
                operations += [_lexical_operation(u.point_id, {**before[u.point_id], **u.payload})
                               for u in updates if reads_words(u.payload)]
            if operations:
                self._client.batch_update_points(name, operations, wait=True)

    def delete(self, name: str, product_ids: Sequence[str]) -> None:
        """Remove products; ids not present are ignored."""
        ids: list[models.ExtendedPointId] = [point_id(pid) for pid in check_product_ids(product_ids)]
        self._dim(name)
        if ids:
            with self._call(f"deleting {len(ids)} points from {name!r}"):
                self._client.delete(name, points_selector=models.PointIdsList(points=ids), wait=True)

    def retrieve(
        self, name: str, product_ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Products by id, in the order asked, absent ones left out."""
        asked = check_product_ids(product_ids)
        self._dim(name)
        if not asked:
            return []
        with self._call(f"retrieving from {name!r}"):
            records = self._client.retrieve(name, retrieve_ids(asked), with_payload=True, with_vectors=with_vectors)
        return retrieved(records, asked, with_vectors=with_vectors)

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
        # local mode always searches exactly and warns about search params
        params = None if self._local else search_params(self._settings, exact=exact)
        request = search_request(vector, dim=self._dim(name), using=using, limit=limit, filter=filter,
                                 boosts=boosts, params=params, with_vectors=with_vectors)
        with self._call(f"searching {name!r}"):
            response = self._client.query_points(name, **request)
        return stored_points(response.points, with_vectors=with_vectors)

    def score(
        self, name: str, *, vector: NDArray[np.float32], using: str, product_ids: Sequence[str]
    ) -> dict[str, float]:
        """Exact cosine of ``vector`` with the ``using`` vector of each listed product.

        Products that are absent or lack that vector are left out.

        Raises:
            InvalidQuery: unknown vector name, or a vector of the wrong shape.
        """
        asked = asked_points(product_ids)
        request = score_request(vector, dim=self._dim(name), using=using, asked=asked,
                                params=None if self._local else search_params(self._settings, exact=True))
        if request is None:
            return {}
        with self._call(f"scoring {len(asked)} products of {name!r}"):
            response = self._client.query_points(name, **request)
        return scores_of(response.points, asked)

    def lexical_search(
        self, name: str, *, text: str, limit: int, filter: Filter | None = None
    ) -> list[StoredPoint]:
        """Products sharing words with ``text``, best BM25 score first (see `VectorStore.lexical_search`).

        Raises:
            InvalidQuery: bad limit or filter.
        """
        request = lexical_search_request(text, limit=limit, filter=filter)
        if request is None or not self._lexical(name):
            return []
        with self._call(f"searching {name!r} by words"):
            response = self._client.query_points(name, **request)
        return stored_points(response.points, with_vectors=False)

    def lexical_score(self, name: str, *, text: str, product_ids: Sequence[str]) -> dict[str, float]:
        """BM25 score of ``text`` for each listed product sharing a word with it."""
        asked = asked_points(product_ids)
        request = lexical_score_request(text, asked)
        if request is None or not self._lexical(name):
            return {}
        with self._call(f"scoring {len(asked)} products of {name!r} by words"):
            response = self._client.query_points(name, **request)
        return scores_of(response.points, asked)

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
        examples = check_examples(positive, negative, using=using, limit=limit, dim=self._dim(name))
        pos: list[models.VectorInput] = list(examples[0])
        neg: list[models.VectorInput] = list(examples[1])
        query_filter = to_qdrant_filter(filter)
        with self._call(f"recommending from {name!r}"):
            response = self._client.query_points(
                name, query=models.RecommendQuery(recommend=models.RecommendInput(
                    positive=pos, negative=neg, strategy=models.RecommendStrategy.BEST_SCORE)),
                using=using, limit=limit, query_filter=query_filter, with_payload=True, with_vectors=False,
                search_params=None if self._local else search_params(self._settings, exact=False))
        return stored_points(response.points, with_vectors=False)

    def facet(self, name: str, field: str, *, filter: Filter | None = None, limit: int = 20) -> list[FacetCount]:
        """The most common values of an indexed payload field, with exact counts (local mode: any field).

        Raises:
            InvalidQuery: the field has no payload index, or a bad limit or filter.
        """
        self._dim(name)
        facet_filter = to_qdrant_filter(filter)
        with self._call(f"counting values of {field!r} in {name!r}"):
            if self._local:  # local mode keeps no payload indexes and counts any field
                check_limit(limit)
            else:
                check_facet(field, limit, indexed=self._client.get_collection(name).payload_schema or {})
            response = self._client.facet(name, field, facet_filter=facet_filter, limit=limit, exact=True)
        counts = [FacetCount(hit.value, int(hit.count)) for hit in response.hits]
        return sorted(counts, key=lambda c: (-c.count, str(c.value)))

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of products (matching ``filter``), exactly."""
        count_filter = to_qdrant_filter(filter)
        with self._call(f"counting {name!r}"):
            return int(self._client.count(name, count_filter=count_filter, exact=True).count)

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
        self._dim(name)
        with_payload: bool | list[str] = True if fields is None else ["id", *[f for f in fields if f != "id"]]
        offset: models.ExtendedPointId | None = None
        while True:
            with self._call(f"scrolling {name!r}"):
                records, offset = self._client.scroll(name, limit=batch, offset=offset,
                                                      with_payload=with_payload, with_vectors=vectors)
            yield from stored_points(records, with_vectors=bool(vectors))
            if offset is None:
                return

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Hold the lock (local mode) and turn the client's exceptions into Vitrine's errors."""
        guard: contextlib.AbstractContextManager[Any] = (
            self._lock if self._local else contextlib.nullcontext())
        with guard:
            if self._closed:
                raise BackendUnavailable(f"the store at {self._location} is closed; open it again")
            try:
                yield
            except VitrineError:
                raise
            except SERVER_ERRORS as e:
                error = None if self._local else server_error(e, where=self._where, what=what)
                if error is None:
                    raise BackendUnavailable(
                        f"qdrant-client local store {self._location}: {what} failed: {e}") from e
                raise error from e
            except (ValueError, KeyError, RuntimeError) as e:
                if not self._local:
                    raise
                if "not found" in str(e):
                    raise NotFound(f"qdrant-client local store {self._location}: {what}: {e}") from e
                raise BackendUnavailable(
                    f"qdrant-client local store {self._location}: {what} failed: {e}") from e

    def _not_found(self, name: str) -> NotFound:
        return missing_collection(name, self._location)

    def _existing(self, name: str) -> str:
        """The collection alias ``name`` points at (or the version named ``name``).

        Raises:
            NotFound: no such alias or version.
        """
        physical = self._resolve(name)
        if physical is None:
            raise self._not_found(name)
        return physical

    def _target(self, name: str) -> str | None:
        """The collection alias ``name`` points at, if any."""
        return alias_target(self._client.get_aliases(), name)

    def _resolve(self, name: str) -> str | None:
        """The collection alias ``name`` points at, or ``name`` itself when it is a collection Vitrine made."""
        physical = self._target(name)
        if physical is None and self._client.collection_exists(name):
            physical = name if is_vitrine(self._client.get_collection(name).config) else None
        return physical

    def _version_aliases(self) -> dict[str, tuple[str, ...]]:
        """Each collection Vitrine made, with the alias it was made for (a 1-tuple; empty when unreadable)."""
        found: dict[str, tuple[str, ...]] = {}
        for item in self._client.get_collections().collections:
            meta = self._client.get_collection(item.name).config.metadata or {}
            record = meta.get(METADATA_KEY)
            if isinstance(record, Mapping):
                found[item.name] = (str(record.get("alias", "")),)
        return found

    def _record(self, name: str, physical: str) -> CollectionRecord:
        record = collection_record(name, physical, self._client.get_collection(physical).config,
                                   where=self._location)
        self._dims[name] = record.dim
        return record

    def _lexical(self, name: str) -> bool:
        """Whether the collection behind ``name`` has the lexical sparse vector (cached)."""
        lexical = self._has_lexical.get(name)
        if lexical is None:
            lexical = self.collection_info(name).lexical
        return lexical

    def _dim(self, name: str) -> int:
        dim = self._dims.get(name)
        if dim is None:
            dim = self.collection_info(name).dim
        return dim

    def _create(self, name: str, *, encoder: str, dim: int, weights: str = "", point_alias: bool = True) -> str:
        physical = physical_name(name)
        record = new_record(name, encoder=encoder, dim=dim, weights=weights)
        params = _vector_params(dim, wanted_quantization(self._settings))
        self._client.create_collection(
            physical,
            vectors_config=dict.fromkeys(VECTOR_NAMES, params),
            shard_number=self._settings.shard_number,
            replication_factor=self._settings.replication_factor,
            write_consistency_factor=self._settings.write_consistency_factor,
            sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            hnsw_config=models.HnswConfigDiff(m=self._settings.hnsw_m,
                                              ef_construct=self._settings.hnsw_ef_construct),
            metadata={METADATA_KEY: record.as_dict()},
        )
        self._ensure_indexes(physical)
        if not point_alias:
            logger.info("created version %s of %r (encoder %r, dim %d) on %s", physical, name, encoder, dim,
                        self._location)
            return physical
        winner = self._target(name)
        if winner is not None:  # another process created the alias meanwhile: use theirs
            self._client.delete_collection(physical)
            return winner
        self._client.update_collection_aliases(change_aliases_operations=[
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=physical, alias_name=name))])
        logger.info("created collection %r (%s, encoder %r, dim %d) on %s", name, physical, encoder, dim,
                    self._location)
        return physical

    def _ensure_indexes(self, physical: str) -> None:
        existing = self._client.get_collection(physical).payload_schema or {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for field, kind in FILTERABLE_FIELDS.items():
                if field not in existing:
                    self._client.create_payload_index(physical, field, field_schema=_SCHEMA[kind], wait=True)

    def _info(self, name: str, physical: str, record: CollectionRecord) -> CollectionInfo:
        count = int(self._client.count(physical, exact=True).count)
        config = self._client.get_collection(physical).config
        lexical = self._has_lexical[name] = has_lexical(config)
        return CollectionInfo(name=name, physical=physical, encoder=record.encoder, dim=record.dim,
                              count=count, weights=record.weights, lexical=lexical, tags=record.tags,
                              quantization=_quantization_of(config))



def search_params(settings: StoreSettings, *, exact: bool) -> models.SearchParams:
    """HNSW search with the settings' rescoring and oversampling (used by quantized collections, ignored by
    others); ``exact``: every original vector, quantization ignored. Not for local mode, which is always
    exact and warns about search params."""
    if exact:
        return models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
    return models.SearchParams(hnsw_ef=settings.hnsw_ef, quantization=models.QuantizationSearchParams(
        rescore=settings.rescore, oversampling=settings.oversampling))


# -- collections, requests and results of the reads; shared with `store.qdrant_async.AsyncQdrantReader` -------

def missing_collection(name: str, location: str) -> NotFound:
    """The error of a collection (alias) ``name`` that the store at ``location`` does not have."""
    return NotFound(f"no collection {name!r} on {location} (run `vitrine index` first)")


def alias_target(aliases: models.CollectionsAliasesResponse, name: str) -> str | None:
    """The collection alias ``name`` points at, among ``aliases`` (None: no such alias)."""
    for alias in aliases.aliases:
        if alias.alias_name == name:
            return alias.collection_name
    return None


def is_vitrine(config: models.CollectionConfig) -> bool:
    """Whether a collection of this config was made by Vitrine (it carries Vitrine's record)."""
    return METADATA_KEY in (config.metadata or {})


def collection_record(name: str, physical: str, config: models.CollectionConfig, *, where: str) -> CollectionRecord:
    """Vitrine's record of collection ``physical`` (behind alias ``name``) on the store at ``where``.

    Raises:
        ConfigError: it carries none.
        BackendUnavailable: an unreadable record.
    """
    meta = config.metadata or {}
    if METADATA_KEY not in meta:
        raise ConfigError(
            f"collection {physical!r} (alias {name!r}) on {where} carries no Vitrine record in "
            "its metadata: it was not created by Vitrine, or the Qdrant server is older than 1.16 and "
            "drops collection metadata")
    try:
        return CollectionRecord.from_dict(meta[METADATA_KEY], where=f"collection {physical!r}")
    except ValueError as e:
        raise BackendUnavailable(str(e)) from e


def has_lexical(config: models.CollectionConfig) -> bool:
    """Whether a collection of this config has the lexical sparse vector."""
    return LEXICAL in (config.params.sparse_vectors or {})


def search_request(
    vector: NDArray[np.float32], *, dim: int, using: str, limit: int, filter: Filter | None,
    boosts: Sequence[Boost], params: models.SearchParams | None, with_vectors: bool = False,
) -> dict[str, Any]:
    """The ``query_points`` arguments (after the collection name) of a search (see `QdrantServerStore.search`).

    Raises:
        InvalidQuery: unknown vector name, bad limit, vector of the wrong shape, a bad filter or boost.
    """
    query = check_query(vector, using=using, limit=limit, dim=dim).tolist()
    checked_boosts = check_boosts(boosts)
    query_filter = to_qdrant_filter(filter)
    if not checked_boosts:
        return {"query": query, "using": using, "limit": limit, "query_filter": query_filter,
                "with_payload": True, "with_vectors": with_vectors, "search_params": params}
    pools = [query_filter, *_boost_pools(query_filter, checked_boosts)]
    return {"prefetch": [models.Prefetch(query=query, using=using, limit=limit, filter=f, params=params)
                         for f in pools],
            "query": _boost_formula(checked_boosts, len(pools)), "limit": limit, "with_payload": True,
            "with_vectors": with_vectors}


def asked_points(product_ids: Sequence[str]) -> dict[str, str]:
    """Point id -> product id of the products a score asks for.

    Raises:
        InvalidInput: an empty or non-string product id.
    """
    return {point_id(pid): pid for pid in check_product_ids(product_ids)}


def _only(asked: Mapping[str, str]) -> models.Filter:
    ids: list[models.ExtendedPointId] = list(asked)
    return models.Filter(must=[models.HasIdCondition(has_id=ids)])


def score_request(
    vector: NDArray[np.float32], *, dim: int, using: str, asked: Mapping[str, str], params: models.SearchParams | None
) -> dict[str, Any] | None:
    """The ``query_points`` arguments scoring the ``asked`` points (`asked_points`) by exact cosine; None when
    none is asked.

    Raises:
        InvalidQuery: unknown vector name, or a vector of the wrong shape.
    """
    query = check_query(vector, using=using, limit=max(len(asked), 1), dim=dim)
    if not asked:
        return None
    return {"query": query.tolist(), "using": using, "limit": len(asked), "query_filter": _only(asked),
            "with_payload": False, "with_vectors": False, "search_params": params}


def _sparse(sparse: Sparse) -> models.SparseVector:
    return models.SparseVector(indices=sparse.indices, values=sparse.values)


def lexical_search_request(text: str, *, limit: int, filter: Filter | None) -> dict[str, Any] | None:
    """The ``query_points`` arguments of a lexical search (see `QdrantServerStore.lexical_search`); None when
    ``text`` has no word to look for.

    Raises:
        InvalidQuery: bad limit or filter.
    """
    check_limit(limit)
    query_filter = to_qdrant_filter(filter)
    sparse = query_vector(text)
    if not sparse:
        return None
    return {"query": _sparse(sparse), "using": LEXICAL, "limit": limit, "query_filter": query_filter,
            "with_payload": True, "with_vectors": False}


def lexical_score_request(text: str, asked: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``query_points`` arguments scoring the ``asked`` points by BM25; None when there is nothing to score."""
    sparse = query_vector(text)
    if not asked or not sparse:
        return None
    return {"query": _sparse(sparse), "using": LEXICAL, "limit": len(asked), "query_filter": _only(asked),
            "with_payload": False, "with_vectors": False}


def scores_of(points: Sequence[models.ScoredPoint], asked: Mapping[str, str]) -> dict[str, float]:
    """Product id -> score of the scored ``points`` (of a `score_request` or `lexical_score_request`)."""
    return {asked[str(p.id)]: float(p.score) for p in points}


def retrieve_ids(asked: Sequence[str]) -> list[models.ExtendedPointId]:
    """The point ids to retrieve for the (checked, non-empty) product ids ``asked``, each once."""
    return list(dict.fromkeys(point_id(pid) for pid in asked))


def retrieved(records: Sequence[models.Record], asked: Sequence[str], *, with_vectors: bool) -> list[StoredPoint]:
    """The retrieved ``records`` as products, in the order ``asked``, absent ones left out."""
    points = stored_points(records, with_vectors=with_vectors)
    found = {str(r.id): point for r, point in zip(records, points, strict=True)}
    return order_by_request([point_id(pid) for pid in asked], found)


def _vector_params(dim: int, quantization: Quantization) -> models.VectorParams:
    """One dense vector's parameters: cosine, quantized and with the originals placed as asked."""
    if quantization.kind == "none":
        return models.VectorParams(size=dim, distance=models.Distance.COSINE)
    scalar = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=quantization.quantile, always_ram=quantization.always_ram))
    return models.VectorParams(size=dim, distance=models.Distance.COSINE, quantization_config=scalar,
                               on_disk=quantization.originals_on_disk)


def _quantization_of(config: models.CollectionConfig) -> Quantization:
    """The quantization of a collection's ``image`` vector (or the collection-wide one), from its config."""
    vectors = config.params.vectors
    params = vectors.get(IMAGE) if isinstance(vectors, dict) else vectors
    on_disk = bool(params is not None and params.on_disk)
    chosen = (params.quantization_config if params is not None else None) or config.quantization_config
    if not isinstance(chosen, models.ScalarQuantization):
        return Quantization(originals_on_disk=on_disk)
    scalar = chosen.scalar
    # gRPC carries the quantile as a float32: its shortest decimal gives back the float asked (0.95, not 0.949999988)
    quantile = None if scalar.quantile is None else float(str(np.float32(scalar.quantile)))
    return Quantization(kind=str(scalar.type.value), quantile=quantile, always_ram=bool(scalar.always_ram),
                        originals_on_disk=on_disk)


def _vectors(vectors: Mapping[str, NDArray[np.float32]], payload: Mapping[str, Any], *,
             lexical: bool) -> dict[str, Any]:
    """A point's dense vectors as lists, and its lexical vector built from its payload (when it has text)."""
    out: dict[str, Any] = {k: v.tolist() for k, v in vectors.items()}
    sparse = document_vector(payload) if lexical else None
    if sparse:
        out[LEXICAL] = models.SparseVector(indices=sparse.indices, values=sparse.values)
    return out


def _lexical_operation(pid: str, payload: Mapping[str, Any]) -> models.UpdateOperation:
    """Rebuild one product's lexical vector from its new payload (removed when it has no text)."""
    sparse = document_vector(payload)
    if not sparse:
        return models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[pid], vector=[LEXICAL]))
    vector = models.SparseVector(indices=sparse.indices, values=sparse.values)
    return models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(
        points=[models.PointVectors(id=pid, vector={LEXICAL: vector})]))


def _boost_formula(boosts: Sequence[Boost], pools: int) -> models.FormulaQuery:
    """``best prefetch score + sum(weight * condition)``; see `store.edge_backend._boost_formula`."""
    scores = [f"$score[{i}]" for i in range(pools)]
    terms: list[models.Expression] = [models.MaxExpression(max=list(scores))]
    terms += [models.MultExpression(mult=[float(b.weight), _condition(b.condition)]) for b in boosts]
    return models.FormulaQuery(formula=models.SumExpression(sum=terms), defaults=dict.fromkeys(scores, -2.0))


def _boost_pools(base: models.Filter | None, boosts: Sequence[Boost]) -> list[models.Filter]:
    """Extra candidate pools; see `store.edge_backend._boost_pools`."""
    raised: list[models.Condition] = [_condition(b.condition) for b in boosts if b.weight > 0]
    lowered: list[models.Condition] = [_condition(b.condition) for b in boosts if b.weight < 0]
    pools = []
    if raised:
        should = models.Filter(should=raised)
        pools.append(should if base is None else models.Filter(must=[base, should]))
    if lowered:
        pools.append(models.Filter(must=None if base is None else [base], must_not=lowered))
    return pools
