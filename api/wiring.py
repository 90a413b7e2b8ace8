"""Composition: open the store, check the collection, build the encoder that built it, make the service.

Shared by the HTTP app and the ``vitrine search`` command, so both pick the encoder the same way:

- by default, the encoder named in the collection (the one that built it);
- when the user names a model explicitly (``--model`` or ``VITRINE_EMBED__MODEL`` / the TOML file, i.e.
  ``settings.embed.model_fields_set`` holds ``"model"``), that model, which must be the collection's:
  anything else raises `EncoderMismatch` rather than comparing vectors of two different spaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PIL import Image

from api.reranking import Reranking
from common.errors import EncoderMismatch, NotFound
from common.images import decode_image
from common.netfetch import FetchPolicy, SafeClient
from common.settings import Settings
from common.thumbnails import ThumbnailStore
from common.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary
from embed import Encoder, build_encoder
from search.service import SearchService
from store.factory import open_store, reads_in_process
from store.protocol import CollectionInfo, VectorStore

logger = logging.getLogger(__name__)


def store_location(settings: Settings) -> dict[str, str]:
    """Which store backend the settings select and where it is (no secrets)."""
    url = settings.store.url
    if url is None:
        return {"backend": "qdrant-edge (embedded)", "location": str(settings.store_dir)}
    if url == ":memory:" or url.startswith("path:"):
        return {"backend": "qdrant-client (local mode)", "location": url}
    return {"backend": "qdrant-client (server)", "location": url}


def explicit_model(settings: Settings, model: str | None = None) -> str | None:
    """The encoder the user named explicitly (``--model`` first, then settings), or None."""
    if model:
        return model
    return settings.embed.model if "model" in settings.embed.model_fields_set else None


def open_collection(store: VectorStore, settings: Settings, collection: str | None = None) -> CollectionInfo:
    """The collection's info.

    Raises:
        NotFound: the collection does not exist; the message says to run ``vitrine index`` first.
    """
    name = collection or settings.store.collection
    try:
        return store.collection_info(name)
    except NotFound as e:
        where = store_location(settings)
        raise NotFound(
            f"collection {name!r} does not exist in {where['backend']} at {where['location']!r}; run "
            "`vitrine index CATALOG` first (or set VITRINE_HOME / VITRINE_STORE__URL to where it was indexed)"
        ) from e


def collection_encoder(info: CollectionInfo, settings: Settings, model: str | None = None) -> Encoder:
    """The encoder to search ``info``'s collection with (built, not loaded).

    Raises:
        EncoderMismatch: an explicitly named model is not the one that built the collection.
        ConfigError: the model name is malformed.
    """
    wanted = explicit_model(settings, model)
    if wanted is None:
        return build_encoder(settings.embed, info.encoder)
    encoder = build_encoder(settings.embed, wanted)
    if encoder.name != info.encoder:
        raise EncoderMismatch(
            f"model {wanted!r} (encoder {encoder.name!r}) was asked for, but collection {info.name!r} was "
            f"built with encoder {info.encoder!r}; drop the model option to use {info.encoder!r}, or "
            "re-index the catalog with the new model"
        )
    return encoder


class UrlImageLoader:
    """Fetches query image URLs under the address policy (`common.netfetch`) and decodes them."""

    def __init__(self, settings: Settings) -> None:
        self._client = SafeClient(FetchPolicy.from_settings(settings.fetch),
                                  headers={"User-Agent": "vitrine-query/0.1", "Accept": "image/*"})
        self._max_pixels = settings.indexer.max_image_pixels

    def __call__(self, url: str) -> Image.Image:
        """The decoded RGB image at ``url``.

        Raises:
            InvalidInput: a refused or unreachable URL, or bytes that are not a supported image.
        """
        return decode_image(self._client.fetch(url), max_pixels=self._max_pixels, source=url)

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._client.close()


@dataclass
class Components:
    """What a search front end holds: the open store, the service over it, and its URL fetcher."""

    store: VectorStore
    service: SearchService
    loader: UrlImageLoader | None = None
    reranking: Reranking | None = None
    """The re-ranker searches may ask for (None: not set up, as in ``vitrine search`` without ``--rerank``)."""

    def close(self) -> None:
        """Release the store (files, connections), the query encoding worker and the re-ranker's threads."""
        self.service.close()
        if self.reranking is not None:
            self.reranking.close()
        if self.loader is not None:
            self.loader.close()
        self.store.close()


def refresh_search(components: Components, settings: Settings) -> None:
    """After a re-index switched the collection's alias: the search service takes up the new version (its
    description, calibration and recorded tag vocabulary; see `SearchService.refresh`)."""
    service = components.service
    service.refresh(load_tag_vocabulary(settings, components.store.collection_info(service.collection)))


def load_tag_vocabulary(settings: Settings, info: CollectionInfo) -> Vocabulary | None:
    """The tag vocabulary queries are boosted with: the file of settings tags.vocabulary when set, otherwise the
    one the collection was tagged with (recorded by `vitrine index`), if any.

    Raises:
        InvalidInput: the file is missing or malformed, or the recorded vocabulary cannot be read.
    """
    path = settings.tags.vocabulary
    if path is not None:
        return load_vocabulary(path)
    return parse_vocabulary(info.tags, source=f"the vocabulary recorded with collection {info.name!r}") \
        if info.tags else None


def open_search(settings: Settings, *, model: str | None = None, collection: str | None = None,
                rerank: bool = True) -> Components:
    """Open the store and build a ready search service (encoder loaded).

    Args:
        settings: all settings (store location, embed device, search defaults).
        model: an explicit encoder name (``--model``), overriding ``settings.embed.model``.
        collection: the collection to search (default: ``settings.store.collection``).
        rerank: also build and load the re-ranker of settings ``rerank`` (when its backend is not ``none``); one
            that fails to load is logged and leaves search without re-ranking (see `api.reranking`).

    Raises:
        NotFound: the collection does not exist.
        EncoderMismatch: an explicit model differs from the collection's.
        StoreLocked: the embedded store is held by another process.
        ModelNotFound: the encoder's weights cannot be found.
    """
    store = open_store(settings)
    try:
        info = open_collection(store, settings, collection)
        encoder = collection_encoder(info, settings, model)
        encoder.load()
        loader = UrlImageLoader(settings)
        service = SearchService(encoder=encoder, store=store, settings=settings.search, collection=info.name,
                                vocabulary=load_tag_vocabulary(settings, info), tag_boost=settings.tags.boost,
                                image_loader=loader,
                                thumbnails=ThumbnailStore.from_settings(settings) if settings.images.thumbnails
                                else None, embed_settings=settings.embed, gate_reads=reads_in_process(settings))
    except BaseException:
        store.close()
        raise
    logger.info("search ready: collection %r (%d products), encoder %s", info.name, info.count, encoder.name)
    reranking = Reranking.from_settings(settings) if rerank else None
    return Components(store=store, service=service, loader=loader, reranking=reranking)
