"""Write finished SDK spans as the two trace exports ``kafkaplus audit`` reads.

Tests (and the Kafka integration test) record spans with an
``InMemorySpanExporter`` and need them on disk in the shapes real tools
produce: the Collector file exporter's OTLP JSON lines, and the JSON that
Jaeger's query API and UI hand out. Both writers follow those tools' output
rather than protobuf defaults: hex trace/span ids, integer enums for OTLP;
typed tags, ``span.kind``/``otel.status_code`` tags and attribute-less
FOLLOWS_FROM references for Jaeger.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from os import PathLike
from typing import IO, Any

from google.protobuf.json_format import (  # type: ignore[import-untyped,unused-ignore]
    MessageToDict,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["write_jaeger_json", "write_otlp_json"]

StrPath = str | PathLike[str]


@contextmanager
def _open(path: StrPath, compress: bool) -> Iterator[IO[str]]:
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            yield f
    else:
        with open(path, "w", encoding="utf-8") as f:
            yield f


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_ids(obj: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in obj:
            obj[key] = _b64_to_hex(obj[key])


def _otlp_request(spans: Sequence[ReadableSpan], enum_names: bool) -> dict[str, Any]:
    request: dict[str, Any] = MessageToDict(
        encode_spans(spans), use_integers_for_enums=not enum_names
    )
    for rs in request.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return request


def write_otlp_json(
    spans: Sequence[ReadableSpan],
    path: StrPath,
    *,
    spans_per_line: int | None = None,
    compress: bool = False,
    enum_names: bool = False,
) -> None:
    """Write spans as the Collector's file exporter does: one
    ExportTraceServiceRequest per line, ``spans_per_line`` spans each (all in
    one line by default), ids in hex. ``enum_names`` writes ``kind`` and
    ``status.code`` as enum names, as protobuf's own JSON mapping does.
    """
    step = spans_per_line or max(1, len(spans))
    with _open(path, compress) as f:
        for i in range(0, len(spans), step):
            request = _otlp_request(spans[i : i + step], enum_names)
            f.write(json.dumps(request, separators=(",", ":")) + "\n")


_JAEGER_KINDS = {
    SpanKind.CLIENT: "client",
    SpanKind.SERVER: "server",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
    SpanKind.INTERNAL: "internal",
}


def _tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, (list, tuple)):
        return {"key": key, "type": "string", "value": json.dumps(list(value))}
    return {"key": key, "type": "string", "value": str(value)}


def _jaeger_id(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _jaeger_span(span: ReadableSpan, process_id: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    references = []
    if span.parent is not None:
        references.append(
            {
                "refType": "CHILD_OF",
                "traceID": _jaeger_id(span.parent.trace_id, 32),
                "spanID": _jaeger_id(span.parent.span_id, 16),
            }
        )
    for link in span.links:
        # Jaeger's span model has no attributes on references: they are lost.
        references.append(
            {
                "refType": "FOLLOWS_FROM",
                "traceID": _jaeger_id(link.context.trace_id, 32),
                "spanID": _jaeger_id(link.context.span_id, 16),
            }
        )
    tags = [_tag(k, v) for k, v in (span.attributes or {}).items()]
    tags.append(
        _tag(
            "otel.scope.name", span.instrumentation_scope.name if span.instrumentation_scope else ""
        )
    )
    tags.append(_tag("span.kind", _JAEGER_KINDS[span.kind]))
    if span.status.status_code is StatusCode.ERROR:
        tags.append(_tag("otel.status_code", "ERROR"))
        tags.append(_tag("error", True))
        if span.status.description:
            tags.append(_tag("otel.status_description", span.status.description))
    elif span.status.status_code is StatusCode.OK:
        tags.append(_tag("otel.status_code", "OK"))
    start_ns = span.start_time or 0
    end_ns = span.end_time or start_ns
    return {
        "traceID": _jaeger_id(ctx.trace_id, 32),
        "spanID": _jaeger_id(ctx.span_id, 16),
        "flags": 1,
        "operationName": span.name,
        "references": references,
        "startTime": start_ns // 1000,
        "duration": (end_ns - start_ns) // 1000,
        "tags": tags,
        "logs": [
            {
                "timestamp": event.timestamp // 1000,
                "fields": [_tag("event", event.name)]
                + [_tag(k, v) for k, v in (event.attributes or {}).items()],
            }
            for event in span.events
        ],
        "processID": process_id,
        "warnings": None,
    }


def write_jaeger_json(
    spans: Sequence[ReadableSpan],
    path: StrPath,
    *,
    compress: bool = False,
    indent: int | None = None,
) -> None:
    """Write spans as Jaeger's ``/api/traces`` answer (also what the UI
    downloads): ``{"data": [trace, ...]}``, one entry per trace id in order of
    first appearance, each with its own ``processes`` table. ``indent`` gives
    the pretty-printed variant.
    """
    traces: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        ctx = span.get_span_context()
        assert ctx is not None
        traces.setdefault(ctx.trace_id, []).append(span)
    data = []
    for trace_id, members in traces.items():
        processes: dict[str, dict[str, Any]] = {}
        by_resource: dict[int, str] = {}
        out_spans = []
        for span in members:
            key = id(span.resource)
            if key not in by_resource:
                pid = f"p{len(by_resource) + 1}"
                by_resource[key] = pid
                attrs = dict(span.resource.attributes)
                service = str(attrs.pop("service.name", "unknown_service"))
                processes[pid] = {
                    "serviceName": service,
                    "tags": [_tag(k, v) for k, v in attrs.items()],
                }
            out_spans.append(_jaeger_span(span, by_resource[key]))
        data.append(
            {
                "traceID": _jaeger_id(trace_id, 32),
                "spans": out_spans,
                "processes": processes,
                "warnings": None,
            }
        )
    document = {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}
    with _open(path, compress) as f:
        json.dump(document, f, indent=indent)
        f.write("\n")
