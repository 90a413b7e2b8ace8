"""Vocabularies of zero-shot attribute tags: attribute -> values, the prompts that describe them, synonyms.

A vocabulary file (TOML, or JSON with the same shape) lists the attributes the indexer tags every product
image with, and the words a query may use to name a value::

    templates = ["a photo of a {value}.", "a product photo of a {value}."]   # optional
    min_confidence = 0.5                                                      # optional, 0..1

    [attributes.category]
    values = ["sneaker", "sandal", "ankle boot"]
    templates = ["a photo of a {value}.", "a pair of {value}s."]             # optional, per attribute
    min_confidence = 0.6                                                      # optional, per attribute
    synonyms = { sneaker = ["trainers", "running shoes"] }                   # optional

Attribute names become payload keys (``tags.<name>``): letters, digits and ``_`` only. See docs/tags.md for
how the indexer scores values (`indexer.tagging`) and how search uses `Vocabulary.mentions`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import InvalidInput, NotFound

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {value}.", "a product photo of a {value}.")
"""Prompt templates of attributes that name none (and of files that set no ``templates``)."""
DEFAULT_MIN_CONFIDENCE = 0.5
"""Smallest top probability that earns a tag, when neither the file nor the attribute sets one."""
PLACEHOLDER = "{value}"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_VALUE_LENGTH = 200
TAGS_FIELD = "tags"
"""Payload key of a product's tags: ``{"tags": {attribute: value}}``, filterable as ``tags.<attribute>``."""
CONFIDENCE_FIELD = "tag_confidence"
"""Payload key of the tags' probabilities: ``{"tag_confidence": {attribute: p}}``."""

_FILE_KEYS = {"templates", "min_confidence", "attributes"}
_ATTRIBUTE_KEYS = {"values", "templates", "min_confidence", "synonyms"}


@dataclass(frozen=True)
class Attribute:
    """One attribute: the values a product can get, the prompts that describe them, the query words for them.

    Attributes:
        name: payload-key safe name (``tags.<name>``).
        values: two or more distinct values, in file order.
        templates: prompt templates, each with ``{value}`` once or more.
        min_confidence: smallest top probability (0..1) that earns a tag.
        synonyms: value -> other words a query may use for it.
    """

    name: str
    values: tuple[str, ...]
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def prompts(self, value: str) -> list[str]:
        """The prompts of ``value``: every template filled with it."""
        return [template.replace(PLACEHOLDER, value) for template in self.templates]

    def as_dict(self) -> dict[str, Any]:
        """The attribute as JSON-ready data (the shape of the file)."""
        return {"values": list(self.values), "templates": list(self.templates),
                "min_confidence": self.min_confidence,
                "synonyms": {value: list(words) for value, words in self.synonyms.items()}}


@dataclass(frozen=True)
class Vocabulary:
    """Attributes to tag products with, in file order."""

    attributes: tuple[Attribute, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Attribute names, in file order."""
        return tuple(attribute.name for attribute in self.attributes)

    def attribute(self, name: str) -> Attribute:
        """The attribute called ``name``.

        Raises:
            NotFound: no such attribute.
        """
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise NotFound(f"attribute {name!r} is not in the vocabulary; it has {list(self.names)}")

    def as_dict(self) -> dict[str, Any]:
        """The vocabulary as JSON-ready data (what `parse_vocabulary` reads)."""
        return {"attributes": {attribute.name: attribute.as_dict() for attribute in self.attributes}}

    def fingerprint(self) -> str:
        """A hash of everything that decides the tags (values, templates, thresholds; synonyms too)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """The (attribute, value) pairs that ``text`` names, in the order they first appear in it.

        A value is named by itself or one of its synonyms, as whole words, case-insensitively, with any
        whitespace between the words of a multiword phrase, and optionally a plural ``s``/``es``
        ("sneakers" names ``sneaker``). Within one attribute, overlapping phrases resolve to the longest
        ("ankle boots" names ``ankle boot``, not ``boot``); each pair is listed once.
        """
        found: list[tuple[int, str, str]] = []
        for attribute, pattern, phrases in self._patterns:
            # the alternatives are sorted longest first, so each match is the longest phrase at its position,
            # and finditer goes on after it (no shorter phrase inside a longer one)
            found += [(match.start(), attribute, phrases[match.group(0)]) for match in pattern.finditer(text)]
        found.sort(key=lambda item: item[0])
        pairs: list[tuple[str, str]] = []
        for _, attribute, value in found:
            if (attribute, value) not in pairs:
                pairs.append((attribute, value))
        return pairs

    @cached_property
    def _patterns(self) -> list[tuple[str, re.Pattern[str], _PhraseLookup]]:
        compiled = []
        for attribute in self.attributes:
            phrases: dict[str, str] = {}
            for value in attribute.values:
                for phrase in (value, *attribute.synonyms.get(value, ())):
                    phrases[_normalise(phrase)] = value
            ordered = sorted(phrases, key=len, reverse=True)
            body = "|".join(r"\s+".join(re.escape(word) for word in phrase.split(" ")) for phrase in ordered)
            pattern = re.compile(rf"(?<!\w)(?:{body})(?:e?s)?(?!\w)", re.IGNORECASE)
            compiled.append((attribute.name, pattern, _PhraseLookup(phrases)))
        return compiled


class _PhraseLookup:
    """Matched text -> value: case- and whitespace-insensitive, a plural ending ignored."""

    def __init__(self, phrases: dict[str, str]) -> None:
        self._phrases = phrases

    def __getitem__(self, matched: str) -> str:
        key = _normalise(matched)
        for candidate in (key, key[:-1], key[:-2]):
            if candidate in self._phrases:
                return self._phrases[candidate]
        raise KeyError(matched)


def _normalise(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def load_vocabulary(path: Path) -> Vocabulary:
    """Read and validate a vocabulary file: ``.toml``, or ``.json`` with the same shape.

    Raises:
        NotFound: the file does not exist.
        InvalidInput: the file cannot be parsed or breaks a rule; the message names the file, the attribute
            and the value, and says what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"vocabulary file {str(path)!r} does not exist; expected a TOML (or JSON) file of "
                       "attributes and values (see docs/tags.md)")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise InvalidInput(f"vocabulary file {str(path)!r} has the suffix {suffix!r}; expected .toml or .json")
    try:
        raw = path.read_bytes()
        data: Any = tomllib.loads(raw.decode("utf-8")) if suffix == ".toml" else json.loads(raw)
    except OSError as e:
        raise InvalidInput(f"vocabulary file {str(path)!r} cannot be read: {e}") from e
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"vocabulary file {str(path)!r} is not valid {suffix[1:].upper()}: {e}") from e
    return parse_vocabulary(data, source=str(path))


def parse_vocabulary(data: Any, *, source: str = "vocabulary") -> Vocabulary:
    """Validate the parsed content of a vocabulary file.

    Args:
        data: the file's content (a mapping with ``attributes``, and optionally ``templates`` and
            ``min_confidence``).
        source: what the data came from, for error messages (the file name).

    Raises:
        InvalidInput: a rule is broken; the message names ``source``, the attribute and the value.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{source}: expected a table of settings with an 'attributes' table, "
                           f"got {type(data).__name__}")
    _check_keys(data, _FILE_KEYS, f"{source}: top-level key")
    templates = _templates(data.get("templates", DEFAULT_TEMPLATES), f"{source}: templates")
    min_confidence = _confidence(data.get("min_confidence", DEFAULT_MIN_CONFIDENCE), f"{source}: min_confidence")
    table = data.get("attributes")
    if not isinstance(table, Mapping) or not table:
        raise InvalidInput(f"{source}: expected an 'attributes' table with at least one attribute "
                           f"([attributes.NAME] with values = [...]), got {table!r}")
    attributes = tuple(_attribute(name, spec, source=source, templates=templates, min_confidence=min_confidence)
                       for name, spec in table.items())
    return Vocabulary(attributes)


def _attribute(name: Any, spec: Any, *, source: str, templates: tuple[str, ...],
               min_confidence: float) -> Attribute:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(f"{source}: attribute name {name!r} is not payload-key safe; expected 1-64 "
                           "letters, digits or '_' (it becomes the payload key tags.<name>)")
    where = f"{source}: attribute {name!r}"
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"{where}: expected a table with values = [...], got {spec!r}")
    _check_keys(spec, _ATTRIBUTE_KEYS, f"{where}: key")
    values = _values(spec.get("values"), where)
    return Attribute(
        name=name,
        values=values,
        templates=_templates(spec["templates"], f"{where}: templates") if "templates" in spec else templates,
        min_confidence=(_confidence(spec["min_confidence"], f"{where}: min_confidence")
                        if "min_confidence" in spec else min_confidence),
        synonyms=_synonyms(spec.get("synonyms", {}), values, where),
    )


def _check_keys(data: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise InvalidInput(f"{where} {key!r} is unknown; expected one of {sorted(allowed)}")


def _phrase(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: {value!r} is not a non-empty string")
    text = " ".join(value.split())
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidInput(f"{where}: {text[:40]!r}... is {len(text)} characters long; expected at most "
                           f"{MAX_VALUE_LENGTH}")
    return text


def _values(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) < 2:
        raise InvalidInput(f"{where}: values {raw!r} must be a list of at least two strings (a confidence is "
                           "relative to the other values of the attribute)")
    values: list[str] = []
    seen: dict[str, str] = {}
    for value in raw:
        text = _phrase(value, f"{where}: value")
        key = _normalise(text)
        if key in seen:
            raise InvalidInput(f"{where}: value {text!r} is listed twice (as {seen[key]!r} before); "
                               "expected distinct values (case-insensitive)")
        seen[key] = text
        values.append(text)
    return tuple(values)


def _templates(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise InvalidInput(f"{where}: {raw!r} must be a non-empty list of strings, each with {PLACEHOLDER}")
    templates: list[str] = []
    for template in raw:
        if not isinstance(template, str) or PLACEHOLDER not in template:
            raise InvalidInput(f"{where}: template {template!r} has no {PLACEHOLDER}; expected a prompt such "
                               f"as 'a photo of a {PLACEHOLDER}.'")
        if template not in templates:
            templates.append(template)
    return tuple(templates)


def _confidence(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 <= raw <= 1.0:
        raise InvalidInput(f"{where}: {raw!r} is not a probability; expected a number from 0 to 1")
    return float(raw)


def _synonyms(raw: Any, values: tuple[str, ...], where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where}: synonyms {raw!r} must be a table: value = [\"word\", ...]")
    by_key = {_normalise(value): value for value in values}
    owner = dict(by_key)  # phrase -> the value it names
    synonyms: dict[str, tuple[str, ...]] = {}
    for value, listed in raw.items():
        if not isinstance(value, str) or _normalise(value) not in by_key:
            raise InvalidInput(f"{where}: synonyms name {value!r}, which is not one of its values "
                               f"{list(values)}")
        target = by_key[_normalise(value)]
        words = [listed] if isinstance(listed, str) else listed
        if not isinstance(words, Sequence):
            raise InvalidInput(f"{where}: synonyms of {target!r} must be a list of strings, got {words!r}")
        phrases: list[str] = []
        for word in words:
            text = _phrase(word, f"{where}: synonym of {target!r}")
            key = _normalise(text)
            if owner.get(key, target) != target:
                raise InvalidInput(f"{where}: synonym {text!r} of {target!r} already names {owner[key]!r}; "
                                   "expected each word to name one value")
            owner[key] = target
            if text not in phrases and key != _normalise(target):
                phrases.append(text)
        synonyms[target] = (*synonyms.get(target, ()), *phrases)
    return synonyms
