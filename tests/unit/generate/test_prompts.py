"""Prompt rewriting: the template, and the LLM rewriter against a loopback chat server, falling back to the
template on failure."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from common.settings import GenerateSettings
from generate.prompts import SYSTEM_PROMPT, LLMPromptRewriter, build_rewriter, rewrite_prompt, template_prompt
from tests.unit.rerank.chat_server import FakeChatServer, Reply, completion

KEY_ENV = "VITRINE_TEST_REWRITE_KEY"
SECRET = "sk-rewrite-SECRET-0123456789"
PRODUCT = {"id": "fm-00000", "title": "Saltmarsh women's western khaki booties", "brand": "Saltmarsh",
           "category": "Ankle boot", "description": "Western booties in khaki leather.",
           "attributes": {"colour": "khaki", "material": "leather"}}


@pytest.fixture
def chat() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as running:
        yield running


def test_template_uses_the_products_fields() -> None:
    prompt = template_prompt("  the same boots   in red. ", PRODUCT)
    assert prompt.startswith("Studio product photo of a Saltmarsh women's western khaki booties (Ankle boot), "
                             "the same boots in red.")
    assert " by Saltmarsh" not in prompt  # the brand is already in the title
    assert "The original is khaki, leather." in prompt
    assert "Same shape, same details" in prompt and "plain light background" in prompt.lower()


def test_template_with_a_brand_not_in_the_title_and_without_a_product() -> None:
    assert template_prompt("in navy", {"title": "Runner", "brand": "Acme"}).startswith(
        "Studio product photo of a Runner by Acme, in navy.")
    bare = template_prompt("a red sneaker", None)
    assert bare.startswith("Studio product photo of the product, a red sneaker.")
    assert "original" not in bare


def test_rewrite_prompt_defaults_to_the_template() -> None:
    prompt, method = rewrite_prompt(GenerateSettings(), "in red", PRODUCT)
    assert method == "template"
    assert prompt == template_prompt("in red", PRODUCT)
    assert build_rewriter(GenerateSettings()) is None


def test_llm_rewrites(chat: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    chat.script.append(Reply(body=completion('  "A studio photo of western ankle booties in glossy red leather,\n'
                                             'same shape, soft light."  ')))
    settings = GenerateSettings(rewrite="llm", rewrite_model="gpt-4o-mini", base_url=chat.url, api_key_env=KEY_ENV)
    prompt, method = rewrite_prompt(settings, "in red", PRODUCT)
    assert method == "llm"
    assert prompt == "A studio photo of western ankle booties in glossy red leather, same shape, soft light."
    [seen] = chat.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "gpt-4o-mini"
    system, user = seen.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "Instruction: in red" in user["content"] and "Brand: Saltmarsh" in user["content"]
    assert "Material: leather" in user["content"]
    assert seen.headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("reply", [
    Reply(500, {"error": {"message": f"boom {SECRET}"}}),
    Reply(body=completion("")),
    Reply(body=b"{not json"),
    Reply(body=completion("x" * 3000)),
])
def test_llm_failure_falls_back_to_the_template(chat: FakeChatServer, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture, reply: Reply) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    chat.script.append(reply)
    rewriter = LLMPromptRewriter("gpt-4o-mini", base_url=chat.url, api_key_env=KEY_ENV, timeout_s=5)
    with caplog.at_level(logging.WARNING):
        prompt, method = rewriter.rewrite("in red", PRODUCT)
    assert (prompt, method) == (template_prompt("in red", PRODUCT), "template")
    assert "using the template" in caplog.text
    assert SECRET not in caplog.text


def test_llm_timeout_falls_back(chat: FakeChatServer) -> None:
    chat.script.append(Reply(body=completion("late"), delay_s=2.0))
    rewriter = LLMPromptRewriter("m", base_url=chat.url, api_key_env=KEY_ENV, timeout_s=0.3)
    assert rewriter.rewrite("in red", None)[1] == "template"


def test_llm_without_a_model_or_a_key_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert LLMPromptRewriter(None).rewrite("in red", None) == (template_prompt("in red", None), "template")
    no_key = LLMPromptRewriter("gpt-4o-mini", api_key_env=KEY_ENV)
    assert no_key.rewrite("in red", None)[1] == "template"
