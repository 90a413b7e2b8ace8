"""Thumbnails and previews: sizes, no upscaling, flattening, atomic files, keys that cannot leave the folder."""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from pathlib import Path

import pytest
from PIL import Image

from common.errors import ConfigError, InvalidInput
from common.settings import load_settings
from common.thumbnails import SIZES, ThumbnailStore, url

KEY = hashlib.sha256(b"an image").hexdigest()
OTHER = hashlib.sha256(b"another image").hexdigest()


def store(root: Path, **sizes: int) -> ThumbnailStore:
    return ThumbnailStore(root, **({"thumb_px": 320, "preview_px": 1024, "quality": 82} | sizes))


def read(path: Path) -> Image.Image:
    with Image.open(path) as image:
        assert image.format == ("WEBP" if path.name.endswith("-thumb.webp") else "JPEG")
        image.load()
        return image.copy()


@pytest.mark.parametrize(("size", "thumb", "preview"), [
    ((2000, 1000), (320, 160), (1024, 512)),  # landscape: both scaled down by the long side
    ((900, 3000), (96, 320), (307, 1024)),  # portrait
    ((600, 400), (320, 213), (600, 400)),  # between the two sizes: the preview keeps the original size
    ((48, 30), (48, 30), (48, 30)),  # small: never upscaled
])
def test_sizes_follow_the_long_side_and_never_upscale(tmp_path: Path, size: tuple[int, int],
                                                     thumb: tuple[int, int], preview: tuple[int, int]) -> None:
    thumbs = store(tmp_path)
    thumbs.write(KEY, Image.new("RGB", size, (10, 120, 200)))
    assert read(thumbs.path(KEY, "thumb")).size == thumb
    made = read(thumbs.path(KEY, "preview"))
    assert made.size == preview and made.mode == "RGB"
    assert made.getpixel((made.width // 2, made.height // 2)) == pytest.approx((10, 120, 200), abs=6)


def test_the_files_are_where_the_key_says(tmp_path: Path) -> None:
    thumbs = store(tmp_path)
    assert thumbs.path(KEY, "thumb") == tmp_path / KEY[:2] / f"{KEY}-thumb.webp"
    assert thumbs.path(KEY, "preview") == tmp_path / KEY[:2] / f"{KEY}-preview.jpg"
    assert url(KEY, "thumb") == f"/images/{KEY}/thumb.webp"
    assert url(KEY, "preview") == f"/images/{KEY}/preview.jpg"
    assert SIZES == ("thumb", "preview")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_on_white(tmp_path: Path, mode: str) -> None:
    picture = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # transparent left half
    picture.paste((200, 0, 0, 255) if mode != "LA" else (90, 90, 90, 255), (20, 0, 40, 20))
    if mode == "LA":
        picture = picture.convert("LA")
    elif mode == "P":
        picture = picture.convert("P")
        picture.info["transparency"] = picture.getpixel((0, 0))
    thumbs = store(tmp_path)
    thumbs.write(KEY, picture)
    made = read(thumbs.path(KEY, "thumb"))
    assert made.mode == "RGB"
    assert made.getpixel((5, 10)) == pytest.approx((255, 255, 255), abs=6)
    assert made.getpixel((35, 10)) != pytest.approx((255, 255, 255), abs=6)


def test_has_needs_every_size_and_urls_name_the_ones_there(tmp_path: Path) -> None:
    thumbs = store(tmp_path)
    assert not thumbs.has(KEY) and thumbs.urls(KEY) == {}
    thumbs.write(KEY, Image.new("RGB", (64, 64)))
    assert thumbs.has(KEY) and not thumbs.has(OTHER)
    assert thumbs.urls(KEY) == {"thumb": url(KEY, "thumb"), "preview": url(KEY, "preview")}
    thumbs.path(KEY, "preview").unlink()
    assert not thumbs.has(KEY) and thumbs.urls(KEY) == {"thumb": url(KEY, "thumb")}
    thumbs.path(KEY, "preview").write_bytes(b"")  # an empty file (a crash before the data reached the disk)
    assert not thumbs.has(KEY)
    for not_a_key in (None, 3, "x", KEY.upper(), {"image": KEY}):
        assert thumbs.urls(not_a_key) == {}


@pytest.mark.parametrize("key", ["", "abc", KEY.upper(), KEY[:-1], KEY + "0", "../" + KEY[3:], f"{KEY[:60]}/../",
                                 "..", f"{KEY[:63]}\n", f"{KEY[:63]}\0"])
def test_a_key_that_is_not_a_hash_is_refused_by_name(tmp_path: Path, key: str) -> None:
    thumbs = store(tmp_path)
    for call in (lambda: thumbs.path(key, "thumb"), lambda: thumbs.has(key), lambda: url(key, "thumb"),
                 lambda: thumbs.write(key, Image.new("RGB", (8, 8)))):
        with pytest.raises(InvalidInput, match="image key") as caught:
            call()
        assert repr(key) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", ["", "full", "THUMB", "../thumb", "thumb.webp"])
def test_an_unknown_size_is_refused_by_name(tmp_path: Path, size: str) -> None:
    with pytest.raises(InvalidInput, match=r"image size .*expected one of \['thumb', 'preview'\]") as caught:
        store(tmp_path).path(KEY, size)  # type: ignore[arg-type]
    assert repr(size) in str(caught.value)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    thumbs = store(tmp_path)
    thumbs.write(KEY, Image.new("RGB", (64, 64), (0, 255, 0)))
    before = {size: thumbs.path(KEY, size).read_bytes() for size in SIZES}

    def half_then_full_disk(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"RIFF\0\0")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        thumbs.write(KEY, Image.new("RGB", (64, 64), (255, 0, 0)))
    with pytest.raises(OSError, match="No space left"):
        thumbs.write(OTHER, Image.new("RGB", (64, 64), (255, 0, 0)))
    monkeypatch.undo()
    assert {size: thumbs.path(KEY, size).read_bytes() for size in SIZES} == before
    assert not thumbs.has(OTHER)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == sorted([f"{KEY}-thumb.webp", f"{KEY}-preview.jpg"])


def test_readers_never_see_half_a_file_while_writers_replace_it(tmp_path: Path) -> None:
    thumbs = store(tmp_path, thumb_px=64, preview_px=256)
    pictures = [Image.effect_noise((350, 250), sigma) for sigma in (20, 120)]
    thumbs.write(KEY, pictures[0])
    stop = threading.Event()
    problems: list[str] = []

    def write(picture: Image.Image) -> None:
        while not stop.is_set():
            thumbs.write(KEY, picture)

    writers = [threading.Thread(target=write, args=(picture,)) for picture in pictures]
    for thread in writers:
        thread.start()
    try:
        for _ in range(60):
            try:
                made = read(thumbs.path(KEY, "preview"))
                if made.size != (256, 183):
                    problems.append(f"size {made.size}")
            except Exception as e:
                problems.append(repr(e))
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    assert problems == []
    assert [p.name for p in (tmp_path / KEY[:2]).iterdir() if p.suffix == ".tmp"] == []


def test_from_settings_and_pickling(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", images={"thumb_px": 100, "preview_px": 400, "quality": 70})
    thumbs = ThumbnailStore.from_settings(settings)
    assert thumbs == ThumbnailStore(tmp_path / "home" / "images", thumb_px=100, preview_px=400, quality=70)
    assert pickle.loads(pickle.dumps(thumbs)) == thumbs
    elsewhere = load_settings(home=tmp_path / "home", images={"dir": str(tmp_path / "shared")})
    assert ThumbnailStore.from_settings(elsewhere).root == tmp_path / "shared"
    with pytest.raises(ConfigError, match="thumb_px 900 is larger than preview_px 512"):
        load_settings(images={"thumb_px": 900, "preview_px": 512})
    with pytest.raises(ValueError, match="quality 0"):
        ThumbnailStore(tmp_path, quality=0)


def png_bytes(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def jpeg(size: tuple[int, int], *, orientation: int | None = None, mode: str = "RGB") -> bytes:
    picture = Image.new(mode, size, (200, 30, 30) if mode == "RGB" else (0, 200, 200, 10))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    picture.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def test_a_small_upright_jpeg_is_its_own_preview(tmp_path: Path) -> None:
    thumbs = store(tmp_path)
    original = jpeg((1000, 800))
    assert thumbs.copies_as_preview(original)
    assert thumbs.draft_size(original, 224) == 320  # decoded at the thumbnail's size, not the preview's
    thumbs.write(KEY, Image.open(io.BytesIO(original)), original=original)
    assert thumbs.path(KEY, "preview").read_bytes() == original
    assert read(thumbs.path(KEY, "thumb")).size == (320, 256)


@pytest.mark.parametrize(("data", "why"), [
    (jpeg((2000, 1500)), "larger than the preview"),
    (jpeg((800, 600), orientation=6), "rotated by its EXIF"),
    (jpeg((800, 600), mode="CMYK"), "not RGB"),
    (png_bytes(Image.new("RGB", (800, 600), (1, 2, 3))), "not a JPEG"),
    (b"\xff\xd8 broken", "unreadable"),
])
def test_other_originals_are_encoded_again(tmp_path: Path, data: bytes, why: str) -> None:
    thumbs = store(tmp_path)
    assert not thumbs.copies_as_preview(data), why
    assert thumbs.draft_size(data, 224) == 1024
    assert thumbs.draft_size(data, None) is None


def test_an_encoded_again_preview_follows_the_settings(tmp_path: Path) -> None:
    thumbs = store(tmp_path)
    original = jpeg((2000, 1500))
    thumbs.write(KEY, Image.open(io.BytesIO(original)), original=original)
    assert thumbs.path(KEY, "preview").read_bytes() != original
    assert read(thumbs.path(KEY, "preview")).size == (1024, 768)
