"""Caption lists: deterministic, varied, with the words shoppers use, grammatical articles."""

from __future__ import annotations

from train.captions import FASHION_NOUNS, class_captions, generic_captions
from train.fashion_mnist import CLASS_NAMES


def test_every_class_has_a_noun_list() -> None:
    assert set(FASHION_NOUNS) == set(CLASS_NAMES)


def test_captions_are_deterministic_distinct_and_counted() -> None:
    first = class_captions("Sneaker", count=120, seed=3)
    assert first == class_captions("Sneaker", count=120, seed=3)
    assert first != class_captions("Sneaker", count=120, seed=4)
    assert len(first) == len(set(first)) == 120
    assert first[0] == "Sneaker"


def test_synonyms_and_plurals_are_there() -> None:
    sneakers = class_captions("Sneaker")
    for word in ("sneakers", "trainers", "running shoes", "kicks"):
        assert word in sneakers
    assert {"jeans", "pants", "trousers"} <= set(class_captions("Trouser"))
    assert {"sweater", "jumper"} <= set(class_captions("Pullover"))
    assert {"handbag", "purse"} <= set(class_captions("Bag"))


def test_articles_read_right() -> None:
    captions = [c for name in CLASS_NAMES for c in class_captions(name)]
    assert not [c for c in captions if " a leggings" in f" {c}" or " a jeans" in f" {c}"]
    assert not [c for c in captions if any(f" a {v}" in f" {c}" for v in "aeiou")]


def test_unknown_class_uses_its_own_name() -> None:
    captions = class_captions("Umbrella", count=10)
    assert captions[0] == "Umbrella"
    assert all("Umbrella" in c or "umbrella" in c.lower() for c in captions)
    assert "a photo of an umbrella" in generic_captions("Umbrella")
