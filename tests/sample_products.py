"""A few shop products, as catalog rows, for tests that index a catalog and search it."""

from __future__ import annotations

from typing import Any

SHOP_PRODUCTS: list[dict[str, Any]] = [
    {
        "id": "shoe-1",
        "title": "red running shoe",
        "category": "shoes",
        "brand": "Acme",
        "price": 59.9,
        "currency": "EUR",
        "in_stock": True,
    },
    {
        "id": "shoe-2",
        "title": "white leather sneaker",
        "category": "shoes",
        "brand": "Bolt",
        "price": 89.0,
        "currency": "EUR",
        "in_stock": False,
    },
    {
        "id": "bag-1",
        "title": "brown leather bag",
        "category": "bags",
        "brand": "Acme",
        "price": 120.0,
        "currency": "EUR",
        "in_stock": True,
    },
    {
        "id": "hat-1",
        "title": "green wool hat",
        "category": "hats",
        "brand": "Bolt",
        "price": 19.5,
        "currency": "EUR",
        "in_stock": True,
    },
]
