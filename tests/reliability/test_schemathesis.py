"""Schemathesis against the OpenAPI schema of the running app, with all its checks.

The app (real uvicorn, in this process) serves a demo index with the offline ``recolor`` generator (so
``/generate/...`` and ``/search/imagine`` make real images), the re-ranker on (the ``openai`` backend talking to a
chat-completions server on loopback) and API keys on (the run sends one). ``schemathesis run`` (its own process)
loads ``/openapi.json`` and runs its phases (examples, coverage, fuzzing, stateful) with
``--checks all``: no server error, every status, content type, header and body as documented, schema-valid
requests accepted and schema-invalid ones refused, ``Allow`` on 405, no ignored auth.
``tests/reliability/schemathesis.toml`` gives real product ids and query words, and the few per-route exceptions
to "schema-valid means accepted", each with its reason.

CI: a fixed seed and a few examples per operation (under two minutes on two cores); ``VITRINE_RELIABILITY=full``:
many more. Figures: requests tried, and their statuses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.app import create_app
from tests.cli import cli_env
from tests.demo_shop import index_demo_subset
from tests.reliability.conftest import FULL, Figures
from tests.unit.api.http_helpers import running, wait_ready
from tests.unit.rerank.chat_server import FakeChatServer

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
PRODUCTS = 200
SEED = 20261130
MAX_EXAMPLES = 200 if FULL else 12
API_KEY = "reliability-schemathesis-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "reliability"
"""Where the run's requests are kept (a HAR file, ``artifacts/reliability/schemathesis.har``), to look into."""


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with FakeChatServer().running() as chat:
        settings = index_demo_subset(
            tmp_path_factory.mktemp("schemathesis"), count=PRODUCTS,
            generate={"backend": "recolor", "size": 256, "max_n": 2},
            rerank={"backend": "openai", "model": "fake-vlm", "base_url": chat.url, "budget_s": 5.0, "retries": 0},
            auth={"api_keys": [API_KEY]},
        )
        with running(create_app(settings)) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                wait_ready(client)
            yield url


def template_pattern(template: str) -> re.Pattern[str]:
    """A path template of the schema as a pattern (``{product_id}`` may hold slashes: its route takes a path)."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join((".+" if part == "{product_id}" else "[^/]+") if part.startswith("{")
                              else re.escape(part) for part in parts))


def operation_of(method: str, url: str, paths: list[tuple[re.Pattern[str], str]]) -> str:
    """``METHOD /path/{template}`` of a request's URL (``METHOD ?`` when no path of the schema matches)."""
    path = urlsplit(url).path
    return f"{method} " + next((template for pattern, template in paths if pattern.fullmatch(path)), "?")


def test_schemathesis_all_checks(base_url: str, tmp_path: Path, figures: Figures) -> None:
    har = ARTIFACTS / "schemathesis.har"
    har.parent.mkdir(parents=True, exist_ok=True)
    har.unlink(missing_ok=True)
    schema = httpx.get(f"{base_url}/openapi.json").json()
    paths = [(template_pattern(template), template) for template in sorted(schema["paths"], key=len, reverse=True)]
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run", f"{base_url}/openapi.json",
        "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
        "--header", f"X-API-Key: {API_KEY}", "--request-timeout", "60", "--report", "har",
        "--report-har-path", str(har), "--suppress-health-check", "too_slow",
    ]
    done = subprocess.run(command, env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert har.exists(), done.stdout[-20_000:] + done.stderr[-5_000:]
    entries = json.loads(har.read_text(encoding="utf-8"))["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    by_operation: dict[str, Counter[int]] = {}
    for entry in entries:
        operation = operation_of(entry["request"]["method"], entry["request"]["url"], paths)
        by_operation.setdefault(operation, Counter())[entry["response"]["status"]] += 1
    figures.add("schemathesis requests", len(entries))
    figures.note(f"schemathesis (seed {SEED}, {MAX_EXAMPLES} examples per operation): {len(entries):,} requests; "
                 "statuses " + ", ".join(f"{status}: {n:,}" for status, n in sorted(statuses.items())))
    unexpected_methods = sum(counts[405] for counts in by_operation.values() if len(counts) == 1)
    for operation, counts in sorted(by_operation.items(), key=lambda item: item[0].split()[::-1]):
        if set(counts) != {405}:
            figures.note(f"  {operation:<40} " + ", ".join(f"{status} x{n}" for status, n in sorted(counts.items())))
    figures.note(f"  {'(methods a path does not take)':<40} 405 x{unexpected_methods}")
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
    assert not any(status >= 500 for status in statuses), statuses
    assert statuses[200] > 0, statuses
