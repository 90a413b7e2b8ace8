"""The embedded store's collections: aliases, collection records and opened qdrant-edge shards.

Layout under the store folder (see `store._files`): ``aliases.json`` maps each alias to a physical
collection ``<alias>-<timestamp>``, whose folder ``collections/<physical>/`` holds ``vitrine.json`` (the
encoder name and dim that built it) and ``shard/`` (the EdgeShard: segments and write-ahead log).

A collection is created in its own new folder, recorded, and only then named in ``aliases.json``
(replaced atomically under a cross-process file lock): a crash leaves at worst an unnamed folder,
never a half-made collection behind an alias. Rebuilding a catalog into a new physical collection and
rewriting its alias swaps it in at once; other processes see the new target on their next call, since
the aliases file is re-read whenever it has been replaced.

A shard is locked (its WAL) by the process that opens it; another process gets `StoreLocked`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import qdrant_edge as qe

from common.errors import BackendUnavailable, InvalidInput, NotFound, StoreLocked, VitrineError
from common.product import FILTERABLE_FIELDS
from common.settings import StoreSettings
from store._common import CollectionRecord, new_record, physical_name, wanted_quantization
from store._files import (
    ALIASES_FILE,
    COLLECTIONS_DIR,
    RECORD_FILE,
    SHARD_DIR,
    folder_lock,
    read_aliases,
    read_json,
    write_aliases,
    write_json_atomic,
)
from store.lexical import LEXICAL
from store.point_cache import PointCache
from store.protocol import IMAGE, VECTOR_NAMES, Quantization

logger = logging.getLogger(__name__)

# Qdrant's default: segments (or filter results) smaller than this many KB are scanned, not searched by HNSW.
FULL_SCAN_THRESHOLD_KB = 10_000
_SCHEMA = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
    "integer": qe.PayloadSchemaType.Integer,
    "bool": qe.PayloadSchemaType.Bool,
}
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,160}$")  # an alias of up to 128 characters + "-" + stamp
LOCKED_HINT = "is `vitrine serve` or another `vitrine index` running on it?"
EDGE_CONFIG_FILE = "edge_config.json"
"""Where qdrant-edge keeps a shard's configuration, in the shard's folder."""


@dataclass(frozen=True)
class EdgeCollection:
    """One opened physical collection."""

    physical: str
    record: CollectionRecord
    shard: qe.EdgeShard
    points: PointCache
    """Products read lately (see `store.point_cache`); `EdgeStore` forgets those it writes."""


class EdgeCollections:
    """The collections of one store folder, opened on first use and kept open until `close`.

    Thread-safe: one lock guards the aliases cache and the opened shards (the shards themselves are
    safe to call from several threads).
    """

    def __init__(self, folder: Path, *, settings: StoreSettings) -> None:
        """Use ``folder`` (created if absent); ``settings`` gives the HNSW parameters of new collections.

        Raises:
            BackendUnavailable: the folder cannot be created.
        """
        self.folder = Path(folder)
        self._settings = settings
        self._lock = threading.RLock()
        self._opened: dict[str, EdgeCollection] = {}
        self._alias_sig: tuple[int, int, int] | None = None
        self._alias_map: dict[str, str] = {}
        self._aliases_path = os.fspath(self.folder / ALIASES_FILE)  # a str: os.stat of a Path costs 5x more
        self.closed = False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"cannot create the store folder {self.folder}: {e}") from e

    @contextlib.contextmanager
    def engine(self, what: str) -> Iterator[None]:
        """Turn qdrant-edge's untyped exceptions raised in the body into `BackendUnavailable`."""
        try:
            yield
        except VitrineError:
            raise
        except Exception as e:
            if self.closed:
                raise BackendUnavailable(f"the store in {self.folder} was closed while {what}") from e
            raise BackendUnavailable(f"embedded store in {self.folder}: {what} failed: {e}") from e

    def names(self) -> list[str]:
        """Every alias, sorted."""
        with self._lock:
            self._check_open()
            return sorted(self._aliases())

    def get(self, name: str) -> EdgeCollection:
        """The collection behind alias ``name`` (or the version named ``name`` itself), opened if needed.

        Raises:
            NotFound: no such alias or version.
            StoreLocked: another process holds the collection open.
        """
        with self._lock:
            self._check_open()
            aliases = self._aliases()
            physical = aliases.get(name)
            if physical is None and self._is_version(name):
                physical = name
            if physical is None:
                raise NotFound(f"no collection {name!r} in the store {self.folder}; "
                               f"it has {sorted(aliases) or 'none'} (run `vitrine index` first)")
            opened = self._opened.get(physical)
            if opened is None:
                opened = self._opened[physical] = self._load(physical)
            return opened

    def get_or_create(self, name: str, *, encoder: str, dim: int, weights: str = "") -> EdgeCollection:
        """The collection behind ``name``, created for ``encoder`` and ``dim`` if absent; indexes ensured."""
        with self._lock:
            try:
                opened = self.get(name)
            except NotFound:
                opened = self._create(name, encoder=encoder, dim=dim, weights=weights)
            self._ensure_indexes(opened)
            if not opened.record.lexical:
                opened = self._add_lexical(opened)
            return opened

    def create_version(self, alias: str, *, encoder: str, dim: int, weights: str = "") -> EdgeCollection:
        """A new, empty version of ``alias`` that the alias does not point at (yet); indexes made."""
        with self._lock:
            self._check_open()
            return self._create(alias, encoder=encoder, dim=dim, weights=weights, point_alias=False)

    def switch(self, alias: str, physical: str) -> str | None:
        """Point ``alias`` at the version ``physical`` (one atomic rewrite of the aliases file, under the
        cross-process lock); return the version it pointed at before, if any.

        Raises:
            NotFound: ``physical`` is not a version of ``alias``.
        """
        with self._lock, folder_lock(self.folder):
            self._check_open()
            record = self._record_of(physical) if self._is_version(physical) else None
            if record is None or record.alias != alias:
                raise NotFound(f"no version {physical!r} of collection {alias!r} in the store {self.folder}; "
                               f"it has {self.versions(alias) or 'none'}")
            aliases = read_aliases(self.folder / ALIASES_FILE)
            previous = aliases.get(alias)
            aliases[alias] = physical
            write_aliases(self.folder / ALIASES_FILE, aliases)
            logger.info("collection %r now points at %s (was %s) in %s", alias, physical, previous, self.folder)
            return previous

    def versions(self, alias: str) -> list[str]:
        """The versions made for ``alias`` (with a record), oldest first."""
        with self._lock:
            self._check_open()
            root = self.folder / COLLECTIONS_DIR
            found = []
            for folder in sorted(root.iterdir()) if root.is_dir() else []:
                record = self._record_of(folder.name) if self._is_version(folder.name) else None
                if record is not None and record.alias == alias:
                    found.append(folder.name)
            return found

    def drop_version(self, physical: str) -> None:
        """Remove the version ``physical`` (nothing happens if absent).

        Raises:
            InvalidInput: an alias points at it.
            StoreLocked: another process holds it open (nothing is removed).
        """
        with self._lock, folder_lock(self.folder):
            self._check_open()
            if not self._is_version(physical):
                return
            users = sorted(a for a, p in read_aliases(self.folder / ALIASES_FILE).items() if p == physical)
            if users:
                raise InvalidInput(f"version {physical!r} is in use by collection {users[0]!r}; switch the "
                                   "collection to another version first, or drop the collection")
            opened = self._opened.pop(physical, None)
            if opened is None:  # opening it proves no other process uses it before its files go
                opened = self._load(physical)
            with self.engine(f"closing {physical}"):
                opened.shard.close()
            shutil.rmtree(self._dir(physical), ignore_errors=True)
            logger.info("dropped version %s from %s", physical, self.folder)

    def drop(self, name: str) -> None:
        """Remove alias ``name`` and its folder; nothing happens if absent.

        Raises:
            StoreLocked: another process holds the collection open (nothing is removed).
        """
        with self._lock, folder_lock(self.folder):
            self._check_open()
            aliases = read_aliases(self.folder / ALIASES_FILE)
            physical = aliases.pop(name, None)
            if physical is None:
                return
            opened = self._opened.pop(physical, None)
            if opened is None:  # opening it proves no other process uses it before its files go
                opened = self._load(physical)
            with self.engine(f"closing {physical}"):
                opened.shard.close()
            write_aliases(self.folder / ALIASES_FILE, aliases)
            if physical not in aliases.values():
                shutil.rmtree(self._dir(physical), ignore_errors=True)
            logger.info("dropped collection %r (%s) from %s", name, physical, self.folder)

    def close(self) -> None:
        """Close every opened shard (releasing its lock); afterwards every call fails."""
        with self._lock:
            self.closed = True
            opened, self._opened = list(self._opened.values()), {}
            for item in opened:
                try:
                    item.shard.close()
                except Exception as e:
                    logger.warning("closing shard %s failed: %s", item.physical, e)

    # -- internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise BackendUnavailable(f"the store in {self.folder} is closed; open it again")

    def _aliases(self) -> dict[str, str]:
        """The aliases file, re-read when it has been replaced (by this or another process)."""
        try:
            st = os.stat(self._aliases_path)  # noqa: PTH116 (every store call asks: a str path is 5x cheaper)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig != self._alias_sig:
            self._alias_map = read_aliases(Path(self._aliases_path)) if sig is not None else {}
            self._alias_sig = sig
        return self._alias_map

    def _dir(self, physical: str) -> Path:
        return self.folder / COLLECTIONS_DIR / physical

    def _is_version(self, name: str) -> bool:
        """Whether ``name`` is a safe folder name whose collection folder has a record."""
        return bool(_VERSION_NAME.match(name)) and (self._dir(name) / RECORD_FILE).is_file()

    def _record_of(self, physical: str) -> CollectionRecord | None:
        """The record of a version (None when unreadable)."""
        try:
            return CollectionRecord.from_dict(read_json(self._dir(physical) / RECORD_FILE), where=physical)
        except (OSError, ValueError):
            return None

    def _load(self, physical: str) -> EdgeCollection:
        folder = self._dir(physical)
        path = folder / RECORD_FILE
        try:
            record = CollectionRecord.from_dict(read_json(path), where=str(path))
        except FileNotFoundError as e:
            raise BackendUnavailable(f"collection folder {folder} has no {RECORD_FILE}; it is incomplete or "
                                     "was moved: restore it or drop the collection and index again") from e
        except ValueError as e:
            raise BackendUnavailable(str(e)) from e
        shard_dir = folder / SHARD_DIR
        return EdgeCollection(physical, record,
                              _open_shard(shard_dir, _pool_config(shard_dir, self._settings.search_threads)),
                              PointCache(self._settings.point_cache))

    def _create(self, name: str, *, encoder: str, dim: int, weights: str,
                point_alias: bool = True) -> EdgeCollection:
        with folder_lock(self.folder):
            if point_alias and name in read_aliases(self.folder / ALIASES_FILE):  # another process made it meanwhile
                return self.get(name)
            physical = physical_name(name)
            folder = self._dir(physical)
            params = edge_vector_params(dim, wanted_quantization(self._settings))
            config = qe.EdgeConfig(
                vectors=dict.fromkeys(VECTOR_NAMES, params),
                sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                hnsw_config=qe.HnswIndexConfig(m=self._settings.hnsw_m,
                                               ef_construct=self._settings.hnsw_ef_construct,
                                               full_scan_threshold=FULL_SCAN_THRESHOLD_KB),
                wal_enabled=True,
                payload_memory=qe.Memory.Cached,  # payload read per result: RAM halves a 100-result search
                max_search_threads=self._settings.search_threads or None,
            )
            record = new_record(name, encoder=encoder, dim=dim, weights=weights)
            opened = EdgeCollection(physical, record, _open_shard(folder / SHARD_DIR, config, create=True),
                                    PointCache(self._settings.point_cache))
            try:
                self._ensure_indexes(opened)
                write_json_atomic(folder / RECORD_FILE, record.as_dict())
                if point_alias:
                    aliases = read_aliases(self.folder / ALIASES_FILE)
                    aliases[name] = physical
                    write_aliases(self.folder / ALIASES_FILE, aliases)
            except BaseException:
                opened.shard.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._opened[physical] = opened
            logger.info("created collection %r (%s, encoder %r, dim %d) in %s", name, physical, encoder, dim,
                        self.folder)
            return opened

    def set_record(self, opened: EdgeCollection, record: CollectionRecord) -> EdgeCollection:
        """Replace a collection's record (atomically, on disk and in the cache)."""
        with self._lock:
            write_json_atomic(self._dir(opened.physical) / RECORD_FILE, record.as_dict())
            updated = self._opened[opened.physical] = replace(opened, record=record)
            return updated

    def _add_lexical(self, opened: EdgeCollection) -> EdgeCollection:
        """Give a collection made before the lexical index its sparse vector (filled as products are written)."""
        with self.engine(f"adding the lexical index to {opened.physical}"):
            opened.shard.update(qe.UpdateOperation.create_sparse_vector(LEXICAL, modifier=qe.Modifier.Idf))
        upgraded = self.set_record(opened, replace(opened.record, lexical=True))
        logger.info("added the lexical index to collection %s; re-index to fill it", opened.physical)
        return upgraded

    def quantization(self, opened: EdgeCollection) -> Quantization:
        """How the collection's dense vectors are compressed, from the engine's own record of its configuration."""
        return read_quantization(self._dir(opened.physical) / SHARD_DIR / EDGE_CONFIG_FILE)

    def ensure_index(self, opened: EdgeCollection, field: str, kind: str) -> None:
        """Index payload ``field`` as ``kind`` (a key of `_SCHEMA`) unless it already is; another kind is replaced."""
        with self.engine(f"creating the payload index of {field!r} in {opened.physical}"):
            existing = opened.shard.info().payload_schema.get(field)
            if existing is None or existing.data_type != _SCHEMA[kind]:
                opened.shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA[kind]))

    def _ensure_indexes(self, opened: EdgeCollection) -> None:
        with self.engine(f"creating the payload indexes of {opened.physical}"):
            existing = opened.shard.info().payload_schema
            for field, kind in FILTERABLE_FIELDS.items():
                if field not in existing:
                    opened.shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA[kind]))


def edge_vector_params(dim: int, quantization: Quantization) -> qe.EdgeVectorParams:
    """The engine's parameters of one dense vector: cosine, quantized and with the originals placed as asked."""
    if quantization.kind == "none":
        return qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
    scalar = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=quantization.quantile,
                                         memory=qe.Memory.Pinned if quantization.always_ram else qe.Memory.Cold)
    return qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, quantization_config=scalar,
                               memory=qe.Memory.Cold if quantization.originals_on_disk else qe.Memory.Cached)


def read_quantization(path: Path) -> Quantization:
    """The quantization of the ``image`` vector in the engine's ``edge_config.json`` (none when absent or unreadable;
    both its ``memory`` placements and the older ``on_disk``/``always_ram`` flags are understood)."""
    try:
        vector = read_json(path).get("vectors", {}).get(IMAGE, {})
    except (OSError, ValueError, AttributeError, BackendUnavailable):
        return Quantization()
    on_disk = vector.get("memory") == "cold" or vector.get("on_disk") is True
    scalar = (vector.get("quantization_config") or {}).get("scalar")
    if not isinstance(scalar, dict):
        return Quantization(originals_on_disk=on_disk)
    in_ram = scalar.get("memory") in ("pinned", "cached") or scalar.get("always_ram") is True
    quantile = scalar.get("quantile")
    return Quantization(kind=str(scalar.get("type", "int8")), quantile=float(quantile) if quantile else None,
                        always_ram=in_ram, originals_on_disk=on_disk)


def _pool_config(shard_dir: Path, threads: int) -> qe.EdgeConfig | None:
    """What loads the shard in ``shard_dir`` with a search pool of ``threads`` (settings store.search_threads);
    None: load it as it is (0, or the shard has that pool already).

    The engine keeps the pool size with the shard's configuration, and takes a new one only with a vector
    configuration, checked against the shard's: the lexical sparse vector's, which has no parameter that
    differs between collections (a dense one would have to repeat its quantization exactly). A collection
    without it (made before the lexical index, not upgraded yet) keeps its pool until it is.
    """
    if not threads:
        return None
    try:
        persisted = read_json(shard_dir / EDGE_CONFIG_FILE)
    except (OSError, ValueError, BackendUnavailable):
        return None
    sparse = persisted.get("sparse_vectors") or {}
    if persisted.get("max_search_threads") == threads or (sparse.get(LEXICAL) or {}).get("modifier") != "idf":
        return None
    return qe.EdgeConfig(sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                         max_search_threads=threads)


def _open_shard(shard_dir: Path, config: qe.EdgeConfig | None, *, create: bool = False) -> qe.EdgeShard:
    """Load the shard in ``shard_dir`` (with ``config``'s changes, if given), or create it there with ``config``.

    Raises:
        StoreLocked: another process (or store object) holds it.
        BackendUnavailable: any other failure.
    """
    try:
        if create and config is not None:
            return qe.EdgeShard.create(str(shard_dir), config)
        return qe.EdgeShard.load(str(shard_dir), config)
    except Exception as e:
        if "WouldBlock" in str(e):
            raise StoreLocked(f"the store folder {shard_dir.parent} is in use by another process; "
                              f"{LOCKED_HINT}") from e
        raise BackendUnavailable(f"cannot open the store folder {shard_dir}: {e}") from e
