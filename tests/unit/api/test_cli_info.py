"""``vitrine info``'s summary line of the last index job."""

from __future__ import annotations

import json
from pathlib import Path

from api.cli.info import _auth_line, _job_line, auth_summary, format_info, limits_of
from common.settings import Settings


def test_the_job_line_shows_when_it_was_written_not_a_count() -> None:
    job = {"status": "done", "collection": "products", "started": "2026-11-29T10:00:00+00:00",
           "written": "2026-11-29T10:01:00+00:00", "rows": 5, "indexed": 0, "updated": 450, "seconds": 4.4}
    line = _job_line(job)
    assert line.startswith("done at 2026-11-29T10:01:00+00:00, collection 'products': ")
    assert "450 updated" in line and line.endswith("in 4.4 s")
    assert _job_line({"status": "running", "started": "S"}).startswith("running at S")


def test_auth_shows_how_many_keys_never_the_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# ops\nkey-from-file\n\nkey-two\n", encoding="utf-8")
    settings = Settings(home=tmp_path, auth={"api_keys": "secret-one", "api_keys_file": keys,
                                             "public_metrics": False, "cors_origins": "https://shop.example"})
    auth = auth_summary(settings)
    assert auth == {"enabled": True, "keys": 3, "public_search": True, "public_rerank": False,
                    "public_metrics": False, "cors_origins": ["https://shop.example"]}
    assert auth_summary(Settings(home=tmp_path))["enabled"] is False
    line = _auth_line(auth)
    assert line == "on, 3 key(s); without a key: search"
    assert "secret" not in json.dumps(auth) and "key-two" not in json.dumps(auth)


def test_an_unreadable_key_file_is_shown_not_raised(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, auth={"api_keys_file": tmp_path / "missing.txt"})
    auth = auth_summary(settings)
    assert auth["enabled"] is True and auth["keys"] is None
    assert "missing.txt" in auth["error"] and _auth_line(auth).startswith("keys unreadable: ")


def test_the_text_shows_limits_logs_and_the_metrics_path(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, log_format="json", api={"max_body_bytes": 2048}, search={"max_limit": 50})
    limits = limits_of(settings)
    assert limits["api.max_body_bytes"] == 2048 and limits["search.max_limit"] == 50
    assert set(limits) >= {"api.max_upload_bytes", "search.max_offset", "indexer.max_image_pixels",
                           "generate.max_concurrency"}
    data = {"collection": "products", "physical": "products_1", "count": 3, "model": "demo", "weights": None,
            "dim": 64, "store": {"backend": "edge", "location": "/x"}, "collections": ["products_1"],
            "last_job": None, "auth": auth_summary(settings), "limits": limits, "log_format": "json",
            "metrics_path": "/metrics"}
    lines = dict(line.split(None, 1) for line in format_info(data).splitlines())
    assert lines["auth"] == "off (no API keys set)" and lines["cors"] == "same origin only"
    assert "api.max_body_bytes 2048" in lines["limits"] and "search.max_limit 50" in lines["limits"]
    assert lines["logs"] == "json (settings log_format)" and lines["metrics"] == "GET /metrics"


def test_info_shows_the_collections_quantization(tmp_path: Path) -> None:
    from api.cli.info import describe
    from store.factory import open_store

    settings = Settings(home=tmp_path, store={"quantization": "int8", "quantization_quantile": 0.98})
    store = open_store(settings)
    try:
        store.ensure_collection("products", encoder="demo", dim=8)
    finally:
        store.close()
    data = describe(Settings(home=tmp_path, store={"quantization": "none"}))  # the collection keeps its own
    assert data["quantization"] == "int8 (quantile 0.98, quantized vectors in RAM, originals on disk)"
    lines = dict(line.split(None, 1) for line in format_info(data).splitlines())
    assert lines["quantization"] == data["quantization"]
