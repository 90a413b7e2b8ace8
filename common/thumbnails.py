"""Thumbnails and previews of product images: made at ingestion, served by the API at stable URLs.

Each indexed image gets two files, named by the product's stored image hash (`indexer.state.image_hash`:
sha256 hex of the encoder name and the image bytes, kept in the payload under ``_vitrine.image``):

* ``thumb``: WebP, long side at most ``thumb_px`` (default 320), for result grids: small to ship;
* ``preview``: JPEG, long side at most ``preview_px`` (default 1024), for product pages, re-rankers and
  generation: fast to make. (WebP at this size costs 25-50 ms of encoding per image, which made image
  preparation, not the model, the bottleneck of ingestion on 2 cores; JPEG takes 4 ms. See docs/benchmarks.md.)

A small original is never upscaled. Both are RGB (transparency flattened on white). They live in
``root/<key[:2]>/<key>-thumb.webp`` and ``<key>-preview.jpg`` and are written atomically (a temporary file in
the same folder, then ``os.replace``), so concurrent writers and readers never see half a file. Since the key
is a content hash, a URL (`url`) always names the same picture and can be cached for good; a changed image gets
a new key.

The files are made with the sizes and quality in effect when they are written: changing those settings
does not redo existing files (delete the folder and run ``vitrine index`` again to remake them all).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

from PIL import Image

from common.errors import InvalidInput
from common.images import to_rgb

if TYPE_CHECKING:
    from common.settings import Settings

logger = logging.getLogger(__name__)

Size = Literal["thumb", "preview"]
SIZES: Final[tuple[Size, ...]] = get_args(Size)
"""The sizes kept for every image, smallest first."""
EXTENSIONS: Final[dict[Size, str]] = {"thumb": "webp", "preview": "jpg"}
"""The file type of each size (its extension in file names and URLs)."""
MEDIA_TYPES: Final[dict[Size, str]] = {"thumb": "image/webp", "preview": "image/jpeg"}
_PIL_FORMATS: Final[dict[Size, str]] = {"thumb": "WEBP", "preview": "JPEG"}
_KEY = re.compile(r"^[0-9a-f]{64}$")
_EXIF_ORIENTATION = 0x0112
_WEBP_METHOD = 2
"""libwebp's speed/size trade-off (0 fastest .. 6 smallest). Measured on a 1024 x 678 photo at quality 82:
method 2 encodes in 40 ms and 120 KB, its default 4 in 100 ms and 115 KB, 6 in 290 ms and 112 KB; a 320-pixel
thumbnail takes 3.5 ms at method 2."""


def check_key(key: object) -> str:
    """``key`` if it is an image hash (64 lowercase hex characters).

    Raises:
        InvalidInput: anything else; the message names the value.
    """
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput(f"image key {key!r} is not an image hash; expected 64 lowercase hexadecimal characters")
    return key


def check_size(size: object) -> Size:
    """``size`` if it is one of `SIZES`.

    Raises:
        InvalidInput: anything else; the message names the value and the sizes.
    """
    for known in SIZES:
        if size == known:
            return known
    raise InvalidInput(f"image size {size!r} is not known; expected one of {list(SIZES)}")


def url(key: str, size: Size) -> str:
    """The API path that serves ``key``'s image of ``size`` (``GET /images/{key}/thumb.webp`` or
    ``/preview.jpg``).

    Raises:
        InvalidInput: a bad key or size.
    """
    size = check_size(size)
    return f"/images/{check_key(key)}/{size}.{EXTENSIONS[size]}"


def file_size(file: str) -> Size:
    """The size a file name of a URL names (``thumb.webp``, ``preview.jpg``).

    Raises:
        InvalidInput: any other name; the message lists the known ones.
    """
    for size, extension in EXTENSIONS.items():
        if file == f"{size}.{extension}":
            return size
    known = [f"{size}.{extension}" for size, extension in EXTENSIONS.items()]
    raise InvalidInput(f"image file {file!r} is not known; expected one of {known}")


_URL = re.compile(r"^/images/([0-9a-f]{64})/(?:thumb\.webp|preview\.jpg)$")


def key_of_url(path: str | None) -> str | None:
    """The image key in a path made by `url`; None for anything else (or None)."""
    found = _URL.match(path) if isinstance(path, str) else None
    return found.group(1) if found else None


def _fit(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` scaled down (never up) so that its long side is at most ``long_side``; a new image."""
    width, height = image.size
    scale = long_side / max(width, height)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # bicubic after a box reduction to about twice the size: visually as good for product shots, and a 1000 x 800
    # photo goes to 320 pixels in about 3 ms instead of 16 ms with Lanczos
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


class ThumbnailStore:
    """The folder of thumbnails and previews, keyed by image hash.

    Holds only a path and numbers, so it pickles cheaply into worker processes.

    Args:
        root: the folder (created on the first write).
        thumb_px: long side of ``thumb`` images, pixels.
        preview_px: long side of ``preview`` images, pixels.
        quality: encoding quality of both files (WebP and JPEG), 1-100.

    Raises:
        ValueError: a size under 1 pixel or a quality outside 1-100.
    """

    def __init__(self, root: Path, *, thumb_px: int = 320, preview_px: int = 1024, quality: int = 82) -> None:
        if thumb_px < 1 or preview_px < 1:
            raise ValueError(f"thumbnail sizes must be at least 1 pixel; got thumb_px={thumb_px}, "
                             f"preview_px={preview_px}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality {quality} must be between 1 and 100")
        self.root = Path(root)
        self.thumb_px = thumb_px
        self.preview_px = preview_px
        self.quality = quality

    @classmethod
    def from_settings(cls, settings: Settings) -> ThumbnailStore:
        """The store that settings ``images`` describe (folder: ``images.dir``, default ``<home>/images``)."""
        options = settings.images
        return cls(settings.images_dir, thumb_px=options.thumb_px, preview_px=options.preview_px,
                   quality=options.quality)

    def __repr__(self) -> str:
        return (f"ThumbnailStore({str(self.root)!r}, thumb_px={self.thumb_px}, preview_px={self.preview_px}, "
                f"quality={self.quality})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ThumbnailStore):
            return NotImplemented
        return (self.root, self.thumb_px, self.preview_px, self.quality) == \
            (other.root, other.thumb_px, other.preview_px, other.quality)

    def __hash__(self) -> int:
        return hash((self.root, self.thumb_px, self.preview_px, self.quality))

    def long_side(self, size: Size) -> int:
        """The long side of ``size`` images, pixels."""
        return self.thumb_px if check_size(size) == "thumb" else self.preview_px

    def path(self, key: str, size: Size) -> Path:
        """Where ``key``'s image of ``size`` is (whether or not it exists).

        Raises:
            InvalidInput: a key that is not an image hash, or an unknown size (so no path can leave ``root``).
        """
        key = check_key(key)
        size = check_size(size)
        return self.root / key[:2] / f"{key}-{size}.{EXTENSIONS[size]}"

    def exists(self, key: str, size: Size) -> bool:
        """Whether ``key``'s image of ``size`` is there (a non-empty file).

        Raises:
            InvalidInput: a bad key or size.
        """
        try:
            return self.path(key, size).stat().st_size > 0
        except OSError:
            return False

    def open(self, key: str, size: Size) -> Image.Image:
        """``key``'s image of ``size``, decoded (RGB), for the re-rankers, generation and enrichment.

        Raises:
            InvalidInput: a bad key or size.
            OSError: the file is missing or unreadable.
        """
        with Image.open(self.path(key, size)) as image:
            return image.convert("RGB")

    def has(self, key: str) -> bool:
        """Whether every size of ``key``'s image is there.

        Raises:
            InvalidInput: a bad key.
        """
        return all(self.exists(key, size) for size in SIZES)

    def urls(self, key: object) -> dict[Size, str]:
        """The API path of each size of ``key``'s image that exists; empty when ``key`` is not an image hash
        (e.g. a product without an image: its stored hash is None)."""
        if not isinstance(key, str) or not _KEY.match(key):
            return {}
        return {size: url(key, size) for size in SIZES if self.exists(key, size)}

    def copies_as_preview(self, data: bytes) -> bool:
        """Whether an original file can serve as its own preview, unchanged: a baseline RGB JPEG no larger than the
        preview, upright (no EXIF rotation). Its bytes are then copied instead of decoded at full size and
        encoded again, which is most of what thumbnails cost at ingestion. Reads the header only."""
        try:
            with Image.open(io.BytesIO(data)) as probe:
                orientation = probe.getexif().get(_EXIF_ORIENTATION, 1)
                return (probe.format == "JPEG" and probe.mode == "RGB" and max(probe.size) <= self.preview_px
                        and orientation == 1)
        except Exception:  # unreadable header or EXIF: make the preview the usual way
            return False

    def draft_size(self, data: bytes, model_draft: int | None) -> int | None:
        """The size a JPEG may be draft-decoded to when its thumbnails are made from the decoded image: the
        thumbnail's (its preview is then the original, `copies_as_preview`) or the preview's, and never less
        than the model's own (``model_draft``; None: the model takes full-size images, so no draft)."""
        if model_draft is None:
            return None
        wanted = self.thumb_px if self.copies_as_preview(data) else self.preview_px
        return max(model_draft, wanted)

    def render(self, image: Image.Image) -> dict[Size, Image.Image]:
        """The RGB image of each size made from ``image`` (never larger than it)."""
        rgb = to_rgb(image)
        preview = _fit(rgb, self.preview_px)
        # the thumbnail is made from the preview when that is at least as large (cheaper, same result)
        thumb = _fit(preview if self.preview_px >= self.thumb_px else rgb, self.thumb_px)
        return {"thumb": thumb, "preview": preview}

    def write(self, key: str, image: Image.Image, *, original: bytes | None = None) -> None:
        """Make and store every size of ``key``'s image from ``image``, each file replaced atomically; with the
        ``original`` file's bytes, those become the preview when they can (`copies_as_preview`).

        Raises:
            InvalidInput: a bad key.
            OSError: the files cannot be written (disk full, permissions); no partial file is left behind.
        """
        check_key(key)
        if original is not None and self.copies_as_preview(original):
            self._save(_fit(to_rgb(image), self.thumb_px), self.path(key, "thumb"), "thumb")
            self._save(original, self.path(key, "preview"), "preview")
            return
        for size, picture in self.render(image).items():
            self._save(picture, self.path(key, size), size)

    def _save(self, picture: Image.Image | bytes, target: Path, size: Size) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
        temporary = Path(name)
        try:
            with os.fdopen(handle, "wb") as file:
                if isinstance(picture, bytes):
                    file.write(picture)
                elif size == "thumb":
                    picture.save(file, format=_PIL_FORMATS[size], quality=self.quality, method=_WEBP_METHOD)
                else:
                    picture.save(file, format=_PIL_FORMATS[size], quality=self.quality)
            temporary.chmod(0o644)  # mkstemp makes 0600 files; the API may run as another user
            temporary.replace(target)  # os.replace: atomic within the folder
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
