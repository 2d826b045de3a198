"""Options (keywords and env vars), the W3C fast path, header capture, hooks, dup mode."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from conftest import assigned_consumer, poll_messages, produce_and_flush, producer, unique
from opentelemetry_instrumentation_kafkaplus.core import options as config
from opentelemetry_instrumentation_kafkaplus.core.propagation import Injector


def test_keywords_win_over_env_and_bad_env_falls_back(caplog):
    env = {
        "OTEL_PYTHON_KAFKAPLUS_CONSUMER_CONTEXT_MODE": "link",
        "OTEL_PYTHON_KAFKAPLUS_CAPTURE_KEY": "maybe",
        "OTEL_PYTHON_KAFKAPLUS_EXCLUDE_TOPICS": "^__, internal$",
        "OTEL_PYTHON_KAFKAPLUS_STATISTICS_INTERVAL_MS": "5000",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http, messaging/dup",
    }
    with caplog.at_level(logging.WARNING):
        opts = config.resolve({"consumer_context_mode": "parent"}, env)
    assert opts.consumer_context_mode == "parent"
    # OpenTelemetry's rule for booleans: anything but true/false is false, with a warning.
    assert opts.capture_key is False
    assert "OTEL_PYTHON_KAFKAPLUS_CAPTURE_KEY" in caplog.text
    assert opts.topic_excluded("__consumer_offsets") and opts.topic_excluded("x.internal")
    assert not opts.topic_excluded("orders")
    assert opts.statistics_interval_ms == 5000
    assert opts.semconv_dup is True


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"consumer_context_mode": "child"}, ValueError), ({"exclude_topics": ["("]}, ValueError),
     ({"no_such_option": 1}, TypeError), ({"statistics_interval_ms": -1}, ValueError)],
)
def test_bad_keywords_raise_clearly(kwargs, error):
    with pytest.raises(error, match=r"kafkaplus|unknown"):
        config.resolve(kwargs, {})


def test_fast_w3c_injection_is_byte_identical_to_the_propagator():
    sc = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=False,
        trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )  # fmt: skip
    ctx = trace.set_span_in_context(NonRecordingSpan(sc))
    ctx = baggage.set_baggage("tenant", "acme corp", ctx)
    ctx = baggage.set_baggage("k", "v=1;x", ctx)
    fast = dict(Injector().inject(None, ctx, sc, None))
    expected: dict[str, str] = {}
    propagate.get_global_textmap().inject(expected, ctx)
    assert fast == expected and set(fast) == {"traceparent", "tracestate", "baggage"}


def test_capture_headers_hooks_and_exclusion(mock_cluster, otel_factory):
    seen = []
    otel = otel_factory(
        capture_headers=["Tenant"], exclude_topics=["^skip-"],
        produce_hook=lambda span, **kw: seen.append(("produce", kw["key"])),
        consume_hook=lambda span, msg: 1 / 0,
    )  # fmt: skip
    topic, skipped = unique(), unique("skip")
    p = producer(mock_cluster)
    p.produce(topic, b"x", key="k", partition=0, headers=[("tenant", b"acme"), ("secret", b"s")])
    p.produce(skipped, b"y", partition=0)
    p.flush(10)
    c = assigned_consumer(mock_cluster, topic)
    (m,) = poll_messages(c, 1)
    c.close()
    assert seen == [("produce", "k")]
    send = otel.span(f"send {topic}")
    process = otel.span(f"process {topic}")  # the failing consume_hook did not stop it
    for span in (send, process):
        assert span.attributes["messaging.header.tenant"] == ("acme",)
        assert not any("secret" in k for k in span.attributes)
    assert otel.spans(f"send {skipped}") == []
    assert [k for k, _ in m.headers()] == ["tenant", "secret", "traceparent"]


def test_messaging_dup_adds_the_legacy_names(mock_cluster, otel_factory, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "messaging/dup")
    otel = otel_factory()
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 1)
    c.close()
    send = otel.span(f"send {topic}")
    assert send.attributes["messaging.destination"] == topic
    assert send.attributes["messaging.operation"] == "publish"
    assert send.attributes["messaging.kafka.partition"] == 0
    assert send.attributes["messaging.message.id"] == f"{topic}.0.0"
    assert send.attributes["messaging.destination.name"] == topic  # new names stay


def test_capture_key_off(mock_cluster, otel_factory):
    otel = otel_factory(capture_key=False)
    topic = unique()
    p = producer(mock_cluster)
    p.produce(topic, b"x", key="secret-key", partition=0)
    p.flush(10)
    assert "messaging.kafka.message.key" not in otel.span(f"send {topic}").attributes


def test_no_sdk_means_no_headers_and_no_spans(mock_cluster):
    from opentelemetry.trace import NoOpTracerProvider

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    inst = KafkaPlusInstrumentor()
    inst.instrument(tracer_provider=NoOpTracerProvider())
    try:
        topic = unique()
        produce_and_flush(producer(mock_cluster), topic)
        c = assigned_consumer(mock_cluster, topic)
        (m,) = poll_messages(c, 1)
        c.close()
        assert m.headers() is None
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(
            SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1)))))
        try:
            produce_and_flush(producer(mock_cluster), topic)  # an incoming context still travels
        finally:
            context.detach(token)
        c = assigned_consumer(mock_cluster, topic)
        msgs = poll_messages(c, 2)
        c.close()
        assert dict(msgs[1].headers())["traceparent"].startswith(b"00-" + b"0" * 29 + b"abc")
    finally:
        inst.uninstrument()
