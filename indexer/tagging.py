"""Zero-shot attribute tags from the image vectors the indexer already computed (CLIP's zero-shot recipe).

Each value of each attribute of the vocabulary gets a prototype: the mean of the text embeddings of its
prompts (the attribute's templates filled with the value), re-normalised. A product's image vector scores
every value by cosine; per attribute, ``softmax(logit_scale * cosines)`` over the values gives a probability
per value, and the best value becomes the tag when its probability reaches the attribute's
``min_confidence``. No model runs per product: the prompts are embedded once, when the `Tagger` is built.

Payload layout (filterable and facetable; the store indexes both keys)::

    "tags": {"category": "sneaker", "tone": "dark"},
    "tag_confidence": {"category": 0.93, "tone": 0.71}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from common.errors import InvalidInput
from common.vocabulary import CONFIDENCE_FIELD, TAGS_FIELD, Vocabulary
from embed.protocol import Encoder

TAG_FIELDS = (TAGS_FIELD, CONFIDENCE_FIELD)
DEFAULT_LOGIT_SCALE = 100.0
CONFIDENCE_DIGITS = 4

Tags = dict[str, dict[str, Any]]
"""``{"tags": {attribute: value}, "tag_confidence": {attribute: probability}}``."""


class Tagger:
    """Tags image vectors with the values of a vocabulary.

    Attributes:
        vocabulary: what it tags with.
        logit_scale: multiplier of the cosines before the softmax.
        fingerprint: hash of what decides the tags (vocabulary, encoder and its weights, logit scale); stored
            with each product, so a changed vocabulary re-tags products whose vectors did not change.
    """

    def __init__(self, encoder: Encoder, vocabulary: Vocabulary, *,
                 logit_scale: float = DEFAULT_LOGIT_SCALE) -> None:
        """Embed every value's prompts once (one ``embed_texts`` call for the whole vocabulary).

        Raises:
            InvalidInput: ``logit_scale`` is not a positive number.
        """
        if not logit_scale > 0 or not np.isfinite(logit_scale):
            raise InvalidInput(f"logit_scale {logit_scale!r} must be a positive number (CLIP's is 100)")
        self.vocabulary = vocabulary
        self.logit_scale = float(logit_scale)
        self.dim = encoder.dim
        prompts: list[str] = []
        spans: list[tuple[int, int]] = []  # per attribute, per value: [start, end) in prompts
        for attribute in vocabulary.attributes:
            for value in attribute.values:
                start = len(prompts)
                prompts += attribute.prompts(value)
                spans.append((start, len(prompts)))
        embedded = np.asarray(encoder.embed_texts(prompts), dtype=np.float32)
        means = np.stack([embedded[start:end].mean(axis=0) for start, end in spans])
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        self._prototypes: list[NDArray[np.float32]] = []
        row = 0
        for attribute in vocabulary.attributes:
            self._prototypes.append(means[row : row + len(attribute.values)].astype(np.float32))
            row += len(attribute.values)
        digest = hashlib.sha256()
        for part in (vocabulary.fingerprint(), encoder.name, encoder.weights_id, repr(self.logit_scale)):
            digest.update(part.encode() + b"\0")
        self.fingerprint = digest.hexdigest()

    def prototypes(self, attribute: str) -> NDArray[np.float32]:
        """The unit prototype vectors of an attribute's values, shape (values, dim), in vocabulary order.

        Raises:
            NotFound: no such attribute.
        """
        names = self.vocabulary.names
        if attribute not in names:
            self.vocabulary.attribute(attribute)  # raises NotFound naming the attributes
        return self._prototypes[names.index(attribute)]

    def probabilities(self, image_vectors: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
        """Per attribute, the probabilities of its values for each vector: shape (n, values), rows sum to 1.

        Raises:
            InvalidInput: ``image_vectors`` is not of shape (n, dim).
        """
        vectors = np.asarray(image_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidInput(f"image vectors of shape {vectors.shape} cannot be tagged; expected (n, {self.dim})")
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out: dict[str, NDArray[np.float32]] = {}
        for attribute, prototypes in zip(self.vocabulary.attributes, self._prototypes, strict=True):
            logits = self.logit_scale * (vectors @ prototypes.T)
            logits -= logits.max(axis=1, keepdims=True)
            weights = np.exp(logits)
            out[attribute.name] = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        return out

    def tag(self, image_vectors: NDArray[np.float32]) -> list[Tags]:
        """Tags of each image vector, in order: ``{"tags": {attr: value}, "tag_confidence": {attr: p}}``.

        Only attributes whose best value's probability reaches the attribute's ``min_confidence`` appear.

        Raises:
            InvalidInput: ``image_vectors`` is not of shape (n, dim).
        """
        probabilities = self.probabilities(image_vectors)
        out: list[Tags] = [{TAGS_FIELD: {}, CONFIDENCE_FIELD: {}} for _ in range(len(image_vectors))]
        for attribute in self.vocabulary.attributes:
            p = probabilities[attribute.name]
            best = p.argmax(axis=1)
            top = p[np.arange(len(p)), best]
            for i in np.flatnonzero(top >= attribute.min_confidence):
                out[i][TAGS_FIELD][attribute.name] = attribute.values[int(best[i])]
                out[i][CONFIDENCE_FIELD][attribute.name] = round(float(top[i]), CONFIDENCE_DIGITS)
        return out

    def index_fields(self) -> dict[str, str]:
        """The payload fields to index, with their kinds: ``tags.<attr>`` keyword, ``tag_confidence.<attr>``
        float."""
        fields: dict[str, str] = {}
        for name in self.vocabulary.names:
            fields[f"{TAGS_FIELD}.{name}"] = "keyword"
            fields[f"{CONFIDENCE_FIELD}.{name}"] = "float"
        return fields


def tag_payload(tags: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """The payload keys of one product's tags (none when it got no tag)."""
    if not tags or not tags.get(TAGS_FIELD):
        return {}
    return {TAGS_FIELD: dict(tags[TAGS_FIELD]), CONFIDENCE_FIELD: dict(tags.get(CONFIDENCE_FIELD, {}))}
