"""Weights ids: a short content hash of the files an encoder loads its weights from.

An encoder's name says where its weights come from; for a local folder or file it does not say which weights
are there now. Collections record the id of the weights that built them, so that retraining into the same
folder (``vitrine train --out`` again) is caught instead of comparing new query vectors with old product
vectors. Names that pin their weights (open_clip tags, hub repositories) have the id "".
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

from common.errors import ModelNotFound

_CHUNK = 1 << 20
_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    """sha256 of one file, remembered by (path, size, mtime) for this process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _cache[key] = value
    return value


def files_id(paths: Iterable[Path], *, extra: str = "") -> str:
    """``sha256:`` and 16 hex digits over the names and contents of ``paths`` (in order) and ``extra``.

    Raises:
        ModelNotFound: a file cannot be read; the message names it.
    """
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        try:
            digest.update(f"{path.name}\0{_file_digest(path)}\0".encode())
        except OSError as e:
            raise ModelNotFound(f"cannot read weights file {str(path)!r}: {e.strerror or e}") from e
    return f"sha256:{digest.hexdigest()[:16]}"


def folder_id(folder: Path, patterns: Iterable[str]) -> str:
    """`files_id` of the files of ``folder`` matching ``patterns`` (sorted by name); "" when there are none."""
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    return files_id(files) if files else ""
