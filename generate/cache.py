"""Generated images on disk, keyed by what made them; the API serves them at ``/generated/{name}``.

A set of images made by one request lives in one folder (``settings.generated_dir``) as ``<key>-<i>.png``
(PNG: lossless, so that searching with a generated image sees what the model made; a 768-pixel variant is a
few hundred kB) with a JSON sidecar ``<key>.json`` holding the names and the metadata (prompt, seed, backend,
time taken, ...). The key is a SHA-256 over the canonical JSON of the source image's digest, the instruction,
the parameters and the model (`key_for`), so a repeated request finds its images.

Every file is written to a temporary name and renamed into place; the sidecar is written last, so a set is
visible (`GeneratedStore.get`) only once all its images are there. `GeneratedStore.path` accepts only names of
the form ``<64 hex digits>-<number>.png``: nothing else, no path traversal.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from common.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[0-9a-f]{64}-[0-9]{1,4}\.png")
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")


def key_for(source_digest: str | None, instruction: str, params: Mapping[str, Any], model: str) -> str:
    """The cache key (64 hex digits) of a request: SHA-256 over the canonical JSON of its parts.

    Args:
        source_digest: a digest of the source image's bytes; ``None`` for text-to-image.
        instruction: the instruction as given (after stripping).
        params: the other inputs (n, seed, strength, size, ...); JSON-ready values.
        model: the generator's name (backend and model).
    """
    document = {"source": source_digest, "instruction": instruction, "params": dict(params), "model": model}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GeneratedSet:
    """The images of one request, as stored.

    Attributes:
        key: the cache key.
        names: the image file names, in order (serve them as ``/generated/{name}``).
        meta: what the sidecar holds besides the names: prompt, seed, backend, took_ms, ...
    """

    key: str
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def _check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(f"generated-set key {key!r} is not 64 lower-case hex digits")
    return key


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name in the same folder, then rename it to ``path``."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class GeneratedStore:
    """The folder of generated images.

    Args:
        root: the folder (made on the first `put`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, key: str) -> GeneratedSet | None:
        """The stored set under ``key``, or ``None`` when there is none or one of its images is missing.

        Raises:
            InvalidInput: ``key`` is not 64 hex digits.
        """
        sidecar = self.root / f"{_check_key(key)}.json"
        try:
            document = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("generated set %s: unreadable sidecar (%s); making the images again", key, e)
            return None
        names = document.pop("names", None) if isinstance(document, dict) else None
        if not isinstance(names, list) or not names or not all(
                isinstance(name, str) and NAME_PATTERN.fullmatch(name) for name in names):
            logger.warning("generated set %s: sidecar without a valid list of names; making the images again", key)
            return None
        if not all((self.root / name).is_file() for name in names):
            return None
        return GeneratedSet(key, names, document)

    def put(self, key: str, images: Sequence[Image.Image], meta: Mapping[str, Any]) -> list[str]:
        """Store ``images`` as ``<key>-<i>.png`` and the sidecar ``<key>.json`` (names + ``meta``), atomically.

        Returns:
            The names of the images, in order.

        Raises:
            InvalidInput: a bad key, no images, or metadata that is not JSON-ready.
        """
        _check_key(key)
        if not images:
            raise InvalidInput(f"generated set {key}: no images to store")
        self.root.mkdir(parents=True, exist_ok=True)
        names = [f"{key}-{index}.png" for index in range(len(images))]
        try:
            sidecar = json.dumps({**dict(meta), "names": names}, ensure_ascii=False, indent=1).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"generated set {key}: metadata is not JSON-ready: {e}") from e
        for name, image in zip(names, images, strict=True):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            _write_atomic(self.root / name, buffer.getvalue())
        _write_atomic(self.root / f"{key}.json", sidecar)
        return names

    def path(self, name: str) -> Path:
        """The file of a generated image.

        Raises:
            InvalidInput: ``name`` is not ``<64 hex digits>-<number>.png``.
            NotFound: no such image.
        """
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise InvalidInput(f"generated image name {name!r} is not of the form <64 hex digits>-<number>.png")
        path = self.root / name
        if not path.is_file():
            raise NotFound(f"generated image {name!r} does not exist (it may have been cleaned up)")
        return path
