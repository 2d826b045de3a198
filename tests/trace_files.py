"""Write finished SDK spans as the trace exports ``kafkaplus audit`` reads.

Tests (and the Kafka integration test) record spans with an
``InMemorySpanExporter`` and need them on disk in the shapes real tools
produce: the Collector file exporter's OTLP JSON lines, and the JSON that
Jaeger's query API and UI hand out. Both writers follow those tools' output
rather than protobuf defaults: hex trace/span ids, integer enums for OTLP;
typed tags, ``span.kind``/``otel.status_code`` tags and attribute-less
FOLLOWS_FROM references for Jaeger.

``otel_traces_rows`` turns OTLP JSON into the rows the Collector's
clickhouseexporter inserts into its ``otel_traces`` table, so that the
ClickHouse audit can be tested on the very spans the file audit reads.
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

__all__ = [
    "OTEL_TRACES_COLUMNS",
    "otel_traces_rows",
    "otlp_request",
    "write_jaeger_json",
    "write_otlp_json",
]

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


def otlp_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The spans as one OTLP JSON ExportTraceServiceRequest (hex ids, integer enums)."""
    return _otlp_request(spans, enum_names=False)


# ------------------------------------------------------------------ otel_traces
#
# What the clickhouseexporter (opentelemetry-collector-contrib,
# exporter/clickhouseexporter/exporter_traces.go) writes for each span, restated
# here from reading it: Timestamp is the start, Duration end - start in ns, ids
# in lowercase hex ("" when absent), SpanKind and StatusCode as pdata's String()
# ("Producer", "Error"), ServiceName from the resource's service.name, and every
# attribute value as pcommon.Value.AsString() (ints in decimal, bools
# "true"/"false", arrays and maps as JSON, bytes as base64).

OTEL_TRACES_COLUMNS = [
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind",
    "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage", "Events.Timestamp", "Events.Name",
    "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
]  # fmt: skip

_PDATA_KINDS = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"]
_PDATA_STATUS = ["Unset", "Ok", "Error"]


def _enum(value: Any, names: list[str], prefix: str) -> str:
    """An OTLP JSON enum (number or proto name) as pdata's String() spells it."""
    if isinstance(value, str):
        value = value.removeprefix(prefix)
        return next((n for n in names if n.upper() == value), value)
    return names[int(value or 0)]


def _raw(value: dict[str, Any]) -> Any:
    if "arrayValue" in value:
        return [_raw(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _raw(kv.get("value", {})) for kv in value["kvlistValue"].get("values", [])}
    if "intValue" in value:
        return int(value["intValue"])
    for key in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if key in value:
            return value[key]
    return None


def _as_string(value: dict[str, Any]) -> str:
    """pcommon.Value.AsString() of an OTLP JSON AnyValue."""
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return str(int(value["intValue"]))
    if "boolValue" in value:
        return "true" if value["boolValue"] else "false"
    if "doubleValue" in value:
        f = float(value["doubleValue"])
        # Go formats like ES6 number-to-string: no ".0" on whole numbers.
        return str(int(f)) if f.is_integer() and abs(f) < 1e21 else repr(f)
    if "bytesValue" in value:
        return str(value["bytesValue"])  # already base64 in OTLP JSON
    if "arrayValue" in value or "kvlistValue" in value:
        return json.dumps(_raw(value), separators=(",", ":"))
    return ""


def _attrs(raw: list[dict[str, Any]] | None) -> dict[str, str]:
    return {kv["key"]: _as_string(kv.get("value", {})) for kv in raw or []}


def _id(value: str | None) -> str:
    """Lowercase hex; "" for an absent or all-zero id, as TraceIDToHexOrEmptyString does."""
    text = (value or "").lower()
    return text if text.strip("0") else ""


def otel_traces_rows(request: dict[str, Any]) -> list[list[Any]]:
    """The otel_traces rows, in ``OTEL_TRACES_COLUMNS`` order, for one OTLP JSON request.

    Timestamps stay integers (ns): clickhouse-connect writes them into
    DateTime64(9) unchanged, as the exporter's Go time.Time keeps full precision.
    """
    rows: list[list[Any]] = []
    for rs in request.get("resourceSpans") or []:
        resource = _attrs((rs.get("resource") or {}).get("attributes"))
        service = resource.get("service.name", "")
        for ss in rs.get("scopeSpans") or []:
            scope = ss.get("scope") or {}
            for span in ss.get("spans") or []:
                start = int(span.get("startTimeUnixNano", 0))
                end = int(span.get("endTimeUnixNano", start))
                status = span.get("status") or {}
                events = span.get("events") or []
                links = span.get("links") or []
                rows.append([
                    start, _id(span.get("traceId")), _id(span.get("spanId")),
                    _id(span.get("parentSpanId")), span.get("traceState", ""), span.get("name", ""),
                    _enum(span.get("kind", 0), _PDATA_KINDS, "SPAN_KIND_"), service, resource,
                    scope.get("name", ""), scope.get("version", ""), _attrs(span.get("attributes")),
                    end - start, _enum(status.get("code", 0), _PDATA_STATUS, "STATUS_CODE_"),
                    status.get("message", ""),
                    [int(e.get("timeUnixNano", 0)) for e in events], [e.get("name", "") for e in events],
                    [_attrs(e.get("attributes")) for e in events],
                    [_id(lk.get("traceId")) for lk in links], [_id(lk.get("spanId")) for lk in links],
                    [lk.get("traceState", "") for lk in links], [_attrs(lk.get("attributes")) for lk in links],
                ])  # fmt: skip
    return rows
