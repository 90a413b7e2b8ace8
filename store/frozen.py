"""Read-only payloads: what the embedded store hands out from its point cache (`store.point_cache`).

A search reads a few hundred payloads, and the same products come back search after search. Copying each one
for every caller was a fifth of a search's time; sharing plain dicts would let any caller change the cache
for everyone. So the cache keeps each payload frozen: `FrozenDict` and `FrozenList` read exactly as ``dict``
and ``list`` do (they are subclasses: ``isinstance``, JSON, pydantic and qdrant-client take them as such), and
every method that would change one raises `TypeError` saying to copy it first. ``dict(payload)`` is a plain,
changeable copy of the top level; ``copy.deepcopy(payload)`` and `thaw` are plain all the way down; pickling
gives plain containers too.

Since a frozen payload cannot change, values derived from it can be kept with it (`FrozenDict.derived`): a
search asks whether each candidate's text holds every query word, and the candidate's words are worked out
once per product instead of once per search.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

READ_ONLY = ("this payload is shared with the store's cache and cannot be changed; change a copy "
             "(dict(payload) for its top level, copy.deepcopy(payload) for all of it)")


def _refuse(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(READ_ONLY)


class FrozenDict(dict[str, Any]):
    """A payload's object (or a nested one) that cannot be changed (see the module)."""

    __slots__ = ("_derived",)
    _derived: dict[str, Any]

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def derived(self, key: str, compute: Callable[[FrozenDict], T]) -> T:
        """``compute(self)``, worked out on the first call for ``key`` and kept with the payload."""
        try:
            memo = self._derived
        except AttributeError:
            memo = self._derived = {}
        if key not in memo:  # two threads may both compute it: the same value, kept once
            memo[key] = compute(self)
        value: T = memo[key]
        return value

    def copy(self) -> dict[str, Any]:
        """A plain dict of the top level (nested values stay frozen)."""
        return dict(self)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        plain: dict[str, Any] = thaw(self)
        return plain

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (dict(self),)


class FrozenList(list[Any]):
    """A payload's array that cannot be changed (see the module)."""

    __slots__ = ()

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse

    def copy(self) -> list[Any]:
        """A plain list (nested values stay frozen)."""
        return list(self)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        plain: list[Any] = thaw(self)
        return plain

    def __reduce__(self) -> tuple[Any, ...]:
        return list, (list(self),)


def freeze(payload: dict[str, Any]) -> FrozenDict:
    """``payload`` (JSON: dicts, lists and scalars) as frozen containers all the way down."""
    frozen: FrozenDict = _frozen(payload)
    return frozen


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList([_frozen(v) for v in value])
    return value


def thaw(value: Any) -> Any:
    """A plain copy of a JSON value: its dicts and lists (frozen or not) copied all the way down."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value
