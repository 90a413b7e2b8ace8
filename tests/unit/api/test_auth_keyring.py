"""`api.auth.KeyRing`: reading keys from settings and a key file, and comparing them."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import pytest

from api.auth import KeyRing, describe, keyed_features, read_key_file
from common.errors import ConfigError
from common.settings import AuthSettings, Settings


def test_the_key_file_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# shop keys\n\n  key-one  \n\t# indented comment\nkey-two\r\nkey-one\n", encoding="utf-8")
    assert read_key_file(path) == ["key-one", "key-two", "key-one"]


def test_keys_from_the_list_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys"
    path.write_text("from-file\n")
    monkeypatch.setenv("VITRINE_AUTH__API_KEYS", " env-1 , env-2,,")
    ring = KeyRing.from_settings(Settings(auth={"api_keys_file": path}).auth)
    assert ring.enabled and len(ring) == 3
    assert all(ring.accepts(key) for key in ("env-1", "env-2", "from-file"))
    assert not ring.accepts(" env-1") and not ring.accepts("ENV-1") and not ring.accepts("env-1,env-2")
    assert "env-1" not in repr(ring) and repr(ring) == "KeyRing(3 key(s))"


def test_no_keys_is_auth_off() -> None:
    ring = KeyRing.from_settings(AuthSettings())
    assert not ring.enabled and len(ring) == 0
    assert not ring.accepts("") and not ring.accepts(None) and not ring.accepts("anything")
    assert keyed_features(ring, AuthSettings()) == []
    level, message = describe(ring, AuthSettings())
    assert level == logging.WARNING and message.startswith("auth off")


def test_accepts_compares_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing(["first", "second", "third"])
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("api.auth.hmac.compare_digest", counting)
    for given in ("first", "third", "none of them", "f"):
        calls.clear()
        ring.accepts(given)
        assert len(calls) == 3, given  # no early exit on a match
        assert {len(a) for a, _ in calls} == {32} and {len(b) for _, b in calls} == {32}  # digests, not keys
    assert ring.accepts("first") and ring.accepts("third") and not ring.accepts("f")


def test_duplicate_keys_count_once() -> None:
    assert len(KeyRing(["a-key", "a-key", "b-key"])) == 2


def test_describe_and_keyed_features() -> None:
    ring = KeyRing(["k1", "k2"])
    assert describe(ring, AuthSettings()) == (logging.INFO, "auth: 2 API key(s); search public; rerank keyed")
    closed = AuthSettings(public_search=False, public_rerank=True)
    assert describe(ring, closed) == (logging.INFO, "auth: 2 API key(s); search keyed; rerank public")
    assert keyed_features(ring, AuthSettings()) == ["generate", "rerank"]
    assert keyed_features(ring, closed) == ["generate"]


@pytest.mark.parametrize("content, expected", [
    (b"", "holds no API key"),
    (b"# only a comment\n\n", "holds no API key"),
    (b"\xff\xfesecret\n", "not UTF-8"),
    (b"good\nsec ret\n", "line 2: an API key must be printable ASCII"),
    (b"good\nsecret\x07\n", "line 2: an API key must be printable ASCII"),
])
def test_bad_key_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "keys"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as raised:
        KeyRing.from_settings(AuthSettings(api_keys_file=path))
    assert "setting auth.api_keys_file" in str(raised.value) and str(path) in str(raised.value)
    rest = str(raised.value).replace(str(path), "")  # the test's folder is named after its parameters
    assert "secret" not in rest and "good" not in rest


def test_a_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "keys"
    with pytest.raises(ConfigError, match=r"cannot read the file \(No such file or directory\)"):
        KeyRing.from_settings(AuthSettings(api_keys_file=path))
