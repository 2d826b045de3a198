"""A minimal OTLP/HTTP (protobuf) receiver on loopback, for the demo and its tests.

The demo's services export here; when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set,
every payload is also relayed, unchanged, to that endpoint, so the same run
shows up in Jaeger, New Relic or any OTLP backend.
"""

from __future__ import annotations

import gzip
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)
    status_code: int = 0


@dataclass
class Point:
    service: str
    name: str
    attributes: dict[str, Any]
    value: float  # sum for counters, the sum for histograms
    count: int = 0  # histograms only


class Receiver:
    """Collects spans and metric points; thread-safe; ``close()`` when done."""

    def __init__(self, forward_to: str | None = None, forward_headers: str = "") -> None:
        self.spans: list[Span] = []
        self.points: list[Point] = []
        self.forward_errors: list[str] = []
        self._forward = forward_to.rstrip("/") if forward_to else None
        # OTEL_EXPORTER_OTLP_HEADERS form: k1=v1,k2=v2 (e.g. a backend's API key).
        self._forward_headers = dict(
            (k.strip(), urllib.parse.unquote(v.strip()))
            for k, _, v in (h.partition("=") for h in forward_headers.split(",") if "=" in h)
        )
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                raw = body
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    receiver._accept(self.path, body)
                    receiver._relay(self.path, raw, self.headers)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.end_headers()
                except Exception as exc:  # a bad payload must not kill the demo
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(str(exc).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _accept(self, path: str, body: bytes) -> None:
        if path.endswith("/v1/traces"):
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            spans = [
                Span(
                    service=_service(rs.resource),
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_id=s.parent_span_id.hex(),
                    name=s.name,
                    kind=s.kind,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    links=[(lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links],
                    status_code=s.status.code,
                )
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            ]
            with self._lock:
                self.spans.extend(spans)
        elif path.endswith("/v1/metrics"):
            mreq = metrics_service_pb2.ExportMetricsServiceRequest()
            mreq.ParseFromString(body)
            points = []
            for rm in mreq.resource_metrics:
                service = _service(rm.resource)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        points.extend(_points(service, m))
            with self._lock:
                self.points.extend(points)

    def _relay(self, path: str, raw: bytes, headers: Any) -> None:
        if not self._forward:
            return
        req = urllib.request.Request(self._forward + path, data=raw, method="POST")
        for k, v in self._forward_headers.items():
            req.add_header(k, v)
        for h in ("Content-Type", "Content-Encoding"):
            if headers.get(h):
                req.add_header(h, headers[h])
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except Exception as exc:
            with self._lock:
                self.forward_errors.append(f"{type(exc).__name__}: {exc}")


def _service(resource: Any) -> str:
    for a in resource.attributes:
        if a.key == "service.name":
            return str(_value(a.value))
    return "unknown"


def _points(service: str, m: Any) -> list[Point]:
    kind = m.WhichOneof("data")
    out = []
    if kind in ("sum", "gauge"):
        for dp in getattr(m, kind).data_points:
            v = dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
            out.append(Point(service, m.name, {a.key: _value(a.value) for a in dp.attributes}, v))
    elif kind == "histogram":
        for hp in m.histogram.data_points:
            attrs = {a.key: _value(a.value) for a in hp.attributes}
            out.append(Point(service, m.name, attrs, hp.sum, hp.count))
    return out
