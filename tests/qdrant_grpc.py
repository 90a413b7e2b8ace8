"""A small Qdrant server for tests that also speaks Qdrant's gRPC API, over qdrant-client's local mode.

`QdrantGrpcServer` is a `tests.qdrant_rest.QdrantRestServer` (REST on ``port``) that serves Qdrant's gRPC services
(``qdrant.Qdrant``, ``qdrant.Collections``, ``qdrant.Points``: the methods qdrant-client's gRPC transport calls for
`store.qdrant_backend.QdrantServerStore` and `store.qdrant_async.AsyncQdrantReader`) on ``grpc_port``, over the
same local store: real gRPC (HTTP/2, protobuf) over a socket. Each request is converted to its REST body with
``qdrant_client.conversions.conversion.GrpcToRest``, answered by the REST server's own route (`QdrantRestServer.call`,
so both transports share every behaviour: payload indexes, ``created``, ``before``, errors), and the answer is
converted back with ``RestToGrpc``. Errors carry the status codes the server gives: NOT_FOUND for a missing
collection, INVALID_ARGUMENT for a bad request, UNAVAILABLE while stopping, INTERNAL for the rest; methods not
served answer UNIMPLEMENTED (as a server of another version).

`stop` refuses new connections and cuts the open calls, as a server that dies; `start` serves again on the same
ports with the same data. Run in a thread, or as its own process:
``python -m tests.qdrant_grpc --path DIR --port N --grpc-port M``.
"""

from __future__ import annotations

import argparse
import functools
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError
from qdrant_client import grpc as pb
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc, grpc_field_type_to_payload_schema
from qdrant_client.http import models

from tests.qdrant_rest import NotFoundError, QdrantRestServer

_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]

R = TypeVar("R")
Method = Callable[[Any, Any, float], R]


def _rpc(method: Method[R]) -> Callable[[Any, Any, grpc.ServicerContext], R]:
    """A servicer method ``(self, request, started)`` as gRPC calls it, its errors as the server's statuses."""

    @functools.wraps(method)
    def serve(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        self.server.grpc_requests += 1
        try:
            return method(self, request, time.perf_counter())
        except NotFoundError as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except ConnectionAbortedError as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except ValidationError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Validation error in request: {e}")
        except (ValueError, KeyError, AssertionError) as e:
            status = grpc.StatusCode.NOT_FOUND if "not found" in str(e).lower() else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(status, f"Wrong input: {e}")
            context.abort(grpc.StatusCode.INTERNAL, f"Service internal error: {type(e).__name__}: {e}")
        raise AssertionError("context.abort returned")  # it raises

    return serve


def _took(started: float) -> float:
    return time.perf_counter() - started


def _record(record: models.Record) -> Any:
    """A retrieved point as the server sends it (``RestToGrpc`` fails on a record without payload)."""
    return RestToGrpc.convert_record(record if record.payload is not None
                                     else record.model_copy(update={"payload": {}}))


def _field(message: Any, name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """An optional field of a message (None when unset), converted."""
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    return convert(value) if convert is not None else value


class _Qdrant(pb.QdrantServicer):
    def __init__(self, server: QdrantGrpcServer) -> None:
        self.server = server

    @_rpc
    def HealthCheck(self, request: Any, started: float) -> Any:  # noqa: N802 - the service's names
        return pb.HealthCheckReply(title="qdrant - vector search engine (tests.qdrant_grpc)", version="1.16.0")


class _Collections(pb.CollectionsServicer):
    def __init__(self, server: QdrantGrpcServer) -> None:
        self.server = server

    @_rpc
    def Get(self, request: Any, started: float) -> Any:  # noqa: N802
        info = self.server.call("GET", f"/collections/{request.collection_name}")
        return pb.GetCollectionInfoResponse(result=RestToGrpc.convert_collection_info(info), time=_took(started))

    @_rpc
    def List(self, request: Any, started: float) -> Any:  # noqa: N802
        found = self.server.call("GET", "/collections")
        return pb.ListCollectionsResponse(
            collections=[RestToGrpc.convert_collection_description(c) for c in found.collections], time=_took(started))

    @_rpc
    def Create(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.CreateCollection(
            vectors=_field(request, "vectors_config", GrpcToRest.convert_vectors_config),
            sparse_vectors=_field(request, "sparse_vectors_config", GrpcToRest.convert_sparse_vector_config),
            hnsw_config=_field(request, "hnsw_config", GrpcToRest.convert_hnsw_config_diff),
            shard_number=_field(request, "shard_number"), replication_factor=_field(request, "replication_factor"),
            write_consistency_factor=_field(request, "write_consistency_factor"),
            metadata=GrpcToRest.convert_payload(request.metadata) if request.metadata else None)
        done = self.server.call("PUT", f"/collections/{request.collection_name}", body)
        return pb.CollectionOperationResponse(result=bool(done), time=_took(started))

    @_rpc
    def Update(self, request: Any, started: float) -> Any:  # noqa: N802
        done = self.server.call("PATCH", f"/collections/{request.collection_name}",
                                GrpcToRest.convert_update_collection(request))
        return pb.CollectionOperationResponse(result=bool(done), time=_took(started))

    @_rpc
    def Delete(self, request: Any, started: float) -> Any:  # noqa: N802
        done = self.server.call("DELETE", f"/collections/{request.collection_name}")
        return pb.CollectionOperationResponse(result=bool(done), time=_took(started))

    @_rpc
    def UpdateAliases(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.ChangeAliasesOperation(actions=[GrpcToRest.convert_alias_operations(a) for a in request.actions])
        done = self.server.call("POST", "/collections/aliases", body)
        return pb.CollectionOperationResponse(result=bool(done), time=_took(started))

    @_rpc
    def ListAliases(self, request: Any, started: float) -> Any:  # noqa: N802
        found = self.server.call("GET", "/aliases")
        return pb.ListAliasesResponse(aliases=[RestToGrpc.convert_alias_description(a) for a in found.aliases],
                                      time=_took(started))

    @_rpc
    def ListCollectionAliases(self, request: Any, started: float) -> Any:  # noqa: N802
        found = self.server.call("GET", f"/collections/{request.collection_name}/aliases")
        return pb.ListAliasesResponse(aliases=[RestToGrpc.convert_alias_description(a) for a in found.aliases],
                                      time=_took(started))

    @_rpc
    def CollectionExists(self, request: Any, started: float) -> Any:  # noqa: N802
        found = self.server.call("GET", f"/collections/{request.collection_name}/exists")
        return pb.CollectionExistsResponse(result=pb.CollectionExists(exists=found.exists), time=_took(started))


class _Points(pb.PointsServicer):
    def __init__(self, server: QdrantGrpcServer) -> None:
        self.server = server

    def _update(self, started: float, method: str, path: str, body: Any) -> Any:
        done = self.server.call(method, path, body)
        return pb.PointsOperationResponse(result=RestToGrpc.convert_update_result(done), time=_took(started))

    @_rpc
    def Upsert(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.PointsList(points=[GrpcToRest.convert_point_struct(p) for p in request.points],
                                 update_filter=_field(request, "update_filter", GrpcToRest.convert_filter))
        return self._update(started, "PUT", f"/collections/{request.collection_name}/points", body)

    @_rpc
    def Delete(self, request: Any, started: float) -> Any:  # noqa: N802
        return self._update(started, "POST", f"/collections/{request.collection_name}/points/delete",
                            GrpcToRest.convert_points_selector(request.points))

    @_rpc
    def CreateFieldIndex(self, request: Any, started: float) -> Any:  # noqa: N802
        kind = GrpcToRest.convert_payload_schema_type(grpc_field_type_to_payload_schema(request.field_type))
        body = models.CreateFieldIndex(field_name=request.field_name, field_schema=kind)
        return self._update(started, "PUT", f"/collections/{request.collection_name}/index", body)

    @_rpc
    def UpdateBatch(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.UpdateOperations(
            operations=[GrpcToRest.convert_points_update_operation(op) for op in request.operations])
        done = self.server.call("POST", f"/collections/{request.collection_name}/points/batch", body)
        return pb.UpdateBatchResponse(result=[RestToGrpc.convert_update_result(r) for r in done], time=_took(started))

    @_rpc
    def Get(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.PointRequest(
            ids=[GrpcToRest.convert_point_id(i) for i in request.ids],
            with_payload=_field(request, "with_payload", GrpcToRest.convert_with_payload_selector),
            with_vector=_field(request, "with_vectors", GrpcToRest.convert_with_vectors_selector))
        records = self.server.call("POST", f"/collections/{request.collection_name}/points", body)
        return pb.GetResponse(result=[_record(r) for r in records], time=_took(started))

    @_rpc
    def Query(self, request: Any, started: float) -> Any:  # noqa: N802
        found = self.server.call("POST", f"/collections/{request.collection_name}/points/query",
                                 GrpcToRest.convert_query_points(request))
        return pb.QueryResponse(result=[RestToGrpc.convert_scored_point(p) for p in found.points],
                                time=_took(started))

    @_rpc
    def Count(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.CountRequest(filter=_field(request, "filter", GrpcToRest.convert_filter),
                                   exact=_field(request, "exact"))
        found = self.server.call("POST", f"/collections/{request.collection_name}/points/count", body)
        return pb.CountResponse(result=pb.CountResult(count=found.count), time=_took(started))

    @_rpc
    def Scroll(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.ScrollRequest(
            filter=_field(request, "filter", GrpcToRest.convert_filter),
            offset=_field(request, "offset", GrpcToRest.convert_point_id), limit=_field(request, "limit"),
            with_payload=_field(request, "with_payload", GrpcToRest.convert_with_payload_selector),
            with_vector=_field(request, "with_vectors", GrpcToRest.convert_with_vectors_selector),
            order_by=_field(request, "order_by", GrpcToRest.convert_order_by))
        found = self.server.call("POST", f"/collections/{request.collection_name}/points/scroll", body)
        offset = found.next_page_offset
        return pb.ScrollResponse(
            result=[_record(r) for r in found.points], time=_took(started),
            next_page_offset=None if offset is None else RestToGrpc.convert_extended_point_id(offset))

    @_rpc
    def Facet(self, request: Any, started: float) -> Any:  # noqa: N802
        body = models.FacetRequest(key=request.key, filter=_field(request, "filter", GrpcToRest.convert_filter),
                                   limit=_field(request, "limit"), exact=_field(request, "exact"))
        found = self.server.call("POST", f"/collections/{request.collection_name}/facet", body)
        return pb.FacetResponse(hits=[RestToGrpc.convert_facet_value_hit(h) for h in found.hits],
                                time=_took(started))


class QdrantGrpcServer(QdrantRestServer):
    """Qdrant's REST API on ``127.0.0.1:port`` and its gRPC API on ``127.0.0.1:grpc_port``, over one
    qdrant-client local store in ``folder`` (see the module's docstring).

    Args:
        folder: where the data lives (kept across `stop` and `start`).
        port: the REST port (0: a free one, chosen at the first `start` and kept after).
        grpc_port: the gRPC port (0: likewise).

    Attributes:
        grpc_requests: gRPC calls received so far (also counted in ``requests``, with the REST ones).
    """

    def __init__(self, folder: Path, port: int = 0, grpc_port: int = 0) -> None:
        super().__init__(folder, port)
        self.grpc_port = grpc_port
        self.grpc_requests = 0
        self._grpc: grpc.Server | None = None

    def start(self) -> QdrantGrpcServer:
        """Serve REST and gRPC in threads (on the same ports as before, if started before)."""
        super().start()
        deadline = time.monotonic() + 10
        while True:
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="qdrant-grpc"),
                                 options=_OPTIONS)
            pb.add_QdrantServicer_to_server(_Qdrant(self), server)  # type: ignore[no-untyped-call]
            pb.add_CollectionsServicer_to_server(_Collections(self), server)  # type: ignore[no-untyped-call]
            pb.add_PointsServicer_to_server(_Points(self), server)  # type: ignore[no-untyped-call]
            try:
                port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
            except RuntimeError:  # grpcio raises where older versions answered 0
                port = 0
            if port:
                break
            server.stop(None)
            if time.monotonic() > deadline:
                super().stop()
                raise OSError(f"cannot serve gRPC on 127.0.0.1:{self.grpc_port}")
            time.sleep(0.05)
        self.grpc_port = port
        server.start()
        self._grpc = server
        return self

    def stop(self) -> None:
        """Stop as a server that dies: both transports refuse new connections and cut the open calls."""
        server, self._grpc = self._grpc, None
        if server is not None:
            server.stop(None).wait(5)
        super().stop()

    def __enter__(self) -> QdrantGrpcServer:
        return self.start()


def main() -> None:
    """Serve in the foreground until killed: ``python -m tests.qdrant_grpc --path DIR --port N --grpc-port M``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    server = QdrantGrpcServer(args.path, args.port, args.grpc_port).start()
    print(f"serving {server.url} grpc {server.grpc_port}", flush=True)  # the parent reads this line
    threading.Event().wait()


if __name__ == "__main__":
    main()
