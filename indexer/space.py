"""Free space for the embedded store: checked before the job writes, so a full disk is a clear error.

The embedded engine (qdrant-edge) maps its files into memory and grows them as it writes: creating a collection
takes about 50 MiB (the write-ahead log's 32 MiB segment among them), and every new log segment 32 MiB more. A
write into a mapped file on a full disk does not fail with an error: the kernel kills the process (SIGBUS). So
the job checks the store's folder before it opens the collection and before each batch it writes, and stops
with `DiskFull`, which names the folder and the space, while everything written so far is still whole.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from common.errors import BackendUnavailable

logger = logging.getLogger(__name__)

MIN_FREE_BYTES = 96 * 1024 * 1024
"""Free space the embedded store's folder must have before a write: a new collection (about 50 MiB) or a new
write-ahead log segment (32 MiB), with room to spare."""


class DiskFull(BackendUnavailable):
    """The disk of the store's folder has too little free space to write safely."""


def check_free_space(folder: Path, *, need: int = MIN_FREE_BYTES) -> None:
    """Raise `DiskFull` when the file system of ``folder`` (or of its nearest existing parent) has less than
    ``need`` bytes free; a file system that cannot be asked is let through (the write will say what is wrong).

    Raises:
        DiskFull: too little free space; the message names the folder, the space free and the space needed.
    """
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as e:
        logger.debug("cannot ask the free space of %s: %s", probe, e)
        return
    if free < need:
        raise DiskFull(f"no space left on the device of the store folder {str(folder)!r}: {free / 2**20:.0f} MiB "
                       f"free, the embedded store needs {need / 2**20:.0f} MiB free to write safely; free some "
                       "space (or set VITRINE_HOME to a larger disk) and run the same command again: the job "
                       "resumes where it stopped")
