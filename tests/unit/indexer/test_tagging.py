"""`Tagger`: prototypes from the encoder's text embeddings, softmax over values, thresholds, payload layout.

Runs the bundled demo encoder (a real model): exact assertions use image vectors built from the text
embeddings themselves, so the expected tag and probability are known; one test tags real demo pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from common.errors import InvalidInput, NotFound
from common.images import decode_image
from common.settings import EmbedSettings
from common.vocabulary import CONFIDENCE_FIELD, TAGS_FIELD, Vocabulary, load_vocabulary, parse_vocabulary
from embed import Encoder, build_encoder
from indexer.tagging import Tagger, tag_payload

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "data" / "demo"

VOCAB = parse_vocabulary({
    "templates": ["a photo of a {value}.", "a product photo of a {value}."],
    "attributes": {
        "category": {"values": ["sneaker", "dress", "handbag"]},
        "tone": {"values": ["dark", "light"], "templates": ["a {value} product"], "min_confidence": 0.0},
    },
})


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    enc = build_encoder(EmbedSettings(), "demo")
    enc.load()
    return enc


def unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    out: NDArray[np.float32] = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def softmax(x: NDArray[np.float64]) -> NDArray[np.float64]:
    e = np.exp(x - x.max())
    out: NDArray[np.float64] = e / e.sum()
    return out


def test_prototypes_are_the_normalised_mean_of_the_prompts(encoder: Encoder) -> None:
    tagger = Tagger(encoder, VOCAB)
    for attribute in VOCAB.attributes:
        expected = np.stack([unit(encoder.embed_texts(attribute.prompts(v)).mean(axis=0)) for v in attribute.values])
        np.testing.assert_allclose(tagger.prototypes(attribute.name), expected, atol=1e-5)
    with pytest.raises(NotFound, match="'size'"):
        tagger.prototypes("size")


def test_a_vector_on_a_prototype_gets_that_value_with_the_softmax_probability(encoder: Encoder) -> None:
    tagger = Tagger(encoder, VOCAB, logit_scale=100.0)
    protos = tagger.prototypes("category")
    # image vectors lying exactly on each value's prototype, plus a mix tilted towards "dress"
    images = np.concatenate([protos, unit(0.3 * protos[0] + 0.7 * protos[1])[None]])
    tags = tagger.tag(images)
    assert [t[TAGS_FIELD]["category"] for t in tags] == ["sneaker", "dress", "handbag", "dress"]
    for i, t in enumerate(tags):
        expected = softmax(100.0 * (protos.astype(np.float64) @ images[i].astype(np.float64)))
        assert t[CONFIDENCE_FIELD]["category"] == pytest.approx(expected.max(), abs=1e-4)
    probabilities = tagger.probabilities(images)
    assert probabilities["category"].shape == (4, 3) and probabilities["tone"].shape == (4, 2)
    np.testing.assert_allclose(probabilities["category"].sum(axis=1), 1.0, atol=1e-5)


def test_min_confidence_drops_uncertain_attributes(encoder: Encoder) -> None:
    loose = Tagger(encoder, VOCAB, logit_scale=100.0)
    protos = loose.prototypes("category")
    halfway = unit(protos[0] + protos[1])[None]  # as close to sneaker as to dress: about 0.5 each
    p = float(loose.probabilities(halfway)["category"].max())
    assert 0.45 < p < 0.6
    strict = Tagger(encoder, parse_vocabulary({"attributes": {
        "category": {"values": ["sneaker", "dress", "handbag"], "min_confidence": 0.9,
                     "templates": ["a photo of a {value}.", "a product photo of a {value}."]},
        "tone": {"values": ["dark", "light"], "templates": ["a {value} product"], "min_confidence": 0.0},
    }}))
    [tags] = strict.tag(halfway)
    assert "category" not in tags[TAGS_FIELD] and "category" not in tags[CONFIDENCE_FIELD]
    assert "tone" in tags[TAGS_FIELD]  # min_confidence 0: always tagged
    assert strict.tag(protos[:1])[0][TAGS_FIELD]["category"] == "sneaker"


def test_the_logit_scale_sharpens_the_confidence(encoder: Encoder) -> None:
    protos = Tagger(encoder, VOCAB).prototypes("category")
    mix = unit(0.45 * protos[0] + 0.55 * protos[1])[None]
    soft = Tagger(encoder, VOCAB, logit_scale=10.0).tag(mix)[0][CONFIDENCE_FIELD]["category"]
    sharp = Tagger(encoder, VOCAB, logit_scale=1000.0).tag(mix)[0][CONFIDENCE_FIELD]["category"]
    assert soft < sharp
    with pytest.raises(InvalidInput, match="logit_scale"):
        Tagger(encoder, VOCAB, logit_scale=0.0)


def test_bad_shapes_and_empty_batches(encoder: Encoder) -> None:
    tagger = Tagger(encoder, VOCAB)
    with pytest.raises(InvalidInput, match=r"\(2, 5\).*\(n, 384\)"):
        tagger.tag(np.zeros((2, 5), dtype=np.float32))
    assert tagger.tag(np.zeros((0, encoder.dim), dtype=np.float32)) == []


def test_fingerprint_changes_with_the_vocabulary_and_scale(encoder: Encoder) -> None:
    base = Tagger(encoder, VOCAB)
    assert base.fingerprint == Tagger(encoder, VOCAB).fingerprint
    other: Vocabulary = parse_vocabulary({"attributes": {"category": {"values": ["sneaker", "dress"]}}})
    assert Tagger(encoder, other).fingerprint != base.fingerprint
    assert Tagger(encoder, VOCAB, logit_scale=50.0).fingerprint != base.fingerprint


def test_index_fields_and_payload_layout(encoder: Encoder) -> None:
    tagger = Tagger(encoder, VOCAB)
    assert tagger.index_fields() == {"tags.category": "keyword", "tag_confidence.category": "float",
                                     "tags.tone": "keyword", "tag_confidence.tone": "float"}
    tags = tagger.tag(tagger.prototypes("category")[:1])[0]
    assert tag_payload(tags) == {"tags": tags["tags"], "tag_confidence": tags["tag_confidence"]}
    assert tag_payload({"tags": {}, "tag_confidence": {}}) == {}
    assert tag_payload(None) == {}


def test_demo_pictures_get_their_category(encoder: Encoder) -> None:
    """Real pictures of the demo catalog, embedded as the indexer does, tagged with the demo vocabulary."""
    vocabulary = load_vocabulary(DEMO / "vocabulary.toml")
    tagger = Tagger(encoder, vocabulary)
    rows = [json.loads(line) for line in (DEMO / "catalog.jsonl").read_text(encoding="utf-8").splitlines()[:40]]
    pixels = np.stack([encoder.image_transform(decode_image((DEMO / row["image"]).read_bytes(),
                                                            max_pixels=10**7, source=row["image"]))
                       for row in rows])
    tags = tagger.tag(encoder.embed_pixels(pixels))
    tagged = [(t[TAGS_FIELD]["type"], row["category"]) for t, row in zip(tags, rows, strict=True)
              if "type" in t[TAGS_FIELD]]
    assert len(tagged) >= 30
    assert sum(got == want for got, want in tagged) / len(tagged) >= 0.85
