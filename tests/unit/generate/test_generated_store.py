"""The store of generated images: keys, hits, atomic files, and names that cannot reach outside the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from common.errors import InvalidInput, NotFound
from generate.cache import GeneratedStore, key_for


def _images(n: int = 2) -> list[Image.Image]:
    return [Image.new("RGB", (8, 6), (10 * i, 20, 30)) for i in range(n)]


def test_key_is_canonical_and_covers_every_part() -> None:
    key = key_for("abc", "in red", {"n": 1, "seed": 2}, "recolor")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == key_for("abc", "in red", {"seed": 2, "n": 1}, "recolor")  # order does not matter
    others = {key_for("abd", "in red", {"n": 1, "seed": 2}, "recolor"),
              key_for(None, "in red", {"n": 1, "seed": 2}, "recolor"),
              key_for("abc", "in blue", {"n": 1, "seed": 2}, "recolor"),
              key_for("abc", "in red", {"n": 2, "seed": 2}, "recolor"),
              key_for("abc", "in red", {"n": 1, "seed": 2}, "openai:gpt-image-1")}
    assert key not in others and len(others) == 5


def test_put_then_get(tmp_path: Path) -> None:
    store = GeneratedStore(tmp_path / "generated")
    key = key_for("abc", "in red", {}, "recolor")
    assert store.get(key) is None
    names = store.put(key, _images(2), {"prompt": "p", "seed": 3, "backend": "recolor", "took_ms": 12.5})
    assert names == [f"{key}-0.png", f"{key}-1.png"]
    found = store.get(key)
    assert found is not None
    assert found.names == names
    assert found.meta == {"prompt": "p", "seed": 3, "backend": "recolor", "took_ms": 12.5}
    path = store.path(names[1])
    assert path == tmp_path / "generated" / names[1]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.getpixel((0, 0)) == (10, 20, 30)
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == sorted([*names, f"{key}.json"])


def test_a_set_with_a_missing_image_is_no_hit(tmp_path: Path) -> None:
    store = GeneratedStore(tmp_path)
    key = "a" * 64
    names = store.put(key, _images(2), {})
    (tmp_path / names[1]).unlink()
    assert store.get(key) is None


def test_a_broken_sidecar_is_no_hit(tmp_path: Path) -> None:
    store = GeneratedStore(tmp_path)
    key = "b" * 64
    store.put(key, _images(1), {})
    (tmp_path / f"{key}.json").write_text("{not json", encoding="utf-8")
    assert store.get(key) is None
    (tmp_path / f"{key}.json").write_text(json.dumps({"names": ["../../etc/passwd"]}), encoding="utf-8")
    assert store.get(key) is None


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = GeneratedStore(tmp_path)
    key = "c" * 64

    class Broken(Exception):
        pass

    calls = {"n": 0}
    original = Image.Image.save

    def save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Broken("disk full")
        original(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(Broken):
        store.put(key, _images(2), {})
    assert store.get(key) is None  # no sidecar: the half-written set is invisible
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary files left


@pytest.mark.parametrize("name", [
    "../secret.png", "..%2f" + "a" * 64 + "-0.png", "/etc/passwd", "a" * 64 + "-0.png/../../x", "A" * 64 + "-0.png",
    "a" * 63 + "-0.png", "a" * 64 + ".json", "a" * 64 + "-0.jpg", "a" * 64 + "-x.png", "", "a" * 64 + "-0.png\n",
])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="not of the form"):
        GeneratedStore(tmp_path).path(name)


def test_missing_image_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        GeneratedStore(tmp_path).path("d" * 64 + "-0.png")


def test_bad_keys_and_empty_sets_are_refused(tmp_path: Path) -> None:
    store = GeneratedStore(tmp_path)
    with pytest.raises(InvalidInput):
        store.get("../x")
    with pytest.raises(InvalidInput):
        store.put("../" + "a" * 61, _images(1), {})
    with pytest.raises(InvalidInput, match="no images"):
        store.put("e" * 64, [], {})
