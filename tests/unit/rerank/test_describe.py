"""Product descriptions (`rerank.describe`): parsing, the tiny LLaVA's real generate path, and the openai form
against the loopback chat-completions server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from common.errors import RerankFailed, RerankTimeout
from common.settings import RerankSettings
from rerank import Describer, Description, build_describer
from rerank.describe import DESCRIPTION_FORMAT, MAX_DESCRIPTION_CHARS, clean_description, parse_json, parse_lines
from rerank.hf_backend import TransformersReranker
from rerank.openai_backend import OpenAIReranker
from rerank.prompt import ATTRIBUTE_NAMES, DESCRIBE_INSTRUCTION, describe_question
from rerank.protocol import Candidate
from tests.unit.rerank.chat_server import Reply, completion
from tests.unit.rerank.conftest import product_image
from tests.unit.rerank.describe_server import MARKER, DescribingServer

SHOE = Candidate("p1", "white running shoes", product_image((240, 240, 240)), image_key="k1")


# -- parsing --------------------------------------------------------------------------------------------

def test_lines_answer_gives_description_and_known_attributes() -> None:
    answer = ("Description: A white leather sneaker with a rubber sole. Laces in white. A third sentence.\n"
              "Color: white\nmaterial: leather\npattern: none\n- style: **sporty**\nprice: cheap\n")
    assert parse_lines(answer) == Description("A white leather sneaker with a rubber sole. Laces in white.",
                                              {"colour": "white", "material": "leather", "style": "sporty"})


def test_plain_answer_is_kept_as_the_description() -> None:
    assert parse_lines("  A blue denim jacket\nwith silver buttons.  ") == \
        Description("A blue denim jacket with silver buttons.", {})


@pytest.mark.parametrize("answer", ["", "yes", "colour: red\nmaterial: wool",
                                    "shoes shoes shoes shoes dress shoes shoes shoes shoes", "12 34 56 !!"])
def test_unusable_answers_fail_cleanly(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_lines(answer)


def test_long_description_is_clipped() -> None:
    words = [f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(200)]
    text = clean_description("A " + " ".join(words) + ".")
    assert len(text) <= MAX_DESCRIPTION_CHARS and text.endswith("…")


def test_json_answer_with_object_or_list_attributes() -> None:
    body = {"description": "A red wool scarf.  With fringes.", "attributes": {"colour": "red", "material": None,
                                                                             "pattern": "", "style": "classic"}}
    assert parse_json(json.dumps(body)) == Description("A red wool scarf. With fringes.",
                                                       {"colour": "red", "style": "classic"})
    listed = {"description": "A red wool scarf.", "attributes": [{"name": "Color", "value": "red"},
                                                                 {"name": "brand", "value": "Acme"}]}
    assert parse_json("```json\n" + json.dumps(listed) + "\n```").attributes == {"colour": "red"}


@pytest.mark.parametrize("answer", [None, "", "not json", "[1, 2]", '{"attributes": {}}',
                                    '{"description": "ok", "attributes": {}}'])
def test_bad_json_answers_fail_cleanly(answer: str | None) -> None:
    with pytest.raises(ValueError):
        parse_json(answer)


def test_the_schema_is_strict_with_every_attribute_required() -> None:
    schema = DESCRIPTION_FORMAT["json_schema"]["schema"]
    assert DESCRIPTION_FORMAT["json_schema"]["strict"] is True
    assert schema["required"] == ["description", "attributes"]
    assert schema["properties"]["attributes"]["required"] == list(ATTRIBUTE_NAMES)


def test_the_question_names_the_product_and_the_rules() -> None:
    question = describe_question(SHOE)
    assert "The product: white running shoes. Its photo is the image." in question
    assert DESCRIBE_INSTRUCTION in question and "Description: ..." in question
    assert "It has no photo." in describe_question(Candidate("p", "gift card"), answer="json")


# -- transformers: the real generate path on the tiny random LLaVA -------------------------------------------

@pytest.fixture
def tiny(tiny_llava_parts: tuple[Any, Any]) -> TransformersReranker:
    model, processor = tiny_llava_parts
    return TransformersReranker("tiny-llava", model=model, processor=processor, max_new_tokens=24)


def test_tiny_model_generates_and_fails_cleanly_or_describes(tiny: TransformersReranker) -> None:
    assert isinstance(tiny, Describer)
    outcomes = []
    for item in (SHOE, Candidate("p2", "red summer dress", None), Candidate("p3", "black leather bag",
                                                                               product_image((10, 10, 10)))):
        try:
            described = tiny.describe_product(item)
        except RerankFailed as e:  # a random model mostly loops: a clean per-product failure
            assert "no usable description" in str(e) and repr(item.product_id) in str(e)
            outcomes.append("failed")
        else:
            assert described.text and len(described.text) <= MAX_DESCRIPTION_CHARS
            outcomes.append("described")
    assert len(outcomes) == 3


def test_tiny_model_generation_is_greedy_and_bounded(tiny: TransformersReranker) -> None:
    state = tiny._state
    assert state is not None
    first = tiny._generate(state, SHOE, None)
    assert first == tiny._generate(state, SHOE, None)
    assert 0 < len(first.split()) <= 24


def test_tiny_model_respects_a_past_deadline(tiny: TransformersReranker) -> None:
    with pytest.raises(RerankTimeout):
        tiny.describe_product(SHOE, deadline=time.monotonic() - 1)


def test_build_describer_loads_the_tiny_model_from_its_folder(tiny_llava_dir: Path) -> None:
    describer = build_describer(RerankSettings(backend="transformers", model=str(tiny_llava_dir),
                                               describe_max_tokens=16))
    assert isinstance(describer, TransformersReranker)
    try:  # a random model: its words, kept as a best-effort description, or a clean failure
        described = describer.describe_product(Candidate("p", "blue jeans", product_image((20, 20, 200))))
    except RerankFailed as e:
        assert "no usable description" in str(e)
    else:
        assert described.text and described.attributes == {}
    assert build_describer(RerankSettings()) is None


# -- openai: JSON-schema answers from the loopback server -----------------------------------------------------

def _api(url: str, **options: Any) -> OpenAIReranker:
    return OpenAIReranker("fake-vlm", base_url=url, retries=2, backoff_s=0.0, **options)


def test_openai_describer_sends_the_photo_and_the_schema() -> None:
    with DescribingServer().running() as server:
        described = _api(server.url, max_tokens=99).describe_product(SHOE)
    assert described.text == f"A studio photo of white running shoes, with a {MARKER} pattern. On a plain background."
    assert described.attributes == {"colour": "white", "pattern": MARKER, "style": "casual"}
    (seen,) = server.seen
    assert seen.body["response_format"] == DESCRIPTION_FORMAT
    assert seen.body["max_tokens"] == 99 and seen.body["temperature"] == 0
    assert len(seen.image_urls) == 1 and seen.image_urls[0].startswith("data:image/jpeg;base64,")
    assert DESCRIBE_INSTRUCTION in seen.text


def test_openai_describer_retries_then_describes() -> None:
    with DescribingServer().running() as server:
        server.script.extend([Reply(503, {"error": {"message": "busy"}}), Reply(429, {"error": {}},
                                                                                {"Retry-After": "0"})])
        assert _api(server.url).describe_product(SHOE).attributes["style"] == "casual"
    assert len(server.seen) == 3


@pytest.mark.parametrize("body", [completion("Sure! Here is a description: it is nice"),
                                  completion(json.dumps({"description": "ok"})), b"{not json"])
def test_openai_describer_fails_cleanly_on_malformed_replies(body: dict[str, Any] | bytes) -> None:
    with DescribingServer().running() as server:
        server.script.append(Reply(body=body))
        with pytest.raises(RerankFailed) as failure:
            _api(server.url).describe_product(SHOE)
    assert "fake-vlm" in str(failure.value)


def test_openai_describer_gives_up_after_retries_and_respects_the_deadline() -> None:
    with DescribingServer().running() as server:
        server.script.extend([Reply(500, {"error": {}})] * 3)
        with pytest.raises(RerankFailed, match="after 3 attempt"):
            _api(server.url).describe_product(SHOE)
        with pytest.raises(RerankTimeout):
            _api(server.url).describe_product(SHOE, deadline=time.monotonic() - 1)
