"""Re-ranking in the search path over HTTP (real uvicorn), with the ``openai`` backend talking to a
chat-completions server on loopback (tests/unit/rerank/chat_server.py): the fake model says "yes" (0.9) to
products whose text holds "shoes" or "sneakers" and "no" (0.2) to the others.

Checked: the order follows the combined score, scores are cached, pages past the first cut from the same
order, and a failing, slow or missing re-ranker gives the first-stage results with ``reranked: false`` and the
reason, never a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.metrics import REGISTRY
from common.settings import Settings
from embed import Encoder
from tests.tiny_vlm import save_tiny_llava
from tests.unit.api.http_helpers import Catalog, fill_store, png_bytes, product_image, running, wait_ready
from tests.unit.rerank.chat_server import FakeChatServer, Reply

SHOES = {"shoe-1", "shoe-2"}
KEY = "sk-test-rerank-secret"


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def client(catalog: Catalog, chat: FakeChatServer) -> Iterator[httpx.Client]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITRINE_TEST_RERANK_KEY", KEY)
        settings = Settings(home=catalog.home, rerank={
            "backend": "openai", "model": "fake-vlm", "base_url": chat.url, "api_key_env": "VITRINE_TEST_RERANK_KEY",
            "weight": 0.9, "retries": 1, "backoff_s": 0.01, "budget_s": 5.0, "top_n": 4})
        with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
            wait_ready(http)
            yield http


def ids(body: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in body["results"]]


def test_rerank_orders_by_the_combined_score(client: httpx.Client, chat: FakeChatServer) -> None:
    plain = client.get("/search", params={"q": "leather bag", "limit": 4}).json()
    assert "reranked" not in plain and "rerank" not in plain
    before = len(chat.seen)
    body = client.get("/search", params={"q": "leather bag", "limit": 4, "rerank": "true"}).json()
    assert body["reranked"] is True
    assert body["rerank"]["model"] == "fake-vlm" and body["rerank"]["top_n"] == 4
    assert body["rerank"]["weight"] == 0.9 and body["rerank"].get("reason") is None
    assert sorted(ids(body)) == sorted(ids(plain))
    shoes = [i for i in ids(body) if i in SHOES]
    assert shoes and ids(body)[:len(shoes)] == shoes, ids(body)  # the products the model says yes to lead
    assert ids(plain)[:len(shoes)] != shoes, ids(plain)  # which the first stage did not put first
    for hit in body["results"]:
        assert hit["rerank"]["vlm"] == pytest.approx(0.9 if hit["id"] in SHOES else 0.2, abs=1e-6)
    combined = [hit["rerank"]["combined"] for hit in body["results"]]
    assert combined == sorted(combined, reverse=True)
    asked = chat.seen[before:]
    assert len(asked) == 4 and {seen.body["model"] for seen in asked} == {"fake-vlm"}
    assert all('"leather bag"' in seen.text for seen in asked)
    assert all(seen.headers["authorization"] == f"Bearer {KEY}" for seen in asked)


def test_scores_are_cached(client: httpx.Client, chat: FakeChatServer) -> None:
    first = client.get("/search", params={"q": "wool hat", "rerank": "true", "limit": 3}).json()
    before = len(chat.seen)
    lookups = [_score_cache(result) for result in ("hit", "miss")]
    again = client.get("/search", params={"q": "wool hat", "rerank": "true", "limit": 3}).json()
    assert len(chat.seen) == before
    assert _score_cache("hit") > lookups[0] and _score_cache("miss") == lookups[1]  # as /metrics shows
    assert ids(again) == ids(first) and again["reranked"] is True


def test_pages_cut_from_the_reranked_order(client: httpx.Client) -> None:
    whole = client.post("/search", json={"q": "red shoe", "limit": 4, "rerank": True}).json()
    assert whole["reranked"] is True
    second = client.post("/search", json={"q": "red shoe", "limit": 2, "offset": 2, "rerank": True}).json()
    assert ids(second) == ids(whole)[2:4]
    # past the re-ranked top N the order is the first stage's, and the answer says so
    past = client.post("/search", json={"q": "red shoe", "limit": 1, "offset": 4, "rerank": True,
                                        "rerank_top_n": 4}).json()
    assert past["reranked"] is False and "past the re-ranked top 4" in past["rerank"]["reason"]
    # a page that reaches past the top N continues with first-stage results
    longer = client.post("/search", json={"q": "red shoe", "limit": 3, "offset": 2, "rerank": True,
                                          "rerank_top_n": 3}).json()
    assert longer["reranked"] is True and len(ids(longer)) == 3
    assert len(set(ids(longer))) == 3


def test_image_search_is_reranked_with_the_photo(client: httpx.Client, chat: FakeChatServer) -> None:
    before = len(chat.seen)
    response = client.post("/search/image", params={"rerank": "true", "limit": 3},
                           files={"file": ("q.png", png_bytes(product_image(7)), "image/png")},
                           data={"text": "something to wear"})
    assert response.status_code == 200, response.text
    assert response.json()["reranked"] is True
    asked = chat.seen[before:]
    assert asked and all(len(seen.image_urls) >= 1 for seen in asked)
    assert all(url.startswith("data:image/jpeg;base64,") for seen in asked for url in seen.image_urls)


def test_a_failing_reranker_gives_first_stage_results(client: httpx.Client, chat: FakeChatServer) -> None:
    plain = client.get("/search", params={"q": "green hat", "limit": 4}).json()
    chat.script.extend(Reply(500, {"error": {"message": "boom"}}) for _ in range(20))
    failures = _failures("error")
    try:
        response = client.get("/search", params={"q": "green hat", "limit": 4, "rerank": "true"})
    finally:
        chat.script.clear()
    assert response.status_code == 200
    assert _failures("error") == failures + 1  # counted in /metrics
    body = response.json()
    assert body["reranked"] is False and "failed" in body["rerank"]["reason"]
    assert KEY not in response.text
    assert ids(body) == ids(plain)
    assert all("rerank" not in hit for hit in body["results"])


def test_a_slow_reranker_runs_out_of_budget(client: httpx.Client, chat: FakeChatServer) -> None:
    chat.delay_s = 3.0
    failures = _failures("timeout") + _failures("budget")
    try:
        response = client.get("/search", params={"q": "blue canvas tote", "limit": 4, "rerank": "true",
                                                 "rerank_budget_s": 0.5})
    finally:
        chat.delay_s = 0.0
    assert response.status_code == 200
    assert _failures("timeout") + _failures("budget") == failures + 1
    body = response.json()
    assert body["reranked"] is False and "budget of 0.5 s" in body["rerank"]["reason"]
    assert len(body["results"]) == 4


def _score_cache(result: str) -> float:
    return REGISTRY.get_sample_value("vitrine_cache_requests_total", {"cache": "rerank_score", "result": result}) \
        or 0.0


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("vitrine_rerank_failures_total", {"reason": reason}) or 0.0


def test_bad_rerank_parameters_are_named(client: httpx.Client) -> None:
    for params, named in (({"rerank_top_n": "0"}, "rerank_top_n"), ({"rerank_top_n": "1000"}, "rerank_top_n"),
                          ({"rerank_budget_s": "-1"}, "rerank_budget_s"), ({"rerank": "maybe"}, "rerank")):
        response = client.get("/search", params={"q": "shoe", "rerank": "true", **params})
        assert response.status_code == 422, (params, response.text)
        assert named in response.json()["error"]["message"]
    response = client.post("/search", json={"q": "shoe", "rerank": True, "rerank_topn": 3})
    assert response.status_code == 422 and "rerank_topn" in response.json()["error"]["message"]


def test_stats_and_capabilities_show_the_reranker(client: httpx.Client) -> None:
    assert client.get("/capabilities").json()["rerank"] is True
    rerank = client.get("/stats").json()["rerank"]
    assert rerank["available"] is True and rerank["backend"] == "openai"
    assert KEY not in str(rerank)


@pytest.fixture()
def other_home(tmp_path: Path, tiny_encoder: Encoder) -> Path:
    """A store of its own (the module's server holds the embedded store of `catalog`)."""
    fill_store(Settings(home=tmp_path), tiny_encoder)
    return tmp_path


def test_without_a_reranker_the_answer_says_how_to_set_one(other_home: Path) -> None:
    with running(create_app(Settings(home=other_home))) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        plain = http.get("/search", params={"q": "shoe"}).json()
        body = http.get("/search", params={"q": "shoe", "rerank": "true"}).json()
        assert body["reranked"] is False and "VITRINE_RERANK__BACKEND" in body["rerank"]["reason"]
        assert ids(body) == ids(plain)
        assert http.get("/capabilities").json()["rerank"] is False
        assert http.get("/stats").json()["rerank"]["available"] is False


def test_a_reranker_that_cannot_load_leaves_search_working(other_home: Path) -> None:
    settings = Settings(home=other_home, rerank={"backend": "transformers", "model": str(other_home / "none")})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        body = http.get("/search", params={"q": "shoe", "rerank": "true"}).json()
        assert body["reranked"] is False and "could not be loaded" in body["rerank"]["reason"]


def test_rerank_with_a_local_transformers_model(other_home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The transformers backend in the search path: a tiny random LLaVA loaded from its folder scores the top N
    (its scores are noise, but real P(yes) values from the model's logits, cached like any other)."""
    model_dir = save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))
    settings = Settings(home=other_home, rerank={"backend": "transformers", "model": str(model_dir),
                                                 "batch_size": 4, "top_n": 5})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as http:
        wait_ready(http)
        plain = http.get("/search", params={"q": "red shoe", "limit": 5}).json()
        body = http.get("/search", params={"q": "red shoe", "limit": 5, "rerank": "true"}).json()
        assert body["reranked"] is True, body.get("rerank")
        assert body["rerank"]["model"] == str(model_dir)
        assert sorted(ids(body)) == sorted(ids(plain))
        vlm = {hit["id"]: hit["rerank"]["vlm"] for hit in body["results"]}
        assert all(0.0 <= score <= 1.0 for score in vlm.values())
        again = http.get("/search", params={"q": "red shoe", "limit": 5, "rerank": "true"}).json()
        assert {hit["id"]: hit["rerank"]["vlm"] for hit in again["results"]} == vlm
        cache = http.get("/stats").json()["rerank"]["cache"]
        assert cache["hits"] >= 5 and cache["misses"] == 5
