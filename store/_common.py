"""What both store backends share: collection records, naming, validation of writes and queries.

Nothing here talks to an engine; each backend converts the checked values into its own types.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from common.errors import EncoderMismatch, InvalidInput, InvalidQuery, NotFound
from common.product import point_id
from common.settings import StoreSettings
from store.protocol import (
    PAYLOAD_INDEX_KINDS,
    VECTOR_NAMES,
    Boost,
    Condition,
    Filter,
    Match,
    MatchAny,
    PointWrite,
    Quantization,
    Range,
    StoredPoint,
    check_weights,
)

FORMAT_VERSION = 1
"""Version of the layout Vitrine writes (collection record, aliases file); bumped on incompatible change."""

METADATA_KEY = "vitrine"
"""Key of Vitrine's record in a Qdrant collection's ``metadata``."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True)
class CollectionRecord:
    """What Vitrine remembers about one physical collection: the alias it was made for and its encoder."""

    alias: str
    encoder: str
    dim: int
    created: str
    weights: str = ""
    """The encoder's ``weights_id`` when the collection was created ("" when the name pins the weights, or for
    collections made before Vitrine recorded it)."""
    lexical: bool = True
    """Whether the collection has the sparse ``lexical`` vector (false for collections made before it)."""
    tags: Mapping[str, Any] | None = None
    """The tag vocabulary the products are tagged with (``Vocabulary.as_dict()``), if any."""

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        data = {"format": FORMAT_VERSION, "alias": self.alias, "encoder": self.encoder, "dim": self.dim,
                "weights": self.weights, "lexical": self.lexical, "created": self.created}
        return data if self.tags is None else {**data, "tags": dict(self.tags)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> CollectionRecord:
        """Read a record written by `as_dict`.

        Args:
            data: the stored record.
            where: what holds it (a file, a collection), for error messages.

        Raises:
            ValueError: the record is not one Vitrine wrote, or from a newer Vitrine.
        """
        fmt = data.get("format")
        if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
            raise ValueError(f"{where}: record format {fmt!r} is not supported; expected <= {FORMAT_VERSION} "
                             "(written by a newer Vitrine?)")
        try:
            return cls(alias=str(data["alias"]), encoder=str(data["encoder"]), dim=int(data["dim"]),
                       created=str(data.get("created", "")), weights=str(data.get("weights") or ""),
                       lexical=data.get("lexical") is True,
                       tags=data["tags"] if isinstance(data.get("tags"), Mapping) else None)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: record {dict(data)!r} lacks alias, encoder or dim") from e


def check_name(name: str) -> str:
    """Refuse a collection name that cannot be a folder and alias name.

    Raises:
        InvalidInput: the name is not 1-128 letters, digits, ``_`` or ``-``, starting with a letter or digit.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(f"collection name {name!r} must be 1-128 letters, digits, '_' or '-', "
                           "starting with a letter or digit")
    return name


def new_record(alias: str, *, encoder: str, dim: int, weights: str = "") -> CollectionRecord:
    """A record for a collection created now."""
    return CollectionRecord(alias=alias, encoder=encoder, dim=dim, weights=weights,
                            created=datetime.now(UTC).isoformat(timespec="seconds"))


def physical_name(alias: str) -> str:
    """A new versioned collection name for ``alias``: ``<alias>-<UTC timestamp in microseconds>``."""
    now = time.time_ns() // 1000
    stamp = datetime.fromtimestamp(now / 1e6, UTC).strftime("%Y%m%d%H%M%S")
    return f"{alias}-{stamp}{now % 1_000_000:06d}"


def wanted_quantization(settings: StoreSettings) -> Quantization:
    """The quantization a collection created now gets, from the store settings."""
    if settings.quantization == "none":
        return Quantization()
    return Quantization(kind=settings.quantization, quantile=settings.quantization_quantile,
                        always_ram=settings.quantization_always_ram, originals_on_disk=settings.on_disk_vectors)


def check_dim(encoder: str, dim: int) -> None:
    """Refuse an encoder name or dim no collection can be built with.

    Raises:
        InvalidInput: empty encoder name or non-positive dim.
    """
    if not encoder:
        raise InvalidInput("encoder name is empty; expected the name of the encoder that embeds the catalog")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise InvalidInput(f"dim {dim!r} is not a positive integer")


def check_encoder(name: str, record: CollectionRecord, *, encoder: str, dim: int, weights: str = "") -> None:
    """Refuse to use a collection with an encoder other than the one that built it.

    Raises:
        EncoderMismatch: the encoder name or dim differs, or both weights ids are known and differ (the same
            folder or file now holds other weights); the message names both.
    """
    if record.encoder != encoder or record.dim != dim:
        raise EncoderMismatch(
            f"collection {name!r} was built with encoder {record.encoder!r} (dim {record.dim}), "
            f"not with encoder {encoder!r} (dim {dim}); use --model {record.encoder!r} "
            f"(VITRINE_EMBED__MODEL), or rebuild the collection with the new encoder"
        )
    check_weights(name, record.encoder, built=record.weights, now=weights)


@dataclass(frozen=True)
class CheckedPoint:
    """A `PointWrite` after validation: point id, payload with ``id``, float32 vectors."""

    point_id: str
    payload: dict[str, Any]
    vectors: dict[str, NDArray[np.float32]]


def _as_vector(value: Any, *, dim: int, what: str) -> NDArray[np.float32]:
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} is not a numeric vector: {e}") from e
    if vector.shape != (dim,):
        raise InvalidInput(f"{what} has shape {vector.shape}; expected ({dim},)")
    if not np.isfinite(vector).all():
        raise InvalidInput(f"{what} contains NaN or infinite values")
    if not vector.any():
        raise InvalidInput(f"{what} is all zeros; cosine similarity needs a non-zero vector")
    return vector


def check_points(points: Sequence[PointWrite], *, dim: int) -> list[CheckedPoint]:
    """Validate points before any is written, so a bad one writes nothing.

    The payload is copied (inputs are never changed) and gets ``id`` = the product id.

    Raises:
        InvalidInput: an empty product id, a payload ``id`` that differs from the product id, an unknown
            vector name, or a vector of the wrong shape, non-finite or all zeros.
    """
    checked: list[CheckedPoint] = []
    for point in points:
        pid = point.product_id
        if not isinstance(pid, str) or not pid:
            raise InvalidInput(f"product id {pid!r} is not a non-empty string")
        if not isinstance(point.payload, Mapping):
            raise InvalidInput(f"payload of product {pid!r} is a {type(point.payload).__name__}, not a dict")
        payload = dict(point.payload)
        if payload.setdefault("id", pid) != pid:
            raise InvalidInput(f"payload id {payload['id']!r} differs from product id {pid!r}")
        vectors: dict[str, NDArray[np.float32]] = {}
        for vname, value in point.vectors.items():
            if vname not in VECTOR_NAMES:
                raise InvalidInput(f"vector name {vname!r} of product {pid!r} is unknown; "
                                   f"expected one of {list(VECTOR_NAMES)}")
            vectors[vname] = _as_vector(value, dim=dim, what=f"vector {vname!r} of product {pid!r}")
        checked.append(CheckedPoint(point_id(pid), payload, vectors))
    return checked


def check_query(vector: NDArray[np.float32], *, using: str, limit: int, dim: int) -> NDArray[np.float32]:
    """Validate a search and return its vector as float32.

    Raises:
        InvalidQuery: unknown vector name, limit below 1, or a vector of the wrong shape or non-finite.
    """
    if using not in VECTOR_NAMES:
        raise InvalidQuery(f"vector name {using!r} is unknown; expected one of {list(VECTOR_NAMES)}")
    check_limit(limit)
    try:
        return _as_vector(vector, dim=dim, what=f"query vector for {using!r}")
    except InvalidInput as e:
        raise InvalidQuery(str(e)) from e


def check_product_ids(product_ids: Sequence[str]) -> list[str]:
    """Product ids as a list, refusing anything that is not a non-empty string.

    Raises:
        InvalidInput: a product id that is not a non-empty string.
    """
    if isinstance(product_ids, str):
        raise InvalidInput(f"product ids {product_ids!r} must be a list of ids, not one string")
    for pid in product_ids:
        if not isinstance(pid, str) or not pid:
            raise InvalidInput(f"product id {pid!r} is not a non-empty string")
    return list(product_ids)


@dataclass(frozen=True)
class PayloadUpdate:
    """One checked `VectorStore.update_payload` entry: the keys to set on one existing point."""

    point_id: str
    product_id: str
    payload: dict[str, Any]


def check_payload_updates(payloads: Mapping[str, Mapping[str, Any]]) -> list[PayloadUpdate]:
    """Validate the entries of an ``update_payload`` call before any is written (payloads are copied).

    Raises:
        InvalidInput: ``payloads`` is not a mapping, an empty product id, a payload that is not a dict, or a
            payload ``id`` that differs from its product id.
    """
    if not isinstance(payloads, Mapping):
        raise InvalidInput(f"payload updates {payloads!r} must be a mapping of product id to payload keys")
    updates = []
    for pid, payload in payloads.items():
        if not isinstance(pid, str) or not pid:
            raise InvalidInput(f"product id {pid!r} is not a non-empty string")
        if not isinstance(payload, Mapping):
            raise InvalidInput(f"payload of product {pid!r} is a {type(payload).__name__}, not a dict")
        if payload.get("id", pid) != pid:
            raise InvalidInput(f"payload id {payload['id']!r} differs from product id {pid!r}")
        updates.append(PayloadUpdate(point_id(pid), pid, dict(payload)))
    return updates


def require_found(asked: Sequence[tuple[str, str]], found: set[str], *, action: str, name: str) -> None:
    """Refuse a write to products that are not in the collection, naming them (the first 10).

    Args:
        asked: (point id, product id) of each product to write.
        found: the point ids the collection holds.
        action: what was to be done, for the message ("set", "update").
        name: the collection.

    Raises:
        NotFound: some products are absent.
    """
    missing = [pid for point, pid in asked if point not in found]
    if missing:
        more = f" (and {len(missing) - 10} more)" if len(missing) > 10 else ""
        raise NotFound(f"cannot {action} the payload of products {missing[:10]!r}{more} in collection {name!r}: "
                       "not found")


def check_vector_selection(with_vectors: bool | Sequence[str]) -> bool | list[str]:
    """A ``with_vectors`` argument checked: a bool as is, vector names as a list (empty means none: False).

    Raises:
        InvalidInput: an unknown vector name, or a single string instead of a list of names.
    """
    if isinstance(with_vectors, bool):
        return with_vectors
    if isinstance(with_vectors, str) or not isinstance(with_vectors, Sequence):
        raise InvalidInput(f"with_vectors {with_vectors!r} must be True, False or a list of vector names, "
                           f"e.g. [{VECTOR_NAMES[0]!r}]")
    names = list(dict.fromkeys(with_vectors))
    unknown = [n for n in names if n not in VECTOR_NAMES]
    if unknown:
        raise InvalidInput(f"vector names {unknown!r} are unknown; expected some of {list(VECTOR_NAMES)}")
    return names or False


def check_filter(filter: Filter | None) -> Filter | None:
    """Validate a filter; an empty one becomes None.

    Raises:
        InvalidQuery: a condition that can never be built (empty field, empty MatchAny, Range without
            bounds, non-finite bounds, a value of an unsupported type).
    """
    if filter is None or not filter:
        return None
    for condition in (*filter.must, *filter.must_not):
        _check_condition(condition)
    return filter


def _check_condition(condition: Condition) -> None:
    if not isinstance(condition, Match | MatchAny | Range):
        raise InvalidQuery(f"filter condition {condition!r} is not a Match, MatchAny or Range")
    if not condition.field:
        raise InvalidQuery(f"filter condition {condition!r} has an empty field name")
    if isinstance(condition, Match):
        if not isinstance(condition.value, str | int | float):
            raise InvalidQuery(f"filter value {condition.value!r} of {condition.field!r} is not a "
                               "string, number or boolean")
        if isinstance(condition.value, float) and not math.isfinite(condition.value):
            raise InvalidQuery(f"filter value {condition.value!r} of {condition.field!r} is not finite")
    elif isinstance(condition, MatchAny):
        if not condition.values:
            raise InvalidQuery(f"filter on {condition.field!r} matches any of no values; give at least one")
        kinds = {type(v) for v in condition.values}
        if not (kinds <= {str} or kinds <= {int}):
            raise InvalidQuery(f"filter values {condition.values!r} of {condition.field!r} must be all "
                               "strings or all integers")
    else:
        if condition.gte is None and condition.lte is None:
            raise InvalidQuery(f"range filter on {condition.field!r} has neither gte nor lte")
        for bound in (condition.gte, condition.lte):
            if bound is not None and (isinstance(bound, bool) or not math.isfinite(bound)):
                raise InvalidQuery(f"range bound {bound!r} of {condition.field!r} is not a finite number")


def stored_points(records: Sequence[Any], *, with_vectors: bool,
                  payloads: Sequence[dict[str, Any]] | None = None) -> list[StoredPoint]:
    """Records or scored points of either engine (``.payload``, ``.vector``, ``.id``, maybe ``.score``)
    as `StoredPoint`s, vectors as float32 arrays; ``payloads``, when given, are the records' payloads (read
    apart from them: `store.payload_cache`).

    The engines hand vectors over as lists of Python floats; they are converted in one block per vector
    name (float64 first: numpy's fast path for Python floats, about 6x faster than straight to float32).
    """
    if payloads is None:
        payloads = [dict(r.payload or {}) for r in records]
    vectors: list[dict[str, NDArray[np.float32]]] = [{} for _ in records]
    if with_vectors:
        raws = [r.vector for r in records]  # read once: each read converts the vectors again
        raws = [raw if isinstance(raw, Mapping) else {} for raw in raws]
        for name in VECTOR_NAMES:
            rows = [i for i, raw in enumerate(raws) if name in raw]
            if rows:
                block = np.array([raws[i][name] for i in rows], dtype=np.float64).astype(np.float32)
                for j, i in enumerate(rows):
                    vectors[i][name] = block[j]
    out = []
    for r, payload, vecs in zip(records, payloads, vectors, strict=True):
        pid = payload.get("id")
        score = getattr(r, "score", None)
        out.append(StoredPoint(pid if isinstance(pid, str) else str(r.id), payload, vecs,
                               None if score is None else float(score)))
    return out


def order_by_request(asked: Sequence[str], found: Mapping[str, Any]) -> list[Any]:
    """Items of ``found`` in the order of the keys ``asked``, absent ones left out."""
    return [found[pid] for pid in asked if pid in found]


def check_limit(limit: int) -> int:
    """A result count checked.

    Raises:
        InvalidQuery: not an integer of at least 1.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidQuery(f"limit {limit!r} must be a positive integer")
    return limit


def check_boosts(boosts: Sequence[Boost]) -> tuple[Boost, ...]:
    """Score boosts checked: each an equality on a field with a string, integer or boolean, and a finite weight.

    Raises:
        InvalidQuery: anything else.
    """
    for boost in boosts:
        if not isinstance(boost, Boost) or not isinstance(boost.condition, Match):
            raise InvalidQuery(f"boost {boost!r} is not a Boost on a Match condition")
        _check_condition(boost.condition)
        if isinstance(boost.condition.value, float):
            raise InvalidQuery(f"boost on {boost.condition.field!r} matches the number "
                               f"{boost.condition.value!r}; boosts match strings, integers or booleans")
        weight = boost.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise InvalidQuery(f"boost weight {weight!r} of {boost.condition.field!r} is not a finite number")
    return tuple(boosts)


def check_examples(positive: Sequence[NDArray[np.float32]], negative: Sequence[NDArray[np.float32]], *,
                   using: str, limit: int, dim: int) -> tuple[list[list[float]], list[list[float]]]:
    """A recommendation's example vectors, checked like query vectors, as lists for the engines.

    Raises:
        InvalidQuery: no positive example, an unknown vector name, a bad limit, or a vector of the wrong shape,
            non-finite or all zeros.
    """
    if not positive:
        raise InvalidQuery("a recommendation needs at least one positive example")
    check_query(positive[0], using=using, limit=limit, dim=dim)
    checked: tuple[list[list[float]], list[list[float]]] = ([], [])
    for out, vectors, what in ((checked[0], positive, "positive"), (checked[1], negative, "negative")):
        for i, vector in enumerate(vectors):
            try:
                out.append(_as_vector(vector, dim=dim, what=f"{what} example {i}").tolist())
            except InvalidInput as e:
                raise InvalidQuery(str(e)) from e
    return checked


FIELD_PATTERN = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def check_payload_index(field: str, kind: str) -> None:
    """Refuse a payload index the store cannot make.

    Raises:
        InvalidInput: ``kind`` is not one of `PAYLOAD_INDEX_KINDS`, or ``field`` is not dotted names of
            letters, digits and ``_``.
    """
    if kind not in PAYLOAD_INDEX_KINDS:
        raise InvalidInput(f"payload index kind {kind!r} is unknown; expected one of {list(PAYLOAD_INDEX_KINDS)}")
    if not isinstance(field, str) or not FIELD_PATTERN.match(field):
        raise InvalidInput(f"payload field {field!r} cannot be indexed; expected names of letters, digits and "
                           "'_', joined by '.' (tags.colour)")


def check_facet(field: str, limit: int, *, indexed: Iterable[str]) -> None:
    """Refuse a facet on a field without a payload index, or a bad limit.

    Raises:
        InvalidQuery: the field is not indexed (the message lists the ones that are), or ``limit`` < 1.
    """
    check_limit(limit)
    known = sorted(indexed)
    if field not in known:
        raise InvalidQuery(f"field {field!r} cannot be counted: it has no payload index; facetable fields are "
                           f"{known}")
