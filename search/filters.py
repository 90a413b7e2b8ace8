"""Turn a request's filter fields into the store's `Filter`."""

from __future__ import annotations

from common.product import FILTERABLE_FIELDS
from search.query import FilterValue, QueryFields
from store.protocol import Condition, Filter, Match, Range

PRICE = "price"


def equality(field: str, value: FilterValue) -> Condition:
    """The condition ``field == value``.

    Qdrant matches keywords, integers and booleans exactly but not floats, so a float value (or any number on
    a field indexed as float, such as ``price``) becomes the closed range ``[value, value]``.
    """
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and (isinstance(value, float) or FILTERABLE_FIELDS.get(field) == "float"):
        return Range(field=field, gte=float(value), lte=float(value))
    return Match(field=field, value=value)


def build_filter(request: QueryFields) -> Filter | None:
    """The store filter of a request: every given condition must hold; None when there is none.

    ``category``, ``brand`` and ``in_stock`` are equalities, ``min_price``/``max_price`` a range on ``price``,
    and each entry of ``filters`` an equality on that payload field. Conditions on the same field are all
    kept (``category="a"`` with ``filters={"category": "b"}`` matches nothing).
    """
    must: list[Condition] = []
    if request.category is not None:
        must.append(Match(field="category", value=request.category))
    if request.brand is not None:
        must.append(Match(field="brand", value=request.brand))
    if request.in_stock is not None:
        must.append(Match(field="in_stock", value=request.in_stock))
    if request.min_price is not None or request.max_price is not None:
        must.append(Range(field=PRICE, gte=request.min_price, lte=request.max_price))
    must.extend(equality(field, value) for field, value in sorted(request.filters.items()))
    return Filter(must=tuple(must)) if must else None


def parse_filter_option(option: str) -> tuple[str, str]:
    """Split a ``FIELD=VALUE`` (or ``FIELD:VALUE``) command-line or query-string filter.

    Values stay strings: typed values (numbers, booleans) go through a JSON body or the named parameters.

    Raises:
        ValueError: no separator or an empty field name.
    """
    cut = min((i for i in (option.find("="), option.find(":")) if i >= 0), default=-1)
    if cut <= 0:
        raise ValueError(f"filter {option!r} is not FIELD=VALUE (e.g. 'currency=EUR' or "
                         "'attributes.color=red')")
    return option[:cut].strip(), option[cut + 1 :].strip()
