"""Vocabulary files: parsing, defaults, validation messages, and the query words they recognise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.errors import InvalidInput, NotFound
from common.vocabulary import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_TEMPLATES,
    Vocabulary,
    load_vocabulary,
    parse_vocabulary,
)

ROOT = Path(__file__).resolve().parents[3]

TOML = """
templates = ["a photo of a {value}.", "a product photo of a {value} item."]
min_confidence = 0.4

[attributes.colour]
values = ["red", "blue", "black", "white"]
templates = ["a photo of a {value} product."]
min_confidence = 0.6

[attributes.category]
values = ["sneaker", "sandal", "ankle boot", "T-shirt/top"]
synonyms = { sneaker = ["trainers", "running shoes"], "ankle boot" = ["boot"] }
"""


def vocabulary(**attributes: Any) -> Vocabulary:
    return parse_vocabulary({"attributes": attributes}, source="test.toml")


def test_toml_file_with_file_and_attribute_defaults(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.toml"
    path.write_text(TOML, encoding="utf-8")
    vocab = load_vocabulary(path)
    assert vocab.names == ("colour", "category")
    colour, category = vocab.attributes
    assert colour.values == ("red", "blue", "black", "white")
    assert colour.templates == ("a photo of a {value} product.",)
    assert colour.min_confidence == 0.6
    assert category.templates == ("a photo of a {value}.", "a product photo of a {value} item.")
    assert category.min_confidence == 0.4
    assert category.synonyms == {"sneaker": ("trainers", "running shoes"), "ankle boot": ("boot",)}
    assert category.prompts("sandal") == ["a photo of a sandal.", "a product photo of a sandal item."]
    assert vocab.attribute("category") is category


def test_json_file_reads_the_same(tmp_path: Path) -> None:
    toml_path = tmp_path / "v.toml"
    toml_path.write_text(TOML, encoding="utf-8")
    json_path = tmp_path / "v.json"
    import tomllib

    json_path.write_text(json.dumps(tomllib.loads(TOML)), encoding="utf-8")
    assert load_vocabulary(json_path) == load_vocabulary(toml_path)


def test_defaults_when_the_file_sets_none() -> None:
    vocab = vocabulary(tone={"values": ["dark", "light"]})
    assert vocab.attributes[0].templates == DEFAULT_TEMPLATES
    assert vocab.attributes[0].min_confidence == DEFAULT_MIN_CONFIDENCE
    assert vocab.attributes[0].synonyms == {}


def test_values_are_trimmed_and_whitespace_collapsed() -> None:
    vocab = vocabulary(category={"values": ["  ankle   boot ", "sneaker"]})
    assert vocab.attributes[0].values == ("ankle boot", "sneaker")


def test_the_demo_vocabulary_is_valid() -> None:
    vocab = load_vocabulary(ROOT / "data" / "demo" / "vocabulary.toml")
    assert "type" in vocab.names
    categories = {json.loads(line)["category"] for line in
                  (ROOT / "data" / "demo" / "catalog.jsonl").read_text(encoding="utf-8").splitlines()[:500]}
    assert categories <= set(vocab.attribute("type").values)


@pytest.mark.parametrize(("data", "expected"), [
    ({"attributes": {"colour": {"values": []}}}, ["'colour'", "at least two"]),
    ({"attributes": {"colour": {"values": ["red"]}}}, ["'colour'", "at least two"]),
    ({"attributes": {"colour": {"values": "red"}}}, ["'colour'", "list"]),
    ({"attributes": {"colour": {}}}, ["'colour'", "values"]),
    ({"attributes": {"colour": {"values": ["red", "Red"]}}}, ["'colour'", "'Red'", "twice"]),
    ({"attributes": {"colour": {"values": ["red", ""]}}}, ["'colour'", "non-empty string"]),
    ({"attributes": {"colour": {"values": ["red", 3]}}}, ["'colour'", "3", "non-empty string"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "templates": ["a {colour} thing"]}}},
     ["'colour'", "'a {colour} thing'", "{value}"]),
    ({"templates": ["a photo"], "attributes": {"colour": {"values": ["red", "blue"]}}},
     ["templates", "'a photo'", "{value}"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "templates": []}}}, ["'colour'", "non-empty list"]),
    ({"attributes": {"colour-name": {"values": ["red", "blue"]}}}, ["'colour-name'", "letters, digits or '_'"]),
    ({"attributes": {"tags.colour": {"values": ["red", "blue"]}}}, ["'tags.colour'", "payload-key safe"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "min_confidence": 1.5}}},
     ["'colour'", "1.5", "0 to 1"]),
    ({"min_confidence": True, "attributes": {"colour": {"values": ["red", "blue"]}}},
     ["min_confidence", "True", "0 to 1"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "synonyms": {"green": ["lime"]}}}},
     ["'colour'", "'green'", "not one of its values"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "synonyms": {"red": ["blue"]}}}},
     ["'colour'", "'blue'", "already names"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "synonyms": {"red": ["crimson"],
                                                                        "blue": ["crimson"]}}}},
     ["'colour'", "'crimson'", "already names 'red'"]),
    ({"attributes": {"colour": {"values": ["red", "blue"], "colour": "x"}}}, ["'colour'", "unknown"]),
    ({"attribute": {"colour": {"values": ["red", "blue"]}}}, ["'attribute'", "unknown"]),
    ({"attributes": {}}, ["at least one attribute"]),
    ([1, 2], ["expected a table"]),
])
def test_invalid_vocabularies_name_the_file_attribute_and_value(data: Any, expected: list[str]) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_vocabulary(data, source="shop.toml")
    message = str(err.value)
    assert message.startswith("shop.toml"), message
    for part in expected:
        assert part in message, (part, message)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"missing\.toml"):
        load_vocabulary(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[attributes.colour\nvalues = [", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"bad.toml.*not valid TOML"):
        load_vocabulary(bad)
    other = tmp_path / "vocabulary.yaml"
    other.write_text("attributes: {}", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"'\.yaml'.*expected \.toml or \.json"):
        load_vocabulary(other)
    broken = tmp_path / "v.toml"
    broken.write_text('[attributes.colour]\nvalues = ["red"]\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"v\.toml: attribute 'colour'"):
        load_vocabulary(broken)


def test_unknown_attribute_lookup() -> None:
    with pytest.raises(NotFound, match=r"'size'.*\['colour'\]"):
        vocabulary(colour={"values": ["red", "blue"]}).attribute("size")


def test_fingerprint_follows_what_decides_the_tags() -> None:
    base = vocabulary(colour={"values": ["red", "blue"]})
    assert base.fingerprint() == vocabulary(colour={"values": ["red", "blue"]}).fingerprint()
    changed = [
        vocabulary(colour={"values": ["red", "green"]}),
        vocabulary(colour={"values": ["red", "blue"], "min_confidence": 0.7}),
        vocabulary(colour={"values": ["red", "blue"], "templates": ["{value}"]}),
        vocabulary(hue={"values": ["red", "blue"]}),
    ]
    assert len({base.fingerprint(), *(v.fingerprint() for v in changed)}) == 1 + len(changed)


# -- mentions -----------------------------------------------------------------------------------------

MENTIONS = parse_vocabulary({"attributes": {
    "colour": {"values": ["red", "blue", "off-white"], "synonyms": {"red": ["crimson"]}},
    "category": {"values": ["sneaker", "ankle boot", "dress", "T-shirt/top", "shirt"],
                 "synonyms": {"sneaker": ["trainers", "running shoes"], "ankle boot": ["boot"],
                              "T-shirt/top": ["t-shirt", "tee"]}},
}})


@pytest.mark.parametrize(("text", "expected"), [
    ("dress in red", [("category", "dress"), ("colour", "red")]),
    ("RED Dress", [("colour", "red"), ("category", "dress")]),
    ("red dresses", [("colour", "red"), ("category", "dress")]),
    ("sneakers", [("category", "sneaker")]),
    ("crimson trainers", [("colour", "red"), ("category", "sneaker")]),
    ("Running   Shoes", [("category", "sneaker")]),
    ("ankle boots", [("category", "ankle boot")]),
    ("boots", [("category", "ankle boot")]),
    ("a t-shirt", [("category", "T-shirt/top")]),
    ("T-shirt/top", [("category", "T-shirt/top")]),
    ("shirt", [("category", "shirt")]),
    ("sweatshirt", []),
    ("off-white tee", [("colour", "off-white"), ("category", "T-shirt/top")]),
    ("redness bluebell", []),
    ("red and red again", [("colour", "red")]),
    ("", []),
])
def test_mentions_whole_words_synonyms_plurals_longest(text: str, expected: list[tuple[str, str]]) -> None:
    assert MENTIONS.mentions(text) == expected
