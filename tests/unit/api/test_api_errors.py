"""The error module: one JSON shape, domain errors mapped to statuses, internals never leaked."""

from __future__ import annotations

import pickle

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.errors import INTERNAL_MESSAGE, describe_request_errors, install_error_handlers, status_of
from common.errors import (
    BackendUnavailable,
    ConfigError,
    EncoderMismatch,
    ImageTooLarge,
    InvalidInput,
    InvalidQuery,
    ModelNotFound,
    NotFound,
    Overloaded,
    RequestTooLarge,
    StoreLocked,
    UnsupportedImage,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidInput("x"), 422),
        (InvalidQuery("x"), 422),
        (UnsupportedImage("x"), 415),
        (ImageTooLarge("x"), 413),
        (RequestTooLarge("x"), 413),
        (Overloaded("x"), 429),
        (NotFound("x"), 404),
        (EncoderMismatch("x"), 409),
        (BackendUnavailable("x"), 503),
        (StoreLocked("x"), 503),
        (ModelNotFound("x"), 500),
        (ConfigError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_status_of_each_error(error: Exception, status: int) -> None:
    assert status_of(error) == status


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret at /etc/vitrine/key")

    @app.get("/config")
    def config() -> None:
        raise ConfigError("bad setting with token abc123")

    @app.get("/mismatch")
    def mismatch() -> None:
        raise EncoderMismatch("collection 'p' was built with 'a', searched with 'b'")

    @app.get("/locked")
    def locked() -> None:
        raise StoreLocked("store in use")

    @app.get("/overloaded")
    def overloaded() -> None:
        raise Overloaded("2 jobs running or waiting (VITRINE_GENERATE__MAX_QUEUED)", retry_after=7)

    return app


def test_unexpected_errors_are_500_without_internals() -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        for path in ("/boom", "/config"):
            response = client.get(path)
            assert response.status_code == 500
            assert response.json() == {"error": {"type": "InternalError", "message": INTERNAL_MESSAGE}}


def test_domain_errors_keep_their_type_and_message() -> None:
    with TestClient(make_app()) as client:
        response = client.get("/mismatch")
        assert response.status_code == 409
        assert response.json() == {
            "error": {
                "type": "EncoderMismatch",
                "message": "collection 'p' was built with 'a', searched with 'b'",
            }
        }
        locked = client.get("/locked")
        assert locked.status_code == 503 and locked.headers["retry-after"] == "5"
        overloaded = client.get("/overloaded")
        assert overloaded.status_code == 429 and overloaded.headers["retry-after"] == "7"
        assert overloaded.json()["error"] == {"type": "Overloaded",
                                              "message": "2 jobs running or waiting (VITRINE_GENERATE__MAX_QUEUED)"}


def test_overloaded_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(Overloaded("full", retry_after=9)))
    assert isinstance(error, Overloaded) and str(error) == "full" and error.retry_after == 9


def test_describe_request_errors_names_the_parameter_and_value() -> None:
    errors = [
        {
            "type": "greater_than_equal",
            "loc": ("query", "limit"),
            "msg": "Input should be >= 1",
            "input": "0",
        },
        {"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None},
        {"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error", "input": {}},
    ]
    assert describe_request_errors(errors) == (
        "query parameter 'limit': Input should be >= 1 (got '0'); body field 'file': Field required; "
        "body field '3': JSON decode error"
    )
    assert describe_request_errors([]) == "invalid request"


def test_long_bad_values_are_quoted_cut() -> None:
    errors = [{"type": "string_too_long", "loc": ("query", "q"), "msg": "String should have at most 1000 characters",
               "input": "e" + "\u0301" * 10_000}]
    message = describe_request_errors(errors)
    assert message.startswith("query parameter 'q': String should have at most 1000 characters (got 'e\u0301")
    assert message.endswith("... (cut; 10001 characters in all))") and len(message) < 250
