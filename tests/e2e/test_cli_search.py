"""The ``vitrine`` command line end to end, through real subprocesses.

A handful of generated PNG products are indexed with ``vitrine index`` (tiny random open_clip model) into a
VITRINE_HOME under tmp; then ``vitrine search`` (text, image, both, JSON), ``vitrine info --json`` and
``vitrine serve`` run against it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from common.product import Product
from common.settings import EmbedSettings
from embed import build_encoder
from tests.cli import VITRINE, cli_env, run_vitrine
from tests.sample_products import SHOP_PRODUCTS

pytestmark = pytest.mark.slow

TIMEOUT_S = 300

ROWS = SHOP_PRODUCTS


def run(args: list[str], *, home: Path, cwd: Path, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = run_vitrine(home, *args, env=cli_env(home, VITRINE_INDEXER__WORKERS="0"), cwd=cwd, timeout=TIMEOUT_S)
    if check is not None:
        assert done.returncode == check, (
            f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Path:
    """A folder with catalog.jsonl, its images, and ``home/`` holding the index built by ``vitrine index``."""
    folder = tmp_path_factory.mktemp("shop")
    (folder / "img").mkdir()
    with (folder / "catalog.jsonl").open("w", encoding="utf-8") as out:
        for i, row in enumerate(ROWS):
            pixels = np.random.default_rng(i).integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / "img" / f"{row['id']}.png")
            out.write(json.dumps({**row, "image": f"img/{row['id']}.png"}) + "\n")
    done = run(
        ["index", "catalog.jsonl", "--model", str(tiny_clip_dir), "--no-progress"],
        home=folder / "home",
        cwd=folder,
    )
    assert "indexed" in done.stdout
    return folder


def test_search_prints_a_table_with_the_best_match_first(shop: Path) -> None:
    text = Product.model_validate(ROWS[2]).embedding_text()  # exactly what the text index embedded
    done = run(
        ["search", text, "--w-image", "0", "--w-text", "1", "--w-lexical", "0", "--limit", "3"], home=shop / "home",
        cwd=shop
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:7] == ["#", "score", "relev", "image", "text", "lex", "id"]
    assert lines[1].split()[:2] == ["1", "1.0000"]
    assert "bag-1" in lines[1] and "brown leather bag" in lines[1]
    assert len(lines) == 1 + 3 + 1
    assert lines[-1].startswith("3 result(s) from")


def test_search_by_image_prints_the_apis_json(shop: Path) -> None:
    done = run(
        ["search", "--image", "img/shoe-2.png", "--w-image", "1", "--w-text", "0", "--json"],
        home=shop / "home",
        cwd=shop,
    )
    body = json.loads(done.stdout)
    assert {"results", "took_ms", "total_candidates", "offset", "limit", "weights"} <= set(body)
    top = body["results"][0]
    assert set(top) == {"id", "score", "relevance", "scores", "product", "variants"}
    assert top["id"] == "shoe-2"
    assert top["scores"]["image"] == pytest.approx(1.0, abs=1e-4)
    assert top["product"]["title"] == "white leather sneaker"
    assert "_vitrine" not in top["product"]


def test_search_by_text_and_image_with_filters(shop: Path) -> None:
    filters = ["--category", "shoes", "--no-in-stock", "--filter", "brand=Bolt", "--min-price", "50",
               "--max-price", "100"]  # fmt: skip
    done = run(
        ["search", "leather", "--image", "img/bag-1.png", *filters, "--json"], home=shop / "home", cwd=shop
    )
    assert [hit["id"] for hit in json.loads(done.stdout)["results"]] == ["shoe-2"]


def test_composed_query_with_not_like_and_facets(shop: Path) -> None:
    done = run(["search", "shoe", "--not", "leather", "--like", "shoe-1", "--facet", "category", "--w-lexical", "0",
                "--json"], home=shop / "home", cwd=shop)
    body = json.loads(done.stdout)
    ids = [hit["id"] for hit in body["results"]]
    assert ids[0] == "shoe-1" and ids.index("shoe-1") < ids.index("shoe-2")
    assert body["weights"]["lexical"] == 0 and {f["value"] for f in body["facets"]["category"]} >= {"shoes"}
    table = run(["search", "Acme leather bag", "--facet", "brand"], home=shop / "home", cwd=shop).stdout
    first = table.splitlines()[1]
    assert "bag-1" in first and "1.00" in first  # every word found: lexical 1.00
    assert "brand: Acme" in table
    bad = run(["search", "shoe", "--like", "nope"], home=shop / "home", cwd=shop, check=2)
    assert "'nope'" in bad.stderr


def test_recommend_and_facets(shop: Path) -> None:
    done = run(["recommend", "shoe-1", "--not", "bag-1", "--json"], home=shop / "home", cwd=shop)
    body = json.loads(done.stdout)
    ids = [hit["id"] for hit in body["results"]]
    assert body["source"] == "recommend" and "shoe-1" not in ids and "bag-1" not in ids and ids
    table = run(["recommend", "shoe-1", "--category", "shoes"], home=shop / "home", cwd=shop).stdout
    assert "shoe-2" in table and "recommendation(s)" in table
    assert "'nope'" in run(["recommend", "nope"], home=shop / "home", cwd=shop, check=2).stderr
    counts = json.loads(run(["facets", "category", "--json"], home=shop / "home", cwd=shop).stdout)
    assert {c["value"]: c["count"] for c in counts} == {"shoes": 2, "bags": 1, "hats": 1}
    acme = run(["facets", "brand", "--category", "shoes"], home=shop / "home", cwd=shop).stdout.split()
    assert acme == ["Acme", "1", "Bolt", "1"]
    assert "no payload index" in run(["facets", "title"], home=shop / "home", cwd=shop, check=2).stderr


def test_info_json(shop: Path, tiny_clip_dir: Path) -> None:
    data = json.loads(run(["info", "--json"], home=shop / "home", cwd=shop).stdout)
    assert data["collection"] == "products"
    assert data["count"] == len(ROWS)
    encoder = build_encoder(EmbedSettings(), str(tiny_clip_dir))
    assert data["model"] == encoder.name
    assert data["weights"] == encoder.weights_id and data["weights"].startswith("sha256:")
    assert data["dim"] == 32
    assert data["store"]["location"] == str(shop / "home" / "store")
    assert data["last_job"]["status"] == "done"
    assert data["last_job"]["indexed"] == len(ROWS)
    assert data["auth"]["enabled"] is False and data["log_format"] == "text" and data["metrics_path"] == "/metrics"
    assert data["limits"]["search.max_limit"] == 100
    text = run(["info"], home=shop / "home", cwd=shop).stdout
    assert "products     4" in text


def test_info_counts_the_api_keys_without_showing_them(shop: Path) -> None:
    env = cli_env(shop / "home", VITRINE_AUTH__API_KEYS="first-secret,second-secret", VITRINE_LOG_FORMAT="json",
                  VITRINE_AUTH__PUBLIC_METRICS="false")
    as_json, as_text = (run_vitrine(shop / "home", *args, env=env, cwd=shop, timeout=TIMEOUT_S)
                        for args in (["info", "--json"], ["info"]))
    for done in (as_json, as_text):
        assert done.returncode == 0, done.stderr
        assert "secret" not in done.stdout + done.stderr
    data = json.loads(as_json.stdout)
    assert data["auth"]["enabled"] is True and data["auth"]["keys"] == 2 and data["auth"]["public_metrics"] is False
    assert data["log_format"] == "json"
    assert "on, 2 key(s); without a key: search" in as_text.stdout
    assert "GET /metrics (with an API key)" in as_text.stdout


def test_bad_queries_exit_2_with_the_reason(shop: Path) -> None:
    (shop / "notes.txt").write_text("not a picture", encoding="utf-8")
    cases = [
        ([], "give a query text"),
        (["shoe", "--limit", "0"], "limit: Input should be greater than or equal to 1"),
        (["--image", "notes.txt"], "not an image"),
    ]
    for args, reason in cases:
        done = run(["search", *args], home=shop / "home", cwd=shop, check=2)
        assert reason in done.stderr, (args, done.stderr)


def test_another_model_is_an_encoder_mismatch(shop: Path) -> None:
    done = run(
        ["search", "shoe", "--model", "open_clip:ViT-B-32/random"], home=shop / "home", cwd=shop, check=1
    )
    assert "open_clip:ViT-B-32/random" in done.stderr and "local-dir:" in done.stderr


def test_an_empty_home_says_to_index_first(tmp_path: Path) -> None:
    for args in (["search", "shoe"], ["info"]):
        done = run(args, home=tmp_path / "home", cwd=tmp_path, check=1)
        assert "run `vitrine index CATALOG` first" in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_over_http_and_stops_cleanly(shop: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(VITRINE), "serve", "--port", str(port)],
        cwd=shop,
        env=cli_env(shop / "home"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while True:
                assert server.poll() is None, server.communicate()[0]
                try:
                    if http.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "vitrine serve never became ready"
                time.sleep(0.2)
            assert http.get("/health").json() == {"status": "ok"}
            results = http.get("/search", params={"q": "red running shoe"}).json()["results"]
            assert {hit["id"] for hit in results} == {row["id"] for row in ROWS}
            upload = {"file": ("s.png", (shop / "img" / "hat-1.png").read_bytes(), "image/png")}
            by_image = http.post("/search/image", files=upload, params={"w_image": 1, "w_text": 0}).json()
            assert by_image["results"][0]["id"] == "hat-1"
            assert http.get("/products/bag-1").json()["brand"] == "Acme"
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=60)[0]
    assert server.returncode == 0, output
