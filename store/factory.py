"""`open_store`: the store backend the settings ask for; `open_async_reader`: its async client, if it has one."""

from __future__ import annotations

import logging

from common.settings import Settings
from store.protocol import AsyncVectorReader, VectorStore

logger = logging.getLogger(__name__)


def open_store(settings: Settings) -> VectorStore:
    """Open the vector store named by ``settings.store.url``.

    - unset: Qdrant's embedded engine (qdrant-edge) in ``settings.store_dir``;
    - ``http://...`` or ``https://...``: a Qdrant server through qdrant-client;
    - ``:memory:`` or ``path:DIR``: qdrant-client's local mode (a stand-in for a server, for tests).

    Construction is cheap: embedded collections open (and lock) on first use, and a server is contacted
    on the first request.

    Raises:
        BackendUnavailable: the embedded store folder cannot be created.
        StoreLocked: a ``path:DIR`` local store is held by another process.
        InvalidInput: an unusable url (``path:`` without a folder).
    """
    url = settings.store.url
    if url is None:
        from store.edge_backend import EdgeStore

        logger.debug("opening the embedded store in %s", settings.store_dir)
        return EdgeStore(settings.store_dir, settings=settings.store)
    from store.qdrant_backend import QdrantServerStore

    logger.debug("opening the qdrant-client store at %s", url)
    return QdrantServerStore(url, settings=settings.store)


def reads_in_process(settings: Settings) -> bool:
    """Whether the store's reads run in this process, holding the GIL while they compute (the embedded engine,
    qdrant-client's local mode), rather than in a Qdrant server."""
    return not _is_server(settings.store.url)


def _is_server(url: str | None) -> bool:
    return url is not None and url.startswith(("http://", "https://"))


def open_async_reader(settings: Settings) -> AsyncVectorReader | None:
    """An async client of the store for searches (`store.qdrant_async.AsyncQdrantReader`) when the store is a
    Qdrant server (``http(s)://...``) and settings ``api.async_store`` is on; None otherwise (the embedded engine
    and qdrant-client's local mode have none). Sends nothing until used."""
    url = settings.store.url
    if not settings.api.async_store or url is None or not _is_server(url):
        return None
    from store.qdrant_async import AsyncQdrantReader

    logger.debug("searches read the Qdrant server at %s through the async client", url)
    return AsyncQdrantReader(url, settings=settings.store)
