"""The re-ranker and the generation backend failing, hanging or talking nonsense (issue 9, "faults").

One real server (uvicorn) on demo products, its re-ranker the ``openai`` backend against a loopback chat server
(`tests.unit.rerank.chat_server`), its generation backend the ``openai`` images backend against a loopback images
server (`tests.unit.generate.images_server`). Checked:

* re-ranking: replies that are not JSON, JSON without choices, an empty answer, a reply slower than the request
  timeout -> the search answers 200 with the first-stage order, ``reranked: false`` and a reason; never a 5xx.
  (A 500 from the model and a reply slower than the search's re-ranking budget are covered over HTTP by
  tests/unit/api/test_api_rerank.py: ``test_a_failing_reranker_gives_first_stage_results`` and
  ``test_a_slow_reranker_runs_out_of_budget``.)
* generation: 500 after every retry, a reply slower than the time limit, replies that are not JSON or hold no
  image -> 503 ``GenerationFailed`` with ``Retry-After`` (what `api.errors` documents for a backend that fails),
  never an unhandled 500; searches keep answering meanwhile, and generation works again once the backend does.
  (The generator's own handling of these replies: tests/unit/generate/test_openai_images.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from tests.demo_shop import index_demo_subset
from tests.loopback import Reply
from tests.reliability.conftest import Figures
from tests.unit.api.http_helpers import running, wait_ready
from tests.unit.generate.images_server import FakeImagesServer
from tests.unit.rerank.chat_server import FakeChatServer

KEY_ENV = "VITRINE_TEST_FAULTS_KEY"
TOP_N = 4
REQUEST_TIMEOUT_S = 1.0
PRODUCT = "fm-00003"

RERANK_FAULTS: dict[str, Reply] = {
    "not JSON": Reply(200, b"<html>502 Bad Gateway</html>"),
    "no choices": Reply(200, {"choices": []}),
    "another shape": Reply(200, {"id": "x", "object": "chat.completion"}),
    "truncated JSON": Reply(200, b'{"choices": [{"message": {"content": "ye'),
    "empty body": Reply(200, b""),
    "slower than the request timeout": Reply(200, None, delay_s=REQUEST_TIMEOUT_S + 1.5),
}
GENERATE_FAULTS: dict[str, Reply] = {
    "500 after every retry": Reply(500, {"error": {"message": "the GPU caught fire"}}),
    "slower than the time limit": Reply(200, None, delay_s=REQUEST_TIMEOUT_S + 1.5),
    "not JSON": Reply(200, b"<html>oops</html>"),
    "no images": Reply(200, {"created": 1, "data": []}),
    "not an image": Reply(200, {"created": 1, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]}),
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeChatServer, FakeImagesServer]]:
    with FakeChatServer().running() as chat, FakeImagesServer().running() as images:
        yield chat, images


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory,
           servers: tuple[FakeChatServer, FakeImagesServer]) -> Iterator[httpx.Client]:
    chat, images = servers
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, "sk-test-faults")
        settings = index_demo_subset(
            tmp_path_factory.mktemp("faults-backends"), count=30,
            rerank={"backend": "openai", "model": "fake-vlm", "base_url": chat.url, "api_key_env": KEY_ENV,
                    "top_n": TOP_N, "retries": 0, "timeout_s": REQUEST_TIMEOUT_S, "budget_s": 10.0,
                    "cache_size": 0},
            generate={"backend": "openai", "base_url": images.url, "api_key_env": KEY_ENV, "retries": 1,
                      "backoff_s": 0.01, "timeout_s": REQUEST_TIMEOUT_S, "max_n": 2})
        with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
            wait_ready(http)
            yield http


def ids(body: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in body["results"]]


@pytest.mark.parametrize("fault", list(RERANK_FAULTS))
def test_a_broken_reranker_gives_the_first_stage_order(client: httpx.Client, servers: tuple[FakeChatServer, Any],
                                                       fault: str, figures: Figures) -> None:
    chat, _ = servers
    params: dict[str, str | int] = {"q": "dark trousers", "limit": TOP_N}
    plain = client.get("/search", params=params)
    assert plain.status_code == 200
    good = client.get("/search", params={**params, "rerank": "true"}).json()
    assert good["reranked"] is True, good
    chat.script.extend(RERANK_FAULTS[fault] for _ in range(TOP_N))
    try:
        response = client.get("/search", params={**params, "rerank": "true"})
    finally:
        chat.script.clear()
    figures.add("faults injected")
    figures.add("requests tried", 3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reranked"] is False and body["rerank"]["reason"], body
    assert ids(body) == ids(plain.json())
    assert all("rerank" not in hit for hit in body["results"])


@pytest.mark.parametrize("fault", list(GENERATE_FAULTS))
def test_a_broken_generator_is_a_clear_503_and_search_goes_on(client: httpx.Client,
                                                              servers: tuple[Any, FakeImagesServer], fault: str,
                                                              figures: Figures) -> None:
    _, images = servers
    seed = 100 + list(GENERATE_FAULTS).index(fault)  # a new job each time, not a cached one
    images.script.extend(GENERATE_FAULTS[fault] for _ in range(4))
    try:
        response = client.post("/generate/variants", json={"product_id": PRODUCT, "instruction": "in red", "n": 1,
                                                           "seed": seed})
        search = client.get("/search", params={"q": "red dress"})
    finally:
        images.script.clear()
    figures.add("faults injected")
    figures.add("requests tried", 3)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["type"] == "GenerationFailed" and error["message"], error
    assert "sk-test-faults" not in response.text
    assert search.status_code == 200
    again = client.post("/generate/variants", json={"product_id": PRODUCT, "instruction": "in red", "n": 1,
                                                    "seed": seed})
    assert again.status_code == 200, again.text  # the backend works again: so does generation
