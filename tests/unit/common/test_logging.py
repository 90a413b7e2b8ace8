"""Log set-up: text and JSON lines, the request id of the request being answered, ``extra=`` fields."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from contextvars import copy_context

import pytest

from common.logging import request_id_var, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after the test (setup_logging replaces them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_hold_time_level_logger_message_and_extra_fields(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)
    logging.getLogger("vitrine.test").info("answered %s", "GET /x", extra={"status": 200, "duration_ms": 1.5})
    logging.getLogger("vitrine.test").debug("not shown at INFO")
    [line] = lines_of(out)
    record = json.loads(line)
    assert record["level"] == "INFO" and record["logger"] == "vitrine.test"
    assert record["message"] == "answered GET /x"
    assert record["status"] == 200 and record["duration_ms"] == 1.5
    assert record["ts"].endswith("+00:00") and "T" in record["ts"]  # ISO 8601, UTC
    assert "request_id" not in record  # no request being answered


def test_json_lines_carry_the_request_id_and_the_traceback(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)

    def answer() -> None:
        request_id_var.set("req-42")
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logging.getLogger("vitrine.test").exception("failed")

    copy_context().run(answer)  # as a request's task does: the id does not leak to this context
    logging.getLogger("vitrine.test").warning("after")
    first, second = (json.loads(line) for line in lines_of(out))  # one line each, newlines escaped
    assert first["request_id"] == "req-42"
    assert first["exc_info"].startswith("Traceback") and "ValueError: bad\nvalue" in first["exc_info"]
    assert "request_id" not in second and request_id_var.get() is None


def test_a_thread_started_in_a_copy_of_the_context_logs_with_the_id(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", stream=out)

    def answer() -> None:
        request_id_var.set("req-7")
        worker = threading.Thread(target=copy_context().run,
                                  args=(logging.getLogger("vitrine.worker").info, "in the worker"))
        worker.start()
        worker.join()

    copy_context().run(answer)
    assert json.loads(lines_of(out)[0])["request_id"] == "req-7"


def test_text_lines_end_with_the_request_id_in_brackets(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", stream=out)

    def answer() -> None:
        request_id_var.set("abc123")
        logging.getLogger("vitrine.test").info("with id")

    copy_context().run(answer)
    logging.getLogger("vitrine.test").info("without id")
    with_id, without = lines_of(out)
    assert with_id.endswith(" INFO vitrine.test: with id [abc123]")
    assert without.endswith(" INFO vitrine.test: without id")


def test_an_unknown_format_is_refused_by_name(restore_logging: None) -> None:
    with pytest.raises(ValueError, match=r"'xml'.*'text' or 'json'"):
        setup_logging("INFO", "xml")
