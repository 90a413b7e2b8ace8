"""``vitrine search --rerank`` in a child process, with the ``openai`` re-ranker talking to the loopback
chat-completions server (the fake model says yes to shoes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from embed import Encoder
from tests.cli import cli_env, run_vitrine
from tests.unit.api.http_helpers import fill_store
from tests.unit.rerank.chat_server import FakeChatServer


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChatServer]:
    with FakeChatServer().running() as server:
        yield server


@pytest.fixture()
def home(tmp_path: Path, tiny_encoder: Encoder) -> Path:
    fill_store(Settings(home=tmp_path), tiny_encoder)
    return tmp_path


def test_search_rerank_from_the_command_line(home: Path, chat: FakeChatServer) -> None:
    env = cli_env(home, VITRINE_RERANK__BACKEND="openai", VITRINE_RERANK__MODEL="fake-vlm",
                  VITRINE_RERANK__BASE_URL=chat.url, VITRINE_RERANK__WEIGHT="1.0")
    done = run_vitrine(home, "search", "leather", "--limit", "4", "--rerank", env=env)
    assert done.returncode == 0, done.stderr
    assert "re-ranked the top 20 with fake-vlm" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()[1:5]]
    assert [row[6] for row in rows[:2]] == ["0.90", "0.90"] and {row[7] for row in rows[:2]} == {"shoe-1", "shoe-2"}
    asked = len(chat.seen)
    assert asked >= 4
    as_json = run_vitrine(home, "search", "leather", "--limit", "4", "--rerank", "--rerank-top-n", "3", "--json",
                          env=env)
    body = json.loads(as_json.stdout)
    assert body["reranked"] is True and body["rerank"]["top_n"] == 3


def test_without_rerank_the_reranker_is_not_built(home: Path) -> None:
    env = cli_env(home, VITRINE_RERANK__BACKEND="transformers", VITRINE_RERANK__MODEL=str(home / "missing"))
    done = run_vitrine(home, "search", "leather", "--limit", "2", env=env)
    assert done.returncode == 0, done.stderr
    assert "re-rank" not in done.stdout


def test_rerank_when_none_is_configured_says_why(home: Path) -> None:
    done = run_vitrine(home, "search", "leather", "--limit", "2", "--rerank")
    assert done.returncode == 0, done.stderr
    assert "not re-ranked: no re-ranker is configured; set VITRINE_RERANK__BACKEND" in done.stdout
    bad = run_vitrine(home, "search", "leather", "--rerank", "--rerank-top-n", "0")
    assert bad.returncode == 2 and "--rerank-top-n 0 must be between 1 and 100" in bad.stderr
