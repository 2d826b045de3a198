"""One trace from produce() to poll(), against real brokers."""

from __future__ import annotations

import logging
import threading
import time

import confluent_kafka
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from conftest import (
    PatternSampler,
    assigned_consumer,
    consumer,
    poll_messages,
    produce_and_flush,
    producer,
    unique,
)


def test_produce_then_poll_is_one_trace(bootstrap, otel):
    topic = unique()
    p = producer(bootstrap, **{"client.id": "orders-api"})
    seen = []
    p.produce(topic, value=b"hello", key="order-1", partition=0,
              on_delivery=lambda err, msg: seen.append((err, msg.partition(), msg.offset())))
    assert p.flush(30) == 0
    c = assigned_consumer(bootstrap, topic, **{"group.id": "billing", "client.id": "billing-1"})
    (msg,) = poll_messages(c, 1)
    cluster = c.cluster_id(10) if hasattr(c, "cluster_id") else None
    c.close()

    send = otel.span(f"send {topic}")
    process = otel.span(f"process {topic}")
    assert send.kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert list(process.links) == []  # the parent is the creation context: no link repeats it
    assert seen == [(None, 0, msg.offset())]

    host, port = bootstrap.split(":")
    assert dict(send.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": msg.offset(),
        "messaging.kafka.message.key": "order-1",
        "messaging.client.id": "orders-api",
        "server.address": host,
        "server.port": int(port),
    }
    attrs = dict(process.attributes)
    assert attrs.pop("kafkaplus.message.age") >= 0
    # Known from the metadata the consumer already fetched (no request of ours).
    assert attrs.pop("messaging.kafka.cluster.id", None) == cluster
    assert attrs == {
        "messaging.system": "kafka",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": msg.offset(),
        "messaging.kafka.message.key": "order-1",
        "messaging.consumer.group.name": "billing",
        "messaging.client.id": "billing-1",
        "server.address": host,
        "server.port": int(port),
    }
    assert send.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.44.0"


def test_producer_span_ends_on_delivery_with_callback_inside(bootstrap, otel):
    topic = unique()
    p = producer(bootstrap)
    calls = []

    def on_delivery(err, msg):
        calls.append((err, msg.offset(), trace.get_current_span().get_span_context().span_id,
                      msg.latency()))

    p.produce(topic, b"x", partition=0, on_delivery=on_delivery)
    assert otel.spans() == []  # not ended by produce()
    p.flush(30)
    send = otel.span(f"send {topic}")
    assert len(calls) == 1
    err, offset, current, latency = calls[0]
    assert err is None and offset == send.attributes["messaging.kafka.offset"]
    assert current == send.context.span_id
    # End time is start + librdkafka's reported latency.
    assert abs((send.end_time - send.start_time) / 1e9 - latency) < 0.002


@pytest.mark.parametrize("form", ["on_delivery", "callback", "positional", "config"])
def test_every_delivery_callback_form_called_once(tansu, otel, form):
    topic = unique()
    calls = []

    def cb(err, msg):
        calls.append((err, msg.topic(), msg.value()))

    conf = {"on_delivery": cb} if form == "config" else {}
    p = producer(tansu, **conf)
    if form == "on_delivery":
        p.produce(topic, b"a", on_delivery=cb)
    elif form == "callback":
        p.produce(topic, b"a", callback=cb)
    elif form == "positional":
        p.produce(topic, b"a", None, -1, cb)
    else:
        p.produce(topic, b"a")
    p.flush(30)
    assert calls == [(None, topic, b"a")]
    assert otel.span(f"send {topic}").attributes["messaging.kafka.offset"] >= 0


def test_callback_wins_over_on_delivery_as_without_instrumentation(tansu, otel):
    topic = unique()
    calls = []
    p = producer(tansu)
    p.produce(topic, b"a", callback=lambda e, m: calls.append("callback"),
              on_delivery=lambda e, m: calls.append("on_delivery"))
    p.flush(30)
    assert calls == ["callback"]


def test_user_callback_exception_reaches_app_and_span_ends(tansu, otel):
    topic = unique()
    p = producer(tansu)

    def boom(err, msg):
        raise ValueError("app bug")

    p.produce(topic, b"a", on_delivery=boom)
    with pytest.raises(ValueError, match="app bug"):
        p.flush(30)
    assert otel.span(f"send {topic}").attributes["messaging.kafka.offset"] >= 0


def test_headers_kept_not_mutated_and_trace_header_replaced(bootstrap, otel):
    topic = unique()
    p = producer(bootstrap)
    stale = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    as_list = [("app", b"1"), ("traceparent", stale.encode()), ("app", b"2")]
    as_dict = {"app": "d", "traceparent": stale}
    list_copy, dict_copy = list(as_list), dict(as_dict)
    p.produce(topic, b"l", partition=0, headers=as_list)
    p.produce(topic, b"d", partition=0, headers=as_dict)
    p.produce(topic, b"n", partition=0)
    p.flush(30)
    assert as_list == list_copy and as_dict == dict_copy
    c = assigned_consumer(bootstrap, topic)
    msgs = poll_messages(c, 3)
    c.close()
    sends = {s.attributes["messaging.kafka.offset"]: s for s in otel.spans() if s.name.startswith("send")}
    for m in msgs:
        headers = m.headers()
        tps = [v for k, v in headers if k == "traceparent"]
        assert len(tps) == 1
        span = sends[m.offset()]
        assert tps[0].decode() == (
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
        )
        app = [(k, v) for k, v in headers if k == "app"]
        expected = {b"l": [("app", b"1"), ("app", b"2")], b"d": [("app", b"d")], b"n": []}
        assert app == expected[m.value()]


@pytest.mark.parametrize("sampled", [True, False])
def test_bad_arguments_raise_exactly_as_uninstrumented(mock_cluster, otel_factory, sampled):
    """Unsampled, after a first call of the topic, a plain call takes the plain path."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    from conftest import original_producer

    otel_factory(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    plain = original_producer({"bootstrap.servers": mock_cluster})
    traced = producer(mock_cluster)
    for client in (plain, traced):
        client.list_topics(timeout=10)
        client.produce("t", b"first")
    cases = [
        ((), {}),
        (("t",), {"bogus": 1}),
        (("t", b"v"), {"value": b"w"}),
        (("t",), {"headers": [("k", 1)]}),
        (("t",), {"headers": [("k",)]}),
        (("t",), {"headers": ("k", b"v")}),
        ((1,), {}),
        (("t", 5), {}),
        (("t",), {"partition": "x"}),
        (("t", b"v"), {"timestamp": "x"}),
    ]
    for args, kwargs in cases:
        outcomes = []
        for client in (plain, traced):
            try:
                outcomes.append(("ok", client.produce(*args, **kwargs)))
            except Exception as exc:
                outcomes.append((type(exc), str(exc)))
        assert outcomes[0] == outcomes[1], (args, kwargs)
    traced.flush(5)
    plain.flush(5)


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("kwargs", [{"on_delivery": 42}, {"callback": "not callable"}])
def test_a_callback_that_cannot_be_called_fails_as_uninstrumented(mock_cluster, otel_factory,
                                                                  sampled, kwargs):  # fmt: skip
    """confluent-kafka takes it and fails at the report (flush): the same with kafkaplus."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    from conftest import original_producer

    otel_factory(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    outcomes = []
    for client in (original_producer({"bootstrap.servers": mock_cluster}),
                   producer(mock_cluster)):  # fmt: skip
        client.list_topics(timeout=10)
        client.produce("t", b"first")  # the topic's first call
        assert client.flush(5) == 0
        client.produce("t", b"v", **kwargs)
        try:
            outcomes.append(("ok", client.flush(5)))
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]


def test_buffer_error_propagates_and_span_records_it(mock_cluster, otel):
    topic = unique()
    p = producer(mock_cluster, **{"queue.buffering.max.messages": 1, "linger.ms": 1000})
    p.produce(topic, b"1")
    with pytest.raises(BufferError):
        p.produce(topic, b"2")
    failed = [s for s in otel.spans(f"send {topic}") if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1
    assert failed[0].attributes["error.type"] == "BufferError"
    p.flush(30)
    assert len(otel.spans(f"send {topic}")) == 2


def test_delivery_failure_sets_error_type(otel):
    topic = unique()
    from kafkaplus_tools.brokers import free_port

    p = producer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 300})
    errors = []
    p.produce(topic, b"x", on_delivery=lambda e, m: errors.append(e.name()))
    p.flush(10)
    send = otel.span(f"send {topic}")
    assert errors == ["_MSG_TIMED_OUT"]
    assert send.attributes["error.type"] == "_MSG_TIMED_OUT"
    assert send.status.status_code is StatusCode.ERROR
    assert "messaging.kafka.offset" not in send.attributes


def test_empty_polls_errors_no_span_tombstones_and_empty_values_traced(bootstrap, otel_factory):
    otel = otel_factory(capture_body_size=True)  # Opt-In in the conventions
    topic = unique()
    p = producer(bootstrap)
    p.produce(topic, None, key=b"gone", partition=0)
    p.produce(topic, b"", partition=0)
    p.flush(30)
    c = assigned_consumer(bootstrap, topic, **{"enable.partition.eof": True})
    got, eof = [], 0
    for _ in range(60):
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            eof += 1
            if len(got) == 2:
                break
            continue
        got.append(m)
    c.close()
    assert len(got) == 2 and eof >= 1
    spans = sorted(otel.spans(f"process {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"])
    assert len(spans) == 2
    assert spans[0].attributes["messaging.kafka.message.tombstone"] is True
    assert spans[0].attributes["messaging.kafka.message.key"] == "gone"
    assert "messaging.message.body.size" not in spans[0].attributes
    assert spans[1].attributes["messaging.message.body.size"] == 0
    assert "messaging.kafka.message.tombstone" not in spans[1].attributes


def test_body_size_is_opt_in_and_counts_utf8_bytes_on_both_sides(mock_cluster, otel_factory):
    """Off by default (Opt-In in the conventions); when on, a str body is its UTF-8 size
    on the producer and on the consumer alike."""
    topic = unique()
    off = otel_factory()
    p = producer(mock_cluster)
    c = assigned_consumer(mock_cluster, topic)
    produce_and_flush(p, topic, 1)
    poll_messages(c, 1)
    assert all("messaging.message.body.size" not in s.attributes for s in off.spans())
    off.instrumentor.uninstrument()
    on = otel_factory(capture_body_size=True)
    p.produce(topic, value="héllo", partition=0)  # 5 characters, 6 bytes in UTF-8
    assert p.flush(30) == 0
    poll_messages(c, 1)
    c.close()
    sizes = {s.kind: s.attributes["messaging.message.body.size"] for s in on.spans()}
    assert sizes == {SpanKind.PRODUCER: 6, SpanKind.CONSUMER: 6}


def test_body_size_of_a_deserialized_str_is_its_utf8_size(mock_cluster, otel_factory):
    """A DeserializingConsumer hands the app a str: the process span still counts bytes."""
    from confluent_kafka import DeserializingConsumer, SerializingProducer
    from confluent_kafka.serialization import StringDeserializer, StringSerializer

    topic = unique()
    on = otel_factory(capture_body_size=True)
    p = SerializingProducer({"bootstrap.servers": mock_cluster, "value.serializer": StringSerializer()})
    p.produce(topic, value="héllo wörld", partition=0)  # 11 characters, 13 bytes in UTF-8
    assert p.flush(30) == 0
    c = DeserializingConsumer({
        "bootstrap.servers": mock_cluster, "group.id": unique(),
        "value.deserializer": StringDeserializer(),
    })  # fmt: skip
    c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    msgs = poll_messages(c, 1)
    c.close()
    assert msgs[0].value() == "héllo wörld"
    sizes = {s.kind: s.attributes["messaging.message.body.size"] for s in on.spans()
             if s.name.endswith(topic) and s.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER)}  # fmt: skip
    assert sizes == {SpanKind.PRODUCER: 13, SpanKind.CONSUMER: 13}


def test_process_span_current_until_next_poll_and_not_in_other_threads(tansu, otel):
    topic = unique()
    p = producer(tansu)
    produce_and_flush(p, topic, 2)
    c = assigned_consumer(tansu, topic)
    first = poll_messages(c, 1)[0]
    current = trace.get_current_span()
    assert current.is_recording() and current.attributes["messaging.kafka.offset"] == first.offset()
    other = []
    t = threading.Thread(target=lambda: other.append(trace.get_current_span().get_span_context().is_valid))
    t.start()
    t.join()
    assert other == [False]
    assert otel.spans(f"process {topic}") == []
    poll_messages(c, 1)
    assert len(otel.spans(f"process {topic}")) == 1
    c.close()
    assert len(otel.spans(f"process {topic}")) == 2
    assert not trace.get_current_span().get_span_context().is_valid


def test_polling_from_many_threads_logs_no_detach_errors(tansu, otel, caplog):
    topic = unique()
    p = producer(tansu)
    produce_and_flush(p, topic, 40)
    c = assigned_consumer(tansu, topic)
    got = []
    lock = threading.Lock()

    def worker():
        for _ in range(40):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                with lock:
                    got.append((m.offset(), trace.get_current_span().attributes["messaging.kafka.offset"]))

    with caplog.at_level(logging.DEBUG):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c.close()
    assert sorted(o for o, _ in got) == list(range(40))
    assert all(offset == current for offset, current in got)
    assert "Failed to detach context" not in caplog.text
    spans = otel.spans(f"process {topic}")
    assert len(spans) == 40
    sends = {s.context.span_id for s in otel.spans(f"send {topic}")}
    assert {s.parent.span_id for s in spans} == sends


def test_consume_batch_poll_span_links_every_message(tansu, otel):
    topic = unique()
    p = producer(tansu)
    produce_and_flush(p, topic, 5)
    c = assigned_consumer(tansu, topic)
    msgs = []
    for _ in range(20):
        msgs += [m for m in c.consume(10, 1.0) if m.error() is None]
        if len(msgs) >= 5:
            break
    c.close()
    assert len(msgs) == 5
    sends = {s.attributes["messaging.kafka.offset"]: s for s in otel.spans(f"send {topic}")}
    polls = otel.spans(f"poll {topic}")
    processes = otel.spans(f"process {topic}")
    assert len(polls) == len(processes) >= 1
    linked = [(link.context.span_id, link.attributes["messaging.kafka.offset"]) for s in polls for link in s.links]
    assert sorted(linked, key=lambda x: x[1]) == [(sends[o].context.span_id, o) for o in range(5)]
    assert sum(s.attributes["messaging.batch.message_count"] for s in polls) == 5
    for s in polls:
        assert s.kind is SpanKind.CLIENT
        assert s.attributes["messaging.operation.type"] == "receive"
    for s in processes:
        assert s.kind is SpanKind.CONSUMER and s.parent is None
        assert len(s.links) == s.attributes["messaging.batch.message_count"]


def test_message_without_context_starts_a_new_root(mock_cluster, otel):
    from conftest import original_producer

    topic = unique()
    plain = original_producer({"bootstrap.servers": mock_cluster})
    plain.produce(topic, b"x", partition=0, headers=[("traceparent", b"\xff\xfe garbage")])
    plain.flush(10)
    c = assigned_consumer(mock_cluster, topic)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("worker") as worker:
        poll_messages(c, 1)
    c.close()
    process = otel.span(f"process {topic}")
    assert process.parent is None
    assert [link.context.span_id for link in process.links] == [worker.get_span_context().span_id]


def test_link_mode_starts_from_ambient_and_links_producer(mock_cluster, otel_factory):
    otel = otel_factory(consumer_context_mode="link")
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 1)
    c.close()
    send = otel.span(f"send {topic}")
    process = otel.span(f"process {topic}")
    assert process.context.trace_id != send.context.trace_id
    assert process.parent is None
    assert [link.context.span_id for link in process.links] == [send.context.span_id]


def test_uninstrument_restores_classes_and_silences_existing_clients(mock_cluster, otel_factory):
    from conftest import ORIGINALS

    otel = otel_factory()
    p = producer(mock_cluster)
    original = ORIGINALS["Producer"]
    assert type(p) is not original and isinstance(p, original)
    otel.instrumentor.instrument()  # twice: no change
    assert confluent_kafka.Producer.__mro__[1] is original
    otel.instrumentor.uninstrument()
    assert confluent_kafka.Producer is original
    assert confluent_kafka.cimpl.Consumer is ORIGINALS["Consumer"]
    topic = unique()
    produce_and_flush(p, topic)
    assert otel.spans() == []


def test_suppress_instrumentation_means_no_span_no_headers(mock_cluster, otel):
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    topic = unique()
    p = producer(mock_cluster)
    with suppress_instrumentation():
        produce_and_flush(p, topic)
    c = assigned_consumer(mock_cluster, topic)
    (m,) = poll_messages(c, 1)
    c.close()
    assert m.headers() is None
    assert otel.spans(f"send {topic}") == []


def test_parent_based_sampler_follows_the_producer_decision(mock_cluster, otel_factory):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    otel = otel_factory(sampler=ParentBased(ALWAYS_OFF))
    topic = unique()
    tracer = otel.tracer_provider.get_tracer("app")
    p = producer(mock_cluster)
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    sampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1)))
    with trace.use_span(sampled):
        p.produce(topic, b"sampled", partition=0)
    p.produce(topic, b"unsampled", partition=0)  # ALWAYS_OFF root
    p.flush(10)
    del tracer
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 2)
    c.close()
    sends = otel.spans(f"send {topic}")
    processes = otel.spans(f"process {topic}")
    assert [s.context.trace_id for s in sends] == [0xABC]
    assert [s.context.trace_id for s in processes] == [0xABC]


def test_baggage_survives_the_hop(mock_cluster, otel):
    from opentelemetry import baggage, context

    topic = unique()
    p = producer(mock_cluster)
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        produce_and_flush(p, topic)
    finally:
        context.detach(token)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 1)
    assert baggage.get_baggage("tenant") == "acme"
    c.close()
    assert baggage.get_baggage("tenant") is None


def test_forwarding_headers_carries_one_new_context(mock_cluster, otel):
    src, dst = unique("in"), unique("out")
    p = producer(mock_cluster)
    produce_and_flush(p, src)
    c = assigned_consumer(mock_cluster, src)
    (m,) = poll_messages(c, 1)
    p.produce(dst, m.value(), partition=0, headers=m.headers())
    p.flush(10)
    c.close()
    c2 = assigned_consumer(mock_cluster, dst)
    (out,) = poll_messages(c2, 1)
    c2.close()
    process_in = otel.span(f"process {src}")
    send_out = otel.span(f"send {dst}")
    assert send_out.parent.span_id == process_in.context.span_id
    tps = [v for k, v in out.headers() if k == "traceparent"]
    assert len(tps) == 1 and f"{send_out.context.span_id:016x}".encode() in tps[0]
    origins = [v for k, v in out.headers() if k == "kafkaplus-origin-ms"]
    assert "kafkaplus-origin-ms" not in dict(m.headers())  # a first hop needs none
    assert origins == [str(m.timestamp()[1]).encode()]  # the first message's creation time


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled-parent"])
def test_traced_clients_leave_no_reference_cycles(mock_cluster, otel_factory, sampled):
    """Every span, context and record is freed by reference counting.

    Garbage that only the cyclic collector can free makes each collection
    walk it: in a poll loop at full sampling that cost more than the span.
    """
    import gc

    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    otel_factory(sampler=ParentBased(ALWAYS_ON))
    topic = unique()
    flags = "01" if sampled else "00"
    p = producer(mock_cluster)
    for i in range(20):
        tp = f"00-{i + 1:032x}-{i + 1:016x}-{flags}"
        p.produce(topic, b"v", partition=0, headers=[("traceparent", tp)])
    p.flush(10)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 1)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        poll_messages(c, 9)
        got = 0
        while got < 10:
            got += sum(1 for m in c.consume(5, 1.0) if m.error() is None)
        p.produce(topic, b"w", partition=0, on_delivery=lambda err, msg: None)
        p.flush(10)
        c.commit(asynchronous=False)
        c.close()
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("opentelemetry")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert sorted({type(o).__qualname__ for o in ours}) == []


@pytest.mark.parametrize("metrics", ["semconv", "none"])
def test_unsampled_message_context_current_whatever_the_metrics(mock_cluster, otel_factory,
                                                                 metrics):  # fmt: skip
    """A message its producer did not sample: its context is current while it is handled,
    and a message produced then goes on in its trace (not sampled). With metrics=none
    nothing waits for the end of its handling; with the default set its duration is recorded."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    otel = otel_factory(sampler=ParentBased(ALWAYS_OFF), metrics=metrics)
    first, second = unique("a"), unique("b")
    p = producer(mock_cluster)
    p.produce(first, b"unsampled", partition=0)
    assert p.flush(10) == 0
    c = assigned_consumer(mock_cluster, first)
    (m,) = poll_messages(c, 1)
    sent = dict(m.headers())["traceparent"].decode()
    current = trace.get_current_span().get_span_context()
    assert f"{current.trace_id:032x}" == sent.split("-")[1] and not current.trace_flags.sampled
    p.produce(second, b"next", partition=0)
    assert p.flush(10) == 0
    c.close()
    c2 = assigned_consumer(mock_cluster, second)
    (m2,) = poll_messages(c2, 1)
    c2.close()
    carried = dict(m2.headers())["traceparent"].decode()
    assert carried.split("-")[1] == sent.split("-")[1] and not int(carried[-2:], 16) & 1
    assert otel.spans() == []
    durations = otel.metric_points("messaging.process.duration")
    assert [d.count for d in durations if d.attributes["messaging.destination.name"] == first] == (
        [1] if metrics == "semconv" else []
    )


@pytest.mark.parametrize("metrics", ["none", "semconv"])
def test_plain_produce_calls_at_low_sampling_keep_every_trace_and_report(
    mock_cluster, otel_factory, metrics
):
    """produce(topic, value, key) with a callback or timestamp, by position or name, where
    most sends do not record: every message carries its own span's context, a recorded
    send has every attribute, every callback runs once, every message is counted."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    pattern = "01101000"
    otel = otel_factory(sampler=ParentBased(PatternSampler(pattern)), metrics=metrics)
    topic = unique()
    p = producer(mock_cluster)
    p.list_topics(timeout=10)  # the cluster id known from the first call on
    reports = []

    def cb(err, msg):
        reports.append((err, msg.key().decode(), trace.get_current_span().is_recording()))

    for i, _ in enumerate(pattern):
        key = f"k{i}".encode()
        if i % 3 == 0:
            p.produce(topic, b"v", key, on_delivery=cb)
        elif i % 3 == 1:
            p.produce(topic, value=b"v", key=key, callback=cb)
        else:
            p.produce(topic, b"v", key, timestamp=int(time.time() * 1000), on_delivery=cb)
    assert p.flush(10) == 0
    sampled = [f"k{i}" for i, d in enumerate(pattern) if d == "1"]
    assert sorted(reports) == [(None, f"k{i}", f"k{i}" in sampled) for i in range(len(pattern))]
    sends = {s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"send {topic}")}
    assert sorted(sends) == sampled
    for span in sends.values():
        assert span.attributes["messaging.kafka.offset"] >= 0
        assert "messaging.destination.partition.id" in span.attributes
        assert span.attributes["messaging.system"] == "kafka"

    partitions = p.list_topics(topic, timeout=10).topics[topic].partitions
    c = consumer(mock_cluster)
    c.assign([confluent_kafka.TopicPartition(topic, n, confluent_kafka.OFFSET_BEGINNING)
              for n in partitions])  # fmt: skip
    msgs = poll_messages(c, len(pattern))
    c.close()
    processes = {
        s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"process {topic}")
    }
    assert sorted(processes) == sampled
    for m in msgs:
        key = m.key().decode()
        _, trace_id, span_id, flags = dict(m.headers())["traceparent"].decode().split("-")
        if key in sends:
            ctx = sends[key].context
            assert (trace_id, span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
            assert int(flags, 16) & 1
            assert processes[key].parent.span_id == ctx.span_id
        else:
            assert int(trace_id, 16) != 0 and not int(flags, 16) & 1
    if metrics == "semconv":
        sent = otel.metric_points("messaging.client.sent.messages")
        assert sum(s.value for s in sent
                   if s.attributes["messaging.destination.name"] == topic) == len(pattern)  # fmt: skip
