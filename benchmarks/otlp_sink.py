"""A local OTLP receiver for the benchmark: accepts, counts spans, discards.

It stands in for a collector. It implements the OTLP trace and metrics export
services over gRPC (the distro's default protocol) and, optionally, over
HTTP/protobuf (``/v1/traces``, ``/v1/metrics``). Each request is decoded by
protobuf's C implementation; the receiver then counts the spans it holds by span
kind (the sum of ``len(scope_spans.spans)``) and answers success. Nothing else
is looked at (besides the resource's ``service.name``, which tells runs
apart), except in a metrics request the SDK's own
``otel.sdk.processor.span.processed`` points with ``error.type`` (present only
when ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true``), so the SDK's drop count
can be checked against the benchmark's.

It runs in the benchmark's parent process, on threads of its own. The parent is
otherwise idle while a case runs (it waits for the case's subprocess), so the
receiver's CPU time is the only thing it adds to the machine's load; it is
summed per request (``cpu_s``) so it can be reported next to the case.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# OTLP Span.SpanKind values -> the API's SpanKind names.
KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER",
              5: "CONSUMER"}  # fmt: skip


def _service(resource: Any) -> str:
    for a in resource.attributes:
        if a.key == "service.name":
            return str(a.value.string_value)
    return ""


class _Counts:
    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.sdk_dropped: dict[str, int] = {}
        self.cpu_s = 0.0


class OtlpSink:
    """Counts what OTLP exporters send to it, per ``service.name``.

    Each benchmark run has a service name of its own, so runs that overlap
    (``--jobs``) are still counted apart; ``take(service)`` returns a run's
    counts and forgets them.
    """

    def __init__(self, protocol: str = "grpc") -> None:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"unknown OTLP protocol {protocol!r}")
        self.protocol = protocol
        self._lock = threading.Lock()
        self._counts: dict[str, _Counts] = {}
        self._server: Any = None
        self.endpoint = ""

    # ------------------------------------------------------------- counting

    def _of(self, service: str) -> _Counts:
        c = self._counts.get(service)
        if c is None:
            c = self._counts[service] = _Counts()
        return c

    def take(self, service: str) -> dict[str, Any]:
        with self._lock:
            c = self._counts.pop(service, None) or _Counts()
        return {
            "spans": dict(c.spans),
            "spans_total": sum(c.spans.values()),
            "requests": dict(c.requests),
            "sdk_processor_dropped": dict(c.sdk_dropped),
            "cpu_s": round(c.cpu_s, 4),
        }

    def _count_traces(self, request: Any) -> None:
        t0 = time.thread_time()
        per: dict[str, Counter[int]] = {}
        for rs in request.resource_spans:
            kinds = per.setdefault(_service(rs.resource), Counter())
            for ss in rs.scope_spans:
                for span in ss.spans:
                    kinds[span.kind] += 1
        cpu = time.thread_time() - t0
        with self._lock:
            for service, kinds in per.items():
                c = self._of(service)
                for k, v in kinds.items():
                    c.spans[KIND_NAMES.get(k, str(k))] += v
                c.requests["traces"] += 1
                c.cpu_s += cpu / len(per)

    def _count_metrics(self, request: Any) -> None:
        t0 = time.thread_time()
        per: dict[str, dict[str, int]] = {}
        for rm in request.resource_metrics:
            dropped = per.setdefault(_service(rm.resource), {})
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "otel.sdk.processor.span.processed":
                        continue
                    for point in metric.sum.data_points:
                        attrs = {a.key: a.value.string_value for a in point.attributes}
                        err = attrs.get("error.type")
                        if err:
                            dropped[err] = dropped.get(err, 0) + int(point.as_int)
        cpu = time.thread_time() - t0
        with self._lock:
            for service, dropped in per.items():
                c = self._of(service)
                c.requests["metrics"] += 1
                c.cpu_s += cpu / len(per)
                # Cumulative temporality: the latest export holds the total.
                c.sdk_dropped.update(dropped)

    # ------------------------------------------------------------- servers

    def start(self, port: int) -> str:
        if self.protocol == "grpc":
            self._start_grpc(port)
        else:
            self._start_http(port)
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    def _start_grpc(self, port: int) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        sink = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                sink._count_traces(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                sink._count_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._server = server

    def _start_http(self, port: int) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        sink = self
        routes = {
            "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, sink._count_traces,
                           trace_service_pb2.ExportTraceServiceResponse().SerializeToString()),
            "/v1/metrics": (metrics_service_pb2.ExportMetricsServiceRequest, sink._count_metrics,
                            metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()),
        }  # fmt: skip

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request_type, count, answer = route
                count(request_type.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="otlp-sink-http", daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is None:
            return
        if self.protocol == "grpc":
            self._server.stop(grace=1).wait()
        else:
            self._server.shutdown()
            self._server.server_close()
        self._server = None
