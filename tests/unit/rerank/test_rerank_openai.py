"""The API re-ranker against a loopback chat-completions server: requests, logprobs, JSON fallback, retries,
deadline, concurrency, and the API key kept out of messages and logs."""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from common.errors import ConfigError, RerankFailed, RerankTimeout
from rerank.api_answers import RESPONSE_FORMAT, json_score
from rerank.openai_backend import OpenAIReranker
from rerank.protocol import Candidate, RerankQuery
from tests.unit.rerank.chat_server import P_MATCH, P_OTHER, FakeChatServer, Reply, completion, yes_no_completion
from tests.unit.rerank.conftest import product_image

KEY_ENV = "VITRINE_TEST_RERANK_KEY"
KEY = "sk-test-a1b2c3d4e5f6-secret"
QUERY = RerankQuery(text="white sneakers")
CANDIDATES = [
    Candidate("p1", "white running shoes", product_image((240, 240, 240), (2000, 1500))),
    Candidate("p2", "red summer dress", product_image((200, 20, 20), (300, 400))),
    Candidate("p3", "blue jeans", None),
]
EXPECTED = [P_MATCH, P_OTHER, P_OTHER]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeChatServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeChatServer().running() as running:
        yield running


def make(server: FakeChatServer, **kwargs: object) -> OpenAIReranker:
    options: dict[str, object] = {"base_url": server.url, "api_key_env": KEY_ENV, "backoff_s": 0.01,
                                  "timeout_s": 5.0, **kwargs}
    return OpenAIReranker("gpt-test-mini", **options)  # type: ignore[arg-type]


def _decode(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))
    assert image.format == "JPEG"
    return image


def test_scores_come_from_logprobs_and_requests_are_well_formed(server: FakeChatServer) -> None:
    reranker = make(server)
    assert reranker.score(QUERY, CANDIDATES) == pytest.approx(EXPECTED, abs=1e-6)
    assert len(server.seen) == 3
    by_product = {seen.text.split("The product: ")[1].split(".")[0]: seen for seen in server.seen}
    for seen in server.seen:
        assert seen.path == "/v1/chat/completions"
        assert seen.headers["authorization"] == f"Bearer {KEY}"
        assert seen.body["model"] == "gpt-test-mini"
        assert seen.body["logprobs"] is True and seen.body["top_logprobs"] == 5 and seen.body["max_tokens"] == 1
        assert "white sneakers" in seen.text and "yes or no" in seen.text
    big = _decode(by_product["white running shoes"].image_urls[0])
    assert min(big.size) == 768 and big.size == (1024, 768)
    small = _decode(by_product["red summer dress"].image_urls[0])
    assert small.size == (300, 400)
    assert by_product["blue jeans"].image_urls == []
    assert "It has no photo." in by_product["blue jeans"].text


def test_a_query_image_is_sent_first(server: FakeChatServer) -> None:
    query = RerankQuery(text="like this in red", image=product_image((1, 200, 3), (900, 3000)))
    make(server).score(query, CANDIDATES[:1])
    urls = server.seen[0].image_urls
    assert len(urls) == 2
    assert _decode(urls[0]).size == (768, 2560)
    assert "first image as an example" in server.seen[0].text and "second image" in server.seen[0].text


def test_without_logprobs_it_falls_back_to_the_json_schema_form(server: FakeChatServer) -> None:
    server.logprobs = False
    reranker = make(server)
    assert reranker.score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])
    assert reranker.answer_form == "json"
    assert [("logprobs" in s.body, "response_format" in s.body) for s in server.seen] == [(True, False),
                                                                                           (False, True)]
    assert server.seen[1].body["response_format"] == RESPONSE_FORMAT
    assert RESPONSE_FORMAT["json_schema"]["strict"] is True
    assert "JSON" in server.seen[1].text
    assert reranker.score(QUERY, CANDIDATES) == pytest.approx(EXPECTED)
    assert len(server.seen) == 2 + 3, "once switched, it asks in the JSON form straight away"
    assert reranker.describe()["answer_form"] == "json"


def test_a_server_refusing_logprobs_gets_the_json_form(server: FakeChatServer) -> None:
    server.script.append(Reply(400, {"error": {"message": "logprobs is not supported"}}))
    reranker = make(server)
    assert reranker.score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])
    assert reranker.answer_form == "json"


def test_an_off_format_answer_is_asked_again_as_json(server: FakeChatServer) -> None:
    server.script.append(Reply(body=yes_no_completion(0.7, yes="Maybe", no="Perhaps")))
    reranker = make(server)
    assert reranker.score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])
    assert reranker.answer_form == "yes_no", "one odd answer does not switch the form"


def test_429_waits_what_retry_after_asks(server: FakeChatServer) -> None:
    server.script.append(Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.4"}))
    reranker = make(server, backoff_s=0.0)
    start = time.monotonic()
    assert reranker.score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])
    assert 0.4 <= time.monotonic() - start < 2.0
    assert len(server.seen) == 2


def test_retry_after_ms_is_honoured_too(server: FakeChatServer) -> None:
    server.script.append(Reply(503, {"error": {"message": "busy"}}, {"retry-after-ms": "300"}))
    start = time.monotonic()
    make(server, backoff_s=0.0).score(QUERY, CANDIDATES[:1])
    assert time.monotonic() - start >= 0.3


def test_500_then_success_is_retried(server: FakeChatServer) -> None:
    server.script.extend([Reply(500, {"error": {"message": "boom"}}), Reply(502, b"<html>bad gateway</html>")])
    assert make(server).score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])
    assert len(server.seen) == 3


def test_retries_are_bounded(server: FakeChatServer) -> None:
    server.script.extend(Reply(500, {"error": {"message": "boom"}}) for _ in range(10))
    with pytest.raises(RerankFailed, match=r"HTTP 500.*after 3 attempt"):
        make(server, retries=2).score(QUERY, CANDIDATES[:1])
    assert len(server.seen) == 3


def test_a_slow_reply_past_the_deadline_times_out_quickly(server: FakeChatServer) -> None:
    server.delay_s = 3.0
    start = time.monotonic()
    with pytest.raises(RerankTimeout):
        make(server, timeout_s=10.0, retries=3).score(QUERY, CANDIDATES, deadline=start + 0.5)
    assert time.monotonic() - start < 1.5


def test_a_retry_after_beyond_the_deadline_is_not_waited_for(server: FakeChatServer) -> None:
    server.script.append(Reply(429, {"error": {"message": "later"}}, {"Retry-After": "30"}))
    start = time.monotonic()
    with pytest.raises(RerankTimeout, match="after the deadline"):
        make(server).score(QUERY, CANDIDATES[:1], deadline=start + 2.0)
    assert time.monotonic() - start < 1.0


def test_a_server_that_is_down_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    server = FakeChatServer()
    with server.running():
        url = server.url
    reranker = OpenAIReranker("m", base_url=url, api_key_env=KEY_ENV, retries=2, backoff_s=0.01)
    with pytest.raises(RerankFailed, match=r"cannot connect.*after 3 attempt"):
        reranker.score(QUERY, CANDIDATES[:1])


def test_a_deadline_already_past_sends_nothing(server: FakeChatServer) -> None:
    with pytest.raises(RerankTimeout):
        make(server).score(QUERY, CANDIDATES, deadline=time.monotonic())
    assert server.seen == []


@pytest.mark.parametrize("reply", [
    Reply(200, b"this is not json"),
    Reply(200, {"id": "x", "object": "chat.completion"}),
    Reply(200, {"choices": []}),
], ids=["not-json", "no-choices", "empty-choices"])
def test_a_malformed_reply_fails_without_retrying(server: FakeChatServer, reply: Reply) -> None:
    server.script.append(reply)
    with pytest.raises(RerankFailed, match="malformed") as caught:
        make(server).score(QUERY, CANDIDATES[:1])
    assert len(server.seen) == 1
    assert caught.value.__cause__ is not None, "a cause without the key in it is chained"


def test_a_malformed_json_answer_fails(server: FakeChatServer) -> None:
    server.logprobs = False
    server.script.extend([Reply(body=completion("yes")), Reply(body=completion("{\"relevant\": \"sure\"}"))])
    with pytest.raises(RerankFailed, match="malformed reply for product 'p1'"):
        make(server).score(QUERY, CANDIDATES[:1])


def test_one_failed_candidate_fails_the_call(server: FakeChatServer) -> None:
    server.script.append(Reply(200, b"garbage"))
    with pytest.raises(RerankFailed, match="malformed"):
        make(server, max_concurrency=1).score(QUERY, CANDIDATES)


def test_concurrency_is_bounded_and_order_kept(server: FakeChatServer) -> None:
    server.delay_s = 0.1
    candidates = [Candidate(f"p{i}", "shoes" if i % 2 else "dress") for i in range(6)]
    scores = make(server, max_concurrency=2).score(QUERY, candidates)
    assert scores == pytest.approx([P_OTHER, P_MATCH] * 3)
    assert server.max_in_flight == 2


def test_the_key_never_shows_in_errors_or_logs(server: FakeChatServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.script.extend([Reply(500, {"error": {"message": f"upstream saw key {KEY}"}}),
                          Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})])
    reranker = make(server)
    with pytest.raises(RerankFailed) as caught:
        reranker.score(QUERY, CANDIDATES[:1])
    error: BaseException | None = caught.value
    assert "HTTP 401" in str(caught.value) and "***" in str(caught.value)
    while error is not None:  # the whole chain, as a traceback would print it
        assert KEY not in str(error) and KEY not in repr(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert KEY not in caplog.text
    assert KEY not in str(reranker.describe())


def test_the_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRINE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="VITRINE_NO_SUCH_KEY"):
        OpenAIReranker("gpt-4o-mini", api_key_env="VITRINE_NO_SUCH_KEY").load()


def test_a_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRINE_NO_SUCH_KEY", raising=False)
    with FakeChatServer().running() as server:
        reranker = OpenAIReranker("llava", base_url=server.url, api_key_env="VITRINE_NO_SUCH_KEY")
        assert reranker.score(QUERY, CANDIDATES[:1]) == pytest.approx([P_MATCH])


def test_json_score_reads_the_schema_and_clips() -> None:
    assert json_score('{"relevant": true, "score": 0.8}') == 0.8
    assert json_score('```json\n{"relevant": true, "score": 1.7}\n```') == 1.0
    assert json_score('{"relevant": false, "score": "n/a"}') == 0.0
    with pytest.raises(ValueError, match="expected"):
        json_score('{"score": null}')
    with pytest.raises(ValueError):
        json_score("yes")
