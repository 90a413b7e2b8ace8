"""`AsyncQdrantReader`: the reads a search needs, as coroutines, on a Qdrant server through ``AsyncQdrantClient``.

Over gRPC when ``settings.prefer_grpc`` (on ``settings.grpc_port``), else REST. Each method has exactly the
semantics and results of `store.qdrant_backend.QdrantServerStore`'s method of the same name: both build their
requests and read their answers with the same functions (`store.qdrant_backend.search_request`, ...), resolve
aliases the same way and map the client's errors the same way (`store._qdrant_util.server_error`).

What a collection is (its dim, whether it has the lexical vector) is read once per name and kept, as the sync store
does. The client's connections belong to the event loop that first used them: use one reader from one loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import numpy as np
from numpy.typing import NDArray
from qdrant_client import AsyncQdrantClient

from common.errors import BackendUnavailable, InvalidInput, VitrineError
from common.settings import StoreSettings
from store._common import check_product_ids, stored_points
from store._qdrant_util import SERVER_ERRORS, server_error, server_name, server_options
from store.protocol import Boost, Filter, StoredPoint
from store.qdrant_backend import (
    alias_target,
    asked_points,
    collection_record,
    has_lexical,
    is_vitrine,
    lexical_score_request,
    lexical_search_request,
    missing_collection,
    retrieve_ids,
    retrieved,
    score_request,
    scores_of,
    search_params,
    search_request,
)


class AsyncQdrantReader:
    """A `store.protocol.AsyncVectorReader` over ``qdrant_client.AsyncQdrantClient`` (a Qdrant server only)."""

    def __init__(self, location: str, *, settings: StoreSettings) -> None:
        """Connect (lazily: no request is sent) to the Qdrant server at ``location`` (``http(s)://...``).

        Raises:
            InvalidInput: ``location`` is not an http(s) URL (the embedded engine and qdrant-client's local mode
                have no async client: use the sync store there).
        """
        if not location.startswith(("http://", "https://")):
            raise InvalidInput(f"store location {location!r}: the async reader reads from a Qdrant server only; "
                               "expected http(s)://host:port")
        self._location = location
        self._where = server_name(location, settings)
        self._settings = settings
        self._collections: dict[str, tuple[int, bool]] = {}  # name -> (dim, has the lexical vector)
        self._closed = False
        self._client = AsyncQdrantClient(**server_options(location, settings))

    def __repr__(self) -> str:
        return f"AsyncQdrantReader({self._where!r})"

    async def search(
        self,
        name: str,
        *,
        vector: NDArray[np.float32],
        using: str,
        limit: int,
        filter: Filter | None = None,
        boosts: Sequence[Boost] = (),
    ) -> list[StoredPoint]:
        """Nearest products to ``vector`` on the named vector ``using``, best first (see
        `QdrantServerStore.search`).

        Raises:
            NotFound: no such collection.
            InvalidQuery: unknown vector name, bad limit, vector of the wrong shape, a bad filter or boost.
            BackendUnavailable: the server cannot be reached or refused the request.
        """
        dim, _ = await self._collection(name)
        request = search_request(vector, dim=dim, using=using, limit=limit, filter=filter, boosts=boosts,
                                 params=search_params(self._settings, exact=False))
        async with self._call(f"searching {name!r}"):
            response = await self._client.query_points(name, **request)
        return stored_points(response.points, with_vectors=False)

    async def lexical_search(
        self, name: str, *, text: str, limit: int, filter: Filter | None = None
    ) -> list[StoredPoint]:
        """Products sharing words with ``text``, best BM25 score first (see `QdrantServerStore.lexical_search`).

        Raises:
            InvalidQuery: bad limit or filter.
            NotFound: no such collection.
        """
        request = lexical_search_request(text, limit=limit, filter=filter)
        if request is None or not (await self._collection(name))[1]:
            return []
        async with self._call(f"searching {name!r} by words"):
            response = await self._client.query_points(name, **request)
        return stored_points(response.points, with_vectors=False)

    async def score(
        self, name: str, *, vector: NDArray[np.float32], using: str, product_ids: Sequence[str]
    ) -> dict[str, float]:
        """Exact cosine of ``vector`` with the ``using`` vector of each listed product (see
        `QdrantServerStore.score`).

        Raises:
            InvalidQuery: unknown vector name, or a vector of the wrong shape.
            NotFound: no such collection.
        """
        asked = asked_points(product_ids)
        dim, _ = await self._collection(name)
        request = score_request(vector, dim=dim, using=using, asked=asked,
                                params=search_params(self._settings, exact=True))
        if request is None:
            return {}
        async with self._call(f"scoring {len(asked)} products of {name!r}"):
            response = await self._client.query_points(name, **request)
        return scores_of(response.points, asked)

    async def lexical_score(self, name: str, *, text: str, product_ids: Sequence[str]) -> dict[str, float]:
        """BM25 score of ``text`` for each listed product sharing a word with it (see
        `QdrantServerStore.lexical_score`)."""
        asked = asked_points(product_ids)
        request = lexical_score_request(text, asked)
        if request is None or not (await self._collection(name))[1]:
            return {}
        async with self._call(f"scoring {len(asked)} products of {name!r} by words"):
            response = await self._client.query_points(name, **request)
        return scores_of(response.points, asked)

    async def retrieve(
        self, name: str, product_ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Products by id, in the order asked, absent ones left out (see `QdrantServerStore.retrieve`)."""
        asked = check_product_ids(product_ids)
        await self._collection(name)
        if not asked:
            return []
        async with self._call(f"retrieving from {name!r}"):
            records = await self._client.retrieve(name, retrieve_ids(asked), with_payload=True,
                                                  with_vectors=with_vectors)
        return retrieved(records, asked, with_vectors=with_vectors)

    async def close(self) -> None:
        """Close the client's connections; later calls raise `BackendUnavailable`."""
        self._closed = True
        await self._client.close()

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self, what: str) -> AsyncIterator[None]:
        """Turn the client's exceptions into Vitrine's errors, as `QdrantServerStore` does."""
        if self._closed:
            raise BackendUnavailable(f"the store at {self._location} is closed; open it again")
        try:
            yield
        except VitrineError:
            raise
        except SERVER_ERRORS as e:
            error = server_error(e, where=self._where, what=what)
            if error is None:
                raise
            raise error from e

    async def _collection(self, name: str) -> tuple[int, bool]:
        """The dim of the collection behind alias ``name`` (or the version named ``name``) and whether it has the
        lexical vector; read once, then kept.

        Raises:
            NotFound: no such alias or version.
            ConfigError: it carries no Vitrine record.
        """
        known = self._collections.get(name)
        if known is not None:
            return known
        async with self._call(f"describing collection {name!r}"):
            physical = alias_target(await self._client.get_aliases(), name)
            if physical is None and await self._client.collection_exists(name):
                physical = name if is_vitrine((await self._client.get_collection(name)).config) else None
            if physical is None:
                raise missing_collection(name, self._location)
            config = (await self._client.get_collection(physical)).config
            record = collection_record(name, physical, config, where=self._location)
            known = self._collections[name] = (record.dim, has_lexical(config))
        return known
