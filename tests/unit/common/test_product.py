"""The Product schema: coercion of catalog values, refusals that name the value, payload and point ids."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from common.product import FILTERABLE_FIELDS, Product, point_id


def errors(row: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Product.model_validate(row)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_minimal_product() -> None:
    product = Product.model_validate({"id": "sku-1"})
    assert product.payload() == {"id": "sku-1", "attributes": {}}
    assert product.image_refs == [] and product.embedding_text() == ""


@pytest.mark.parametrize(("raw", "expected"),
                         [(12, "12"), (12.0, "12"), (" a-1 ", "a-1"), (10**20, str(10**20))])
def test_id_coerced_to_text(raw: object, expected: str) -> None:
    assert Product.model_validate({"id": raw}).id == expected


@pytest.mark.parametrize("raw", [True, 1.5, "x" * 513])
def test_bad_ids_are_refused(raw: object) -> None:
    assert errors({"id": raw})[0][0] == ("id",)


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_blank_ids_are_refused_as_missing(raw: object) -> None:
    assert errors({"id": raw}) == [((), "Value error, id is required: expected a non-empty string or integer")]


def test_the_bookkeeping_field_is_reserved() -> None:
    [(_loc, msg)] = errors({"id": "x", "_vitrine": {"text": "forged"}})
    assert "'_vitrine' is reserved" in msg
    [(_loc, msg)] = errors({"id": "x", "_vitrine_similar": {"ids": ["forged"]}})
    assert "'_vitrine_similar' is reserved" in msg


def test_numbers_in_text_fields_become_text() -> None:
    product = Product.model_validate({"id": "x", "title": 42, "brand": 7.5, "category": 3})
    assert (product.title, product.brand, product.category) == ("42", "7.5", "3")


def test_id_with_control_characters_names_the_value() -> None:
    assert errors({"id": "a\nb"}) == [(("id",), "Value error, id 'a\\nb' contains control characters")]


def test_missing_id() -> None:
    assert errors({"title": "x"}) == [((), "Value error, id is required: expected a non-empty string or integer")]


@pytest.mark.parametrize(("raw", "expected"),
                         [("19.99", 19.99), ("1,299.50", 1299.5), (5, 5.0), (" 3 ", 3.0)])
def test_price_coercion(raw: object, expected: float) -> None:
    assert Product.model_validate({"id": "x", "price": raw}).price == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("abc", "price 'abc' is not a number"),
    (True, "price True is not a number"),
    (float("nan"), "price nan is not a finite number"),
    (float("inf"), "price inf is not a finite number"),
    (-1, "greater than or equal to 0"),
])
def test_bad_prices(raw: object, message: str) -> None:
    [(loc, msg)] = errors({"id": "x", "price": raw})
    assert loc == ("price",) and message in msg


def test_currency_is_upper_cased_and_three_letters() -> None:
    assert Product.model_validate({"id": "x", "currency": " eur "}).currency == "EUR"
    assert errors({"id": "x", "currency": "euro"})[0][0] == ("currency",)


@pytest.mark.parametrize(("raw", "expected"), [
    ("yes", True), ("In Stock", True), ("1", True), (1, True), (True, True),
    ("no", False), ("FALSE", False), ("0", False), (0, False), ("out of stock", False),
])
def test_in_stock_coercion(raw: object, expected: bool) -> None:
    assert Product.model_validate({"id": "x", "in_stock": raw}).in_stock is expected


def test_in_stock_refusal_names_the_value() -> None:
    [(loc, msg)] = errors({"id": "x", "in_stock": "maybe"})
    assert loc == ("in_stock",) and "in_stock 'maybe' is not a boolean" in msg


def test_blank_strings_mean_absent() -> None:
    product = Product.model_validate({"id": "x", "title": "  ", "price": "", "in_stock": "", "color": ""})
    assert product.title is None and product.price is None and product.in_stock is None
    assert "color" not in product.payload()


def test_images_from_a_csv_cell_and_image_refs_without_repeats() -> None:
    product = Product.model_validate({"id": "x", "image": "a.jpg", "images": "b.jpg| a.jpg ||c.jpg"})
    assert product.images == ["b.jpg", "a.jpg", "c.jpg"]
    assert product.image_refs == ["a.jpg", "b.jpg", "c.jpg"]


def test_unknown_fields_are_kept_and_absent_ones_left_out() -> None:
    product = Product.model_validate({"id": "x", "color": "red", "sizes": [38, 39], "attributes": None})
    assert product.payload() == {"id": "x", "color": "red", "sizes": [38, 39], "attributes": {}}


def test_attributes_must_be_a_mapping() -> None:
    assert errors({"id": "x", "attributes": "red"})[0][0] == ("attributes",)


def test_embedding_text_order() -> None:
    product = Product.model_validate({"id": "x", "description": "Soft.", "title": "Tee", "category": "tops",
                                      "brand": "Acme"})
    assert product.embedding_text() == "Tee. Acme. tops. Soft."


def test_point_id_is_a_stable_uuid5() -> None:
    assert point_id("sku-1") == point_id("sku-1") != point_id("sku-2")
    assert uuid.UUID(point_id("sku-1")).version == 5
    assert Product.model_validate({"id": "sku-1"}).point_id == point_id("sku-1")
    # Frozen forever: changing it would duplicate every product of every existing index.
    assert point_id("sku-1") == str(uuid.uuid5(uuid.UUID("6f1c1f1e-9a57-4c4e-8f3a-7f0d2b9e5a11"), "sku-1"))


def test_filterable_fields_are_product_fields() -> None:
    assert set(FILTERABLE_FIELDS) <= set(Product.model_fields)
