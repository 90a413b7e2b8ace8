"""Fixtures of the store tests: every backend, opened on a fresh location, and reopenable.

``rest`` is `QdrantServerStore` over HTTP, against `tests.qdrant_rest.QdrantRestServer` (Qdrant's REST API served
from qdrant-client's local mode), so the suite also covers what qdrant-client sends to and reads from a server;
``grpc`` is the same store with ``prefer_grpc`` against `tests.qdrant_grpc.QdrantGrpcServer` (its gRPC API)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from common.settings import StoreSettings
from store.edge_backend import EdgeStore
from store.protocol import VectorStore
from store.qdrant_backend import QdrantServerStore
from tests.qdrant_grpc import QdrantGrpcServer
from tests.qdrant_rest import QdrantRestServer

BACKENDS = ("edge", "memory", "path", "rest", "grpc")


@dataclass
class Opener:
    """Opens the store of one backend on one location; a second call reopens the same data (not memory)."""

    kind: str
    folder: Path
    settings: StoreSettings
    server: QdrantRestServer | None = field(default=None, repr=False)  # ``rest``, ``grpc``: started on first call

    @property
    def persistent(self) -> bool:
        """Whether reopening sees what an earlier store wrote."""
        return self.kind != "memory"

    def __call__(self) -> VectorStore:
        """A new store object on this location."""
        if self.kind == "edge":
            return EdgeStore(self.folder, settings=self.settings)
        if self.kind == "memory":
            return QdrantServerStore(":memory:", settings=self.settings)
        if self.kind == "rest":
            if self.server is None:
                self.server = QdrantRestServer(self.folder).start()
            return QdrantServerStore(self.server.url, settings=self.settings)
        if self.kind == "grpc":
            if self.server is None:
                self.server = QdrantGrpcServer(self.folder).start()
            assert isinstance(self.server, QdrantGrpcServer)
            settings = self.settings.model_copy(update={"prefer_grpc": True, "grpc_port": self.server.grpc_port})
            return QdrantServerStore(self.server.url, settings=settings)
        return QdrantServerStore(f"path:{self.folder}", settings=self.settings)

    def stop(self) -> None:
        """Stop the ``rest`` or ``grpc`` backend's server, if one was started."""
        if self.server is not None:
            self.server.stop()


def make_opener(kind: str, folder: Path) -> Opener:
    """An `Opener` of backend ``kind`` in ``folder``."""
    return Opener(kind, folder, StoreSettings())


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Each backend in turn, on a fresh folder."""
    opener = make_opener(str(request.param), tmp_path / "store")
    yield opener
    opener.stop()


@pytest.fixture
def store(opener: Opener) -> Iterator[VectorStore]:
    """An open store of each backend, closed after the test."""
    s = opener()
    yield s
    s.close()


def unit_vectors(n: int, dim: int, *, seed: int) -> NDArray[np.float32]:
    """``n`` random float32 unit vectors (no two equal, so rankings have no ties)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    unit: NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit
