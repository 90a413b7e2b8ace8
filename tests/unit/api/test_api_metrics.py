"""``GET /metrics``, the ``X-Request-ID`` header and the access log, through a real server over an indexed demo shop.

The metrics live on one process-wide registry, so these tests compare scrapes taken before and after.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.app import create_app
from common.logging import setup_logging
from common.metrics import REGISTRY
from common.settings import Settings
from tests.demo_shop import index_demo_subset
from tests.unit.api.http_helpers import png_bytes, product_image, running, wait_ready

PRODUCTS = 40
MAX_UPLOAD = 4096

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = index_demo_subset(tmp_path_factory.mktemp("metrics"), count=PRODUCTS)
    return settings.model_copy(update={"api": settings.api.model_copy(update={"max_upload_bytes": MAX_UPLOAD})})


@pytest.fixture(scope="module")
def client(shop: Settings) -> Iterator[httpx.Client]:
    with running(create_app(shop)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield http


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON log lines of everything logged during the test (the root logger's handlers put back after)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    setup_logging("DEBUG", "json", stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_are_counted_by_route_template_and_status(client: httpx.Client) -> None:
    before = scrape(client)
    assert client.get("/search", params={"q": "red dress"}).status_code == 200
    assert client.get("/search", params={"q": "red dress", "limit": "many"}).status_code == 422
    assert client.get("/products/no-such-product").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)
    total = "vitrine_http_requests_total"
    assert grew(before, after, total, method="GET", route="/search", status="200") == 1
    assert grew(before, after, total, method="GET", route="/search", status="422") == 1
    assert grew(before, after, total, method="GET", route="/products/{product_id:path}", status="404") == 1
    assert grew(before, after, total, method="GET", route="unmatched", status="404") == 1
    assert not any(dict(labels).get("route", "").startswith("/no/") for _, labels in after)  # no raw paths
    assert grew(before, after, "vitrine_http_request_duration_seconds_count", method="GET", route="/search") == 2
    assert value(after, "vitrine_http_request_duration_seconds_sum", method="GET", route="/search") > 0
    assert value(after, "vitrine_http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "process_resident_memory_bytes") > 0


def test_encoding_the_query_cache_and_the_store_are_measured(client: httpx.Client) -> None:
    before = scrape(client)
    for _ in range(2):  # the second time from the query cache
        assert client.get("/search", params={"q": "blue linen shirt for summer"}).status_code == 200
    after = scrape(client)
    assert grew(before, after, "vitrine_cache_requests_total", cache="query_embedding", result="miss") == 1
    assert grew(before, after, "vitrine_cache_requests_total", cache="query_embedding", result="hit") == 1
    assert grew(before, after, "vitrine_encode_batch_size_count", kind="text") == 1
    assert grew(before, after, "vitrine_encode_batch_size_sum", kind="text") == 1  # queries are encoded alone
    assert grew(before, after, "vitrine_encode_seconds_count", kind="text") == 1
    assert grew(before, after, "vitrine_encode_queue_wait_seconds_count") == 1
    assert grew(before, after, "vitrine_store_seconds_count", operation="search") >= 2  # image and text indices
    assert value(after, "vitrine_store_seconds_sum", operation="search") > 0


def test_the_last_index_job_shows_its_rows_by_outcome(client: httpx.Client) -> None:
    samples = scrape(client)
    assert value(samples, "vitrine_last_index_job_rows", outcome="rows") == PRODUCTS
    assert value(samples, "vitrine_last_index_job_rows", outcome="indexed") == PRODUCTS
    assert value(samples, "vitrine_last_index_job_rows", outcome="rejected") == 0
    assert value(samples, "vitrine_last_index_job_timestamp_seconds") > 1.7e9
    # the job ran in this process (as `vitrine index` does in its own), which counted its rows
    assert value(samples, "vitrine_ingest_rows_total", outcome="indexed") >= PRODUCTS


def test_a_valid_request_id_is_echoed_and_others_are_replaced(client: httpx.Client) -> None:
    given = "shop-frontend:7f3a.01_x"
    assert client.get("/health", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given
    for bad in (b"x" * 129, b"x" * 300, b"has space", b"semi;colon", "\u00fcn\u00efcode".encode(), b""):
        made = client.get("/health", headers={b"X-Request-ID": bad}).headers["X-Request-ID"]
        assert made.encode() != bad and made != given and len(made) == 32 and int(made, 16) >= 0  # uuid4().hex
    first, second = (client.get("/health").headers["X-Request-ID"] for _ in range(2))
    assert first != second


@pytest.mark.parametrize("status", [404, 422, 413])
def test_error_responses_carry_the_request_id(client: httpx.Client, status: int) -> None:
    headers = {"X-Request-ID": f"err-{status}"}
    if status == 404:
        response = client.get("/products/missing", headers=headers)
    elif status == 422:
        response = client.get("/search", params={"q": "x", "offset": "-1"}, headers=headers)
    else:  # over api.max_upload_bytes: answered by the upload limit middleware, before any route
        big = png_bytes(product_image(0, size=200))
        assert len(big) > MAX_UPLOAD
        response = client.post("/search/image", files={"file": ("big.png", big, "image/png")}, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["X-Request-ID"] == f"err-{status}"


def test_log_lines_carry_the_request_id_also_from_the_worker_thread(client: httpx.Client,
                                                                    log_lines: io.StringIO) -> None:
    response = client.get("/search", params={"q": "green wool scarf"}, headers={"X-Request-ID": "trace-1"})
    assert response.status_code == 200
    client.get("/metrics")  # a later request: its line comes after, so the search's lines are all written
    records = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    mine = [r for r in records if r.get("request_id") == "trace-1"]
    # the search service's line is logged in the thread pool that runs the plain-def route
    assert any(r["logger"] == "search.service" for r in mine), records
    [access] = [r for r in mine if r["logger"] == "vitrine.access"]
    assert access["method"] == "GET" and access["path"] == "/search" and access["status"] == 200
    assert access["route"] == "/search" and access["duration_ms"] > 0 and access["client"].startswith("127.0.0.1:")
    assert "green" not in access["message"] and "q=" not in json.dumps(access)  # no query string: shoppers' words


def test_metrics_need_a_key_when_not_public(shop: Settings) -> None:
    settings = shop.model_copy(update={"auth": shop.auth.model_copy(update={"api_keys": [SecretStr("k-1")],
                                                                           "public_metrics": False})})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401 and refused.headers["X-Request-ID"]
        assert http.get("/metrics", headers={"X-API-Key": "k-1"}).status_code == 200


def test_docs_list_every_metric() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "observability.md").read_text(encoding="utf-8")
    names = {metric.name for metric in REGISTRY.collect() if metric.name.startswith("vitrine_")}
    assert len(names) >= 13 and all(f"`{name}" in docs for name in names), sorted(n for n in names
                                                                                 if f"`{n}" not in docs)
    assert "`vitrine_last_index_job_rows" in docs


def test_an_unexpected_error_is_answered_500_with_the_id_and_logged_with_it(shop: Settings,
                                                                           log_lines: io.StringIO) -> None:
    app = create_app(shop)

    def boom() -> None:
        raise RuntimeError("internal detail")

    app.add_api_route("/boom", boom)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        before = scrape(http)
        # on a connection of its own: uvicorn closes the connection once an exception escaped the app
        response = httpx.get(f"{url}/boom", headers={"X-Request-ID": "boom-1"}, timeout=60)
        after = scrape(http)
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "boom-1"
    assert response.json()["error"]["type"] == "InternalError" and "internal detail" not in response.text
    assert grew(before, after, "vitrine_http_requests_total", method="GET", route="/boom", status="500") == 1
    records = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    [error] = [r for r in records if r["logger"] == "api.errors"]
    assert error["request_id"] == "boom-1" and "RuntimeError: internal detail" in error["exc_info"]
