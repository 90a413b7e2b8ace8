"""Frozen payloads (`store.frozen`): read as dicts and lists, refuse every change, copy to plain containers, and
keep what is derived from them."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from store.frozen import READ_ONLY, FrozenDict, FrozenList, freeze, thaw
from store.lexical import covers, query_vector

PAYLOAD: dict[str, Any] = {"id": "p1", "title": "Red leather boot", "price": 89.5, "in_stock": True,
                           "images": ["a.jpg", {"url": "b.jpg"}], "attributes": {"sizes": [38, 39], "colour": "red"}}


def test_frozen_payloads_read_as_dicts_and_lists() -> None:
    frozen = freeze(PAYLOAD)
    assert frozen == PAYLOAD and isinstance(frozen, dict) and isinstance(frozen["images"], list)
    assert type(frozen["attributes"]) is FrozenDict and type(frozen["images"]) is FrozenList
    assert type(frozen["images"][1]) is FrozenDict
    assert json.loads(json.dumps(frozen)) == PAYLOAD

    class View(BaseModel):
        product: dict[str, Any]

    assert json.loads(View(product=frozen).model_dump_json()) == {"product": PAYLOAD}
    assert frozen | {"extra": 1} == {**PAYLOAD, "extra": 1}  # a new, plain dict
    assert frozen["images"] + ["c.jpg"] == [*PAYLOAD["images"], "c.jpg"]


@pytest.mark.parametrize("change", [
    lambda p: p.__setitem__("title", "x"), lambda p: p.__delitem__("title"), lambda p: p.pop("title"),
    lambda p: p.popitem(), lambda p: p.clear(), lambda p: p.update(title="x"), lambda p: p.setdefault("new", 1),
    lambda p: p.__ior__({"title": "x"}), lambda p: p["attributes"].__setitem__("colour", "blue"),
    lambda p: p["images"].append("c.jpg"), lambda p: p["images"].extend(["c.jpg"]), lambda p: p["images"].pop(),
    lambda p: p["images"].insert(0, "c.jpg"), lambda p: p["images"].remove("a.jpg"), lambda p: p["images"].sort(),
    lambda p: p["images"].reverse(), lambda p: p["images"].clear(), lambda p: p["images"].__setitem__(0, "x"),
    lambda p: p["images"].__delitem__(0), lambda p: p["images"].__iadd__(["x"]), lambda p: p["images"].__imul__(2),
    lambda p: p["images"][1].__setitem__("url", "x"), lambda p: p["attributes"]["sizes"].append(40),
])
def test_every_change_is_refused_and_says_what_to_do(change: Any) -> None:
    frozen = freeze(PAYLOAD)
    with pytest.raises(TypeError) as refused:
        change(frozen)
    assert str(refused.value) == READ_ONLY and "copy" in READ_ONLY
    assert frozen == PAYLOAD


def test_copies_are_plain_and_changeable() -> None:
    frozen = freeze(PAYLOAD)
    for plain in (copy.deepcopy(frozen), thaw(frozen), pickle.loads(pickle.dumps(frozen))):
        assert plain == PAYLOAD and type(plain) is dict and type(plain["attributes"]) is dict
        assert type(plain["images"]) is list and type(plain["images"][1]) is dict
        plain["attributes"]["sizes"].append(40)
    top = dict(frozen)
    top["title"] = "changed"
    assert frozen.copy() == PAYLOAD and type(frozen.copy()) is dict and type(copy.copy(frozen)) is dict
    assert type(frozen["images"].copy()) is list
    assert frozen == PAYLOAD


def test_derived_values_are_worked_out_once() -> None:
    frozen = freeze(PAYLOAD)
    calls: list[int] = []

    def title_words(payload: FrozenDict) -> int:
        calls.append(1)
        return len(payload["title"].split())

    assert frozen.derived("words", title_words) == 3 and frozen.derived("words", title_words) == 3
    assert len(calls) == 1
    assert freeze(PAYLOAD).derived("words", title_words) == 3 and len(calls) == 2  # kept per payload


def test_covers_gives_the_same_answer_for_frozen_and_plain_payloads() -> None:
    frozen = freeze(PAYLOAD)
    for words, want in (("red boot", True), ("leather boot red", True), ("blue boot", False), ("", False)):
        assert covers(query_vector(words), PAYLOAD) is want
        assert covers(query_vector(words), frozen) is want
