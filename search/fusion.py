"""Weighted fusion of the image and text indices' candidates. Pure functions: inputs are never mutated.

Its records (`Candidate`, `Fused`, `Group`) are plain slotted dataclasses, not frozen ones: a search makes
hundreds, and a frozen dataclass takes four times as long to build. Nothing changes one once built.

The query vector is searched against both named vectors of the collection; each search returns its top K
products with their cosine similarity on that index. Over the union of the two lists, every candidate must
have its exact similarity on *both* indices: the scores a search returned are exact, and the ones missing
(a product found by only one index) are asked of the store for just those products (`missing_scores` names
them, `with_scores` adds them), so a product found by one index still gets its real similarity on the
other, never zero. The fused score is::

    score = w_image * cos(q, image_vector) + w_text * cos(q, text_vector)

A product without an image vector has image score ``None`` and its fused score is ``w_text * text`` alone
(likewise without a text vector); the weights are not re-normalised, so an image-less product competes with
the text part only.

Two more terms join when the search has them::

    + w_lexical * bm25 / max(bm25 over the candidates)      (lexical: 0-1, the best word match is 1)
    + w_all_words  if the product's text holds every word of the query
    + sum of the tag boosts the product matches             (store.protocol.boost_of)

BM25 scores have no fixed scale (they grow with the rarity of the words), so they are divided by the best
one among the candidates; a product sharing no word with the query adds nothing. A product holding all the
query's words gets ``w_all_words`` on top: BM25 alone lets a text that repeats two of three words of
"Saltmarsh SM-AB9779-KH" come close to the one product that has all three, and the dense text similarity
(which reads "SM-BG3306-KH" much like "SM-AB9779-KH") can then put it first.

Ranking is by fused score, highest first, ties broken by product id, so the order is total and stable
across backends. The fusion is exact over the union; a product in neither top K is not seen, and K
larger than the page (`candidate_count`) keeps that rare.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from store.lexical import LEXICAL
from store.protocol import IMAGE, TEXT, Boost, StoredPoint, boost_of, payload_value

T = TypeVar("T")


@dataclass(slots=True)
class Candidate:
    """A product found by at least one index, with its similarity on each index known so far."""

    product_id: str
    payload: Mapping[str, Any]
    scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Fused:
    """A candidate's fused score and its similarity on each index (None: no such vector)."""

    product_id: str
    score: float
    image: float | None
    text: float | None
    payload: Mapping[str, Any]
    lexical: float | None = None
    """BM25 score over the best among the candidates (None: no word in common)."""
    boost: float = 0.0
    all_words: bool = False
    """Whether the product's text holds every word of the query."""


def candidate_count(*, candidates: int, offset: int, limit: int) -> int:
    """K, the products taken from each index: the configured count, or more when the page lies deeper."""
    return max(candidates, offset + limit)


def merge_candidates(*ranked: tuple[str, Iterable[StoredPoint]],
                     boosted: Mapping[str, float] | None = None) -> list[Candidate]:
    """The union of ranked lists by product id, in first-seen order.

    Args:
        ranked: pairs (index name, that index's search results); each result's ``score`` is its cosine
            similarity on that index (plus its tag boosts, with ``boosted``).
        boosted: what tag boosts added to the dense indices' scores (a boosted search's), by product id: taken
            out again, so the scores are plain cosines. The lexical index's scores have none.

    A product's payload is its first occurrence's; its scores gather what each list said of it. Input
    points are not modified.

    Raises:
        ValueError: a search result without a score.
    """
    payloads: dict[str, Mapping[str, Any]] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, points in ranked:
        less = boosted if boosted and name != LEXICAL else None
        for point in points:
            pid, score = point.product_id, point.score
            if score is None:
                raise ValueError(f"search result {pid!r} from index {name!r} has no score")
            known = scores.get(pid)
            if known is None:
                payloads[pid] = point.payload
                known = scores[pid] = {}
            if name not in known:
                known[name] = float(score) - less.get(pid, 0.0) if less else float(score)
    return [Candidate(pid, payloads[pid], known) for pid, known in scores.items()]  # dicts keep first-seen order


def missing_scores(candidates: Sequence[Candidate], name: str) -> list[str]:
    """Ids of the candidates whose similarity on index ``name`` is not known yet."""
    return [c.product_id for c in candidates if name not in c.scores]


def with_scores(candidates: Sequence[Candidate], name: str, scores: Mapping[str, float]) -> list[Candidate]:
    """New candidates with the similarities on index ``name`` from ``scores`` added where they were unknown.

    A candidate absent from ``scores`` (it has no such vector) keeps no score on that index.
    """
    out = []
    for candidate in candidates:
        if name in candidate.scores or candidate.product_id not in scores:
            out.append(candidate)
        else:
            out.append(Candidate(candidate.product_id, candidate.payload,  # not `replace`: 10x its speed
                                 {**candidate.scores, name: float(scores[candidate.product_id])}))
    return out


def fuse(candidates: Sequence[Candidate], *, w_image: float, w_text: float, w_lexical: float = 0.0,
         boosts: Sequence[Boost] = (), boosted: Mapping[str, float] | None = None,
         all_words: Collection[str] = (), w_all_words: float = 0.0) -> list[Fused]:
    """Combine each candidate's similarities on the indices with the weights, and add its tag boosts.

    Args:
        candidates: the union of the indices' candidates, with every known similarity filled in (dense
            cosines under ``image``/``text``, BM25 under ``lexical``).
        w_image: weight of the image similarity (>= 0).
        w_text: weight of the text similarity (>= 0).
        w_lexical: weight of the lexical match, after division by the best BM25 score (>= 0).
        boosts: tag boosts; a candidate gets the weights of those it matches.
        boosted: what ``boosts`` give each candidate, by product id, when the caller has worked it out
            already (`store.protocol.boost_of` of its payload); None: worked out here.
        all_words: ids of the candidates whose text holds every word of the query.
        w_all_words: added to their score.

    Returns:
        One `Fused` per candidate, in the candidates' order (`rank` sorts them).

    Raises:
        ValueError: a negative weight.
    """
    if w_image < 0 or w_text < 0 or w_lexical < 0:
        raise ValueError(f"weights must be >= 0; got w_image={w_image}, w_text={w_text}, w_lexical={w_lexical}")
    best_lexical = max((c.scores.get(LEXICAL, 0.0) for c in candidates), default=0.0)
    fused = []
    for candidate in candidates:
        image, text = candidate.scores.get(IMAGE), candidate.scores.get(TEXT)
        bm25 = candidate.scores.get(LEXICAL)
        lexical = bm25 / best_lexical if bm25 is not None and bm25 > 0 and best_lexical > 0 else None
        boost = boost_of(candidate.payload, boosts) if boosted is None else boosted.get(candidate.product_id, 0.0)
        score = (w_image * image if image is not None else 0.0) + (w_text * text if text is not None else 0.0)
        complete = candidate.product_id in all_words
        score += (w_lexical * lexical if lexical is not None else 0.0) + boost + (w_all_words if complete else 0.0)
        fused.append(Fused(candidate.product_id, score, image, text, candidate.payload, lexical, boost, complete))
    return fused


def rank(fused: Iterable[Fused]) -> list[Fused]:
    """A new list, highest fused score first, ties broken by product id (ascending)."""
    out = sorted(fused, key=_PRODUCT_ID)
    out.sort(key=_SCORE, reverse=True)  # stable (reverse too): equal scores stay by id; 2x a tuple key's speed
    return out


_PRODUCT_ID, _SCORE = attrgetter("product_id"), attrgetter("score")


def paginate(items: Sequence[T], *, offset: int, limit: int) -> list[T]:
    """The page ``items[offset : offset + limit]`` as a new list.

    Raises:
        ValueError: a negative offset or a limit below 1.
    """
    if offset < 0 or limit < 1:
        raise ValueError(f"offset must be >= 0 and limit >= 1; got offset={offset}, limit={limit}")
    return list(items[offset : offset + limit])


@dataclass(slots=True)
class Group:
    """One result of a grouped search: the best product of a ``group_id`` and its other variants found."""

    lead: Fused
    variants: tuple[Fused, ...] = ()


GROUP_FIELD = "group_id"


def group_variants(ranked: Sequence[Fused]) -> list[Group]:
    """Collapse ranked products sharing a ``group_id`` into one `Group` each, at the rank of its best product.

    Products without a ``group_id`` stay alone. Variants keep their ranked order. A new list; inputs unchanged.
    """
    groups: dict[tuple[bool, str], list[Fused]] = {}  # dicts keep first-seen order: the rank of each best
    for item in ranked:
        group = item.payload.get(GROUP_FIELD)
        key = (True, group) if isinstance(group, str) and group else (False, item.product_id)
        members = groups.get(key)
        if members is None:
            groups[key] = [item]
        else:
            members.append(item)
    return [Group(members[0], tuple(members[1:])) if len(members) > 1 else Group(members[0])
            for members in groups.values()]


def value_counts(payloads: Iterable[Mapping[str, Any]], field: str) -> list[tuple[str | int | bool, int]]:
    """How many payloads have each value of ``field`` (dotted paths reach in; lists count each element),
    most common first, ties by value."""
    counts: dict[str | int | bool, int] = {}
    for payload in payloads:
        value = payload_value(payload, field)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | int | bool) and not isinstance(item, float):
                counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
