"""The ClickHouse audit gives the file audit's report, on the real engine.

chDB (ClickHouse in process) runs the very query ``kafkaplus audit
--clickhouse`` sends. The spans go into the Collector clickhouseexporter's
``otel_traces`` table, created from its published DDL and filled the way the
exporter fills it (``trace_files.otel_traces_rows``); the query's Report must
equal the file audit's on the same spans, row for row. The spans come from the
hand-built scenario of test_audit and from real pipelines against real brokers
(tansu and librdkafka's mock cluster), one of them exported by the SDK's
``otlp_json_file`` exporter from a process under ``opentelemetry-instrument``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from conftest import Otel, consumer, poll_messages, producer
from kafkaplus_tools.audit import Report, audit, main, render_text
from test_audit import at, check_scenario, scenario
from test_dataloss import make_topic, plain_producer
from trace_files import OTEL_TRACES_COLUMNS, otel_traces_rows, otlp_request, write_otlp_json

chdb = pytest.importorskip("chdb")
clickhouse_connect = pytest.importorskip("clickhouse_connect")

from kafkaplus_tools import audit_clickhouse as ch  # noqa: E402  (needs the client)

S = 1_000_000_000

# The exporter's table: opentelemetry-collector-contrib,
# exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql, written out
# here for its defaults (engine MergeTree(), no cluster, no TTL, bloom-filter
# indexes rather than the full-text ones).
OTEL_TRACES_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2),
        CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A clickhouse-connect client on chDB's in-process engine (shared in-memory database)."""
    c = clickhouse_connect.get_client(dsn="chdb://memory")
    c.command("CREATE DATABASE IF NOT EXISTS otel")
    yield c
    c.close()


@pytest.fixture
def table(client: Any) -> Iterator[str]:
    """A fresh, empty otel_traces table: ``otel.<name>``."""
    name = f"otel.traces_{uuid.uuid4().hex[:10]}"
    client.command(OTEL_TRACES_DDL.format(table=name))
    yield name
    client.command(f"DROP TABLE IF EXISTS {name}")


def load(client: Any, table: str, spans: list[ReadableSpan] | None = None, *, lines: Any = ()) -> int:
    """Insert spans (SDK spans, or OTLP JSON request lines) as the exporter does."""
    requests = [otlp_request(spans)] if spans else []
    requests += [json.loads(line) for line in lines if line.strip()]
    rows = [row for request in requests for row in otel_traces_rows(request)]
    client.insert(table, rows, column_names=OTEL_TRACES_COLUMNS)
    return len(rows)


def body(report: Report) -> str:
    """The text report below its header (which names the source and differs)."""
    lines = render_text(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("window:"))
    return "\n".join(lines[start:])


def assert_same(file_report: Report, query_report: Report) -> None:
    """Equal reports, all but the line naming the source; the same Kafka spans read."""
    assert dataclasses.replace(query_report, files=[]) == dataclasses.replace(
        file_report, files=[]
    )
    assert body(query_report) == body(file_report)
    assert sum(f.messaging_spans for f in query_report.files) == sum(
        f.messaging_spans for f in file_report.files
    )


# ------------------------------------------------------ the hand-built scenario

OPTIONS = [
    {},
    {"group": "shipping", "max_orphans": 1},
    {"group": "billing"},
    {"since": "2024-05-01T12:00:03Z", "until": "2024-05-01T12:00:09Z"},
    {"since": str(at(0) / S), "until": str(at(2) / S)},  # the producer-less consumption counts
    {"since": "2024-05-01T12:00:04Z"},
    {"until": "2024-05-01T12:00:01.500Z", "group": "billing"},
    {"max_orphans": 0},
    {"group": "nobody"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "all")
def test_scenario_query_equals_file_audit(
    client: Any, table: str, tmp_path: Path, options: dict[str, Any]
) -> None:
    spans = scenario().spans()
    assert load(client, table, spans) == 22
    path = tmp_path / "spans.jsonl"
    write_otlp_json(spans, path)
    file_report = audit([path], **options)
    query_report = ch.audit_clickhouse(client, table=table, **options)
    assert_same(file_report, query_report)
    [source] = query_report.files
    assert (source.format, source.spans, source.messaging_spans) == ("clickhouse", 22, 22)
    if not options:
        check_scenario(query_report)  # every hand-counted number, from the query


def test_overlapping_exports_count_each_message_once(
    client: Any, table: str, tmp_path: Path
) -> None:
    """The same spans loaded twice: delivered messages are counted once and the
    repeats noted, like the file audit given the same file twice. Failed and
    unacknowledged sends carry no offset to tell repeats by: both count them twice."""
    spans = scenario().spans()
    load(client, table, spans)
    load(client, table, spans)
    path = tmp_path / "spans.jsonl"
    write_otlp_json(spans, path)
    file_report = audit([path, path])
    query_report = ch.audit_clickhouse(client, table=table)
    assert query_report.duplicate_producer_spans == 8
    assert_same(file_report, query_report)
    r = query_report
    assert (r.delivered, r.failed, r.unacknowledged, r.orphan_count) == (8, 4, 2, 3)


def test_lookback_reads_only_spans_from_since_minus_lookback(
    client: Any, table: str, tmp_path: Path
) -> None:
    """--lookback skips older spans: the result is the file audit of exactly the
    spans that started at or after since - lookback."""
    spans = scenario().spans()
    load(client, table, spans)
    since, lookback = at(2, 10), 0.005  # orders 0:12 was sent at 2 s, before the scan starts
    recent = [s for s in spans if (s.start_time or 0) >= since - lookback * S]
    path = tmp_path / "recent.jsonl"
    write_otlp_json(recent, path)
    query_report = ch.audit_clickhouse(client, table=table, since=since / S, lookback=lookback)
    assert_same(audit([path], since=since / S), query_report)
    # billing's consumption of 0:12 (at 2.015 s) now has no producer span to go by
    orders = next(t for t in query_report.topics if t.topic == "orders")
    billing = next(g for g in orders.groups if g.group == "billing")
    assert (billing.consumed, billing.without_producer) == (3, 1)
    full = ch.audit_clickhouse(client, table=table, since=since / S)
    billing_full = next(g for t in full.topics for g in t.groups if g.group == "billing")
    assert (billing_full.consumed, billing_full.without_producer) == (2, 0)


# ------------------------------------------------------------ a real pipeline


def run_pipeline(bootstrap: str) -> dict[str, Any]:
    """A pipeline with every case the report has, against a real broker.

    Topic ``main`` (3 partitions): 2 untraced messages then 4 traced ones to
    partition 0; 4 to partition 1 and 4 to partition 2, then 2 sent with
    acks=0 (delivered, never acknowledged) to partition 1, one purged and one
    too large for the broker. Group ``all-p0`` polls partition 0, ``batch-p0``
    reads it with consume() (batch links), ``early-p1`` stops after 2 messages
    of partition 1; nobody reads partition 2. Topic ``quiet`` has no consumer
    at all. The window [window_start, window_end) holds the sends to
    partitions 1 and 2 and the failures.
    """
    main_topic, quiet = make_topic(bootstrap, 3), make_topic(bootstrap, 1)
    acks: list[tuple[str, int, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None
        acks.append((msg.topic(), msg.partition(), msg.offset()))

    plain = plain_producer(bootstrap)
    for i in range(2):
        plain.produce(main_topic, f"untraced-{i}".encode(), partition=0)
    assert plain.flush(30) == 0
    p = producer(bootstrap)
    for i in range(4):
        p.produce(main_topic, f"p0-{i}".encode(), partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0
    window_start = time.time_ns()
    for partition in (1, 2):
        for i in range(4):
            p.produce(
                main_topic, f"p{partition}-{i}".encode(), partition=partition, on_delivery=on_delivery
            )
    assert p.flush(30) == 0
    fire_and_forget = producer(bootstrap, acks=0)
    for i in range(2):
        fire_and_forget.produce(main_topic, f"acks0-{i}".encode(), partition=1)
    assert fire_and_forget.flush(30) == 0
    stuck = producer(bootstrap, **{"linger.ms": 60000})
    stuck.produce(main_topic, b"purged", partition=2)
    stuck.purge()
    stuck.flush(10)
    with pytest.raises(confluent_kafka.KafkaException, match="MSG_SIZE_TOO_LARGE"):
        p.produce(main_topic, b"x" * 2_000_000, partition=2)
    window_end = time.time_ns()
    for i in range(2):
        p.produce(quiet, f"q{i}".encode(), partition=0, on_delivery=on_delivery)
    assert p.flush(30) == 0

    reader = consumer(bootstrap, group="all-p0")
    reader.assign([TopicPartition(main_topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    poll_messages(reader, 6)
    reader.close()
    batcher = consumer(bootstrap, group="batch-p0")
    batcher.assign([TopicPartition(main_topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < 6 and time.monotonic() < deadline:
        got.extend(m for m in batcher.consume(10, 0.5) if m.error() is None)
    batcher.close()
    assert len(got) == 6
    quitter = consumer(bootstrap, group="early-p1")
    quitter.assign([TopicPartition(main_topic, 1, confluent_kafka.OFFSET_BEGINNING)])
    poll_messages(quitter, 2)
    quitter.close()
    return {
        "main": main_topic,
        "quiet": quiet,
        "acks": acks,
        "window": (window_start, window_end),
    }


def test_real_pipeline_query_equals_file_audit(
    bootstrap: str,
    otel: Otel,
    client: Any,
    table: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_pipeline(bootstrap)
    spans = otel.spans()
    load(client, table, spans)
    path = tmp_path / "spans.jsonl"
    write_otlp_json(spans, path, spans_per_line=5)
    main_topic, quiet = run["main"], run["quiet"]
    offsets = {
        part: sorted(o for t, pp, o in run["acks"] if t == main_topic and pp == part)
        for part in (0, 1, 2)
    }

    report = ch.audit_clickhouse(client, table=table)
    assert_same(audit([path]), report)
    stats = {t.topic: t for t in report.topics}
    m = stats[main_topic]
    assert (m.produced, m.delivered, m.failed, m.unacknowledged, m.never_consumed) == (
        16,
        12,
        2,
        2,
        6,
    )
    assert m.failures == {"MSG_SIZE_TOO_LARGE": 1, "_PURGE_QUEUE": 1}
    parts = {p.partition: p for p in m.partitions}
    assert list(parts) == ["0", "1", "2"]
    assert (parts["0"].delivered, parts["0"].never_consumed) == (4, 0)
    assert (parts["1"].delivered, parts["1"].unacknowledged, parts["1"].never_consumed) == (4, 2, 2)
    assert (parts["2"].delivered, parts["2"].failed, parts["2"].never_consumed) == (4, 2, 4)
    assert parts["0"].consumed == {"all-p0": 4, "batch-p0": 4, "early-p1": 0}
    assert parts["2"].consumed == {"all-p0": 0, "batch-p0": 0, "early-p1": 0}
    groups = {g.group: g for g in m.groups}
    polled, batched = groups["all-p0"], groups["batch-p0"]
    # all of partition 0: 4 traced messages and 2 sent by an uninstrumented producer
    assert (polled.consumed, polled.missing, polled.without_producer) == (6, 8, 2)
    # a batch span links only the messages that carry a trace context
    assert (batched.consumed, batched.missing, batched.without_producer) == (4, 8, 0)
    for g in (polled, batched):
        assert g.latency.count == 4 and g.missing_by_partition == {"1": 4, "2": 4}
        assert 0 < g.latency.p50_ms <= g.latency.max_ms < 60_000
    early = groups["early-p1"]
    assert (early.consumed, early.missing, early.missing_by_partition) == (2, 10, {"0": 4, "1": 2, "2": 4})
    q = stats[quiet]
    assert (q.delivered, q.never_consumed, q.has_consumers, q.groups) == (2, 2, False, [])
    assert report.orphan_count == 8
    expected = sorted(
        [(main_topic, "1", o) for o in offsets[1][2:]]
        + [(main_topic, "2", o) for o in offsets[2]]
        + [(quiet, "0", o) for t, _, o in run["acks"] if t == quiet]
    )
    assert [(o.topic, o.partition, o.offset) for o in report.orphans] == expected
    producer_trace = {
        (s.attributes["messaging.destination.name"], s.attributes.get("messaging.kafka.offset"),
         s.attributes.get("messaging.destination.partition.id")): f"{s.context.trace_id:032x}"
        for s in spans
        if s.kind is SpanKind.PRODUCER
    }  # fmt: skip
    for o in report.orphans:
        assert o.trace_id == producer_trace[o.topic, o.offset, o.partition]

    start, end = run["window"]
    windowed = {"since": f"{start / S:.9f}", "until": f"{end / S:.9f}"}
    for options in (
        windowed,
        {"group": "early-p1"},
        {**windowed, "group": "all-p0", "max_orphans": 3},
        {"since": windowed["since"], "max_orphans": 5},
    ):
        query_report = ch.audit_clickhouse(client, table=table, **options)
        assert_same(audit([path], **options), query_report)
    w = ch.audit_clickhouse(client, table=table, **windowed)
    [wm] = w.topics  # quiet was sent after the window, partition 0 before it
    assert (wm.produced, wm.delivered, wm.failed, wm.unacknowledged) == (12, 8, 2, 2)
    assert [p.partition for p in wm.partitions] == ["1", "2"]
    wg = {g.group: (g.consumed, g.missing, g.without_producer) for g in wm.groups}
    assert wg == {"all-p0": (0, 8, 0), "batch-p0": (0, 8, 0), "early-p1": (2, 6, 0)}
    with capsys.disabled():
        print(f"\n[{bootstrap}] the query's report:\n{render_text(report)}")


# ------------------------------------------------- the otlp_json_file exporter


def test_otlp_json_file_exporter_output_audits_the_same_in_both_ways(
    tansu: str, client: Any, table: str, tmp_path: Path
) -> None:
    """A real service under opentelemetry-instrument exporting with
    OTEL_TRACES_EXPORTER=otlp_json_file: its output is read by the file audit,
    and the same lines, loaded into otel_traces, give the same report."""
    pytest.importorskip("opentelemetry.exporter.otlp.json.file")
    here = Path(sys.executable).with_name("opentelemetry-instrument")
    exe = str(here) if here.exists() else shutil.which("opentelemetry-instrument")
    assert exe, "opentelemetry-instrument not found"
    topic = make_topic(tansu, 2)
    out = tmp_path / "spans.jsonl"
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp_json_file",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "json-file-app",
    }
    app = Path(__file__).with_name("json_file_app.py")
    with open(out, "w") as stdout:
        done = subprocess.run(
            [exe, sys.executable, str(app), tansu, topic],
            stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "consumed 3" in done.stderr

    file_report = audit([out])
    [t] = [t for t in file_report.topics if t.topic == topic]
    assert (t.produced, t.delivered, t.failed, t.never_consumed) == (7, 6, 1, 3)
    assert t.failures == {"_PURGE_QUEUE": 1}
    [g] = t.groups
    assert (g.group, g.consumed, g.missing, g.missing_by_partition) == (
        "json-file-reader",
        3,
        3,
        {"1": 3},
    )
    [f] = file_report.files
    assert f.format == "otlp-json" and f.messaging_spans == 10  # 7 sends, 3 process spans

    assert load(client, table, lines=out.read_text().splitlines()) == f.spans
    assert_same(file_report, ch.audit_clickhouse(client, table=table))
    assert_same(
        audit([out], group="json-file-reader"),
        ch.audit_clickhouse(client, table=table, group="json-file-reader"),
    )


# ------------------------------------------------------------------- the CLI


def test_cli_over_http_prints_the_file_audits_report(
    client: Any, table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kafkaplus audit --clickhouse http://... through clickhouse-connect's HTTP
    client: the query goes as text with {name:Type} placeholders and the values
    as param_ arguments, never pasted into the SQL."""
    from clickhouse_http import chdb_http

    spans = scenario().spans()
    load(client, table, spans)
    path = tmp_path / "spans.jsonl"
    write_otlp_json(spans, path)
    database, name = table.split(".")
    with chdb_http(chdb.connect(":memory:"), "auditor", "s3cret") as server:
        url = server.url.replace("http://", "http://auditor:s3cret@") + f"/{database}"
        args = ["--clickhouse", url, "--table", name, "--group", "shipping"]
        assert main([*args, "--since", "2024-05-01T12:00:00Z"]) == 0
        out = capsys.readouterr().out
        assert main([str(path), "--group", "shipping", "--since", "2024-05-01T12:00:00Z"]) == 0
        expected = capsys.readouterr().out
        header, _, rest = out.partition("window:")
        assert rest == expected.partition("window:")[2]
        assert header == (
            "kafkaplus audit: ClickHouse query, 22 Kafka spans\n"
            f"  {server.url}/{database} table {table} (22 spans with\n"
            "    messaging.system=kafka)\n"
        )
        assert "s3cret" not in out and max(len(line) for line in out.splitlines()) <= 80
        assert "total: produced 11, delivered 8, failed 2, unacknowledged 1, never" in out

        [audit_request] = [r for r in server.requests if "{table:Identifier}" in r.sql]
        assert audit_request.user == "auditor"
        assert audit_request.args["param_database"] == database
        assert audit_request.args["param_table"] == name
        assert audit_request.args["param_group"] == "shipping"
        assert audit_request.args["param_since"] == "2024-05-01 12:00:00.000000000"
        assert audit_request.args["param_until"] == "\\N"
        assert "{since:Nullable(DateTime64(9, 'UTC'))}" in audit_request.sql
        assert "shipping" not in audit_request.sql and name not in audit_request.sql

        assert main(["--clickhouse", url, "--table", name, "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["totals"]["never_consumed"] == 3
        assert doc["files"] == [
            {"path": f"{server.url}/{database} table {table}", "format": "clickhouse",
             "spans": 22, "messaging_spans": 22}
        ]  # fmt: skip

        bad = server.url.replace("http://", "http://auditor:wrong@")
        assert main(["--clickhouse", bad, "--table", table]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kafkaplus audit: error: ") and "wrong" not in err
        assert "Traceback" not in err

        assert main(["--clickhouse", url, "--table", "no_such_table"]) == 2
        err = capsys.readouterr().err
        assert "query failed" in err and "no_such_table" in err


def test_print_sql_runs_as_it_is(
    client: Any, table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed script (SET param_... then the query) runs unchanged and gives
    the rows the client path gets; odd group names survive the quoting."""
    rec = scenario()
    odd = "o'neil \\ ops\tteam"
    send = rec.send("orders", at(30), "1", 23)
    rec.process("orders", "1", 23, odd, at(30, 7), send)
    spans = rec.spans()
    load(client, table, spans)
    options = ["--table", table, "--group", odd, "--since", "2024-05-01T12:00:01Z"]
    assert main(["--print-sql", *options, "--max-orphans", "2"]) == 0
    script = capsys.readouterr().out
    assert "SET param_group = 'o\\'neil \\\\\\\\ ops\\\\tteam';" in script
    assert "SET param_until = '\\\\N';" in script

    # JSON output, unquoted 64-bit numbers: only how the result is written out
    unquoted = "SET output_format_json_quote_64bit_integers = 0;\n"
    result = chdb.connect(":memory:").query(unquoted + script, "JSONEachRow")
    rows = [json.loads(line) for line in result.bytes().decode().splitlines()]
    assert rows[-1]["topic"] is None and len(rows) == 3
    query = ch.AuditQuery.make(table, None, "2024-05-01T12:00:01Z", group=odd, max_orphans=2)
    printed = ch.report_from_rows(rows, query, "script")
    direct = ch.audit_clickhouse(client, table=table, group=odd, since="2024-05-01T12:00:01Z",
                                 max_orphans=2)  # fmt: skip
    assert dataclasses.replace(printed, files=[]) == dataclasses.replace(direct, files=[])
    path = tmp_path / "spans.jsonl"
    write_otlp_json(spans, path)
    assert_same(audit([path], group=odd, since="2024-05-01T12:00:01Z", max_orphans=2), direct)
    [g] = next(t for t in direct.topics if t.topic == "orders").groups
    assert (g.group, g.consumed, g.missing) == (odd, 1, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clickhouse", "http://x", "spans.json"], "give FILEs or --clickhouse/--print-sql"),
        (["--print-sql", "--lookback", "5"], "--lookback needs --since"),
        (["--print-sql", "--since", "5", "--lookback", "-1"], "--lookback must be >= 0"),
        (["--print-sql", "--table", "db."], "is not [DATABASE.]TABLE"),
        (["f.json", "--lookback", "5"], "--lookback applies to --clickhouse"),
        (["--print-sql", "--since", "9", "--until", "3"], "--since must be before --until"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreachable_server_is_an_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    from kafkaplus_tools.brokers import free_port

    url = f"http://nobody:hunter2@127.0.0.1:{free_port()}"
    assert main(["--clickhouse", url]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "hunter2" not in err and "Traceback" not in err
