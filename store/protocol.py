"""The store's contract, shared by both backends and proven by one conformance suite.

A collection holds one point per product: named dense vectors ``image`` and ``text`` (cosine; either
may be absent for a product), a sparse BM25 vector ``lexical`` derived from the payload by the store itself
(`store.lexical`), and the product's fields as payload. The point id is the UUID5 of the
product id (`common.product.point_id`), so writes are idempotent. Each collection records the encoder
(name and dim) that built it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from common.errors import EncoderMismatch
from common.product import RESERVED_FIELD

IMAGE = "image"
TEXT = "text"
VECTOR_NAMES = (IMAGE, TEXT)

# Payload key under which Vitrine keeps its own bookkeeping (content hashes); never shown to users.
STATE_KEY = RESERVED_FIELD

# Payload key of a product's precomputed nearest neighbours (`search.neighbours.precompute_similar`):
# ``{"ids": [...], "scores": [...], "k": int, "built": iso timestamp}``; never shown to users (search strips every
# key starting with `STATE_KEY`).
SIMILAR_KEY = f"{RESERVED_FIELD}_similar"

Scalar = str | int | float | bool

PAYLOAD_INDEX_KINDS = ("keyword", "float", "integer", "bool")
"""Kinds of payload index `VectorStore.ensure_payload_index` makes."""


@dataclass(frozen=True)
class Match:
    """``field`` equals ``value`` (dotted paths reach into nested payload)."""

    field: str
    value: Scalar


@dataclass(frozen=True)
class MatchAny:
    """``field`` equals one of ``values``."""

    field: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Range:
    """``gte <= field <= lte``; either bound may be absent."""

    field: str
    gte: float | None = None
    lte: float | None = None


Condition = Match | MatchAny | Range


@dataclass(frozen=True)
class Filter:
    """All of ``must`` hold and none of ``must_not``."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.must or self.must_not)


@dataclass(frozen=True)
class Quantization:
    """How a collection's dense vectors are compressed; fixed when the collection is created."""

    kind: str = "none"
    """``none`` or ``int8`` (scalar quantization)."""
    quantile: float | None = None
    """int8: the quantile of the components that bounds the int8 range."""
    always_ram: bool = False
    """The quantized vectors are kept in RAM."""
    originals_on_disk: bool = False
    """The original float vectors are kept on disk (memory-mapped) and read only to rescore."""

    def __str__(self) -> str:
        if self.kind == "none":
            return "none" + (" (vectors on disk)" if self.originals_on_disk else "")
        quantile = "" if self.quantile is None else f"quantile {self.quantile:g}, "
        ram = "in RAM" if self.always_ram else "on disk"
        originals = "on disk" if self.originals_on_disk else "in RAM"
        return f"{self.kind} ({quantile}quantized vectors {ram}, originals {originals})"


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection is and what built it."""

    name: str
    """The alias users name."""
    physical: str
    """The versioned collection the alias points at."""
    encoder: str
    dim: int
    count: int
    weights: str = ""
    """The weights id the collection was built with ("" when unknown or pinned by the encoder's name)."""
    lexical: bool = True
    """Whether the collection has the lexical (BM25) index; collections made before it existed lack it until
    `vitrine index` runs on them again."""
    tags: Mapping[str, Any] | None = None
    """The tag vocabulary its products were tagged with (`common.vocabulary.Vocabulary.as_dict`), if any."""
    quantization: Quantization = Quantization()
    """How its dense vectors are compressed (the engine's own configuration of the collection)."""


@dataclass(frozen=True)
class Boost:
    """Add ``weight`` to the score of every product matching ``condition`` (negative: push it down)."""

    condition: Match
    weight: float


def payload_value(payload: Mapping[str, Any], field: str) -> Any:
    """The value at a dotted ``field`` of a payload (``tags.colour``), as the engine reads it; None when absent."""
    value: Any = payload
    for part in _field_path(field):
        if isinstance(value, dict) or isinstance(value, Mapping):  # noqa: SIM101 (dict first: fast, usual)
            value = value.get(part)
        else:  # a scalar or None on the way: nothing further in
            return None
    return value


@functools.lru_cache(maxsize=1024)
def _field_path(field: str) -> tuple[str, ...]:
    """A dotted field's parts (cached: fusion reads a few fields of hundreds of payloads per search)."""
    return tuple(field.split("."))


def boost_of(payload: Mapping[str, Any], boosts: Sequence[Boost]) -> float:
    """The sum of the weights of the ``boosts`` whose condition a payload matches (dotted fields reach in).

    It is what the engine added to a boosted search's scores, so subtracting it gives the plain similarity.
    """
    total = 0.0
    for boost in boosts:
        value = payload_value(payload, boost.condition.field)
        if value is not None and value == boost.condition.value and type(value) is type(boost.condition.value):
            total += boost.weight
    return total


@dataclass(frozen=True)
class FacetCount:
    """One value of a payload field and the number of products that have it."""

    value: str | int | bool
    count: int


def check_weights(name: str, encoder: str, *, built: str, now: str) -> None:
    """Refuse a collection whose encoder's weights changed since it was built (both ids known).

    Raises:
        EncoderMismatch: the ids differ.
    """
    if built and now and built != now:
        raise EncoderMismatch(
            f"collection {name!r} was built with other weights of encoder {encoder!r} (weights {built}, now "
            f"{now}): the model's files changed since, and its vectors would not match the new ones; index "
            "into a new collection (--collection NAME) or a fresh VITRINE_HOME, or restore the old weights"
        )


@dataclass
class PointWrite:
    """One product to write. Vectors absent from ``vectors`` are left unset (or removed, on overwrite)."""

    product_id: str
    payload: dict[str, Any]
    vectors: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)


@dataclass
class StoredPoint:
    """One product read back, with the score of the query that found it (if any).

    Its payload is read-only: the embedded store shares it with its point cache, frozen (`store.frozen`:
    changing it raises `TypeError`); change a copy.
    """

    product_id: str
    payload: dict[str, Any]
    vectors: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    score: float | None = None


class VectorStore(Protocol):
    """The operations both backends offer, with the same results."""

    def ensure_collection(self, name: str, *, encoder: str, dim: int, weights: str = "") -> CollectionInfo:
        """Open the collection behind alias ``name``, creating it (and the alias) if it does not exist.

        ``weights`` is the encoder's ``weights_id``: recorded at creation, compared afterwards.

        Raises:
            EncoderMismatch: it exists and was built by another encoder or dim, or by other weights.
        """
        ...

    def collection_info(self, name: str) -> CollectionInfo:
        """Describe the collection behind alias ``name``.

        Raises:
            NotFound: no such collection.
        """
        ...

    def list_collections(self) -> list[str]:
        """Aliases of every collection."""
        ...

    def drop_collection(self, name: str) -> None:
        """Remove the alias ``name`` and the collection behind it (no error if absent)."""
        ...

    def create_version(self, alias: str, *, encoder: str, dim: int, weights: str = "") -> str:
        """Create a new, empty physical collection (a version) for ``alias`` WITHOUT pointing the alias at it.

        Every operation that takes a collection name also takes the returned physical name, so a rebuild can be
        written into it while the alias still serves the old version; `switch_alias` then swaps it in.

        Raises:
            InvalidInput: a bad alias name, encoder name or dim.
        """
        ...

    def switch_alias(self, alias: str, physical: str) -> str | None:
        """Point ``alias`` at the version ``physical`` in one atomic step; return the version it pointed at before
        (None if the alias is new). Readers see either the old version or the new one, never neither.

        Raises:
            NotFound: ``physical`` is not a version of ``alias``.
        """
        ...

    def list_versions(self, alias: str) -> list[str]:
        """The physical collections made for ``alias`` (aliased or not), oldest first."""
        ...

    def drop_version(self, physical: str) -> None:
        """Remove the physical collection ``physical`` (no error if absent).

        Raises:
            InvalidInput: an alias points at it (switch the alias away, or use `drop_collection`).
            StoreLocked: (embedded store) another process holds it open.
        """
        ...

    def upsert(self, name: str, points: Sequence[PointWrite]) -> None:
        """Write whole points (payload and vectors), replacing any earlier version. Durable on return."""
        ...

    def set_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Replace the payload of existing points (by product id), keeping their vectors."""
        ...

    def update_payload(self, name: str, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Set the given top-level keys on existing points (by product id), keeping their other keys and vectors;
        a product whose words change (a key `store.lexical.lexical_text` reads) gets its lexical vector rebuilt.

        Raises:
            NotFound: some product ids are not in the collection (nothing is written); the message lists them.
            InvalidInput: an empty product id, a payload that is not a dict, or an ``id`` key that differs from
                its product id.
        """
        ...

    def delete(self, name: str, product_ids: Sequence[str]) -> None:
        """Remove products; ids not present are ignored."""
        ...

    def retrieve(
        self, name: str, product_ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Products by id, in the order asked, absent ones left out."""
        ...

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
        """Nearest products to ``vector`` on the named vector ``using``, best first (cosine).

        With ``boosts``, the engine ranks by cosine plus the weights of the boosts each product matches (a
        Qdrant formula query), and candidates come both from the plain nearest neighbours and from the
        nearest among the boosted products, so a boosted product just out of reach still competes. The
        returned scores include the boosts (`boost_of` gives the part to subtract).

        On a quantized collection the candidates are found with the quantized vectors and, with the store's
        ``rescore`` setting, re-scored by the originals (``oversampling`` candidates per result). ``exact``
        compares the query with every original vector (no HNSW, no quantization): the reference that
        ``bench/recall.py`` measures the approximate search against.
        """
        ...

    def lexical_search(
        self, name: str, *, text: str, limit: int, filter: Filter | None = None
    ) -> list[StoredPoint]:
        """Products whose lexical vector matches the words of ``text``, best BM25 score first.

        Products sharing no word with ``text`` are not returned; an empty list when ``text`` has no word or
        the collection has no lexical index.
        """
        ...

    def lexical_score(self, name: str, *, text: str, product_ids: Sequence[str]) -> dict[str, float]:
        """BM25 score of ``text`` for each listed product; products sharing no word with it are left out."""
        ...

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
        """The engine's recommendation query (best-score strategy) on the named vector ``using``.

        A product's score is its best similarity to a positive example when that is closer than every
        negative one, and is pushed below zero otherwise.
        """
        ...

    def facet(self, name: str, field: str, *, filter: Filter | None = None, limit: int = 20) -> list[FacetCount]:
        """The most common values of a payload field (among products matching ``filter``), with counts.

        Only indexed fields can be counted (`common.product.FILTERABLE_FIELDS` and the tag fields).

        Raises:
            InvalidQuery: the field has no index, or ``limit`` is below 1.
        """
        ...

    def score(
        self, name: str, *, vector: NDArray[np.float32], using: str, product_ids: Sequence[str]
    ) -> dict[str, float]:
        """Exact cosine of ``vector`` with the ``using`` vector of each listed product.

        Products that are absent or lack that vector are left out. Search uses it to give every candidate
        its real similarity on the index that did not find it, without fetching any vector.
        """
        ...

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of products (matching ``filter``)."""
        ...

    def scroll(
        self,
        name: str,
        *,
        fields: Sequence[str] | None = None,
        batch: int = 1024,
        with_vectors: bool | Sequence[str] = False,
    ) -> Iterator[StoredPoint]:
        """Every product, payload limited to ``fields`` when given.

        ``with_vectors``: False for no vectors, True for all, or the names of the vectors to read (a product
        lacking one simply has no entry for it).

        Raises:
            InvalidInput: a batch below 1 or an unknown vector name.
        """
        ...

    def optimize(self, name: str) -> None:
        """Build indexes now (HNSW, payload) rather than lazily; no-op where the backend does it itself."""
        ...

    def ensure_payload_index(self, name: str, field: str, kind: str) -> None:
        """Index the payload field ``field`` (a dotted path reaches into nested payload: ``tags.colour``) as
        ``kind`` (one of `PAYLOAD_INDEX_KINDS`), for filters and facets. Idempotent; an index of another kind
        on the same field is replaced.

        Raises:
            NotFound: no such collection.
            InvalidInput: an unknown kind, or a field that is not dotted names of letters, digits and ``_``.
        """
        ...

    def record_tags(self, name: str, vocabulary: Mapping[str, Any] | None) -> None:
        """Remember in the collection's record the tag vocabulary its products are tagged with (None: none),
        so search boosts the same tags without being told the file again (`CollectionInfo.tags`).

        Raises:
            NotFound: no such collection.
        """
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...


class AsyncVectorReader(Protocol):
    """The reads a search needs, as coroutines (`store.qdrant_async.AsyncQdrantReader`): each has exactly the
    semantics and results of the `VectorStore` method of the same name."""

    async def search(
        self,
        name: str,
        *,
        vector: NDArray[np.float32],
        using: str,
        limit: int,
        filter: Filter | None = None,
        boosts: Sequence[Boost] = (),
    ) -> list[StoredPoint]:
        """See `VectorStore.search`."""
        ...

    async def lexical_search(
        self, name: str, *, text: str, limit: int, filter: Filter | None = None
    ) -> list[StoredPoint]:
        """See `VectorStore.lexical_search`."""
        ...

    async def score(
        self, name: str, *, vector: NDArray[np.float32], using: str, product_ids: Sequence[str]
    ) -> dict[str, float]:
        """See `VectorStore.score`."""
        ...

    async def lexical_score(self, name: str, *, text: str, product_ids: Sequence[str]) -> dict[str, float]:
        """See `VectorStore.lexical_score`."""
        ...

    async def retrieve(
        self, name: str, product_ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """See `VectorStore.retrieve`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
