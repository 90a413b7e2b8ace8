"""The re-rank protocol's inputs, the prompt, images, retry timing, the score cache and the registry."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from common.errors import ConfigError, InvalidInput, RerankFailed
from common.retry import MAX_DELAY_S, backoff_s, is_retryable, retry_after_s
from common.settings import RerankSettings, load_settings
from rerank import CachedReranker, Candidate, Reranker, RerankQuery, ScoreCache, build_reranker, known_backends
from rerank.hf_backend import TransformersReranker
from rerank.imaging import fit_short_side, pixel_digest, to_rgb
from rerank.openai_backend import OpenAIReranker
from rerank.prompt import answer_word, parts, question
from tests.unit.rerank.conftest import product_image

SHOE = Candidate("p1", "white running shoes", product_image((240, 240, 240)), image_key="abc")


# --- inputs and prompt -------------------------------------------------------------------------------------

def test_a_query_needs_text_or_an_image() -> None:
    with pytest.raises(InvalidInput, match="needs a text or an image"):
        RerankQuery(text="   ")
    assert RerankQuery(text="  red  dress ").words == "red  dress"
    assert RerankQuery(image=product_image((1, 2, 3))).words is None


def test_the_prompt_names_the_images_it_sends() -> None:
    text_only = parts(RerankQuery(text="white shoes"), SHOE)
    assert text_only[0] is SHOE.image and isinstance(text_only[1], str) and len(text_only) == 2
    assert 'searched for "white shoes"' in text_only[1] and "Its photo is the image." in text_only[1]
    query_image = product_image((9, 9, 9))
    both = parts(RerankQuery(text="like this", image=query_image), SHOE)
    assert both[:2] == [query_image, SHOE.image]
    assert "second image" in str(both[2]) and "first image as an example" in str(both[2])
    no_photo = question(RerankQuery(text="jeans"), Candidate("p2", "blue jeans"))
    assert "It has no photo." in no_photo and no_photo.endswith("yes or no.")
    assert "JSON" in question(RerankQuery(text="jeans"), Candidate("p2", "blue jeans"), answer="json")


def test_long_texts_are_clipped() -> None:
    long = question(RerankQuery(text="x" * 5000), Candidate("p", "y" * 5000))
    assert len(long) < 1600


@pytest.mark.parametrize(("token", "word"), [
    ("yes", "yes"), ("▁Yes", "yes"), ("ĠYES", "yes"), (" no", "no"), ("No", "no"), ("nope", None), ("", None),
])
def test_answer_words(token: str, word: str | None) -> None:
    assert answer_word(token) == word


# --- images ------------------------------------------------------------------------------------------------

def test_images_are_shrunk_by_their_short_side_and_made_rgb() -> None:
    assert fit_short_side(Image.new("RGB", (2000, 1000)), 768).size == (1536, 768)
    assert fit_short_side(Image.new("RGB", (500, 3000)), 768).size == (500, 3000)
    assert fit_short_side(Image.new("L", (100, 100)), 768).mode == "RGB"
    transparent = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)
    assert pixel_digest(Image.new("RGB", (4, 4))) != pixel_digest(Image.new("RGB", (4, 5)))


# --- retry timing ------------------------------------------------------------------------------------------

def test_retry_after_forms() -> None:
    assert retry_after_s({"Retry-After": "2.5"}) == 2.5
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_s({"Retry-After": when}) or 0) <= 31


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    for attempt in range(4):
        delay = backoff_s(attempt, 0.5)
        assert 0.25 * 2**attempt <= delay <= 0.5 * 2**attempt
    assert 3.0 <= backoff_s(0, 0.5, retry_after=3.0) <= 3.3
    assert backoff_s(30, 1.0) <= MAX_DELAY_S
    assert [is_retryable(s) for s in (400, 401, 404, 408, 429, 500, 503)] == [False, False, False, True, True,
                                                                             True, True]


# --- cache -------------------------------------------------------------------------------------------------

class CountingReranker:
    """Scores by text length; counts the candidates it was asked about."""

    name = "counting"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def load(self) -> None:
        pass

    def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
              deadline: float | None = None) -> list[float]:
        self.asked.extend(c.product_id for c in candidates)
        return [len(c.text) / 100 for c in candidates]

    def describe(self) -> dict[str, Any]:
        return {"backend": "counting"}


def test_the_cache_asks_only_about_new_candidates() -> None:
    inner = CountingReranker()
    cached = CachedReranker(inner, ScoreCache(16))
    assert isinstance(cached, Reranker)
    query = RerankQuery(text="shoes")
    others = [Candidate("p2", "red dress", image_key="h2"), Candidate("p3", "jeans")]
    first = cached.score(query, [SHOE, *others])
    assert cached.score(query, [others[1], SHOE, Candidate("p4", "boots")]) == [first[2], first[0], 0.05]
    assert inner.asked == ["p1", "p2", "p3", "p4"]
    cached.score(RerankQuery(text="shoes", image=product_image((1, 1, 1))), [SHOE])
    cached.score(query, [Candidate("p1", "white running shoes, new title", SHOE.image, image_key="abc")])
    assert inner.asked[-2:] == ["p1", "p1"], "another query or an edited product is scored again"
    assert cached.describe()["cache"] == {"size": 6, "capacity": 16, "hits": 2, "misses": 6}
    assert cached.name == "counting"


def test_the_cache_drops_the_least_recently_used() -> None:
    cache = ScoreCache(2)
    cache.put(("m", "q", "a"), 0.1)
    cache.put(("m", "q", "b"), 0.2)
    assert cache.get(("m", "q", "a")) == 0.1
    cache.put(("m", "q", "c"), 0.3)
    assert cache.get(("m", "q", "b")) is None and len(cache) == 2
    ScoreCache(0).put(("m", "q", "a"), 0.1)


def test_a_short_answer_from_the_inner_reranker_fails() -> None:
    class Short(CountingReranker):
        def score(self, query: RerankQuery, candidates: Sequence[Candidate], *,
                  deadline: float | None = None) -> list[float]:
            return []

    with pytest.raises(RerankFailed, match="0 scores for 1"):
        CachedReranker(Short(), ScoreCache(4)).score(RerankQuery(text="x"), [SHOE])


# --- settings and registry ---------------------------------------------------------------------------------

def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_RERANK__BACKEND", "openai")
    monkeypatch.setenv("VITRINE_RERANK__MODEL", "gpt-4o-mini")
    monkeypatch.setenv("VITRINE_RERANK__BASE_URL", "http://localhost:11434/v1")
    settings = load_settings().rerank
    assert (settings.backend, settings.model, settings.base_url) == ("openai", "gpt-4o-mini",
                                                                    "http://localhost:11434/v1")
    assert (settings.top_n, settings.image_max_side, settings.api_key_env) == (20, 768, "OPENAI_API_KEY")


@pytest.mark.parametrize(("values", "message"), [
    ({"backend": "openai"}, "needs a model"),
    ({"backend": "transformers", "model": " "}, "needs a model"),
    ({"backend": "vllm"}, "backend"),
    ({"base_url": "localhost:8000"}, "must start with http"),
    ({"device": "gpu"}, "not a torch device"),
    ({"api_key_env": "MY-KEY"}, "api_key_env"),
])
def test_bad_settings_name_the_value(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(rerank=values)


def test_build_reranker_by_backend() -> None:
    assert known_backends() == ["none", "openai", "transformers"]
    assert build_reranker(RerankSettings()) is None
    api = build_reranker(RerankSettings(backend="openai", model="gpt-4o-mini", base_url="http://h:1/v1"))
    assert isinstance(api, CachedReranker) and isinstance(api.inner, OpenAIReranker)
    assert api.describe()["loaded"] is False and api.describe()["base_url"] == "http://h:1/v1"
    local = build_reranker(RerankSettings(backend="transformers", model="llava-hf/llava-1.5-7b-hf", cache_size=0))
    assert isinstance(local, TransformersReranker) and local.name == "llava-hf/llava-1.5-7b-hf"
    with pytest.raises(ValueError, match=r"unknown re-ranker backend 'nope'; known: \['none', 'openai'"):
        build_reranker(RerankSettings.model_construct(backend="nope", cache_size=0))  # type: ignore[arg-type]
