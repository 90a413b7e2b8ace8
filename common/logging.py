"""Logging set-up, called once by entry points (the CLI, the server); library code only gets loggers."""

from __future__ import annotations

import logging
import sys


def _quiet_root_records(record: logging.LogRecord) -> bool:
    """Drop INFO/DEBUG records logged on the root logger itself.

    Our modules log through named loggers; libraries that call ``logging.info`` directly (open_clip does, on
    every model load) would otherwise clutter the command line at the default INFO level.
    """
    return record.name != "root" or record.levelno >= logging.WARNING


def setup_logging(level: str = "INFO") -> None:
    """Send log records to stderr as ``time level logger: message``.

    Args:
        level: a logging level name (DEBUG, INFO, WARNING, ERROR).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_quiet_root_records)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
