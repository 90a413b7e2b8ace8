"""API keys and CORS over HTTP (real uvicorn), on the tiny catalog.

Checked: generation and imagine answer 401 without a key, with a wrong key and with a key of the wrong case, and
pass with each configured key (from the environment list and from the key file); ``rerank=true`` is keyed while a
plain search stays public; with ``auth.public_search`` false every read route is keyed but ``/health`` and
``/ready`` are not; a bad key file stops the app at start-up; keys never reach the logs; CORS preflights from an
allowed origin are answered and from another origin are not; ``/capabilities`` names the keyed features.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from common.errors import ConfigError
from common.settings import Settings
from embed import Encoder
from tests.unit.api.http_helpers import Catalog, fill_store, png_bytes, product_image, running, wait_ready

ENV_KEYS = ("vk-env-Alpha-0123456789", "vk-env-Beta-9876543210")
FILE_KEY = "vk-file-Gamma-5555555555"
KEYS = (*ENV_KEYS, FILE_KEY)
WRONG = {"no key": None, "wrong key": "vk-env-Alpha-0123456780", "wrong case": ENV_KEYS[0].upper(),
         "empty": "", "a prefix": ENV_KEYS[0][:-1], "longer": ENV_KEYS[0] + "0"}
ORIGIN = "https://shop.example"
PRODUCT = "shoe-1"
UPLOAD = {"file": ("p.png", png_bytes(product_image(0, size=64)), "image/png")}
COLOUR = {"instruction": "the same in red", "seed": "1"}


def key_file(folder: Path, *keys: str) -> Path:
    path = folder / "keys.txt"
    path.write_text("# API keys of the shop\n\n" + "".join(f"  {key}  \n# old key removed\n" for key in keys),
                    encoding="utf-8")
    return path


def keyed_settings(catalog: Catalog, folder: Path, monkeypatch: pytest.MonkeyPatch, **auth: Any) -> Settings:
    """Two keys from VITRINE_AUTH__API_KEYS, one from a key file, and ``auth`` settings."""
    monkeypatch.setenv("VITRINE_AUTH__API_KEYS", ",".join(ENV_KEYS))
    return Settings(home=catalog.home, auth={"api_keys_file": key_file(folder, FILE_KEY), **auth})


def headers(key: str | None) -> dict[str, str]:
    return {} if key is None else {"X-API-Key": key}


def assert_refused(response: httpx.Response, *, given: str | None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    error = response.json()["error"]
    assert error["type"] == "Unauthorized"
    assert "X-API-Key" in error["message"]
    if given:
        assert given not in response.text and "not a valid key" in error["message"]
    else:
        assert "needs an API key" in error["message"]


@pytest.fixture
def home(tmp_path: Path, tiny_encoder: Encoder) -> Catalog:
    """A catalog of its own, for a second server beside the module's (one server opens an embedded store)."""
    fill_store(Settings(home=tmp_path / "home"), tiny_encoder)
    return Catalog(home=tmp_path / "home", encoder_name=tiny_encoder.name)


@pytest.fixture(scope="module")
def client(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Keys set, search public, rerank keyed, one CORS origin."""
    with pytest.MonkeyPatch.context() as patch:
        settings = keyed_settings(catalog, tmp_path_factory.mktemp("keys"), patch, cors_origins=ORIGIN)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        yield http


COSTLY: list[tuple[str, dict[str, Any]]] = [
    ("/generate/variants", {"json": {"product_id": PRODUCT, "instruction": "the same in red"}}),
    ("/generate/variants/image", {"files": UPLOAD, "data": COLOUR}),
    ("/search/imagine", {"json": {"product_id": PRODUCT, "instruction": "the same in red"}}),
    ("/search/imagine/image", {"files": UPLOAD, "data": COLOUR}),
]


@pytest.mark.parametrize("path, request_args", COSTLY, ids=[path for path, _ in COSTLY])
@pytest.mark.parametrize("case", WRONG)
def test_costly_routes_refuse_without_a_valid_key(client: httpx.Client, path: str, request_args: dict[str, Any],
                                                  case: str) -> None:
    given = WRONG[case]
    assert_refused(client.post(path, headers=headers(given), **request_args), given=given)


@pytest.mark.parametrize("key", KEYS, ids=["env 1", "env 2", "file"])
def test_each_configured_key_is_accepted(client: httpx.Client, key: str) -> None:
    made = client.post("/generate/variants/image", headers=headers(key), files=UPLOAD, data=COLOUR)
    assert made.status_code == 200, made.text
    assert made.json()["backend"] == "recolor"
    found = client.post("/search/imagine/image", headers={"x-api-key": key}, files=UPLOAD, data=COLOUR)
    assert found.status_code == 200, found.text  # the header's name is not case-sensitive
    # Past the key check: the tiny catalog's products have no preview to vary (422, not 401).
    assert client.post("/generate/variants", headers=headers(key), json=COSTLY[0][1]["json"]).status_code == 422


def test_rerank_is_keyed_but_plain_search_is_public(client: httpx.Client) -> None:
    assert client.get("/search", params={"q": "shoes"}).status_code == 200
    assert client.post("/search", json={"q": "shoes"}).status_code == 200
    assert client.post("/search/image", files=UPLOAD).status_code == 200
    assert client.get("/search", params={"q": "shoes", "rerank": "false"}).status_code == 200
    for given in (None, "not-a-key"):
        assert_refused(client.get("/search", params={"q": "shoes", "rerank": "true"}, headers=headers(given)),
                       given=given)
        assert_refused(client.post("/search", json={"q": "shoes", "rerank": True}, headers=headers(given)),
                       given=given)
        assert_refused(client.post("/search/image", params={"rerank": "true"}, files=UPLOAD,
                                   headers=headers(given)), given=given)
    refused = client.get("/search", params={"q": "shoes", "rerank": "true"}).json()["error"]["message"]
    assert refused.startswith("rerank=true needs an API key") and "auth.public_rerank" in refused
    for key in KEYS:  # no re-ranker is configured: the first-stage order comes back, with the reason
        body = client.get("/search", params={"q": "shoes", "rerank": "true"}, headers=headers(key)).json()
        assert body["reranked"] is False, body
        assert client.post("/search", json={"q": "shoes", "rerank": True}, headers=headers(key)).status_code == 200


def test_capabilities_name_the_keyed_features(client: httpx.Client) -> None:
    body = client.get("/capabilities").json()
    assert body["keyed"] == ["generate", "rerank"]


def test_cors_preflight_from_an_allowed_origin(client: httpx.Client) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key, content-type"}
    allowed = client.options("/generate/variants", headers={"Origin": ORIGIN, **asked})
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    simple = client.get("/search", params={"q": "shoes"}, headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()

    other = client.options("/generate/variants", headers={"Origin": "https://evil.example", **asked})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    simple_other = client.get("/search", params={"q": "shoes"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple_other.headers


def test_without_cors_origins_no_cors_headers(home: Catalog) -> None:
    with running(create_app(Settings(home=home.home))) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        preflight = http.options("/search", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers
        response = http.get("/search", params={"q": "shoes"}, headers={"Origin": ORIGIN})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
        body = http.get("/capabilities").json()
        assert body["keyed"] == []
        # Auth off: generation is open.
        assert http.post("/generate/variants/image", files=UPLOAD, data=COLOUR).status_code == 200


READ_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/search", {"params": {"q": "shoes"}}),
    ("POST", "/search", {"json": {"q": "shoes"}}),
    ("POST", "/search/image", {"files": UPLOAD}),
    ("GET", f"/products/{PRODUCT}", {}),
    ("GET", f"/products/{PRODUCT}/similar", {}),
    ("POST", "/recommend", {"json": {"positive": [PRODUCT]}}),
    ("GET", "/facets", {"params": {"field": "category"}}),
    ("GET", "/stats", {}),
    ("GET", "/images/" + "0" * 64 + "/thumb.webp", {}),
    ("GET", "/generated/" + "0" * 64 + "-0.png", {}),
    ("GET", "/", {}),
    ("GET", "/static/app.js", {}),
    ("GET", "/capabilities", {}),
]


def test_closed_search_keys_the_read_routes_but_not_the_probes(
    home: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = keyed_settings(home, tmp_path, monkeypatch, public_search=False, public_rerank=True)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200
        for method, path, args in READ_ROUTES:
            for given in (None, ENV_KEYS[1].lower()):
                assert_refused(http.request(method, path, headers=headers(given), **args), given=given)
            passed = http.request(method, path, headers=headers(FILE_KEY), **args)
            assert passed.status_code in (200, 404), (method, path, passed.text)  # 404: no such image
        # public_rerank: re-ranking needs no more than the read key
        assert http.get("/search", params={"q": "shoes", "rerank": "true"},
                        headers=headers(ENV_KEYS[0])).status_code == 200
        assert http.get("/capabilities", headers=headers(ENV_KEYS[0])).json()["keyed"] == ["generate"]


@pytest.mark.parametrize("case", ["missing", "empty", "only comments", "a folder", "not utf-8", "a space"])
def test_a_bad_key_file_stops_the_app_at_start_up(tmp_path: Path, case: str) -> None:
    secret = "vk-secret-in-the-file"
    path = tmp_path / "keys.txt"
    if case == "empty":
        path.write_text("")
    elif case == "only comments":
        path.write_text(f"# {secret}\n\n   \n")
    elif case == "a folder":
        path.mkdir()
    elif case == "not utf-8":
        path.write_bytes(secret.encode() + b"\xff\xfe\n")
    elif case == "a space":
        path.write_text(f"good-key\n{secret} with a space\n")
    with pytest.raises(ConfigError) as raised:
        create_app(Settings(home=tmp_path, auth={"api_keys_file": path}))
    message = str(raised.value)
    assert "auth.api_keys_file" in message and str(path) in message
    assert secret not in message and "good-key" not in message


def test_a_key_that_cannot_go_in_a_header_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.api_keys, key 2: .*printable ASCII") as raised:
        create_app(Settings(home=tmp_path, auth={"api_keys": ["fine-key", "clé-secrète"]}))
    assert "clé" not in str(raised.value) and "fine-key" not in str(raised.value)


def test_keys_never_reach_the_logs(home: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = [value for value in WRONG.values() if value]
    settings = keyed_settings(home, tmp_path, monkeypatch, cors_origins=ORIGIN)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        wait_ready(http)
        for given in (*KEYS, *wrong):
            http.post("/generate/variants/image", headers=headers(given), files=UPLOAD, data=COLOUR)
            http.get("/search", params={"q": "shoes", "rerank": "true"}, headers=headers(given))
            http.post("/search", json={"q": "shoes", "rerank": True}, headers=headers(given))
            http.get("/capabilities", headers={"Origin": ORIGIN, **headers(given)})
    # The test's own HTTP client (httpx, httpcore) logs on this side of the wire; the server's records are the rest.
    server = [record for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))]
    assert any(record.getMessage() == "auth: 3 API key(s); search public; rerank keyed" for record in server)
    assert any("refused: rerank=true (invalid key)" in record.getMessage() for record in server)
    text = "\n".join(f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in server)
    for value in (*KEYS, *wrong):
        assert value not in text, value


def test_auth_off_warns_at_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="api.auth")
    create_app(Settings(home=tmp_path))
    warnings = [record for record in caplog.records if record.name == "api.auth"]
    assert [record.levelno for record in warnings] == [logging.WARNING]
    assert warnings[0].getMessage().startswith("auth off: no API keys set (auth.api_keys)")


def test_the_openapi_schema_documents_the_key(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    operation = schema["paths"]["/generate/variants"]["post"]
    assert operation["security"] == [{"ApiKey": []}]
    assert "401" in operation["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]
