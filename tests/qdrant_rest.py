"""A small Qdrant server for tests: Qdrant's REST API over qdrant-client's local mode.

No Qdrant server binary exists here, so `QdrantRestServer` answers the part of Qdrant's HTTP API that
``qdrant-client``'s REST transport calls for `store.qdrant_backend.QdrantServerStore` (collections, aliases,
payload indexes, points upsert/retrieve/query/scroll/count/delete/batch, facets). Request bodies are parsed
with ``qdrant_client.http.models`` (so a body the real server would refuse is refused: 400), the work is done
by ``QdrantClient(path=...)`` (so the engine's semantics are qdrant-client's own), and answers have the
server's envelope ``{"result": ..., "status": "ok", "time": t}``; errors ``{"status": {"error": "..."}}``
with 404 for a missing collection, 400 for a bad request, as the server does.

It can be stopped (the port refuses connections, open connections are cut: a server that died) and started
again on the same port with the same data (the folder). Run in a thread (`QdrantRestServer.start`) or as its
own process (``python -m tests.qdrant_rest --path DIR --port N``), which a test can ``kill -9``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models

Handler = Callable[["QdrantRestServer", str, Any, dict[str, str]], Any]
"""``(server, collection, parsed body, query params) -> result``; ``server.client`` is the local store."""

_SCHEMA_FILE = "rest_payload_indexes.json"
_ROUTES: list[tuple[str, re.Pattern[str], Any, Handler]] = []


def _route(method: str, pattern: str, body: Any = None) -> Callable[[Handler], Handler]:
    """Register a handler of ``method`` on the path ``pattern`` (``{c}``: the collection), body parsed as ``body``."""
    regex = re.compile("^" + pattern.replace("{c}", "(?P<c>[^/]+)").replace("{x}", "(?P<x>[^/]+)") + "$")

    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, regex, TypeAdapter(body) if body is not None else None, handler))
        return handler

    return register


def _done() -> models.UpdateResult:
    return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)


class NotFoundError(Exception):
    """Answered 404."""


# -- collections and aliases ----------------------------------------------------------------------------

@_route("GET", "/collections")
def _collections(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    return shim.client.get_collections()


@_route("GET", "/aliases")
def _aliases(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    return shim.client.get_aliases()


@_route("POST", "/collections/aliases", models.ChangeAliasesOperation)
def _update_aliases(shim: QdrantRestServer, c: str, body: models.ChangeAliasesOperation, q: dict[str, str]) -> Any:
    return shim.client.update_collection_aliases(change_aliases_operations=body.actions)


@_route("GET", "/collections/{c}/aliases")
def _collection_aliases(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.get_collection_aliases(c)


@_route("GET", "/collections/{c}/exists")
def _exists(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    return models.CollectionExistence(exists=shim.client.collection_exists(c))


@_route("GET", "/collections/{c}")
def _get_collection(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    info = shim.client.get_collection(c)
    # local mode keeps no payload indexes; the server lists them, and the store checks facets against them
    count = info.points_count or 0
    info.payload_schema = {field: models.PayloadIndexInfo(data_type=kind, points=count)
                           for field, kind in shim.schemas.get(shim.physical(c), {}).items()}
    return info


@_route("PUT", "/collections/{c}", models.CreateCollection)
def _create_collection(shim: QdrantRestServer, c: str, body: models.CreateCollection, q: dict[str, str]) -> Any:
    if shim.client.collection_exists(c):
        raise ValueError(f"Wrong input: Collection `{c}` already exists!")
    shim.created[c] = body  # local mode drops shard_number, replication_factor, ...: tests read what was asked
    return shim.client.create_collection(c, vectors_config=body.vectors, sparse_vectors_config=body.sparse_vectors,
                                    metadata=body.metadata)


@_route("PATCH", "/collections/{c}", models.UpdateCollection)
def _update_collection(shim: QdrantRestServer, c: str, body: models.UpdateCollection, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.update_collection(c, sparse_vectors_config=body.sparse_vectors, metadata=body.metadata,
                                    vectors_config=body.vectors)


@_route("DELETE", "/collections/{c}")
def _delete_collection(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    physical = shim.physical(c)
    deleted = shim.client.delete_collection(c)
    if shim.schemas.pop(physical, None) is not None:
        shim.save_schemas()
    return deleted


@_route("PUT", "/collections/{c}/index", models.CreateFieldIndex)
def _create_index(shim: QdrantRestServer, c: str, body: models.CreateFieldIndex, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    shim.client.create_payload_index(c, body.field_name, field_schema=body.field_schema)
    schema = body.field_schema
    kind = schema if isinstance(schema, models.PayloadSchemaType) else models.PayloadSchemaType(
        getattr(schema, "type", schema))
    shim.schemas.setdefault(shim.physical(c), {})[body.field_name] = kind
    shim.save_schemas()
    return _done()


@_route("DELETE", "/collections/{c}/index/{x}")
def _delete_index(shim: QdrantRestServer, c: str, body: Any, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    shim.client.delete_payload_index(c, q["x"])
    if shim.schemas.get(shim.physical(c), {}).pop(q["x"], None) is not None:
        shim.save_schemas()
    return _done()


# -- points -----------------------------------------------------------------------------------------------

@_route("PUT", "/collections/{c}/points", models.PointInsertOperations)
def _upsert(shim: QdrantRestServer, c: str, body: models.PointInsertOperations, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    points: Any = body.points if isinstance(body, models.PointsList) else body.batch
    return shim.client.upsert(c, points=points, update_filter=body.update_filter)


@_route("POST", "/collections/{c}/points", models.PointRequest)
def _retrieve(shim: QdrantRestServer, c: str, body: models.PointRequest, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.retrieve(c, body.ids, with_payload=body.with_payload if body.with_payload is not None else True,
                           with_vectors=body.with_vector if body.with_vector is not None else False)


@_route("POST", "/collections/{c}/points/batch", models.UpdateOperations)
def _batch(shim: QdrantRestServer, c: str, body: models.UpdateOperations, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.batch_update_points(c, body.operations)


@_route("POST", "/collections/{c}/points/delete", models.PointsSelector)
def _delete(shim: QdrantRestServer, c: str, body: models.PointsSelector, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.delete(c, points_selector=body)


@_route("POST", "/collections/{c}/points/payload", models.SetPayload)
def _set_payload(shim: QdrantRestServer, c: str, body: models.SetPayload, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.set_payload(c, payload=body.payload, points=_selector(body), key=body.key)


@_route("PUT", "/collections/{c}/points/payload", models.SetPayload)
def _overwrite_payload(shim: QdrantRestServer, c: str, body: models.SetPayload, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.overwrite_payload(c, payload=body.payload, points=_selector(body))


@_route("POST", "/collections/{c}/points/query", models.QueryRequest)
def _query(shim: QdrantRestServer, c: str, body: models.QueryRequest, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    with warnings.catch_warnings():  # a server uses the search params; local mode searches exactly and says so
        warnings.filterwarnings("ignore", message="Local mode performs exact")
        return shim.client.query_points(
            c, query=body.query, using=body.using, prefetch=body.prefetch, query_filter=body.filter,
            search_params=body.params, limit=body.limit if body.limit is not None else 10, offset=body.offset,
            with_payload=body.with_payload if body.with_payload is not None else False,
            with_vectors=body.with_vector if body.with_vector is not None else False,
            score_threshold=body.score_threshold, lookup_from=body.lookup_from)


@_route("POST", "/collections/{c}/points/count", models.CountRequest)
def _count(shim: QdrantRestServer, c: str, body: models.CountRequest, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    return shim.client.count(c, count_filter=body.filter, exact=body.exact if body.exact is not None else True)


@_route("POST", "/collections/{c}/points/scroll", models.ScrollRequest)
def _scroll(shim: QdrantRestServer, c: str, body: models.ScrollRequest, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    points, offset = shim.client.scroll(
        c, scroll_filter=body.filter, limit=body.limit if body.limit is not None else 10, order_by=body.order_by,
        offset=body.offset, with_payload=body.with_payload if body.with_payload is not None else True,
        with_vectors=body.with_vector if body.with_vector is not None else False)
    return models.ScrollResult(points=points, next_page_offset=offset)


@_route("POST", "/collections/{c}/facet", models.FacetRequest)
def _facet(shim: QdrantRestServer, c: str, body: models.FacetRequest, q: dict[str, str]) -> Any:
    _require(shim.client, c)
    if body.key not in shim.schemas.get(shim.physical(c), {}):
        raise ValueError(f'Bad request: Index required but not found for "{body.key}" of one of the following '
                         "types: [keyword, integer, bool]. Help: Create an index for this key or use a different "
                         "filter.")
    return shim.client.facet(c, body.key, facet_filter=body.filter, limit=body.limit if body.limit is not None else 10,
                        exact=bool(body.exact))


def _selector(body: models.SetPayload) -> models.PointsSelector:
    if body.points is not None:
        return models.PointIdsList(points=body.points)
    return models.FilterSelector(filter=body.filter or models.Filter())


def _require(client: QdrantClient, name: str) -> None:
    """Raise `NotFoundError` as the server does when there is no collection (or alias) ``name``."""
    if not client.collection_exists(name):
        raise NotFoundError(f"Not found: Collection `{name}` doesn't exist!")


# -- serving ----------------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    """Keeps the open connections, so stopping can cut them as a dying server does."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection cut by `stop`


class QdrantRestServer:
    """Qdrant's REST API on ``127.0.0.1:port`` over a qdrant-client local store in ``folder``.

    Args:
        folder: where the data lives (kept across `stop` and `start`).
        port: the port (0: a free one, chosen at the first `start` and kept after).

    Attributes:
        requests: requests answered so far; ``unknown``: the ``METHOD /path`` of those no route answered.
        before: called with ``(method, path)`` before each request is answered (a test's fault injector: it may
            `stop` the server, whose answer then never arrives).
        created: the body of each ``PUT /collections/NAME`` by collection name (local mode keeps no shard or
            replication settings; a test reads here what the client asked for).
    """

    def __init__(self, folder: Path, port: int = 0) -> None:
        self.folder = folder
        self.port = port
        self.requests = 0
        self.unknown: list[str] = []  # "METHOD /path" asked that no route answers
        self.before: Callable[[str, str], None] | None = None  # called with (method, path) before each request
        self._client: QdrantClient | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # local mode is not thread-safe
        self.schemas: dict[str, dict[str, models.PayloadSchemaType]] = {}  # collection -> field -> kind
        self.created: dict[str, models.CreateCollection] = {}  # collection -> the body that created it

    @property
    def url(self) -> str:
        """The base URL, as ``store.url`` takes it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> QdrantClient:
        """The local store behind the API (only while serving)."""
        assert self._client is not None, "the server is stopped"
        return self._client

    def physical(self, name: str) -> str:
        """The collection that alias ``name`` points at (or ``name`` itself)."""
        aliases = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
        return aliases.get(name, name)

    def save_schemas(self) -> None:
        """Keep the payload indexes beside the store's files, so a restarted server still has them."""
        data = {name: {f: k.value for f, k in fields.items()} for name, fields in self.schemas.items()}
        (self.folder / _SCHEMA_FILE).write_text(json.dumps(data), encoding="utf-8")

    @property
    def running(self) -> bool:
        """Whether it is serving."""
        return self._server is not None

    def start(self) -> QdrantRestServer:
        """Open the store and serve in a thread (on the same port as before, if started before)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._client = QdrantClient(path=str(self.folder), force_disable_check_same_thread=True)
        saved = self.folder / _SCHEMA_FILE
        raw = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
        self.schemas = {name: {f: models.PayloadSchemaType(k) for f, k in fields.items()}
                        for name, fields in raw.items()}
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = _Server(("127.0.0.1", self.port), self._handler())
                break
            except OSError:  # the old socket still lingers
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"qdrant-rest-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop as a server that dies: refuse new connections, cut open ones, close the store."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> QdrantRestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, method: str, target: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """The status and JSON body the server answers to ``method target`` with body ``raw``."""
        started = time.perf_counter()
        split = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.requests += 1
        if self.before is not None:
            self.before(method, split.path)
        for adapter, handler, groups in _match(method, split.path):
            if "x" in groups:
                params["x"] = groups["x"]
            try:
                body = adapter.validate_python(json.loads(raw or b"{}")) if adapter is not None else None
                with self._lock:
                    if self._client is None:
                        return 503, _error("the server is shutting down", started)
                    result = handler(self, groups.get("c", ""), body, params)
            except NotFoundError as e:
                return 404, _error(str(e), started)
            except (ValidationError, json.JSONDecodeError) as e:
                return 400, _error(f"Format error in JSON body: {e}", started)
            except (ValueError, KeyError, AssertionError) as e:
                status = 404 if "not found" in str(e).lower() else 400
                return status, _error(f"Wrong input: {e}", started)
            except Exception as e:  # the server answers 500 to what it did not foresee; so does this one
                return 500, _error(f"Service internal error: {type(e).__name__}: {e}", started)
            return 200, {"result": to_jsonable_python(result), "status": "ok",
                         "time": time.perf_counter() - started}
        self.unknown.append(f"{method} {split.path}")
        return 404, _error(f"no route {method} {split.path}", started)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The result of ``method path`` (a REST route) with an already parsed ``body``: the entry of another
        transport over the same store (`tests.qdrant_grpc`). Counts in `requests` and calls `before` as `answer`.

        Raises:
            NotFoundError: no such collection, or no route (then recorded in `unknown`).
            ConnectionAbortedError: the server is stopping.
            ValueError, KeyError, AssertionError: a bad request (REST answers 400; 404 when it says not found).
        """
        self.requests += 1
        if self.before is not None:
            self.before(method, path)
        for _, handler, groups in _match(method, path):
            with self._lock:
                if self._client is None:
                    raise ConnectionAbortedError("the server is shutting down")
                return handler(self, groups.get("c", ""), body, {k: v for k, v in groups.items() if k == "x"})
        self.unknown.append(f"{method} {path}")
        raise NotFoundError(f"no route {method} {path}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                status, body = shim.answer(self.command, self.path, raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - names http.server calls

        return Handler


def _match(method: str, path: str) -> list[tuple[Any, Handler, dict[str, str]]]:
    """The route answering ``method path`` (none or one): its body adapter, handler and path groups."""
    for route_method, regex, adapter, handler in _ROUTES:
        match = regex.match(path)
        if route_method == method and match is not None:
            return [(adapter, handler, match.groupdict())]
    return []


def _error(message: str, started: float) -> dict[str, Any]:
    return {"status": {"error": message}, "time": time.perf_counter() - started}


def main() -> None:
    """Serve in the foreground until killed: ``python -m tests.qdrant_rest --path DIR --port N``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = QdrantRestServer(args.path, args.port).start()
    print(f"serving {server.url}", flush=True)  # the parent reads this line
    threading.Event().wait()


if __name__ == "__main__":
    main()
