"""The OpenAPI schema says the deployment's settings (`api.openapi`), and the framework's own errors answer as the
schema documents: ``Allow`` on a 405 lists every method of the path, a body that cannot be parsed is a 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from common.settings import Settings
from tests.unit.api.http_helpers import running


def schema(tmp_path: Path, **groups: Any) -> dict[str, Any]:
    openapi: dict[str, Any] = create_app(Settings(home=tmp_path / "home", **groups)).openapi()
    return openapi


def parameter(openapi: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    found = next(p for p in openapi["paths"][path][method]["parameters"] if p["name"] == name)
    parameter_schema: dict[str, Any] = found["schema"]
    return parameter_schema


def test_bounds_come_from_the_settings(tmp_path: Path) -> None:
    openapi = schema(tmp_path, search={"max_limit": 50, "max_offset": 500},
                     generate={"max_n": 3, "max_instruction_chars": 80})
    assert parameter(openapi, "/search", "get", "limit")["maximum"] == 50
    assert parameter(openapi, "/search", "get", "offset")["maximum"] == 500
    assert parameter(openapi, "/search", "get", "rerank_top_n")["anyOf"][0]["maximum"] == 50
    assert parameter(openapi, "/products/{product_id}/similar", "get", "limit")["maximum"] == 50
    assert parameter(openapi, "/facets", "get", "limit")["maximum"] == 1000  # not a page size
    bodies = openapi["components"]["schemas"]
    assert bodies["RecommendBody"]["properties"]["limit"]["maximum"] == 50
    assert bodies["ImagineBody"]["properties"]["n"]["maximum"] == 3
    assert bodies["VariantBody"]["properties"]["instruction"]["maxLength"] == 80
    assert bodies["SearchResponse"]["properties"]["limit"].get("maximum") is None  # responses left as they are


def test_security_follows_the_auth_settings(tmp_path: Path) -> None:
    def security(openapi: dict[str, Any]) -> dict[str, Any]:
        return {f"{method} {path}": operation.get("security") for path, operations in openapi["paths"].items()
                for method, operation in operations.items()}

    off = security(schema(tmp_path))
    assert set(off.values()) == {None}
    public = security(schema(tmp_path, auth={"api_keys": ["k1"]}))
    assert public["get /search"] == public["get /products/{product_id}"] == [{}, {"ApiKey": []}]
    assert public["post /generate/variants"] == public["post /search/imagine/image"] == [{"ApiKey": []}]
    assert public["get /health"] is None
    keyed = security(schema(tmp_path, auth={"api_keys": ["k1"], "public_search": False}))
    assert keyed["get /search"] == keyed["get /facets"] == [{"ApiKey": []}]


def test_405_lists_every_method_and_unparsable_bodies_are_422(tmp_path: Path) -> None:
    with running(create_app(Settings(home=tmp_path / "home"))) as url, httpx.Client(base_url=url) as http:
        response = http.request("PUT", "/search")
        assert response.status_code == 405
        assert {"GET", "POST"} <= {m.strip() for m in response.headers["allow"].split(",")}
        response = http.post("/generate/variants", content=b"\xff\xfe{", headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("request body: cannot be parsed")
        response = http.post("/search/image", content=b"x", headers={"content-type": "multipart/form-data"})
        assert response.status_code == 422, response.text
        assert "request body" in response.json()["error"]["message"]
