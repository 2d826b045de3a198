"""Data loss against real brokers: offset gaps, offset resets, purges, exit
without flush(), garbage-collected producers, and ``kafkaplus audit`` on the
spans of a real pipeline in which some messages are never consumed."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.trace import StatusCode

from conftest import ORIGINALS, Otel, consumer, poll_messages, producer, unique
from kafkaplus_tools import audit
from opentelemetry_instrumentation_kafkaplus.core import semconv as sc
from opentelemetry_instrumentation_kafkaplus.operations import loss as dataloss
from trace_files import write_jaeger_json, write_otlp_json

SKIPPED = "kafkaplus.consumer.skipped.messages"
RESETS = "kafkaplus.consumer.offset.resets"
UNDELIVERED = "kafkaplus.producer.undelivered.messages"
SENT = "messaging.client.sent.messages"
PARTITION = "messaging.destination.partition.id"


def plain_producer(bootstrap: str, **conf: Any) -> Any:
    """An uninstrumented producer, to set up a topic without spans."""
    return ORIGINALS["Producer"]({"bootstrap.servers": bootstrap, "log_level": 0, **conf})


def make_topic(bootstrap: str, partitions: int) -> str:
    """A new topic; the mock cluster ignores CreateTopics and auto-creates 4 partitions."""
    topic = unique("dl")
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        with contextlib.suppress(Exception):
            future.result(10)
    return topic


def points(otel: Otel, name: str, **attrs: Any) -> list[Any]:
    return [
        p
        for p in otel.metric_points(name)
        if all(p.attributes.get(k) == v for k, v in attrs.items())
    ]


def total(otel: Otel, name: str, **attrs: Any) -> int:
    return sum(p.value for p in points(otel, name, **attrs))


def poll_until(c: Any, done: Any, timeout: float = 30.0) -> list[Any]:
    """Poll (messages and error events) until ``done(seen)``."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(seen) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None:
            seen.append(m)
    assert done(seen), f"gave up after {len(seen)} events"
    return seen


# --- consumer: offsets skipped for real -------------------------------------------


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_transaction_markers_are_counted_as_skipped_offsets(
    bootstrap: str, otel: Otel, isolation: str, request: pytest.FixtureRequest
) -> None:
    """A transaction's control record takes an offset no consumer ever receives.

    Two plain messages, an aborted transaction of 3, a committed one of 2, one
    plain message. Both test brokers return aborted messages under
    read_committed too (a Kafka broker would let librdkafka filter them, and
    the gap would be 3 wider); either way the count equals the offsets the app
    never saw.
    """
    topic = unique("dl")
    plain = plain_producer(bootstrap)
    for v in (b"a0", b"a1"):
        plain.produce(topic, v, partition=0)
    assert plain.flush(30) == 0
    txn = plain_producer(bootstrap, **{"transactional.id": unique("tx")})
    txn.init_transactions(30)
    txn.begin_transaction()
    for i in range(3):
        txn.produce(topic, f"aborted{i}".encode(), partition=0)
    assert txn.flush(30) == 0
    txn.abort_transaction(30)
    txn.begin_transaction()
    for i in range(2):
        txn.produce(topic, f"committed{i}".encode(), partition=0)
    txn.commit_transaction(30)
    plain.produce(topic, b"last", partition=0)
    assert plain.flush(30) == 0

    c = consumer(bootstrap, **{"isolation.level": isolation})
    c.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    seen = poll_until(c, lambda s: any(m.error() is None and m.value() == b"last" for m in s))
    c.close()
    offsets = [m.offset() for m in seen if m.error() is None]
    gaps = {b: b - a - 1 for a, b in itertools.pairwise(offsets) if b - a > 1}
    expected = sum(gaps.values())
    print(f"{bootstrap} {isolation}: offsets {offsets}, gaps {gaps}")
    if expected == 0 and request.node.callspec.params.get("bootstrap") == "mock":
        pytest.skip("this librdkafka's mock cluster writes no transaction markers")
    assert expected >= 2  # the abort marker and the commit marker at least

    assert total(otel, SKIPPED, **{"messaging.destination.name": topic}) == expected
    point = points(otel, SKIPPED, **{"messaging.destination.name": topic})[0]
    assert point.attributes[PARTITION] == "0"
    assert point.attributes["messaging.consumer.group.name"]

    events = {}
    for span in otel.spans(f"process {topic}"):
        for event in span.events:
            if event.name == dataloss.GAP_EVENT:
                events[span.attributes["messaging.kafka.offset"]] = dict(event.attributes)
    assert set(events) == set(gaps)
    for offset, skipped in gaps.items():
        assert events[offset] == {
            sc.KAFKAPLUS_SKIPPED_MESSAGES: skipped,
            sc.KAFKAPLUS_EXPECTED_OFFSET: offset - skipped,
            "messaging.kafka.offset": offset,
            dataloss.ISOLATION_LEVEL: isolation,
        }


def test_consume_batches_count_gaps_and_seek_restarts_tracking(
    mock_cluster: str, otel: Otel
) -> None:
    """consume(): gaps go on the batch process span; a seek back is not a gap."""
    topic = unique("dl")
    plain = plain_producer(mock_cluster)
    plain.produce(topic, b"a", partition=0)
    assert plain.flush(30) == 0
    txn = plain_producer(mock_cluster, **{"transactional.id": unique("tx")})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce(topic, b"t", partition=0)
    txn.commit_transaction(30)  # offsets: a=0, t=1, marker=2
    plain.produce(topic, b"b", partition=0)  # offset 3
    assert plain.flush(30) == 0

    c = consumer(mock_cluster)
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < 3 and time.monotonic() < deadline:
        got.extend(m for m in c.consume(10, 0.5) if m.error() is None)
    if [m.offset() for m in got] == [0, 1, 2]:
        c.close()
        pytest.skip("this librdkafka's mock cluster writes no transaction markers")
    assert [m.offset() for m in got] == [0, 1, 3]
    c.seek(TopicPartition(topic, 0, 0))  # deliberate: tracking restarts
    again: list[Any] = []
    deadline = time.monotonic() + 30
    while len(again) < 3 and time.monotonic() < deadline:
        again.extend(m for m in c.consume(10, 0.5) if m.error() is None)
    c.close()
    assert [m.offset() for m in again] == [0, 1, 3]
    # Each pass skips the marker once; the jump back from 3 to 0 is not a gap.
    assert total(otel, SKIPPED, **{"messaging.destination.name": topic}) == 2
    gap_events = [
        e for s in otel.spans(f"process {topic}") for e in s.events if e.name == dataloss.GAP_EVENT
    ]
    assert [
        (e.attributes[PARTITION], e.attributes["messaging.kafka.offset"]) for e in gap_events
    ] == [
        ("0", 3),
        ("0", 3),
    ]


def test_auto_offset_reset_error_events_are_counted(mock_cluster: str, otel: Otel) -> None:
    """auto.offset.reset=error: librdkafka's _AUTO_OFFSET_RESET event is counted,
    and the app still receives it unchanged (poll() and consume())."""
    topic = unique("dl")
    plain = plain_producer(mock_cluster)
    for i in range(3):
        plain.produce(topic, f"v{i}".encode(), partition=0)
    assert plain.flush(30) == 0

    polled = consumer(mock_cluster, group="reset-poll", **{"auto.offset.reset": "error"})
    polled.assign([TopicPartition(topic, 0, 100)])  # beyond the end: out of range
    events = poll_until(polled, lambda s: any(m.error() is not None for m in s))
    err = next(m for m in events if m.error() is not None)
    assert err.error().code() == KafkaError._AUTO_OFFSET_RESET
    assert (err.topic(), err.partition()) == (topic, 0)
    polled.assign([TopicPartition(topic, 0, 0)])  # the app's recovery
    assert [m.offset() for m in poll_messages(polled, 3)] == [0, 1, 2]
    polled.close()

    batched = consumer(mock_cluster, group="reset-consume", **{"auto.offset.reset": "error"})
    batched.assign([TopicPartition(topic, 0, 100)])
    deadline = time.monotonic() + 30
    errors: list[Any] = []
    while not errors and time.monotonic() < deadline:
        errors = [m for m in batched.consume(10, 0.5) if m.error() is not None]
    batched.close()
    assert errors and errors[0].error().code() == KafkaError._AUTO_OFFSET_RESET

    for group in ("reset-poll", "reset-consume"):
        (point,) = points(otel, RESETS, **{"messaging.consumer.group.name": group})
        assert point.value == 1
        assert point.attributes["messaging.destination.name"] == topic
        assert point.attributes[PARTITION] == "0"
        # Found by poll(), as the skipped offsets are: the same labels.
        assert point.attributes["messaging.operation.name"] == "poll"
        assert "messaging.operation.type" not in point.attributes
    assert total(otel, SKIPPED, **{"messaging.destination.name": topic}) == 0


# --- producer: messages never delivered ---------------------------------------------


def test_purge_ends_spans_with_the_purge_error(bootstrap: str, otel: Otel) -> None:
    topic = unique("dl")
    p = producer(bootstrap, **{"linger.ms": 60000})
    reports: list[Any] = []
    for i in range(3):
        p.produce(topic, f"v{i}".encode(), partition=0, on_delivery=lambda e, m: reports.append(e))
    assert len(p._kafkaplus.ledger.spans) == 3
    p.purge(in_queue=True, in_flight=True)
    assert p.flush(10) == 0
    assert [e.name() for e in reports] == ["_PURGE_QUEUE"] * 3
    spans = otel.spans(f"send {topic}")
    assert len(spans) == 3
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "_PURGE_QUEUE"
    assert total(otel, UNDELIVERED, **{"error.type": "_PURGE_QUEUE"}) == 3
    assert p._kafkaplus.ledger.spans == {}


def test_exit_without_flush_counts_queued_messages(tansu: str, tmp_path: Path) -> None:
    """In a real process: the SDK's exporters, shut down at exit, receive the
    unflushed messages as undelivered with ERROR spans; nothing hangs."""
    topic = unique("dl")
    spans_file, metrics_file = tmp_path / "spans.jsonl", tmp_path / "metrics.jsonl"
    app = Path(__file__).with_name("exit_app.py")
    done = subprocess.run(
        [sys.executable, str(app), tansu, topic, str(spans_file), str(metrics_file), "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "queued 5" in done.stdout  # len(producer): what librdkafka still held

    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    failed = [s for s in spans if s["status"]["status_code"] == "ERROR"]
    assert len(spans) == 6 and len(failed) == 5
    for s in failed:
        assert s["attributes"]["error.type"] == dataloss.EXIT_UNFLUSHED
        assert "exited" in s["status"]["description"]

    values: dict[tuple[str, str | None], int] = {}
    for line in metrics_file.read_text().splitlines():
        for rm in json.loads(line)["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for m in sm["metrics"]:
                    for dp in m["data"].get("data_points", []):
                        key = (m["name"], dp["attributes"].get("error.type"))
                        values[key] = values.get(key, 0) + dp.get("value", 0)
    assert values[(UNDELIVERED, dataloss.EXIT_UNFLUSHED)] == 5
    assert values[(SENT, dataloss.EXIT_UNFLUSHED)] == 5
    assert values[(SENT, None)] == 1


def test_garbage_collected_producer_counts_its_pending_messages(tansu: str, otel: Otel) -> None:
    """librdkafka drops queued messages without a report when the handle is
    destroyed; they are counted as _DESTROY when the next producer is created."""
    topic = unique("dl")
    reports: list[Any] = []
    p = producer(tansu, **{"linger.ms": 60000})
    for i in range(3):
        p.produce(topic, f"v{i}".encode(), partition=0, on_delivery=lambda e, m: reports.append(e))
    del p
    gc.collect()
    assert reports == []  # librdkafka served no report
    producer(tansu)
    spans = otel.spans(f"send {topic}")
    assert len(spans) == 3
    assert {s.attributes["error.type"] for s in spans} == {dataloss.DESTROYED}
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    assert total(otel, UNDELIVERED, **{"error.type": dataloss.DESTROYED}) == 3


def test_report_after_exit_accounting_reaches_only_the_app(tansu: str, otel: Otel) -> None:
    """An app flushing from an atexit handler that runs after kafkaplus's: its
    callbacks still run once, nothing is counted or ended twice."""
    topic = unique("dl")
    reports: list[Any] = []
    p = producer(tansu, **{"linger.ms": 60000})
    for i in range(2):
        p.produce(topic, f"v{i}".encode(), partition=0, on_delivery=lambda e, m: reports.append(e))
    assert p._kafkaplus.ledger.account(dataloss.EXIT_UNFLUSHED) == 2
    assert p.flush(30) == 0
    assert reports == [None, None]
    spans = otel.spans(f"send {topic}")
    assert [s.attributes["error.type"] for s in spans] == [dataloss.EXIT_UNFLUSHED] * 2
    assert total(otel, SENT, **{"messaging.destination.name": topic}) == 2
    assert p._kafkaplus.ledger.spans == {}


# --- kafkaplus audit on a real pipeline ---------------------------------------------


def test_audit_finds_the_messages_a_real_pipeline_never_consumed(
    bootstrap: str, otel: Otel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 messages to partition 0 and 4 to partition 1, one more purged; group
    ``all-p0`` reads partition 0, group ``early-p1`` stops after 2 of partition 1."""
    topic = make_topic(bootstrap, 2)
    p = producer(bootstrap)
    acks: list[Any] = []
    for partition in (0, 1):
        for i in range(4):
            p.produce(topic, f"p{partition}-{i}".encode(), partition=partition,
                      on_delivery=lambda e, m: acks.append((e, m.partition(), m.offset())))  # fmt: skip
    assert p.flush(30) == 0
    assert all(e is None for e, _, _ in acks)
    stuck = producer(bootstrap, **{"linger.ms": 60000})
    stuck.produce(topic, b"purged", partition=1)
    stuck.purge()
    stuck.flush(10)
    p1_offsets = sorted(o for _, part, o in acks if part == 1)

    reader = consumer(bootstrap, group="all-p0")
    reader.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    poll_messages(reader, 4)
    reader.close()
    quitter = consumer(bootstrap, group="early-p1")
    quitter.assign([TopicPartition(topic, 1, confluent_kafka.OFFSET_BEGINNING)])
    poll_messages(quitter, 2)
    quitter.close()

    spans = otel.spans()
    otlp, jaeger = tmp_path / "spans.jsonl", tmp_path / "jaeger.json"
    write_otlp_json(spans, otlp, spans_per_line=3)
    write_jaeger_json(spans, jaeger)

    for path in (otlp, jaeger):
        report = audit.audit([path])
        (stats,) = [t for t in report.topics if t.topic == topic]
        assert (stats.produced, stats.delivered, stats.failed, stats.unacknowledged) == (9, 8, 1, 0)
        assert stats.failures == {"_PURGE_QUEUE": 1}
        assert stats.never_consumed == 2
        groups = {g.group: (g.consumed, g.missing) for g in stats.groups}
        assert groups == {"all-p0": (4, 4), "early-p1": (2, 6)}
        assert report.orphan_count == 2
        assert [(o.topic, o.partition, o.offset) for o in report.orphans] == [
            (topic, "1", p1_offsets[2]),
            (topic, "1", p1_offsets[3]),
        ]
        by_partition = {ps.partition: ps.never_consumed for ps in stats.partitions}
        assert by_partition["0"] == 0 and by_partition["1"] == 2

    assert audit.main([str(otlp), str(jaeger), "--group", "early-p1"]) == 0
    text = capsys.readouterr().out
    assert "never consumed 2" in text
    assert audit.main([str(otlp), "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["orphan_count"] == 2
    assert audit.main([str(otlp)]) == 0
    text = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n[{bootstrap}]\n{text}")
