"""``kafkaplus audit``: find lost or unconsumed Kafka messages in exported traces.

Live metrics can say that *something* went missing; only the spans can say
*which* message. This module reads trace exports after the fact (OTLP JSON
lines from the Collector's file exporter or the SDK's ``otlp_json_file``
exporter, or Jaeger's JSON trace export),
joins producer and consumer spans on the Kafka coordinates
``(topic, partition, offset)`` and reports what was produced, delivered,
failed, consumed per consumer group, never consumed, and how long delivery
took end to end.

Matching never uses trace or span ids: a consumer span may continue the
producer's trace or only link to it, and the producer span may sit in another
file entirely. The offset the broker assigned is the one identity both sides
share.

Memory model: input is streamed span by span (see :class:`_JsonStream`), so a
file's size does not matter; what stays in memory is one small entry per
delivered message (offset -> produce time and trace id) and one per
consumption (offset -> hand-over time, per consumer group), plus counters.
Failed and unacknowledged sends are only counted, never stored.

The same report can come from ClickHouse instead of files: see
``audit_clickhouse``, whose query computes every number of :class:`Report`
for :func:`render_text` to print.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import gzip
import io
import json
import math
import re
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, cast

__all__ = [
    "AuditInputError",
    "FileSummary",
    "GroupStats",
    "Latency",
    "Orphan",
    "PartitionStats",
    "Report",
    "TopicStats",
    "audit",
    "main",
    "render_text",
]

PROG = "kafkaplus audit"

# Attribute names (semantic conventions v1.44) and the older names other Kafka
# instrumentations still emit, so exports from mixed fleets are still usable.
_SYSTEM = "messaging.system"
_OPERATION = ("messaging.operation.type", "messaging.operation")
_DESTINATION = ("messaging.destination.name",)
_PARTITION = (
    "messaging.destination.partition.id",
    "messaging.kafka.destination.partition",
    "messaging.kafka.partition",
)
_OFFSET = ("messaging.kafka.offset", "messaging.kafka.message.offset")
_GROUP = ("messaging.consumer.group.name", "messaging.kafka.consumer.group")
_ERROR_TYPE = "error.type"

_SEND_OPS = frozenset({"send", "publish"})
_PROCESS_OPS = frozenset({"process", "deliver"})
_RECEIVE_OPS = frozenset({"receive"})

UNKNOWN_PARTITION = "?"
#: ``FileSummary.format`` of a report that the ClickHouse query produced.
CLICKHOUSE_FORMAT = "clickhouse"
UNKNOWN_GROUP = "(unknown)"
UNKNOWN_ERROR = "(no error.type)"

# OTLP SpanKind enum, by number and by name.
_OTLP_KINDS = {
    0: "",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}


class _Malformed(Exception):
    """A span whose structure is wrong; the reader adds file and line."""


class AuditInputError(Exception):
    """Input that cannot be audited: missing, unreadable, not JSON, or not traces.

    A dedicated type lets the CLI turn every input problem into exit status 2
    with a one-line message instead of a traceback.
    """


# --------------------------------------------------------------------------
# Report model
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """End-to-end latency (producer span start -> consumer hand-over), in ms.

    Percentiles use the nearest-rank method so every figure is a latency that
    was actually observed, which keeps small samples honest.
    """

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class Orphan:
    """A delivered message that no consumer span accounts for."""

    topic: str
    partition: str
    offset: int
    trace_id: str
    produced_unix_nano: int

    @property
    def produced_at(self) -> str:
        return _iso(self.produced_unix_nano)


@dataclass
class GroupStats:
    """One consumer group on one topic.

    ``consumed`` counts distinct messages; it includes ``without_producer``
    (consumed messages for which the data holds no producer span), so
    ``delivered == consumed - without_producer + missing``.
    """

    group: str
    consumed: int = 0
    missing: int = 0
    without_producer: int = 0
    latency: Latency = field(default_factory=lambda: Latency(0, None, None, None, None))
    missing_by_partition: dict[str, int] = field(default_factory=dict)


@dataclass
class PartitionStats:
    """Counts for one partition; failures often carry no partition (``"?"``)."""

    partition: str
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    unacknowledged: int = 0
    never_consumed: int = 0
    consumed: dict[str, int] = field(default_factory=dict)


@dataclass
class TopicStats:
    """Everything known about one topic."""

    topic: str
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    unacknowledged: int = 0
    never_consumed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    partitions: list[PartitionStats] = field(default_factory=list)
    groups: list[GroupStats] = field(default_factory=list)
    has_consumers: bool = False


@dataclass(frozen=True)
class FileSummary:
    """What was read from one input, so a report shows which exports it covers.

    For the ClickHouse query (``format == "clickhouse"``) ``path`` names the
    server and table, and ``spans`` counts only the spans with
    ``messaging.system=kafka``: the query reads no others.
    """

    path: str
    format: str
    spans: int
    messaging_spans: int


@dataclass
class Report:
    """The audit result; ``to_dict`` is the ``--format json`` document."""

    files: list[FileSummary]
    since_unix_nano: int | None
    until_unix_nano: int | None
    group: str | None
    topics: list[TopicStats]
    orphan_count: int
    orphans: list[Orphan]
    group_orphan_count: int | None = None
    group_orphans: list[Orphan] | None = None
    duplicate_producer_spans: int = 0

    @property
    def produced(self) -> int:
        return sum(t.produced for t in self.topics)

    @property
    def delivered(self) -> int:
        return sum(t.delivered for t in self.topics)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.topics)

    @property
    def unacknowledged(self) -> int:
        return sum(t.unacknowledged for t in self.topics)

    def to_dict(self) -> dict[str, Any]:
        def orphan(o: Orphan) -> dict[str, Any]:
            d = dataclasses.asdict(o)
            d["produced_at"] = o.produced_at
            return d

        out: dict[str, Any] = {
            "files": [dataclasses.asdict(f) for f in self.files],
            "window": {
                "since": _iso(self.since_unix_nano) if self.since_unix_nano is not None else None,
                "until": _iso(self.until_unix_nano) if self.until_unix_nano is not None else None,
                "since_unix_nano": self.since_unix_nano,
                "until_unix_nano": self.until_unix_nano,
            },
            "group": self.group,
            "totals": {
                "produced": self.produced,
                "delivered": self.delivered,
                "failed": self.failed,
                "unacknowledged": self.unacknowledged,
                "never_consumed": self.orphan_count,
            },
            "duplicate_producer_spans": self.duplicate_producer_spans,
            "topics": [dataclasses.asdict(t) for t in self.topics],
            "orphan_count": self.orphan_count,
            "orphans": [orphan(o) for o in self.orphans],
        }
        if self.group is not None:
            out["group_orphan_count"] = self.group_orphan_count
            out["group_orphans"] = [orphan(o) for o in self.group_orphans or []]
        return out


# --------------------------------------------------------------------------
# Streaming JSON
# --------------------------------------------------------------------------

_WS_RE = re.compile(r"[ \t\n\r]*")
_CHUNK = 1 << 16
# How close to the end of the buffer a decode error must be to mean "value is
# cut off, read more" rather than "this is not JSON". Longest bare literal is
# "-Infinity"; truncated escapes are shorter.
_TRUNCATION_MARGIN = 16


class _JsonStream:
    """Pull parser for the *structure* of a JSON text, decoding leaves in C.

    The containers that can be huge (the Jaeger ``data`` array, a trace's
    ``spans``, OTLP ``resourceSpans``/``scopeSpans``/``spans``) are walked
    one element at a time here; each element small enough to hold (one span)
    is handed to :meth:`json.JSONDecoder.raw_decode`. Only the current chunk
    and the element being decoded are ever buffered.
    """

    def __init__(self, text: IO[str], name: str) -> None:
        self._f = text
        self._name = name
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._line_base = 1
        self._decoder = json.JSONDecoder()
        self.last_start = 0

    def _fill(self, want: int) -> bool:
        if self._eof:
            return False
        if self._pos:
            self._line_base += self._buf.count("\n", 0, self._pos)
            self._buf = self._buf[self._pos :]
            self._pos = 0
        data = self._f.read(max(want, _CHUNK))
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def error(self, message: str, pos: int | None = None) -> AuditInputError:
        p = self._pos if pos is None else pos
        line = self._line_base + self._buf.count("\n", 0, p)
        return AuditInputError(f"{self._name}:{line}: {message}")

    def peek(self) -> str:
        """Next non-blank character, or ``""`` at the end of input."""
        while True:
            m = _WS_RE.match(self._buf, self._pos)
            self._pos = m.end() if m else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill(0):
                return ""

    def expect(self, char: str, what: str) -> None:
        got = self.peek()
        if got != char:
            found = repr(got) if got else "end of file"
            raise self.error(f"expected {what}, found {found}")
        self._pos += 1

    def value(self) -> Any:
        """Decode the next complete JSON value."""
        if self.peek() == "":
            raise self.error("unexpected end of file")
        want = 0
        while True:
            try:
                obj, end = self._decoder.raw_decode(self._buf, self._pos)
            except RecursionError:
                raise self.error("not valid JSON (nested too deeply)") from None
            except json.JSONDecodeError as exc:
                truncated = exc.msg.startswith("Unterminated string") or (
                    exc.pos >= len(self._buf) - _TRUNCATION_MARGIN
                )
                if not truncated or self._eof:
                    raise self.error(f"not valid JSON ({exc.msg})", exc.pos) from None
                # Grow geometrically so one large element costs linear time.
                want = max(2 * want, len(self._buf) - self._pos)
                self._fill(want)
                continue
            if end == len(self._buf) and not self._eof and self._fill(0):
                continue  # a number at the buffer's edge may go on
            self.last_start = self._pos
            self._pos = end
            return obj

    def array(self, what: str) -> Iterator[None]:
        """Yield once per element; the consumer must read exactly that element."""
        self.expect("[", f"'[' starting {what}")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            yield
            c = self.peek()
            self._pos += 1
            if c == ",":
                continue
            if c == "]":
                return
            self._pos -= 1
            if not c:
                raise self.error(f"unexpected end of file in {what}")
            raise self.error(f"expected ',' or ']' in {what}")

    def object(self, what: str) -> Iterator[str]:
        """Yield each key; the consumer must read exactly that key's value."""
        self.expect("{", f"'{{' starting {what}")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error(f"expected a key in {what}")
            key = self.value()
            self.expect(":", "':'")
            yield key
            c = self.peek()
            self._pos += 1
            if c == ",":
                continue
            if c == "}":
                return
            self._pos -= 1
            if not c:
                raise self.error(f"unexpected end of file in {what}")
            raise self.error(f"expected ',' or '}}' in {what}")


# --------------------------------------------------------------------------
# Span decoding (both formats -> one call into the index)
# --------------------------------------------------------------------------


def _otlp_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    if "boolValue" in v:
        return v["boolValue"]
    if "doubleValue" in v:
        return v["doubleValue"]
    return None


def _otlp_attrs(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise _Malformed("'attributes' is not a list")
    out: dict[str, Any] = {}
    for kv in raw:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise _Malformed("attribute without a string 'key'")
        out[kv["key"]] = _otlp_value(kv.get("value"))
    return out


def _jaeger_tags(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise _Malformed("'tags' is not a list")
    out: dict[str, Any] = {}
    for tag in raw:
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            raise _Malformed("tag without a string 'key'")
        value: Any = tag.get("value")
        kind = tag.get("type")
        try:
            if kind == "int64":
                value = int(value)
            elif kind == "float64":
                value = float(value)
            elif kind == "bool" and isinstance(value, str):
                value = value.lower() == "true"
        except (TypeError, ValueError):
            value = None
        out[tag["key"]] = value
    return out


def _trace_id(raw: Any) -> int:
    """Trace ids become ints: a quarter of the size of their hex strings."""
    if not isinstance(raw, str) or not raw:
        return 0
    try:
        return int(raw, 16)
    except ValueError:
        pass
    try:  # protobuf's JSON mapping (MessageToJson) uses base64 for bytes
        return int.from_bytes(base64.b64decode(raw, validate=True), "big")
    except (binascii.Error, ValueError):
        return 0


def _nanos(raw: Any, name: str) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _Malformed(f"span without a numeric {name!r}") from None


def _first(attrs: dict[str, Any], names: Sequence[str]) -> Any:
    for n in names:
        v = attrs.get(n)
        if v is not None:
            return v
    return None


def _partition(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return UNKNOWN_PARTITION
    s = str(v).strip()
    if not s or s == "-1":  # librdkafka's "unassigned" partition
        return UNKNOWN_PARTITION
    return s


def _offset(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None


class _Index:
    """The per-message index. Nested dicts keyed by topic and partition keep
    each message's entry down to one int key and a two-int tuple."""

    def __init__(self, since: int | None, until: int | None) -> None:
        self.since = since
        self.until = until
        # topic -> partition -> offset -> (produce start ns, trace id)
        self.produced: dict[str, dict[str, dict[int, tuple[int, int]]]] = {}
        # delivered messages produced outside the window: only their offsets
        self.outside: dict[str, dict[str, set[int]]] = {}
        # topic -> partition -> [failed, unacknowledged]
        self.undelivered: dict[str, dict[str, list[int]]] = {}
        # topic -> error.type -> count
        self.failures: dict[str, dict[str, int]] = {}
        # topic -> partition -> group -> offset -> earliest hand-over ns, kept
        # apart for process spans and poll batches because a process span's
        # start is the moment the app got the message, while a batch only
        # bounds it: the batch time is used only when no process span exists.
        self.processed: dict[str, dict[str, dict[str, dict[int, int]]]] = {}
        self.polled: dict[str, dict[str, dict[str, dict[int, int]]]] = {}
        self.duplicates = 0
        self._strings: dict[str, str] = {}

    def _s(self, s: str) -> str:
        # Topic, partition and group names repeat millions of times; share them.
        return self._strings.setdefault(s, s)

    def in_window(self, t: int) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)

    def add(
        self,
        kind: str,
        start: int,
        end: int,
        trace_id: int,
        is_error: bool,
        attrs: dict[str, Any],
        links: Iterable[dict[str, Any]],
    ) -> bool:
        """Index one span; returns whether it was a Kafka messaging span."""
        system = attrs.get(_SYSTEM)
        if system != "kafka":
            return False
        op = _first(attrs, _OPERATION)
        if op is None:
            op = {"producer": "send", "consumer": "process", "client": "receive"}.get(kind)
        topic = _first(attrs, _DESTINATION)
        if op in _SEND_OPS:
            if isinstance(topic, str):
                self._producer(topic, start, trace_id, is_error, attrs)
        elif op in _PROCESS_OPS:
            if isinstance(topic, str):
                self._consumer(self.processed, topic, attrs, _group(attrs), start)
        elif op in _RECEIVE_OPS:
            group = _group(attrs)
            if isinstance(topic, str):
                self._consumer(self.polled, topic, attrs, group, end)
            for link_attrs in links:
                link_topic = _first(link_attrs, _DESTINATION) or topic
                if isinstance(link_topic, str):
                    self._consumer(self.polled, link_topic, link_attrs, group, end)
        else:
            return False
        return True

    def _producer(
        self, topic: str, start: int, trace_id: int, is_error: bool, attrs: dict[str, Any]
    ) -> None:
        topic = self._s(topic)
        partition = self._s(_partition(_first(attrs, _PARTITION)))
        offset = _offset(_first(attrs, _OFFSET))
        if offset is not None:
            if self.in_window(start):
                by_offset = self.produced.setdefault(topic, {}).setdefault(partition, {})
                old = by_offset.get(offset)
                if old is not None:
                    self.duplicates += 1
                # The earliest span wins, whatever order the files come in, so
                # the result does not depend on input order (and equals the
                # ClickHouse query's, which has no order to go by).
                if old is None or (start, trace_id) < old:
                    by_offset[offset] = (start, trace_id)
            else:
                self.outside.setdefault(topic, {}).setdefault(partition, set()).add(offset)
            return
        if not self.in_window(start):
            return
        counts = self.undelivered.setdefault(topic, {}).setdefault(partition, [0, 0])
        error_type = attrs.get(_ERROR_TYPE)
        if is_error or error_type is not None:
            counts[0] += 1
            key = self._s(str(error_type) if error_type is not None else UNKNOWN_ERROR)
            per_type = self.failures.setdefault(topic, {})
            per_type[key] = per_type.get(key, 0) + 1
        else:
            counts[1] += 1

    def _consumer(
        self,
        into: dict[str, dict[str, dict[str, dict[int, int]]]],
        topic: str,
        attrs: dict[str, Any],
        group: str,
        t: int,
    ) -> None:
        offset = _offset(_first(attrs, _OFFSET))
        if offset is None:
            return
        partition = self._s(_partition(_first(attrs, _PARTITION)))
        by_offset = (
            into.setdefault(self._s(topic), {})
            .setdefault(partition, {})
            .setdefault(self._s(group), {})
        )
        old = by_offset.get(offset)
        if old is None or t < old:
            by_offset[offset] = t

    def consumptions(self, topic: str, partition: str) -> dict[str, dict[int, int]]:
        """Group -> offset -> hand-over time, process spans taking precedence."""
        processed = self.processed.get(topic, {}).get(partition, {})
        out = dict(processed)
        for group, polled in self.polled.get(topic, {}).get(partition, {}).items():
            if group in processed:
                merged = dict(polled)
                merged.update(processed[group])
                out[group] = merged
            else:
                out[group] = polled
        return out

    def consumed_partitions(self, topic: str) -> set[str]:
        return set(self.processed.get(topic, {})) | set(self.polled.get(topic, {}))


def _group(attrs: dict[str, Any]) -> str:
    g = _first(attrs, _GROUP)
    return str(g) if g is not None else UNKNOWN_GROUP


def _otlp_span(span: Any, index: _Index) -> bool:
    if not isinstance(span, dict):
        raise _Malformed("span is not a JSON object")
    attrs = _otlp_attrs(span.get("attributes"))
    if attrs.get(_SYSTEM) != "kafka":
        return False
    kind_raw = span.get("kind", 0)
    if isinstance(kind_raw, str):
        kind = kind_raw.removeprefix("SPAN_KIND_").lower()
        if kind == "unspecified":
            kind = ""
    else:
        kind = _OTLP_KINDS.get(kind_raw, "") if isinstance(kind_raw, int) else ""
    status = span.get("status")
    code = status.get("code") if isinstance(status, dict) else None
    is_error = code in (2, "STATUS_CODE_ERROR")
    start = _nanos(span.get("startTimeUnixNano"), "startTimeUnixNano")
    end = _nanos(span.get("endTimeUnixNano", start), "endTimeUnixNano")
    links_raw = span.get("links") or []
    if not isinstance(links_raw, list):
        raise _Malformed("'links' is not a list")
    links = (
        _otlp_attrs(link.get("attributes") if isinstance(link, dict) else None)
        for link in links_raw
    )
    return index.add(kind, start, end, _trace_id(span.get("traceId")), is_error, attrs, links)


def _jaeger_span(span: Any, index: _Index) -> bool:
    if not isinstance(span, dict):
        raise _Malformed("span is not a JSON object")
    tags = _jaeger_tags(span.get("tags"))
    if tags.get(_SYSTEM) != "kafka":
        return False
    kind = str(tags.get("span.kind") or "").lower()
    is_error = tags.get("otel.status_code") == "ERROR" or tags.get("error") is True
    start = _nanos(span.get("startTime"), "startTime") * 1000
    end = start + _nanos(span.get("duration", 0), "duration") * 1000
    # Jaeger's model keeps links only as FOLLOWS_FROM references, without
    # attributes, so batch links cannot be resolved to offsets here.
    return index.add(kind, start, end, _trace_id(span.get("traceID")), is_error, tags, ())


# --------------------------------------------------------------------------
# File walking
# --------------------------------------------------------------------------


class _FileReader:
    """Walks one file's JSON structure down to spans, recognising the format
    by where the spans sit rather than by file name."""

    def __init__(self, stream: _JsonStream, index: _Index, progress: _Progress | None = None):
        self.s = stream
        self.index = index
        self.formats: set[str] = set()
        self.spans = 0
        self.messaging = 0
        self.progress = progress

    def run(self) -> None:
        while True:
            c = self.s.peek()
            if c == "":
                return
            if c == "{":
                self._top_object()
            elif c == "[":  # a bare list of Jaeger traces
                self.formats.add("jaeger-json")
                for _ in self.s.array("the trace list"):
                    self._jaeger_trace()
            else:
                raise self.s.error(f"not JSON trace data: expected '{{' or '[', found {c!r}")

    def _skip(self) -> None:
        self.s.value()

    def _null_or(self, char: str) -> bool:
        if self.s.peek() == char:
            return True
        if self.s.value() is not None:
            raise self.s.error("unexpected value type")
        return False

    def _top_object(self) -> None:
        for key in self.s.object("a top-level object"):
            if key == "resourceSpans":
                self.formats.add("otlp-json")
                if self._null_or("["):
                    for _ in self.s.array("resourceSpans"):
                        self._resource_spans()
            elif key == "data":
                self.formats.add("jaeger-json")
                if self._null_or("["):
                    for _ in self.s.array("data"):
                        self._jaeger_trace()
            elif key == "spans":  # a single Jaeger trace at the top level
                self.formats.add("jaeger-json")
                self._jaeger_spans()
            else:
                self._skip()

    def _resource_spans(self) -> None:
        for key in self.s.object("a resourceSpans entry"):
            if key in ("scopeSpans", "instrumentationLibrarySpans"):
                if self._null_or("["):
                    for _ in self.s.array(key):
                        self._scope_spans()
            else:
                self._skip()

    def _scope_spans(self) -> None:
        for key in self.s.object("a scopeSpans entry"):
            if key == "spans":
                if self._null_or("["):
                    for _ in self.s.array("spans"):
                        self._span(_otlp_span)
            else:
                self._skip()

    def _jaeger_trace(self) -> None:
        for key in self.s.object("a Jaeger trace"):
            if key == "spans":
                self._jaeger_spans()
            else:
                self._skip()

    def _jaeger_spans(self) -> None:
        if self._null_or("["):
            for _ in self.s.array("spans"):
                self._span(_jaeger_span)

    def _span(self, decode: Callable[[Any, _Index], bool]) -> None:
        span = self.s.value()
        self.spans += 1
        if self.progress is not None and not self.spans & 0x3FF:
            self.progress.show(self.spans, self.messaging)
        try:
            if decode(span, self.index):
                self.messaging += 1
        except _Malformed as exc:
            # The line is worked out only now: counting newlines for every
            # span would make large files quadratic.
            raise self.s.error(f"span: {exc}", self.s.last_start) from None


def _open_binary(path: str) -> IO[bytes]:
    raw: Any = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    if buffered.peek(2)[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    return cast(IO[bytes], buffered)


class _Progress:
    """``reading FILE: N spans`` on a terminal's stderr, at most twice a second.

    A large export takes minutes; on a terminal the user sees it advance. When
    stderr is not a terminal (a pipe, a log, a test) nothing is printed.
    """

    def __init__(self, name: str, stream: IO[str]) -> None:
        self.name = name
        self.stream = stream
        self.next = time.monotonic() + 0.5
        self.shown = False

    @classmethod
    def for_terminal(cls, name: str) -> _Progress | None:
        stream = sys.stderr
        return cls(name, stream) if stream is not None and stream.isatty() else None

    def show(self, spans: int, messaging: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.5
        self.shown = True
        self.stream.write(f"\rreading {self.name}: {spans:,} spans, {messaging:,} Kafka spans")
        self.stream.flush()

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _read_file(path: str, index: _Index) -> FileSummary:
    name = "<stdin>" if path == "-" else path
    try:
        binary = _open_binary(path)
    except OSError as exc:
        raise AuditInputError(f"{name}: cannot open: {exc.strerror or exc}") from None
    text = io.TextIOWrapper(binary, encoding="utf-8")
    progress = _Progress.for_terminal(name)
    reader = _FileReader(_JsonStream(text, name), index, progress)
    try:
        reader.run()
    except UnicodeDecodeError:
        raise AuditInputError(f"{name}: not UTF-8 text, so not a JSON trace export") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise AuditInputError(f"{name}: cannot read: {exc}") from None
    finally:
        if progress is not None:
            progress.done()
        if path == "-":
            text.detach()  # leave stdin open for the caller
        else:
            text.close()
    if not reader.formats:
        raise AuditInputError(
            f"{name}: no spans found: expected OTLP JSON lines (resourceSpans) "
            "or a Jaeger JSON export (data[].spans)"
        )
    return FileSummary(name, "+".join(sorted(reader.formats)), reader.spans, reader.messaging)


# --------------------------------------------------------------------------
# Building the report
# --------------------------------------------------------------------------


def _partition_key(p: str) -> tuple[int, int, str]:
    """Numeric partitions first, in numeric order, then the rest by name.

    The name is the last key so that equal numbers ("1", "01") still sort the
    same way every time; the ClickHouse query sorts by the same key.
    """
    return (0, int(p), p) if p.isascii() and p.isdigit() else (1, 0, p)


def _percentile(sorted_values: Sequence[int], p: float) -> int:
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency(values_ns: list[int]) -> Latency:
    if not values_ns:
        return Latency(0, None, None, None, None)
    values_ns.sort()

    def ms(v: int) -> float:
        return v / 1e6

    return Latency(
        len(values_ns),
        ms(_percentile(values_ns, 50)),
        ms(_percentile(values_ns, 90)),
        ms(_percentile(values_ns, 99)),
        ms(values_ns[-1]),
    )


def _orphan_list(
    topic: str,
    partition: str,
    offsets: Iterable[int],
    delivered: dict[int, tuple[int, int]],
    room: int | None,
    out: list[Orphan],
) -> None:
    for offset in offsets:
        if room is not None and len(out) >= room:
            return
        start, trace_id = delivered[offset]
        out.append(Orphan(topic, partition, offset, f"{trace_id:032x}", start))


def _build(
    index: _Index,
    files: list[FileSummary],
    group: str | None,
    max_orphans: int | None,
) -> Report:
    topics: list[TopicStats] = []
    orphans: list[Orphan] = []
    orphan_count = 0
    group_orphans: list[Orphan] = []
    group_orphan_count = 0
    names = set(index.produced) | set(index.undelivered) | set(index.processed) | set(index.polled)
    for topic in sorted(names):
        produced = index.produced.get(topic, {})
        undelivered = index.undelivered.get(topic, {})
        consumed = {p: index.consumptions(topic, p) for p in index.consumed_partitions(topic)}
        outside = index.outside.get(topic, {})
        all_groups = sorted({g for per in consumed.values() for g in per})
        # With --group, a topic the group never read from gets no group row:
        # otherwise every unrelated topic would show up as "all missing".
        shown = all_groups if group is None else [group] if group in all_groups else []
        ts = TopicStats(topic, has_consumers=bool(all_groups))
        ts.failures = dict(sorted(index.failures.get(topic, {}).items()))
        gstats = {g: GroupStats(g) for g in shown}
        latencies: dict[str, list[int]] = {g: [] for g in shown}
        for partition in sorted(set(produced) | set(undelivered), key=_partition_key):
            delivered = produced.get(partition, {})
            failed, unacked = undelivered.get(partition, [0, 0])
            per_group = consumed.get(partition, {})
            ps = PartitionStats(
                partition,
                produced=len(delivered) + failed + unacked,
                delivered=len(delivered),
                failed=failed,
                unacknowledged=unacked,
            )
            never = [o for o in delivered if not any(o in c for c in per_group.values())]
            never.sort()
            ps.never_consumed = len(never)
            orphan_count += len(never)
            _orphan_list(topic, partition, never, delivered, max_orphans, orphans)
            for g in shown:
                by_offset = per_group.get(g, {})
                matched = [o for o in by_offset if o in delivered]
                ps.consumed[g] = len(matched)
                missing = len(delivered) - len(matched)
                gs = gstats[g]
                gs.missing += missing
                if missing:
                    gs.missing_by_partition[partition] = missing
                lat = latencies[g]
                for o in matched:
                    lat.append(by_offset[o] - delivered[o][0])
                if g == group:
                    missed = sorted(o for o in delivered if o not in by_offset)
                    group_orphan_count += len(missed)
                    _orphan_list(topic, partition, missed, delivered, max_orphans, group_orphans)
            ts.partitions.append(ps)
        # Consumptions of messages without a producer span in the data (yet
        # produced, as far as we know, inside the window).
        for partition, per_group in consumed.items():
            delivered = produced.get(partition, {})
            skip = outside.get(partition, set())
            for g in shown:
                gs = gstats[g]
                for o, t in per_group.get(g, {}).items():
                    if o in delivered:
                        gs.consumed += 1
                    elif o not in skip and index.in_window(t):
                        gs.consumed += 1
                        gs.without_producer += 1
        for g in shown:
            gstats[g].latency = _latency(latencies[g])
        ts.groups = [gstats[g] for g in shown]
        ts.produced = sum(p.produced for p in ts.partitions)
        ts.delivered = sum(p.delivered for p in ts.partitions)
        ts.failed = sum(p.failed for p in ts.partitions)
        ts.unacknowledged = sum(p.unacknowledged for p in ts.partitions)
        ts.never_consumed = sum(p.never_consumed for p in ts.partitions)
        topics.append(ts)
    return Report(
        files=files,
        since_unix_nano=index.since,
        until_unix_nano=index.until,
        group=group,
        topics=topics,
        orphan_count=orphan_count,
        orphans=orphans,
        group_orphan_count=group_orphan_count if group is not None else None,
        group_orphans=group_orphans if group is not None else None,
        duplicate_producer_spans=index.duplicates,
    )


def _to_nanos(t: datetime | float | int | str | None, what: str) -> int | None:
    if t is None:
        return None
    if isinstance(t, str):
        return parse_time(t, what)
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return _datetime_nanos(t)
    return round(t * 1_000_000_000)


def _datetime_nanos(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_time(text: str, what: str = "time") -> int:
    """Epoch seconds or ISO-8601 (naive means UTC) -> Unix nanoseconds."""
    s = text.strip()
    try:
        return round(float(s) * 1_000_000_000)
    except ValueError:
        pass
    iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise AuditInputError(f"{what}: {text!r} is neither ISO-8601 nor epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return _datetime_nanos(dt)


def audit(
    paths: Sequence[str | Path],
    since: datetime | float | int | str | None = None,
    until: datetime | float | int | str | None = None,
    *,
    group: str | None = None,
    max_orphans: int | None = None,
) -> Report:
    """Audit span exports for lost and unconsumed messages.

    ``since``/``until`` select messages by producer span start (since
    inclusive, until exclusive); numbers are epoch seconds, naive datetimes
    and ISO strings without offset are UTC. ``max_orphans`` caps only the
    lists; counts are always complete. Raises :class:`AuditInputError` for
    unreadable or malformed input.
    """
    if not paths:
        raise AuditInputError("no input files")
    lo = _to_nanos(since, "--since")
    hi = _to_nanos(until, "--until")
    if lo is not None and hi is not None and lo >= hi:
        raise AuditInputError("--since must be before --until")
    index = _Index(lo, hi)
    files = [_read_file(str(p), index) for p in paths]
    return _build(index, files, group, max_orphans)


# --------------------------------------------------------------------------
# Text rendering
# --------------------------------------------------------------------------

WIDTH = 80


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) < 100_000 else f"{v:.0f}"


def _fit(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "~"


def _table(rows: list[list[str]], indent: int = 2, align: str = "l") -> list[str]:
    """Columns aligned per ``align`` ("l"/"r" per column; the last letter
    repeats), numbers to the right so digits line up."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = align + "r" * len(widths) if len(align) == 1 else align
    out = []
    for r in rows:
        cells = [
            c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]) for i, c in enumerate(r)
        ]
        out.append((" " * indent + "  ".join(cells)).rstrip())
    return out


def _wrap(text: str, indent: int = 0) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2)
    )


def _orphan_lines(title: str, count: int, listed: list[Orphan], more_hint: bool) -> list[str]:
    lines = _wrap(
        f"{title}: {count}" + (f" (showing {len(listed)})" if count > len(listed) else "")
    )
    topic = None
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            lines.extend(
                _table([["part", "offset", "produced at (UTC)", "trace id"], *rows], 4, "lrll")
            )
            rows.clear()

    for o in listed:
        if o.topic != topic:
            flush()
            topic = o.topic
            lines.extend(_wrap(o.topic, 2))
        rows.append([o.partition, str(o.offset), o.produced_at, o.trace_id])
    flush()
    if count > len(listed) and more_hint:
        lines.append(f"  ... {count - len(listed)} more (raise --max-orphans to list them)")
    return lines


def render_text(report: Report) -> str:
    """The human-readable report, kept within 80 columns."""
    lines: list[str] = []
    spans = sum(f.spans for f in report.files)
    messaging = sum(f.messaging_spans for f in report.files)
    if report.files and all(f.format == CLICKHOUSE_FORMAT for f in report.files):
        # The query reads only spans with messaging.system=kafka, so it cannot
        # say how many spans the table holds in all.
        lines.extend(_wrap(f"kafkaplus audit: ClickHouse query, {messaging} Kafka spans"))
        for f in report.files:
            lines.extend(_wrap(f"{f.path} ({f.spans} spans with messaging.system=kafka)", 2))
    else:
        lines.extend(
            _wrap(
                f"kafkaplus audit: {len(report.files)} file(s), {spans} spans, "
                f"{messaging} Kafka spans"
            )
        )
        for f in report.files:
            lines.extend(_wrap(f"{f.path} ({f.format}, {f.spans} spans)", 2))
    if report.since_unix_nano is None and report.until_unix_nano is None:
        lines.append("window: all producer spans")
    else:
        lo = _iso(report.since_unix_nano) if report.since_unix_nano is not None else "start"
        hi = _iso(report.until_unix_nano) if report.until_unix_nano is not None else "end"
        lines.append(f"window: producer start in [{lo}, {hi})")
    if report.group is not None:
        lines.extend(_wrap(f"consumer group: {report.group}"))
    lines.extend(
        _wrap(
            f"total: produced {report.produced}, delivered {report.delivered}, "
            f"failed {report.failed}, unacknowledged {report.unacknowledged}, "
            f"never consumed {report.orphan_count}"
        )
    )
    if report.duplicate_producer_spans:
        lines.extend(
            _wrap(
                f"note: {report.duplicate_producer_spans} producer span(s) repeated an "
                "offset already seen (overlapping exports?) and were counted once"
            )
        )
    if not report.topics:
        lines.append("")
        lines.append("no Kafka producer or consumer spans found")
    for t in report.topics:
        lines.append("")
        lines.extend(_wrap(f"topic {t.topic}"))
        lines.extend(
            _wrap(
                f"produced {t.produced}: delivered {t.delivered}, failed {t.failed}, "
                f"unacknowledged {t.unacknowledged}; never consumed {t.never_consumed}",
                2,
            )
        )
        if t.failures:
            detail = ", ".join(f"{k} {v}" for k, v in t.failures.items())
            lines.extend(_wrap(f"failures: {detail}", 2))
        if t.partitions:
            rows = [["partition", "produced", "delivered", "failed", "unacked", "never consumed"]]
            rows += [
                [
                    p.partition,
                    str(p.produced),
                    str(p.delivered),
                    str(p.failed),
                    str(p.unacknowledged),
                    str(p.never_consumed),
                ]
                for p in t.partitions
            ]
            lines.append("")
            lines.extend(_table(rows))
        if not t.has_consumers:
            lines.append("")
            lines.extend(
                _wrap(
                    "no consumer spans for this topic: its consumers are not "
                    "instrumented, or their spans were not exported",
                    2,
                )
            )
        elif t.groups:
            rows = [
                ["group", "consumed", "missing", "no prod", "p50 ms", "p90 ms", "p99 ms", "max ms"]
            ]
            for g in t.groups:
                lat = g.latency
                rows.append(
                    [
                        _fit(g.group, 20),
                        str(g.consumed),
                        str(g.missing),
                        str(g.without_producer),
                        _ms(lat.p50_ms),
                        _ms(lat.p90_ms),
                        _ms(lat.p99_ms),
                        _ms(lat.max_ms),
                    ]
                )
            lines.append("")
            lines.extend(_table(rows))
            for g in t.groups:
                if g.missing_by_partition:
                    parts = ", ".join(f"p{p} {n}" for p, n in g.missing_by_partition.items())
                    lines.extend(_wrap(f"{g.group} missing: {parts}", 2))
    lines.append("")
    if report.orphan_count or report.orphans:
        lines.extend(
            _orphan_lines("never consumed by any group", report.orphan_count, report.orphans, True)
        )
    else:
        lines.append("never consumed by any group: 0")
    if report.group is not None:
        lines.append("")
        lines.extend(
            _orphan_lines(
                f"not consumed by group {report.group}",
                report.group_orphan_count or 0,
                report.group_orphans or [],
                True,
            )
        )
    if report.orphan_count or report.group_orphan_count:
        lines.append("")
        lines.extend(
            _wrap(
                "note: messages produced just before the export ended may still be "
                "in flight; use --until to leave out the tail."
            )
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Find Kafka messages that were lost or never consumed, from exported traces "
            "(OTLP JSON lines from the Collector file exporter or the SDK's otlp_json_file "
            "exporter, or Jaeger JSON; .gz ok), or with one query in the ClickHouse table "
            "the Collector's clickhouseexporter writes."
        ),
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="span export file ('-' = stdin)")
    p.add_argument(
        "--since", help="only messages produced at or after this time (ISO-8601/epoch s)"
    )
    p.add_argument("--until", help="only messages produced before this time (ISO-8601/epoch s)")
    p.add_argument("--group", metavar="NAME", help="report only this consumer group")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument(
        "--max-orphans",
        type=int,
        default=20,
        metavar="N",
        help="list at most N never-consumed messages (counts stay complete; default 20)",
    )
    ch = p.add_argument_group("ClickHouse (instead of files)")
    ch.add_argument(
        "--clickhouse",
        metavar="URL",
        help="run the audit as a query in this ClickHouse: http(s)://[user:pass@]host:port[/db]",
    )
    ch.add_argument(
        "--table",
        metavar="[DB.]TABLE",
        default="otel_traces",
        help="the clickhouseexporter's traces table (default otel_traces, in the URL's "
        "database or 'default')",
    )
    ch.add_argument(
        "--lookback",
        type=float,
        metavar="SECONDS",
        help="with --since: read no span that started more than SECONDS before it (faster "
        "on a large table; default: read all)",
    )
    ch.add_argument(
        "--print-sql",
        action="store_true",
        help="print the query, with these options as its parameters, and exit",
    )
    return p


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``kafkaplus audit``: 0 on success, 2 on usage or input errors."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed usage and the error
        return exc.code if isinstance(exc.code, int) else 2
    if args.max_orphans < 0:
        return _error("--max-orphans must be >= 0")
    table_mode = bool(args.clickhouse or args.print_sql)
    if table_mode and args.files:
        return _error("give FILEs or --clickhouse/--print-sql, not both")
    if not table_mode and not args.files:
        return _error("the following arguments are required: FILE (or --clickhouse URL)")
    if not table_mode and args.lookback is not None:
        return _error("--lookback applies to --clickhouse and --print-sql only")
    try:
        if table_mode:
            # Imported here: the file audit must work without the ClickHouse extra.
            from . import audit_clickhouse as ch

            if args.print_sql:
                database = ch.url_database(args.clickhouse) if args.clickhouse else None
                query = ch.AuditQuery.make(
                    args.table,
                    database,
                    args.since,
                    args.until,
                    group=args.group,
                    max_orphans=args.max_orphans,
                    lookback=args.lookback,
                )
                sys.stdout.write(ch.sql_script(query))
                return 0
            report = ch.audit_clickhouse(
                args.clickhouse,
                table=args.table,
                since=args.since,
                until=args.until,
                group=args.group,
                max_orphans=args.max_orphans,
                lookback=args.lookback,
            )
        else:
            report = audit(
                args.files,
                since=args.since,
                until=args.until,
                group=args.group,
                max_orphans=args.max_orphans,
            )
    except AuditInputError as exc:
        return _error(str(exc))
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(render_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
