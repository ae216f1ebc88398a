"""A real OTLP receiver for tests: gRPC (TraceService, MetricsService) and HTTP (/v1/traces, /v1/metrics).

Built from grpcio and opentelemetry-proto, the same protobuf services a collector implements.
No OpenTelemetry Collector binary can be installed on these machines, so this is the receiver.
"""

from __future__ import annotations

import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Received:
    """Everything the receiver got, decoded to plain Python."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metric_names: set[str] = set()
        self.metric_points: list[tuple[str, dict[str, Any]]] = []  # (metric name, data point attributes)
        self.resources: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.event = threading.Event()

    def add_traces(self, req: trace_service_pb2.ExportTraceServiceRequest, transport: str) -> None:
        with self.lock:
            for rs in req.resource_spans:
                res = {a.key: _value(a.value) for a in rs.resource.attributes}
                self.resources.append(res)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append({
                            "name": s.name, "transport": transport, "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(), "parent_span_id": s.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in s.attributes},
                            "status_code": s.status.code, "resource": res,
                        })
        self.event.set()

    def add_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    self.metric_names.update(m.name for m in sm.metrics)
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        for dp in getattr(getattr(m, kind), "data_points", []) if kind else []:
                            self.metric_points.append((m.name, {a.key: _value(a.value) for a in dp.attributes}))
        self.event.set()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, got: Received) -> None:
        self.got = got

    def Export(self, request: Any, context: Any) -> Any:
        self.got.add_traces(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, got: Received) -> None:
        self.got = got

    def Export(self, request: Any, context: Any) -> Any:
        self.got.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver:
    def __init__(self) -> None:
        self.got = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self.got), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self.got), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None)


class HttpReceiver:
    def __init__(self) -> None:
        got = self.got = Received()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    got.add_traces(req, "http")
                    out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    req = metrics_service_pb2.ExportMetricsServiceRequest()
                    req.ParseFromString(body)
                    got.add_metrics(req)
                    out = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
