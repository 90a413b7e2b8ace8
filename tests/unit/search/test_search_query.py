"""The search request: validation messages that name the value, settings bounds, and the store filter."""

from __future__ import annotations

import pytest
from PIL import Image

from common.errors import InvalidQuery
from common.settings import SearchSettings
from search.filters import build_filter, equality, parse_filter_option
from search.query import (
    MAX_QUERY_CHARS,
    ProductView,
    QueryFields,
    SearchRequest,
    build_fields,
    build_request,
    check_bounds,
    resolve_weights,
)
from store.protocol import STATE_KEY, Filter, Match, Range

SETTINGS = SearchSettings(max_limit=50, max_offset=200, w_image=0.6, w_text=0.4)


def test_a_text_request_takes_the_defaults() -> None:
    request = build_request({"q": "  red shoes "}, settings=SETTINGS)
    assert request.q == "red shoes"
    assert (request.limit, request.offset) == (10, 0)
    assert resolve_weights(request, SETTINGS) == (0.6, 0.4, 0.2)
    assert build_filter(request) is None


def test_an_image_alone_is_enough() -> None:
    request = build_request({}, settings=SETTINGS, image=Image.new("RGB", (4, 4)))
    assert request.q is None and request.image is not None
    assert "image" not in request.model_dump()


@pytest.mark.parametrize("fields", [{}, {"q": ""}, {"q": "   "}])
def test_neither_text_nor_image_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidQuery, match="give a query text"):
        build_request(fields, settings=SETTINGS)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 0}, r"limit: Input should be greater than or equal to 1 \(got 0\)"),
        ({"limit": "many"}, r"limit: Input should be a valid integer.*\(got 'many'\)"),
        ({"offset": -1}, r"offset: .*greater than or equal to 0 \(got -1\)"),
        ({"w_image": -0.5}, r"w_image: .*greater than or equal to 0 \(got -0.5\)"),
        ({"min_price": float("nan")}, r"min_price: .*finite number"),
        ({"min_price": 50, "max_price": 10}, r"min_price 50.0 is above max_price 10.0"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, rf"q: String should have at most {MAX_QUERY_CHARS} characters"),
        ({"filters": {"bad name!": "x"}}, r"filter field 'bad name!' is not a payload field name"),
        ({"filters": {STATE_KEY: "x"}}, rf"filter field '{STATE_KEY}'"),
        ({"filters": {"color": [1, 2]}}, r"filters.color"),
        ({"colour": "red"}, r"colour: Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        build_request({"q": "shoes", **fields}, settings=SETTINGS)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 51}, r"limit 51 is over the largest page size 50 \(setting search.max_limit\)"),
        ({"offset": 201}, r"offset 201 is over the deepest offset 200 \(setting search.max_offset\)"),
        ({"w_image": 0, "w_text": 0}, r"w_image 0.0 and w_text 0.0 are both zero"),
    ],
)
def test_settings_bounds_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        build_fields({"q": "shoes", **fields}, settings=SETTINGS)
    request = SearchRequest(q="shoes", **fields)  # valid without the settings
    with pytest.raises(InvalidQuery, match=message):
        check_bounds(request, SETTINGS)


def test_one_zero_weight_falls_back_on_the_other_default() -> None:
    request = build_request({"q": "x", "w_image": 0}, settings=SETTINGS)
    assert resolve_weights(request, SETTINGS) == (0.0, 0.4, 0.2)
    zero_text_default = SearchSettings(w_image=0.6, w_text=0.0)
    with pytest.raises(InvalidQuery, match="both zero"):
        build_request({"q": "x", "w_image": 0}, settings=zero_text_default)


def test_the_filter_holds_every_condition() -> None:
    request = build_request(
        {
            "q": "x",
            "category": "shoes",
            "brand": "Acme",
            "in_stock": True,
            "min_price": 10,
            "max_price": 20,
            "filters": {"currency": "EUR", "attributes.size": 42, "weight": 1.5, "price": 15, "sale": False},
        },
        settings=SETTINGS,
    )
    assert build_filter(request) == Filter(
        must=(
            Match("category", "shoes"),
            Match("brand", "Acme"),
            Match("in_stock", True),
            Range("price", 10.0, 20.0),
            Match("attributes.size", 42),
            Match("currency", "EUR"),
            Range("price", 15.0, 15.0),
            Match("sale", False),
            Range("weight", 1.5, 1.5),
        )
    )


def test_a_one_sided_price_range() -> None:
    request = build_request({"q": "x", "max_price": 30}, settings=SETTINGS)
    assert build_filter(request) == Filter(must=(Range("price", None, 30.0),))


def test_equality_of_each_type() -> None:
    assert equality("brand", "Acme") == Match("brand", "Acme")
    assert equality("in_stock", False) == Match("in_stock", False)
    assert equality("size", 3) == Match("size", 3)
    assert equality("size", 2.5) == Range("size", 2.5, 2.5)
    assert equality("price", 3) == Range("price", 3.0, 3.0)


def test_parse_filter_option() -> None:
    assert parse_filter_option("currency=EUR") == ("currency", "EUR")
    assert parse_filter_option("attributes.color:dark=blue") == ("attributes.color", "dark=blue")
    assert parse_filter_option("url=http://x") == ("url", "http://x")
    with pytest.raises(ValueError, match="'novalue' is not FIELD=VALUE"):
        parse_filter_option("novalue")
    with pytest.raises(ValueError, match="is not FIELD=VALUE"):
        parse_filter_option("=x")


def test_query_fields_have_no_image() -> None:
    assert "image" not in QueryFields.model_fields
    assert QueryFields().q is None


def test_product_view_keeps_unknown_fields_and_drops_absent_ones() -> None:
    view = ProductView.model_validate({"id": "a", "title": "T", "material": "wool", "price": 3})
    assert view.model_dump(exclude_unset=True) == {"id": "a", "title": "T", "material": "wool", "price": 3.0}
