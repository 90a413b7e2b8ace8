"""The store across processes: a store held by another process is refused clearly, and a writer killed
with ``kill -9`` in the middle of its upserts loses nothing it had acknowledged.

Runs for the embedded engine (qdrant-edge) and for qdrant-client's ``path:`` local mode.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.errors import StoreLocked
from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import IMAGE, TEXT, PointWrite, VectorStore
from store.qdrant_backend import QdrantServerStore

ROOT = Path(__file__).resolve().parents[2]
DIM = 16
ENC = "tiny-encoder"


def open_store(kind: str, folder: Path) -> VectorStore:
    """The store of backend ``kind`` (edge or path) in ``folder``."""
    if kind == "edge":
        return EdgeStore(folder, settings=StoreSettings())
    return QdrantServerStore(f"path:{folder}", settings=StoreSettings())


def child_main(kind: str, folder: Path, mode: str) -> None:
    """The child process (this file run as a script: ``KIND FOLDER hold|write``).

    ``hold`` opens the collection, prints ``ready`` and waits for stdin to close. ``write`` upserts batches
    of 20 products forever and, after each upsert returns, prints the ids it wrote (one line per batch),
    so the parent knows what was acknowledged.
    """
    store = open_store(kind, folder)
    store.ensure_collection("products", encoder=ENC, dim=DIM)
    if mode == "hold":
        print("ready", flush=True)
        sys.stdin.read()
        store.close()
        return
    rng = np.random.default_rng(0)
    batch = 0
    while True:
        ids = [f"b{batch}-{i}" for i in range(20)]
        vectors = rng.standard_normal((20, 2, DIM)).astype(np.float32)
        store.upsert("products", [PointWrite(pid, {"batch": batch}, {IMAGE: v[0], TEXT: v[1]})
                                  for pid, v in zip(ids, vectors, strict=True)])
        print(" ".join(ids), flush=True)
        batch += 1


def spawn(kind: str, folder: Path, mode: str) -> subprocess.Popen[str]:
    """Start this file as a child process in ``mode`` on ``folder``."""
    return subprocess.Popen([sys.executable, __file__, kind, str(folder), mode], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kind", ["edge", "path"])
def test_store_held_by_another_process_is_locked(kind: str, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    child = spawn(kind, folder, "hold")
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", child.stderr
        with pytest.raises(StoreLocked) as err:
            store = open_store(kind, folder)
            store.collection_info("products")
        assert str(folder) in str(err.value) and "vitrine serve" in str(err.value)
    finally:
        child.communicate(timeout=30)  # closes stdin: the child closes its store and exits
    assert child.returncode == 0
    store = open_store(kind, folder)
    try:
        assert store.collection_info("products").encoder == ENC
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["edge", "path"])
def test_kill_9_mid_upserts_loses_nothing_acknowledged(kind: str, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    child = spawn(kind, folder, "write")
    assert child.stdout is not None
    acked: list[str] = []
    for _ in range(25):
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "child exited"
        acked += line.split()
    child.send_signal(signal.SIGKILL)
    # the rest of stdout, through the same buffered reader (communicate() would skip what it buffered):
    # every line printed before the kill was acknowledged too
    acked += child.stdout.read().split()
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    store = open_store(kind, folder)
    try:
        stored = [p.product_id for p in store.scroll("products", fields=["batch"])]
        assert store.count("products") == len(stored) == len(set(stored))
        assert set(acked) <= set(stored)
        last = max(int(pid.split("-")[0][1:]) for pid in acked)
        assert all(int(pid.split("-")[0][1:]) <= last + 1 for pid in stored)  # at most the batch in flight
        got = store.retrieve("products", acked[-20:], with_vectors=True)
        assert len(got) == 20 and all(set(p.vectors) == {IMAGE, TEXT} for p in got)
        store.upsert("products", [PointWrite("after", {}, {IMAGE: np.ones(DIM, np.float32)})])
        assert store.count("products") == len(stored) + 1
    finally:
        store.close()


if __name__ == "__main__":
    child_main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
