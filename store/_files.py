"""Files of the embedded store: JSON written atomically, the aliases file, and a cross-process lock.

Layout under the store folder::

    aliases.json                       {"format": 1, "aliases": {"products": "products-20250101120000123456"}}
    .lock                              flock held while aliases or collections are created or removed
    collections/<physical>/vitrine.json    the CollectionRecord: alias, encoder name, dim, creation time
    collections/<physical>/shard/          the qdrant-edge shard (segments, WAL)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import BackendUnavailable
from store._common import FORMAT_VERSION

logger = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
COLLECTIONS_DIR = "collections"
RECORD_FILE = "vitrine.json"
SHARD_DIR = "shard"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one, never a part.

    The bytes go to a temporary file in the same folder, are fsynced, and replace ``path`` with
    `os.replace`; the folder is fsynced too so the rename survives a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any:
    """Read a JSON file.

    Raises:
        FileNotFoundError: no such file.
        BackendUnavailable: the file is not valid JSON (names the file).
    """
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BackendUnavailable(f"store file {path} is not valid JSON ({e}); restore it or remove the "
                                 "store folder and index again") from e


def read_aliases(path: Path) -> dict[str, str]:
    """The alias -> physical collection map of an aliases file; empty when the file does not exist.

    Raises:
        BackendUnavailable: the file is corrupt or from a newer Vitrine.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    aliases = data.get("aliases") if isinstance(data, dict) else None
    fmt = data.get("format") if isinstance(data, dict) else None
    if not isinstance(aliases, dict) or not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise BackendUnavailable(f"store file {path} is not a Vitrine aliases file of format <= "
                                 f"{FORMAT_VERSION} (got format {fmt!r})")
    return {str(k): str(v) for k, v in aliases.items()}


def write_aliases(path: Path, aliases: dict[str, str]) -> None:
    """Replace the aliases file atomically."""
    write_json_atomic(path, {"format": FORMAT_VERSION, "aliases": dict(sorted(aliases.items()))})


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder/.lock`` (blocking) while the body runs.

    It serialises changes of aliases and collections between processes sharing a store folder; the
    lock goes away with the process, so a killed writer never leaves it held.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
