"""The OpenAPI schema as this deployment answers: bounds and auth that come from the settings.

FastAPI writes the schema from the routes' declarations, which are fixed when the modules load; some limits are
settings (``search.max_limit``, ``search.max_offset``, ``generate.max_n``, ``generate.max_instruction_chars``)
and whether an endpoint needs an API key depends on ``auth`` (keys set or not, ``public_search``,
``public_metrics``). `install_openapi` makes ``GET /openapi.json`` say both, so that a client (or a fuzzer:
tests/reliability/test_schemathesis.py) built from the schema sends what the server accepts, and expects a key
only where the server asks for one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api.auth import require_key, require_metrics_key
from common.settings import Settings

SCHEME = "ApiKey"
"""The security scheme of `api.auth` (its ``X-API-Key`` header)."""


def _bounds(settings: Settings) -> dict[str, tuple[str, int]]:
    """Parameter and body field names, and the bound each takes from the settings (keyword, value)."""
    return {
        "limit": ("maximum", settings.search.max_limit),
        "offset": ("maximum", settings.search.max_offset),
        "rerank_top_n": ("maximum", settings.search.max_limit),
        "n": ("maximum", settings.generate.max_n),
        "instruction": ("maxLength", settings.generate.max_instruction_chars),
    }


UNBOUNDED_PATHS = frozenset({"/facets"})
"""Operations whose ``limit`` is not a page size (facets: most values returned, bounded by the route itself)."""


def _bound(schema: dict[str, Any], keyword: str, value: int) -> None:
    """Set ``keyword`` (``maximum`` or ``maxLength``) to at most ``value`` on the schema, or on its non-null
    branches (``anyOf``: an optional value)."""
    branches = schema.get("anyOf", [schema])
    for branch in branches:
        if branch.get("type") == "null":
            continue
        current = branch.get(keyword)
        branch[keyword] = value if current is None else min(current, value)


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _dependency_calls(sub)


def _needs_key(route: APIRoute, settings: Settings, auth_on: bool) -> bool:
    """Whether the route refuses a request without a valid key: `require_key` and `require_metrics_key` are the
    route's own dependencies; the read-only routers get `require_read_key` where `api.app` includes them."""
    calls = set(_dependency_calls(route.dependant))
    if not auth_on:
        return False
    if require_key in calls:
        return True
    if require_metrics_key in calls:
        return not settings.auth.public_metrics
    return not settings.auth.public_search


def document_settings(schema: dict[str, Any], app: FastAPI, settings: Settings) -> dict[str, Any]:
    """``schema`` (FastAPI's, changed in place and returned) with the settings' bounds on the page sizes, offsets,
    re-rank and generation options, and each operation's security as the auth settings make it: a key required,
    optional (the route answers without one; ``rerank=true`` may still need it), or no auth at all (no keys set)."""
    bounds = _bounds(settings)
    components: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    ring = getattr(app.state, "keyring", None)
    auth_on = bool(ring is not None and ring.enabled)
    needs = {(method.lower(), context.path_format): _needs_key(context.original_route, settings, auth_on)
             for context in iter_route_contexts(app.routes) if isinstance(context.original_route, APIRoute)
             for method in context.original_route.methods or ()}
    bodies: set[str] = set()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                bound = bounds.get(parameter["name"])
                if bound and parameter.get("in") in {"query", "path"} and path not in UNBOUNDED_PATHS:
                    _bound(parameter["schema"], *bound)
            for content in operation.get("requestBody", {}).get("content", {}).values():
                ref = content.get("schema", {}).get("$ref", "")
                bodies.add(ref.rsplit("/", 1)[-1])
            if "security" not in operation:
                continue
            if not auth_on:
                operation.pop("security")
            elif not needs.get((method, path), True):
                operation["security"] = [{}, {SCHEME: []}]
    for name in bodies & components.keys():
        for field, property_schema in components[name].get("properties", {}).items():
            bound = bounds.get(field)
            if bound:
                _bound(property_schema, *bound)
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` (``GET /openapi.json``) return the schema `document_settings` writes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_settings(build(), app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
