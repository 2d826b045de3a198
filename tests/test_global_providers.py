"""instrument() with no providers: nothing until the app sets an SDK, then everything.

``Producer.produce`` and ``Consumer.poll`` call straight through while no
global provider is set. These tests prove the shortcut: nothing is recorded
and no header is added before, an incoming context still travels, and spans
and metrics appear as soon as the app sets its providers. Global providers
can be set once per process, so each scenario runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import unique

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from opentelemetry import context, metrics, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    KafkaPlusInstrumentor().instrument()
    import confluent_kafka

    bootstrap, topic = sys.argv[1], sys.argv[2]
    out = {}

    def produce(tag):
        p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
        seen = []
        p.produce(topic, tag.encode(), partition=0, on_delivery=lambda e, m: seen.append(e))
        p.flush(30)
        return seen

    def consume(n):
        c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": tag_group(),
                                      "log_level": 0, "enable.auto.commit": False})
        c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        got, deadline = [], time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        current = trace.get_current_span().get_span_context()
        c.close()
        return got, current

    groups = iter(range(100))
    def tag_group():
        return "g%d" % next(groups)

    # 1. No SDK, no context: no headers, no context made current.
    assert produce("plain") == [None]
    msgs, current = consume(1)
    out["plain_headers"] = msgs[0].headers()
    out["plain_current_valid"] = current.is_valid

    # 2. No SDK, an incoming context: it still travels in the headers.
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1)))))
    try:
        produce("carried")
    finally:
        context.detach(token)
    msgs, _ = consume(2)
    out["carried_headers"] = [[k, v.decode()] for k, v in msgs[1].headers() or []]

    # 3. The app sets its SDK providers now: spans and metrics from here on.
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    produce("traced")
    msgs, current = consume(3)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, process = spans["send " + topic], spans["process " + topic]
    out["traced_parent_is_send"] = process.parent.span_id == send.context.span_id
    out["traced_same_trace"] = process.context.trace_id == send.context.trace_id
    out["traced_offset"] = [send.attributes["messaging.kafka.offset"],
                            process.attributes["messaging.kafka.offset"]]
    out["current_after_poll_is_process"] = current.span_id == process.context.span_id
    out["span_names"] = sorted(spans)
    data = reader.get_metrics_data()
    sent = [p.value for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == "messaging.client.sent.messages"
            for p in m.data.data_points]
    out["sent_counted"] = sum(sent)
    print(json.dumps(out))
""")


def test_nothing_before_the_sdk_is_set_and_everything_after(mock_cluster):
    topic = unique("global")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mock_cluster, topic],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["plain_headers"] is None
    assert out["plain_current_valid"] is False
    assert out["carried_headers"] == [
        ["traceparent", "00-00000000000000000000000000000abc-0000000000000def-01"]
    ]
    assert out["traced_parent_is_send"] and out["traced_same_trace"]
    assert out["traced_offset"] == [2, 2]
    assert out["current_after_poll_is_process"]
    assert out["span_names"] == [f"process {topic}", f"send {topic}"]
    assert out["sent_counted"] == 1


DISABLED = textwrap.dedent("""
    import json, sys, time
    from opentelemetry import context, metrics, trace
    from opentelemetry.metrics import NoOpHistogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
    from opentelemetry_instrumentation_kafkaplus.core.telemetry import ACTIVE

    recorded = []
    NoOpHistogram.record = lambda self, *a, **k: recorded.append(1)
    # What opentelemetry-instrument sets up with OTEL_SDK_DISABLED=true: SDK
    # providers that hand out no-op tracers and meters.
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider())
    KafkaPlusInstrumentor().instrument()
    import confluent_kafka

    bootstrap, topic = sys.argv[1], sys.argv[2]
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    p.produce(topic, b"plain", partition=0)
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(
        SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1)))))
    try:
        p.produce(topic, b"carried", partition=0)
    finally:
        context.detach(token)
    p.flush(30)
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                                  "log_level": 0, "enable.auto.commit": False})
    c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    print(json.dumps({
        "headers": [[[k, v.decode()] for k, v in m.headers() or []] for m in got],
        "idle": ACTIVE.telemetry.idle,
        "histogram_records": len(recorded),
    }))
""")


def test_sdk_disabled_records_nothing_and_context_still_travels(mock_cluster):
    topic = unique("disabled")
    proc = subprocess.run(
        [sys.executable, "-c", DISABLED, mock_cluster, topic],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OTEL_SDK_DISABLED": "true"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["headers"] == [
        [], [["traceparent", "00-00000000000000000000000000000abc-0000000000000def-01"]]
    ]
    assert out["idle"] is True  # known for good: produce() and poll() call straight through
    assert out["histogram_records"] == 0  # no measurement built for the no-op meter
