"""Logging set-up, called once by entry points (the CLI, the server); library code only gets loggers."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

request_id_var: ContextVar[str | None] = ContextVar("vitrine_request_id", default=None)
"""The id of the HTTP request being answered (set by the API's middleware, `api.observability`); log records
made while answering it carry it. Worker threads of FastAPI's pool see it (they run in a copy of the context)."""

_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "request_id", "request_suffix", "color_message"}
"""Attributes every record has (and uvicorn's ``color_message``, the message with terminal colours); the others
on a record came from ``extra=``."""


def _quiet_root_records(record: logging.LogRecord) -> bool:
    """Drop INFO/DEBUG records logged on the root logger itself.

    Our modules log through named loggers; libraries that call ``logging.info`` directly (open_clip does, on
    every model load) would otherwise clutter the command line at the default INFO level.
    """
    return record.name != "root" or record.levelno >= logging.WARNING


def _with_request_id(record: logging.LogRecord) -> bool:
    """Give the record the current request id (unless ``extra=`` gave one)."""
    if getattr(record, "request_id", None) is None:
        record.request_id = request_id_var.get()
    return True


class TextFormatter(logging.Formatter):
    """``time level logger: message``, and `` [request id]`` while a request is answered."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s%(request_suffix)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        request_id = getattr(record, "request_id", None)
        record.request_suffix = f" [{request_id}]" if request_id else ""
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``request_id`` (while a request is answered), ``exc_info`` (the traceback text), and the fields given with
    ``extra=``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            data["request_id"] = request_id
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in data:
                data[key] = value
        return json.dumps(data, ensure_ascii=False, default=str)


def setup_logging(level: str = "INFO", fmt: Literal["text", "json"] | str = "text", *,
                  stream: TextIO | None = None) -> None:
    """Send log records to stderr, as ``time level logger: message [request id]`` lines or as JSON lines.

    Args:
        level: a logging level name (DEBUG, INFO, WARNING, ERROR).
        fmt: "text", or "json": one object per line (`JsonFormatter`), for log collectors.
        stream: where to write (default stderr).

    Raises:
        ValueError: ``fmt`` is neither "text" nor "json".
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r} is not known; expected 'text' or 'json'")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_quiet_root_records)
    handler.addFilter(_with_request_id)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
