"""Running the real ``vitrine`` console script in a child process, with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The console script installed beside the interpreter running the tests (``.venv/bin/vitrine``).
VITRINE = Path(sys.executable).with_name("vitrine")


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any ``VITRINE_*`` variable, then ``VITRINE_HOME=home`` and
    ``settings`` (names as they are, e.g. ``VITRINE_INDEXER__WORKERS="0"``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env["VITRINE_HOME"] = str(home)
    env.update(settings)
    return env


def run_vitrine(home: Path, *args: str | Path, env: dict[str, str] | None = None, log_level: str = "WARNING",
                cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``vitrine --log-level LOG_LEVEL ARGS...`` with ``env`` (default: `cli_env` of ``home``); output captured."""
    return subprocess.run([str(VITRINE), "--log-level", log_level, *map(str, args)],
                          env=env if env is not None else cli_env(home), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
