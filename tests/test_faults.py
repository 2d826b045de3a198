"""Faults: a broker that dies and comes back, a full queue, exit without flush, fork.

All against real brokers (a tansu process of our own, or librdkafka's mock
cluster). No assertion depends on how long something took: waits have generous
limits and the assertions are about counts, parents and outcomes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from opentelemetry.sdk.trace import Span
from opentelemetry.trace import StatusCode

from conftest import assigned_consumer, producer, unique
from kafkaplus_tools.brokers import free_port, start_tansu
from opentelemetry_instrumentation_kafkaplus.operations.send import Delivery

#: error.type a send span may carry when the broker is gone.
BROKER_DOWN_ERRORS = {"_MSG_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT",
                      "NOT_LEADER_FOR_PARTITION", "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION",
                      "LEADER_NOT_AVAILABLE", "_PURGE_QUEUE", "_PURGE_INFLIGHT"}  # fmt: skip




@contextlib.contextmanager
def restartable_tansu() -> Iterator[dict[str, Any]]:
    port = free_port()
    state: dict[str, Any] = {"port": port, "proc": start_tansu(port)}
    try:
        yield state
    finally:
        proc = state["proc"]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def traceparent_ids(msg: Any) -> tuple[int, int]:
    (value,) = [v for k, v in msg.headers() if k == "traceparent"]
    _, trace_id, span_id, _ = value.decode().split("-")
    return int(trace_id, 16), int(span_id, 16)


def poll_until(c: Any, want: set[bytes], got: list[Any], limit: float = 60.0) -> None:
    """Poll until every value in want was consumed (a guard, not a timed assertion)."""
    deadline = time.monotonic() + limit
    while not want <= {m.value() for m in got} and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m)


def test_broker_killed_and_restarted(otel):
    if confluent_kafka.libversion()[1] < 0x020A0000:
        pytest.skip(
            "the librdkafka of confluent-kafka < 2.10 never fetches again from a restarted "
            "in-memory tansu and crashes at exit (reproduced without kafkaplus)"
        )
    topic = unique("kill")
    with restartable_tansu() as broker:
        bootstrap = f"127.0.0.1:{broker['port']}"
        fast = {"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500}
        p = producer(bootstrap, **{"message.timeout.ms": 3000, "retry.backoff.ms": 50}, **fast)
        c = assigned_consumer(bootstrap, topic, **{"fetch.wait.max.ms": 50}, **fast)
        reports: dict[int, list[Any]] = {}
        calls = 0

        def produce(i: int) -> None:
            nonlocal calls
            calls += 1
            p.produce(topic, f"m{i}".encode(), partition=0,
                      on_delivery=lambda e, m: reports.setdefault(i, []).append(
                          (e.name() if e else None, m.offset())))  # fmt: skip

        got: list[Any] = []
        # 1. Healthy: 20 messages produced and consumed.
        for i in range(20):
            produce(i)
        assert p.flush(30) == 0
        poll_until(c, {f"m{i}".encode() for i in range(20)}, got)

        # 2. The broker dies mid-stream; the app keeps producing and polling.
        broker["proc"].kill()
        broker["proc"].wait(10)
        for i in range(20, 30):
            produce(i)
            p.poll(0)
            c.poll(0.05)  # no exception escapes while the broker is gone
        assert p.flush(30) == 0  # every one of them times out: a report each
        # Produced while down, then the broker comes back before they time out.
        for i in range(30, 40):
            produce(i)
        broker["proc"] = start_tansu(broker["port"])
        assert p.flush(30) == 0

        # 3. Back, and empty (memory storage): offsets start again from 0, so the
        # consumer's position may be past the new end. Keep producing until it
        # consumes again; everything it gets must be traced as before.
        before = len(got)
        i = 40
        for _ in range(30):
            for _ in range(10):
                produce(i)
                i += 1
            assert p.flush(30) == 0
            poll_until(c, {f"m{i - 1}".encode()}, got, limit=2)
            if len(got) - before >= 10:
                break
        resumed = got[before:]
        assert len(resumed) >= 10
        assert all(int(m.value()[1:]) >= 30 for m in resumed)
        c.close()

    # Every produce() got exactly one report, and its span ended exactly once.
    assert sorted(reports) == list(range(calls))
    assert all(len(r) == 1 for r in reports.values())
    sends = otel.spans(f"send {topic}")
    assert len(sends) == calls
    assert len({s.context.span_id for s in sends}) == calls
    delivered = [s for s in sends if "error.type" not in s.attributes]
    failed = [s for s in sends if "error.type" in s.attributes]
    assert len(delivered) == sum(1 for r in reports.values() if r[0][0] is None)
    for s in delivered:
        assert s.attributes["messaging.kafka.offset"] >= 0
        assert s.status.status_code is StatusCode.UNSET
    for s in failed:
        assert s.attributes["error.type"] in BROKER_DOWN_ERRORS
        assert s.status.status_code is StatusCode.ERROR
        assert "messaging.kafka.offset" not in s.attributes
    assert all(reports[i][0][0] is None for i in [*range(20), *range(40, calls)])
    assert all(reports[i][0][0] in BROKER_DOWN_ERRORS for i in range(20, 30))

    # One process span per consumed message, each the child of its send span.
    procs = otel.spans(f"process {topic}")
    assert len(procs) == len(got)
    sends_by_id = {s.context.span_id: s for s in sends}
    procs_by_trace: dict[int, list[Any]] = {}
    for s in procs:
        procs_by_trace.setdefault(s.context.trace_id, []).append(s)
    for m in got:
        trace_id, span_id = traceparent_ids(m)
        send = sends_by_id[span_id]
        assert send.attributes["messaging.kafka.offset"] == m.offset()
        (proc,) = [s for s in procs_by_trace[trace_id]
                   if s.attributes["messaging.kafka.offset"] == m.offset()]  # fmt: skip
        assert proc.parent.span_id == span_id


def _live_send_spans(topic: str) -> int:
    name = f"send {topic}"
    return sum(1 for o in gc.get_objects()
               if isinstance(o, Span) and o.name == name and o.end_time is None)  # fmt: skip


def _live_delivery_callbacks(topic: str) -> int:
    """kafkaplus per-message delivery callbacks alive for this topic (not the shared one)."""
    name = f"send {topic}"
    return sum(1 for o in gc.get_objects()
               if type(o) is Delivery and o.report.name == name and o.span is not None)  # fmt: skip


def test_pending_spans_are_bounded_by_the_queue(otel):
    topic = unique("full")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: nothing is ever delivered
    p = producer(dead, **{"queue.buffering.max.messages": 1000})
    accepted = 0
    with pytest.raises(BufferError):
        for i in range(5000):
            p.produce(topic, f"m{i}".encode(), partition=0, on_delivery=lambda e, m: None)
            accepted += 1
    assert accepted == 1000
    gc.collect()
    assert _live_send_spans(topic) == 1000
    assert _live_delivery_callbacks(topic) <= 1000
    # Retrying against a full queue never grows what is pending.
    for i in range(500):
        with pytest.raises(BufferError):
            p.produce(topic, f"again{i}".encode(), partition=0, on_delivery=lambda e, m: None)
    gc.collect()
    assert _live_send_spans(topic) == 1000
    assert _live_delivery_callbacks(topic) <= 1000
    refused = otel.spans(f"send {topic}")
    assert len(refused) == 501
    assert {s.attributes["error.type"] for s in refused} == {"BufferError"}
    # Purging serves a report per message: every pending span ends.
    p.purge()
    assert p.flush(10) == 0
    gc.collect()
    assert _live_send_spans(topic) == 0
    assert _live_delivery_callbacks(topic) == 0
    assert len(otel.spans(f"send {topic}")) == 1501


EXIT_SCRIPT = textwrap.dedent("""
    import gc, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    mode, bootstrap = sys.argv[1], sys.argv[2]
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    trace.set_tracer_provider(tp)
    KafkaPlusInstrumentor().instrument()
    import confluent_kafka

    conf = {"bootstrap.servers": bootstrap, "log_level": 0}
    if mode == "unreachable-default-callback":
        conf["on_delivery"] = lambda err, msg: None
    p = confluent_kafka.Producer(conf)
    for i in range(200):
        p.produce("exit-topic", b"v%d" % i, partition=0, on_delivery=lambda e, m: None)
    p.poll(0)
    if mode == "gc":
        del p
        gc.collect()
    print("exiting without flush", flush=True)
""")


@pytest.mark.parametrize("mode", ["exit", "gc", "unreachable", "unreachable-default-callback"])
def test_exit_without_flush(mock_cluster, mode):
    bootstrap = f"127.0.0.1:{free_port()}" if mode.startswith("unreachable") else mock_cluster
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, mode, bootstrap],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "exiting without flush" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr


FORK_SCRIPT = textwrap.dedent("""
    import json, multiprocessing, os, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    how, bootstrap, out = sys.argv[1], sys.argv[2], sys.argv[3]

    class FileExporter(SpanExporter):
        def export(self, spans):
            with open(out, "a") as f:
                for s in spans:
                    f.write(json.dumps({
                        "pid": os.getpid(), "name": s.name, "attrs": dict(s.attributes),
                        "trace": s.context.trace_id,
                        "parent": s.parent.span_id if s.parent else None,
                    }) + "\\n")
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(tp)
    KafkaPlusInstrumentor().instrument()
    import confluent_kafka

    def work(tag, n):
        p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        with trace.get_tracer("fork-test").start_as_current_span(tag):
            for i in range(n):
                p.produce(tag, b"v%d" % i, partition=0)
        assert p.flush(30) == 0

    work("before-fork", 2)  # the parent has live librdkafka threads when it forks
    if how == "os.fork":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work("in-child", 5)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        child_ok = os.waitstatus_to_exitcode(status) == 0
    else:
        proc = multiprocessing.get_context("fork").Process(target=work, args=("in-child", 5))
        proc.start()
        proc.join(120)
        child_ok = proc.exitcode == 0
    work("after-fork", 2)
    print("child ok" if child_ok else "child failed", flush=True)
""")


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_fork_keeps_tracing_in_the_child(mock_cluster, tmp_path: Path, how):
    out = tmp_path / "spans.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, how, mock_cluster, str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "child ok" in proc.stdout, proc.stderr
    spans = [json.loads(line) for line in out.read_text().splitlines()]
    parent_pid = next(s["pid"] for s in spans if s["name"] == "send before-fork")
    child = [s for s in spans if s["name"] == "send in-child"]
    assert len(child) == 5
    assert {s["pid"] for s in child} != {parent_pid}
    assert sorted(s["attrs"]["messaging.kafka.offset"] for s in child) == sorted(
        {s["attrs"]["messaging.kafka.offset"] for s in child}
    )
    for s in child:
        assert s["attrs"]["messaging.kafka.offset"] >= 0
        assert "error.type" not in s["attrs"]
        assert s["parent"] is not None  # the child's own ambient span
    (root,) = [s for s in spans if s["name"] == "in-child"]
    assert {s["trace"] for s in child} == {root["trace"]}
    assert len([s for s in spans if s["name"] == "send after-fork"]) == 2


def test_consumer_garbage_collected_and_producer_dropped(mock_cluster, otel):
    """Clients dropped without close()/flush() in a live process break nothing."""
    topic = unique("drop")
    p = producer(mock_cluster)
    for i in range(10):
        p.produce(topic, f"m{i}".encode(), partition=0)
    assert p.flush(30) == 0
    c = assigned_consumer(mock_cluster, topic)
    got = []
    while len(got) < 3:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    del c, got, m
    for i in range(10):
        p.produce(topic, f"late{i}".encode(), partition=0)
    del p
    gc.collect()
    # A fresh pair works and is traced normally afterwards.
    p2 = producer(mock_cluster)
    p2.produce(topic, b"after", partition=0)
    assert p2.flush(30) == 0
    c2 = confluent_kafka.Consumer({"bootstrap.servers": mock_cluster, "group.id": unique("g"),
                                   "log_level": 0})  # fmt: skip
    c2.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while b"after" not in seen and time.monotonic() < deadline:
        m2 = c2.poll(0.5)
        if m2 is not None and m2.error() is None:
            seen.append(m2.value())
    c2.close()
    assert b"after" in seen
    assert len(otel.spans(f"process {topic}")) >= len(seen)
