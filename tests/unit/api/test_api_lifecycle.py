"""Loading in the background, readiness, failures to load, and the settings dependency, over real HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.deps import get_settings
from api.wiring import Components, open_search, store_location
from common.errors import StoreLocked
from common.settings import Settings
from embed.protocol import Encoder
from store.factory import open_store
from tests.unit.api.http_helpers import Catalog, fill_store, running, wait_ready


def test_health_answers_at_once_and_ready_is_503_until_loaded(catalog: Catalog) -> None:
    release = threading.Event()

    def gated(settings: Settings) -> Components:
        release.wait(60)
        return open_search(settings)

    app = create_app(Settings(home=catalog.home), loader=gated)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        loading = http.get("/ready")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        busy = http.get("/search", params={"q": "shoe"})
        assert busy.status_code == 503
        assert busy.json()["error"]["type"] == "BackendUnavailable"
        assert "still loading" in busy.json()["error"]["message"]
        assert http.get("/products/shoe-1").status_code == 503

        release.set()
        body = wait_ready(http)
        assert body["status"] == "ready"
        assert http.get("/search", params={"q": "shoe"}).status_code == 200


def test_an_explicit_model_that_is_not_the_collections_is_a_mismatch(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    store = open_store(Settings(home=tmp_path))
    store.ensure_collection("products", encoder="open_clip:ViT-B-32/laion2b_s34b_b79k", dim=32)
    store.close()
    settings = Settings(home=tmp_path, embed={"model": str(tiny_clip_dir)})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = wait_ready(http, expect=503)
        assert body["status"] == "failed"
        reason = str(body["reason"])
        assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in reason and str(tiny_clip_dir) in reason
        response = http.get("/search", params={"q": "shoe"})
        assert response.status_code == 409
        assert response.json()["error"]["type"] == "EncoderMismatch"


def test_a_missing_collection_says_to_index_first(tmp_path: Path) -> None:
    with running(create_app(Settings(home=tmp_path))) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = wait_ready(http, expect=503)
        assert body["status"] == "failed"
        assert "collection 'products' does not exist" in str(body["reason"])
        assert "vitrine index" in str(body["reason"])
        response = http.get("/search", params={"q": "shoe"})
        assert response.status_code == 503
        assert "vitrine index" in response.json()["error"]["message"]


def test_a_server_started_before_indexing_becomes_ready_once_indexed(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    settings = Settings(home=tmp_path)
    app = create_app(settings, retry_s=0.2)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert wait_ready(http, expect=503)["status"] == "failed"  # nothing indexed yet
        fill_store(settings, tiny_encoder)  # the failed load released the embedded store
        deadline = time.monotonic() + 60
        while (response := http.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert response.status_code == 200, response.json()
        assert http.get("/search", params={"q": "shoe"}).status_code == 200


def test_a_wrong_model_is_not_retried(tmp_path: Path, tiny_clip_dir: Path) -> None:
    store = open_store(Settings(home=tmp_path))
    store.ensure_collection("products", encoder="open_clip:ViT-B-32/laion2b_s34b_b79k", dim=32)
    store.close()
    settings = Settings(home=tmp_path, embed={"model": str(tiny_clip_dir)})
    with running(create_app(settings, retry_s=0.0)) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert wait_ready(http, expect=503)["status"] == "failed"
        time.sleep(0.3)
        assert http.get("/ready").json()["status"] == "failed"  # no new attempt started


def test_the_collections_encoder_is_used_when_the_model_is_not_set(catalog: Catalog) -> None:
    settings = Settings(home=catalog.home)
    assert "model" not in settings.embed.model_fields_set  # default "demo" is not the collection's encoder
    components = open_search(settings)
    try:
        assert components.service.encoder.name == catalog.encoder_name
    finally:
        components.close()


def test_tests_can_override_the_settings_dependency(catalog: Catalog) -> None:
    app = create_app(Settings(home=catalog.home))
    app.dependency_overrides[get_settings] = lambda: Settings(home=catalog.home, search={"max_limit": 2})
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        assert http.get("/search", params={"q": "bag", "limit": 2}).status_code == 200
        response = http.get("/search", params={"q": "bag", "limit": 3})
        assert response.status_code == 422
        assert "largest page size 2" in response.json()["error"]["message"]


def test_the_store_is_held_while_serving_and_released_on_shutdown(catalog: Catalog) -> None:
    settings = Settings(home=catalog.home)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        with pytest.raises(StoreLocked):
            open_search(settings)
    components = open_search(settings)  # free again once the server stopped
    components.close()


def test_an_explicit_model_equal_to_the_collections_is_accepted(
    catalog: Catalog, tiny_clip_dir: Path
) -> None:
    by_option = open_search(Settings(home=catalog.home), model=str(tiny_clip_dir))
    by_option.close()
    by_setting = open_search(
        Settings(home=catalog.home, embed={"model": f"open_clip:local-dir:{tiny_clip_dir}"})
    )
    assert by_setting.service.encoder.name == catalog.encoder_name
    by_setting.close()


def test_store_location_names_the_backend_without_secrets(tmp_path: Path) -> None:
    assert store_location(Settings(home=tmp_path)) == {
        "backend": "qdrant-edge (embedded)",
        "location": str(tmp_path / "store"),
    }
    server = Settings(home=tmp_path, store={"url": "http://qdrant:6333", "api_key": "s3cret"})
    assert store_location(server) == {"backend": "qdrant-client (server)", "location": "http://qdrant:6333"}
    assert store_location(Settings(home=tmp_path, store={"url": ":memory:"}))["backend"] == (
        "qdrant-client (local mode)"
    )
