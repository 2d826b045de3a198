"""Tests for ``kafkaplus audit``.

The scenario below is small enough to know every expected number by hand:
two topics, two partitions, failed and unacknowledged sends, two consumer
groups (one of which also polls in batches), a redelivery, a consumption with
no producer span, and a topic nobody consumes.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from kafkaplus_tools import audit as audit_mod
from kafkaplus_tools.audit import AuditInputError, Report, audit, main
from trace_files import write_jaeger_json, write_otlp_json

S = 1_000_000_000
MS = 1_000_000
T0 = 1_714_564_800 * S  # 2024-05-01T12:00:00Z


class Recorder:
    """An SDK tracer whose spans get the instrumentation's attributes and
    explicit timestamps, so latencies are exact."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("opentelemetry.instrumentation.kafkaplus")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def send(
        self,
        topic: str,
        at: int,
        partition: str | None = None,
        offset: int | None = None,
        error: str | None = None,
    ) -> trace.Span:
        attrs: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": topic,
            "messaging.client.id": "rdkafka",
        }
        if partition is not None:
            attrs["messaging.destination.partition.id"] = partition
        if offset is not None:
            attrs["messaging.kafka.offset"] = offset
        if error is not None:
            attrs["error.type"] = error
        span = self.tracer.start_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs, start_time=at
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=at + 2 * MS)
        return span

    def process(
        self,
        topic: str,
        partition: str,
        offset: int,
        group: str,
        at: int,
        producer: trace.Span | None = None,
        as_child: bool = False,
    ) -> None:
        attrs: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": partition,
            "messaging.kafka.offset": offset,
            "messaging.consumer.group.name": group,
        }
        context = None
        links = []
        if producer is not None and as_child:
            context = trace.set_span_in_context(producer)
        elif producer is not None:
            links = [Link(producer.get_span_context())]
        span = self.tracer.start_span(
            f"process {topic}",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes=attrs,
            links=links,
            start_time=at,
        )
        span.end(end_time=at + MS)

    def poll(
        self,
        topic: str,
        group: str,
        start: int,
        end: int,
        messages: Sequence[tuple[str, int, trace.Span | None]],
    ) -> None:
        links = []
        for partition, offset, producer in messages:
            ctx = (
                producer.get_span_context()
                if producer is not None
                else trace.SpanContext(0x1, 0x1, is_remote=True)
            )
            links.append(
                Link(
                    ctx,
                    {
                        "messaging.destination.partition.id": partition,
                        "messaging.kafka.offset": offset,
                    },
                )
            )
        span = self.tracer.start_span(
            f"poll {topic}",
            kind=SpanKind.CLIENT,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "receive",
                "messaging.destination.name": topic,
                "messaging.consumer.group.name": group,
                "messaging.batch.message_count": len(messages),
            },
            links=links,
            start_time=start,
        )
        span.end(end_time=end)


def at(seconds: float, ms: float = 0) -> int:
    return T0 + int(seconds * S) + int(ms * MS)


def scenario() -> Recorder:
    r = Recorder()
    p = {
        ("0", 10): r.send("orders", at(0), "0", 10),
        ("0", 11): r.send("orders", at(1), "0", 11),
        ("0", 12): r.send("orders", at(2), "0", 12),
        ("1", 20): r.send("orders", at(3), "1", 20),
        ("1", 21): r.send("orders", at(4), "1", 21),
        ("1", 22): r.send("orders", at(5), "1", 22),
    }
    r.send("orders", at(6), "1", error="_MSG_TIMED_OUT")
    r.send("orders", at(7), error="_MSG_TIMED_OUT")
    r.send("orders", at(8), "-1")  # never acknowledged: the process died first
    r.send("audit-log", at(9), "0", 0)
    r.send("audit-log", at(10), "0", 1)

    # billing: process spans only; one child of its producer, the rest linked
    r.process("orders", "0", 10, "billing", at(0, 5), p["0", 10], as_child=True)
    r.process("orders", "0", 10, "billing", at(0, 500), p["0", 10])  # redelivery
    r.process("orders", "0", 11, "billing", at(1, 10), p["0", 11])
    r.process("orders", "0", 12, "billing", at(2, 15), p["0", 12])
    r.process("orders", "1", 20, "billing", at(3, 20), p["1", 20])
    r.process("orders", "1", 21, "billing", at(4, 100), p["1", 21])
    r.process("orders", "0", 99, "billing", at(1))  # no producer span anywhere
    # shipping: a batch poll whose links repeat its process spans
    r.poll("orders", "shipping", at(0, 20), at(0, 29), [("0", 10, p["0", 10]), ("0", 11, None)])
    r.process("orders", "0", 10, "shipping", at(0, 30), p["0", 10])
    r.process("orders", "0", 11, "shipping", at(1, 40), p["0", 11])
    r.process("orders", "1", 20, "shipping", at(3, 50), p["1", 20])
    return r


def write(fmt: str, spans: list[ReadableSpan], path: Path, **kw: Any) -> Path:
    if fmt == "otlp":
        write_otlp_json(spans, path, **kw)
    else:
        write_jaeger_json(spans, path, **kw)
    return path


@pytest.fixture(params=["otlp", "jaeger"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scenario_file(fmt: str, tmp_path: Path) -> Path:
    name = "spans.jsonl" if fmt == "otlp" else "traces.json"
    return write(fmt, scenario().spans(), tmp_path / name)


def topic(report: Report, name: str) -> Any:
    [t] = [t for t in report.topics if t.topic == name]
    return t


def check_scenario(report: Report) -> None:
    assert report.produced == 11
    assert report.delivered == 8
    assert report.failed == 2
    assert report.unacknowledged == 1
    assert report.orphan_count == 3

    orders = topic(report, "orders")
    assert (orders.produced, orders.delivered, orders.failed, orders.unacknowledged) == (9, 6, 2, 1)
    assert orders.failures == {"_MSG_TIMED_OUT": 2}
    assert orders.never_consumed == 1
    parts = {p.partition: p for p in orders.partitions}
    assert list(parts) == ["0", "1", "?"]
    assert (parts["0"].produced, parts["0"].delivered, parts["0"].never_consumed) == (3, 3, 0)
    assert (parts["1"].produced, parts["1"].delivered, parts["1"].failed) == (4, 3, 1)
    assert parts["1"].never_consumed == 1
    assert (parts["?"].failed, parts["?"].unacknowledged, parts["?"].delivered) == (1, 1, 0)
    assert parts["0"].consumed == {"billing": 3, "shipping": 2}
    assert parts["1"].consumed == {"billing": 2, "shipping": 1}

    groups = {g.group: g for g in orders.groups}
    assert list(groups) == ["billing", "shipping"]
    billing = groups["billing"]
    assert (billing.consumed, billing.missing, billing.without_producer) == (6, 1, 1)
    assert billing.missing_by_partition == {"1": 1}
    assert billing.latency.count == 5
    assert (billing.latency.p50_ms, billing.latency.p90_ms) == (15.0, 100.0)
    assert (billing.latency.p99_ms, billing.latency.max_ms) == (100.0, 100.0)
    shipping = groups["shipping"]
    assert (shipping.consumed, shipping.missing, shipping.without_producer) == (3, 3, 0)
    assert shipping.missing_by_partition == {"0": 1, "1": 2}
    lat = shipping.latency
    assert (lat.count, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms) == (
        3,
        40.0,
        50.0,
        50.0,
        50.0,
    )

    log = topic(report, "audit-log")
    assert (log.produced, log.delivered, log.never_consumed) == (2, 2, 2)
    assert not log.has_consumers and log.groups == []

    orphans = [(o.topic, o.partition, o.offset) for o in report.orphans]
    assert orphans == [("audit-log", "0", 0), ("audit-log", "0", 1), ("orders", "1", 22)]
    o = report.orphans[2]
    assert o.produced_unix_nano == at(5)
    assert o.produced_at == "2024-05-01T12:00:05.000Z"


def test_scenario_counts(scenario_file: Path) -> None:
    report = audit([scenario_file])
    check_scenario(report)
    [f] = report.files
    assert f.format == ("otlp-json" if scenario_file.suffix == ".jsonl" else "jaeger-json")
    assert f.spans == 22  # 11 sends, 10 process spans, 1 poll
    assert f.messaging_spans == 22


def test_orphan_trace_ids_match_producer_spans(scenario_file: Path, tmp_path: Path) -> None:
    rec = scenario()
    spans = rec.spans()
    path = write("otlp" if scenario_file.suffix == ".jsonl" else "jaeger", spans, scenario_file)
    by_key = {
        (s.attributes["messaging.destination.name"], s.attributes.get("messaging.kafka.offset")): s
        for s in spans
        if s.kind is SpanKind.PRODUCER and s.attributes is not None
    }
    report = audit([path])
    for o in report.orphans:
        ctx = by_key[o.topic, o.offset].get_span_context()
        assert ctx is not None
        assert o.trace_id == f"{ctx.trace_id:032x}"


def test_split_files_and_lines_give_the_same_result(fmt: str, tmp_path: Path) -> None:
    """Producer and consumer spans in different files, OTLP in many lines."""
    spans = scenario().spans()
    producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in spans if s.kind is not SpanKind.PRODUCER]
    kw: dict[str, Any] = {"spans_per_line": 2} if fmt == "otlp" else {"indent": 2}
    a = write(fmt, consumers, tmp_path / "consumers.json", **kw)
    b = write(fmt, producers, tmp_path / "producers.json", **kw)
    report = audit([a, b])
    check_scenario(report)
    assert [f.spans for f in report.files] == [11, 11]


def test_mixed_formats_in_one_audit(tmp_path: Path) -> None:
    spans = scenario().spans()
    producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in spans if s.kind is not SpanKind.PRODUCER]
    a = write("jaeger", producers, tmp_path / "p.json")
    b = write("otlp", consumers, tmp_path / "c.jsonl")
    check_scenario(audit([a, b]))


def test_other_jaeger_shapes(tmp_path: Path) -> None:
    """A bare list of traces, and single-trace objects (one per line)."""
    doc = json.loads(write("jaeger", scenario().spans(), tmp_path / "t.json").read_text())
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(doc["data"], indent=2))
    check_scenario(audit([bare]))
    single = tmp_path / "single.json"
    single.write_text("".join(json.dumps(t) + "\n" for t in doc["data"]))
    report = audit([single])
    check_scenario(report)
    assert report.files[0].format == "jaeger-json"


def test_gzip(fmt: str, tmp_path: Path) -> None:
    path = write(fmt, scenario().spans(), tmp_path / "spans.json.gz", compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    check_scenario(audit([path]))
    # detected by content, not by name
    renamed = path.rename(tmp_path / "spans.json")
    check_scenario(audit([renamed]))


def test_tiny_read_chunks(scenario_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every element straddles a chunk boundary, numbers included."""
    monkeypatch.setattr(audit_mod, "_CHUNK", 7)
    check_scenario(audit([scenario_file]))


def test_otlp_protobuf_json_mapping(tmp_path: Path) -> None:
    """protobuf's own JSON mapping: enum names and base64 ids."""
    from google.protobuf.json_format import (  # type: ignore[import-untyped,unused-ignore]
        MessageToJson,
    )
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    path = tmp_path / "pb.json"
    path.write_text(MessageToJson(encode_spans(scenario().spans())))  # pretty, multi-line
    report = audit([path])
    check_scenario(report)
    assert all(len(o.trace_id) == 32 for o in report.orphans)
    write_otlp_json(scenario().spans(), path, enum_names=True)
    check_scenario(audit([path]))


def test_batch_links_count_as_consumption_in_otlp(tmp_path: Path) -> None:
    r = scenario()
    send = r.send("orders", at(20), "1", 23)
    r.poll(
        "orders",
        "analytics",
        at(20, 5),
        at(20, 70),
        [("1", 22, None), ("1", 23, send)],
    )
    spans = r.spans()
    report = audit([write("otlp", spans, tmp_path / "s.jsonl")])
    assert report.orphan_count == 2  # orders 1:22 now consumed by analytics
    analytics = next(g for g in topic(report, "orders").groups if g.group == "analytics")
    assert (analytics.consumed, analytics.missing) == (2, 5)
    # a batch-only consumption is timed at the end of the poll (hand-over)
    assert analytics.latency.count == 2
    assert analytics.latency.max_ms == (at(20, 70) - at(5)) / MS
    assert analytics.latency.p50_ms == 70.0

    # Jaeger keeps links without attributes: the batch is invisible there.
    jreport = audit([write("jaeger", spans, tmp_path / "s.json")])
    assert jreport.orphan_count == 4
    assert "analytics" not in {g.group for g in topic(jreport, "orders").groups}


def test_percentiles_nearest_rank(tmp_path: Path) -> None:
    r = Recorder()
    for i in range(100):
        send = r.send("t", at(i), "0", i)
        r.process("t", "0", i, "g", at(i, i + 1), send)
    report = audit([write("otlp", r.spans(), tmp_path / "s.jsonl")])
    [g] = topic(report, "t").groups
    lat = g.latency
    assert (lat.count, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms) == (
        100,
        50.0,
        90.0,
        99.0,
        100.0,
    )


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (str(1_714_564_803), str(1_714_564_809)),
        ("2024-05-01T12:00:03Z", "2024-05-01T12:00:09+00:00"),
        ("2024-05-01T14:00:03+02:00", "2024-05-01 12:00:09"),
    ],
)
def test_time_window(scenario_file: Path, since: str, until: str) -> None:
    report = audit([scenario_file], since=since, until=until)
    assert report.since_unix_nano == at(3) and report.until_unix_nano == at(9)
    # sends at 3..8 s: three delivered on partition 1, two failed, one unacked;
    # the audit-log send at exactly 9 s is outside (until is exclusive)
    assert [t.topic for t in report.topics] == ["orders"]
    orders = topic(report, "orders")
    assert (orders.produced, orders.delivered, orders.failed, orders.unacknowledged) == (6, 3, 2, 1)
    groups = {g.group: g for g in orders.groups}
    # consumptions of messages produced before the window are left out, and so
    # is the producer-less one (its own time, 1 s, is before the window)
    assert (groups["billing"].consumed, groups["billing"].missing) == (2, 1)
    assert groups["billing"].without_producer == 0
    assert (groups["shipping"].consumed, groups["shipping"].missing) == (1, 2)
    assert [(o.partition, o.offset) for o in report.orphans] == [("1", 22)]


def test_window_keeps_producerless_consumption_by_its_own_time(scenario_file: Path) -> None:
    report = audit([scenario_file], since=at(0) / S, until=at(2) / S)
    billing = next(g for g in topic(report, "orders").groups if g.group == "billing")
    assert (billing.consumed, billing.without_producer, billing.missing) == (3, 1, 0)


def test_group_filter(scenario_file: Path) -> None:
    report = audit([scenario_file], group="shipping")
    orders = topic(report, "orders")
    assert [g.group for g in orders.groups] == ["shipping"]
    assert topic(report, "audit-log").groups == []
    assert report.orphan_count == 3  # any-group count is unaffected
    assert report.group_orphan_count == 3
    assert [(o.topic, o.partition, o.offset) for o in report.group_orphans or []] == [
        ("orders", "0", 12),
        ("orders", "1", 21),
        ("orders", "1", 22),
    ]


def test_max_orphans_limits_the_list_not_the_count(scenario_file: Path) -> None:
    report = audit([scenario_file], max_orphans=1)
    assert report.orphan_count == 3
    assert len(report.orphans) == 1


def test_empty_export_is_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"data": [], "total": 0, "limit": 0, "offset": 0, "errors": null}')
    assert main([str(path)]) == 0
    assert "no Kafka producer or consumer spans found" in capsys.readouterr().out


# ---------------------------------------------------------------- CLI output


def test_text_report(scenario_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(scenario_file)]) == 0
    out = capsys.readouterr().out
    print(out, file=sys.stderr)  # shown with -rA / on failure
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "total: produced 11, delivered 8, failed 2, unacknowledged 1, never consumed 3" in out
    assert "failures: _MSG_TIMED_OUT 2" in out
    assert "billing missing: p1 1" in out
    assert "shipping missing: p0 1, p1 2" in out
    assert "no consumer spans for this topic" in out
    assert "never consumed by any group: 3" in out
    assert "2024-05-01T12:00:05.000Z" in out
    row = next(line.split() for line in lines if line.strip().startswith("billing "))
    assert row == ["billing", "6", "1", "1", "15.0", "100.0", "100.0", "100.0"]


def test_text_report_group_and_truncated_list(
    scenario_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(scenario_file), "--group", "shipping", "--max-orphans", "1"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "never consumed by any group: 3 (showing 1)" in out
    assert "not consumed by group shipping: 3 (showing 1)" in out
    assert "2 more (raise --max-orphans to list them)" in out


def test_json_report(scenario_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(scenario_file), "--format", "json", "--max-orphans", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {
        "produced": 11,
        "delivered": 8,
        "failed": 2,
        "unacknowledged": 1,
        "never_consumed": 3,
    }
    assert doc["orphan_count"] == 3
    assert [(o["topic"], o["offset"]) for o in doc["orphans"]] == [
        ("audit-log", 0),
        ("audit-log", 1),
    ]
    assert doc["orphans"][0]["produced_at"] == "2024-05-01T12:00:09.000Z"
    orders = next(t for t in doc["topics"] if t["topic"] == "orders")
    billing = next(g for g in orders["groups"] if g["group"] == "billing")
    assert billing["latency"] == {
        "count": 5,
        "p50_ms": 15.0,
        "p90_ms": 100.0,
        "p99_ms": 100.0,
        "max_ms": 100.0,
    }
    assert orders["failures"] == {"_MSG_TIMED_OUT": 2}
    assert doc["window"]["since"] is None
    assert "group_orphans" not in doc


def test_stdin(
    scenario_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = gzip.compress(scenario_file.read_bytes())
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["-", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["orphan_count"] == 3
    assert not stdin.buffer.closed


# ------------------------------------------------------------------ bad input


def _bad(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello, world\n", "not JSON trace data"),
        (b"", "no spans found"),
        (b'{"foo": 1}\n', "no spans found"),
        (b"42\n", "not JSON trace data"),
        (b'{"data": [], "total": 0}\n{"data": [}', ":2: expected '{' starting a Jaeger trace"),
        (b"[1, 2]", "expected '{' starting a Jaeger trace"),
        (b'{"data": [{"spans": [1]}]}', "span is not a JSON object"),
        (b'{"data": [{"spans": [{"tags": 5}]}]}', "'tags' is not a list"),
        (b'{"data": {"spans": []}}', "unexpected value type"),
        (
            b'{"resourceSpans": []}\n{"resourceSpans": [{"scopeSpans": [{"spans": '
            b'[{"attributes": [{"key": "messaging.system", "value": {"stringValue": "kafka"}}]}'
            b"]}]}]}\n",
            ":2: span: span without a numeric 'startTimeUnixNano'",
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"a": 1}', "unexpected end of file"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"a": 1} {', "expected ',' or ']'"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"a": "unterminated', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (gzip.compress(b'{"data": []}')[:-12], "cannot read"),
        (b"\x1f\x8b\x08\x00not really gzip", "cannot read"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = _bad(tmp_path, "bad.json", content)
    assert main([path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kafkaplus audit: error: ")
    assert message in err, err
    assert "Traceback" not in err
    with pytest.raises(AuditInputError):
        audit([path])


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert "nope.json: cannot open: No such file or directory" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required"),
        (["--format", "xml", "f"], "invalid choice"),
        (["--since", "yesterday", "f"], "'yesterday' is neither ISO-8601 nor epoch seconds"),
        (["--since", "20", "--until", "10", "f"], "--since must be before --until"),
        (["--max-orphans", "-1", "f"], "--max-orphans must be >= 0"),
        (["--max-orphans", "many", "f"], "invalid int value"),
    ],
)
def test_usage_errors(
    scenario_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [str(scenario_file) if a == "f" else a for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "kafkaplus audit" in capsys.readouterr().out


# ------------------------------------------------------------------ streaming

FILLER = "x" * 300


def _jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    kind = "int64" if isinstance(value, int) else "string"
    return {"key": key, "type": kind, "value": value}


def _kafka_tags(op: str, i: int, kind: str) -> list[dict[str, Any]]:
    tags = [
        _jaeger_tag("messaging.system", "kafka"),
        _jaeger_tag("messaging.operation.type", op),
        _jaeger_tag("messaging.destination.name", "bulk"),
        _jaeger_tag("messaging.destination.partition.id", str(i % 4)),
        _jaeger_tag("messaging.kafka.offset", i // 4),
        _jaeger_tag("span.kind", kind),
    ]
    if op == "process":
        tags.append(_jaeger_tag("messaging.consumer.group.name", "g"))
    return tags


def _bulk_spans(i: int, fillers: int) -> list[dict[str, Any]]:
    """One message's worth of spans: a send, a process and unrelated spans
    that make up most of the bytes, as in real traces."""
    trace_id = f"{i + 1:032x}"
    start = (T0 // 1000) + i * 1000
    spans = []
    for j, (op, kind) in enumerate([("send", "producer"), ("process", "consumer")]):
        spans.append(
            {
                "traceID": trace_id,
                "spanID": f"{2 * i + j + 1:016x}",
                "operationName": f"{op} bulk",
                "references": [],
                "startTime": start + 3 * j,
                "duration": 2,
                "tags": _kafka_tags(op, i, kind),
                "logs": [],
                "processID": "p1",
            }
        )
    for j in range(fillers):
        spans.append(
            {
                "traceID": trace_id,
                "spanID": f"{i:08x}{j:08x}",
                "operationName": "HTTP GET",
                "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": "1"}],
                "startTime": start,
                "duration": 5,
                "tags": [_jaeger_tag("http.url", FILLER), _jaeger_tag("span.kind", "server")],
                "logs": [],
                "processID": "p1",
            }
        )
    return spans


def _write_bulk(path: Path, layout: str, messages: int, fillers: int) -> None:
    """Written piece by piece so the test itself never holds the file."""
    procs = '"processes": {"p1": {"serviceName": "svc", "tags": []}}'
    with open(path, "w") as f:
        if layout == "jaeger-many-traces":
            f.write('{"data": [\n')
            for i in range(messages):
                spans = ",\n".join(json.dumps(s, indent=1) for s in _bulk_spans(i, fillers))
                f.write(
                    ("," if i else "")
                    + '{"traceID": "x", "spans": ['
                    + spans
                    + "], "
                    + procs
                    + "}\n"
                )
            f.write('], "total": 0, "limit": 0, "offset": 0, "errors": null}\n')
        elif layout == "jaeger-one-trace":
            f.write('{"data": [{"traceID": "1", "spans": [\n')
            for i in range(messages):
                spans = ",\n".join(json.dumps(s) for s in _bulk_spans(i, fillers))
                f.write(("," if i else "") + spans + "\n")
            f.write("], " + procs + "}]}\n")
        else:  # one OTLP line holding every span
            f.write('{"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [')
            for i in range(messages):
                out = []
                for s in _bulk_spans(i, fillers):
                    out.append(
                        json.dumps(
                            {
                                "traceId": s["traceID"],
                                "spanId": s["spanID"],
                                "name": s["operationName"],
                                "kind": 4 if s["operationName"].startswith("send") else 5,
                                "startTimeUnixNano": str(s["startTime"] * 1000),
                                "endTimeUnixNano": str((s["startTime"] + 2) * 1000),
                                "attributes": [
                                    {
                                        "key": t["key"],
                                        "value": {"intValue": str(t["value"])}
                                        if t["type"] == "int64"
                                        else {"stringValue": t["value"]},
                                    }
                                    for t in s["tags"]
                                ],
                            }
                        )
                    )
                f.write(("," if i else "") + ",".join(out))
            f.write("]}]}]}\n")


def _peak_audit(path: Path) -> tuple[Report, int]:
    tracemalloc.start()
    try:
        report = audit([path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak


@pytest.mark.parametrize("layout", ["jaeger-many-traces", "jaeger-one-trace", "otlp-one-line"])
def test_streaming_memory_is_bounded(tmp_path: Path, layout: str) -> None:
    """Same messages, 5x the bytes: the peak must follow the messages, not the
    bytes, and stay a small fraction of the file. No timing involved."""
    messages = 1000
    small, big = tmp_path / "small.json", tmp_path / "big.json"
    _write_bulk(small, layout, messages, fillers=2)
    _write_bulk(big, layout, messages, fillers=22)
    small_size, big_size = small.stat().st_size, big.stat().st_size
    assert big_size > 5 * small_size and big_size > 8_000_000

    for path, fillers in ((small, 2), (big, 22)):
        report, peak = _peak_audit(path)
        [f] = report.files
        assert f.spans == messages * (fillers + 2)
        bulk = topic(report, "bulk")
        assert (bulk.produced, bulk.delivered, bulk.never_consumed) == (messages, messages, 0)
        [g] = bulk.groups
        assert (g.consumed, g.latency.count, g.latency.max_ms) == (messages, messages, 0.003)
        if path is small:
            small_peak = peak
    assert peak < small_peak * 1.5, (small_peak, peak)
    assert peak < big_size / 20, (peak, big_size)
