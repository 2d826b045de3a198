"""The operations on confluent-kafka's real Message objects, with no broker.

``orig`` stands for librdkafka's produce(): it takes the call as confluent-kafka
would and serves the delivery report with a Message, as librdkafka's poll()
would. Every other object is the real one (SDK, Message, the operations).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from conftest import PatternSampler, make_otel
from opentelemetry_instrumentation_kafkaplus import processing
from opentelemetry_instrumentation_kafkaplus.core.calls import PRODUCE, Call, bind, pop_callback
from opentelemetry_instrumentation_kafkaplus.core.telemetry import ACTIVE
from opentelemetry_instrumentation_kafkaplus.operations import loss, process, send, settle
from opentelemetry_instrumentation_kafkaplus.operations.process import ConsumerState
from opentelemetry_instrumentation_kafkaplus.operations.send import ProducerState

try:
    Message(topic="t")
except TypeError:  # confluent-kafka before Message could be built in Python
    pytest.skip("this confluent-kafka cannot build Message objects", allow_module_level=True)

CONF = {"bootstrap.servers": "broker:9092", "client.id": "unit", "group.id": "g"}
TP = f"00-{0xABC:032x}-{0xDEF:016x}-01"


@pytest.fixture
def otel() -> Any:
    o = make_otel()
    token = otel_context.attach(otel_context.get_current())
    try:
        yield o
    finally:
        otel_context.detach(token)
        o.instrumentor.uninstrument()


def consumed(offset: int = 5, headers: Any = None) -> Message:
    now_ms = int(time.time() * 1000)
    return Message(topic="t", partition=1, offset=offset, key=b"k", value=b"value",
                   headers=headers if headers is not None else [("traceparent", TP.encode())],
                   timestamp=(1, now_ms - 1000))  # fmt: skip


def test_a_polled_message_continues_its_producers_trace(otel: Any) -> None:
    tel = ACTIVE.telemetry
    state = ConsumerState(CONF)
    record = process.process_one(tel, state, consumed())
    current = trace.get_current_span()
    assert current is record  # current where it is handled, from the poll on
    process.end_open(state)  # the consumer's next call
    assert not trace.get_current_span().get_span_context().is_valid  # restored
    (span,) = otel.spans("process t")
    assert span.kind is SpanKind.CONSUMER
    assert (span.context.trace_id, span.parent.span_id) == (0xABC, 0xDEF)
    assert list(span.links) == []
    attrs = dict(span.attributes)
    assert 0.9 <= attrs.pop("kafkaplus.message.age") < 60
    assert attrs == {
        "messaging.system": "kafka", "messaging.operation.name": "process",
        "messaging.operation.type": "process", "messaging.destination.name": "t",
        "messaging.destination.partition.id": "1", "messaging.kafka.offset": 5,
        "messaging.kafka.message.key": "k", "messaging.consumer.group.name": "g",
        "messaging.client.id": "unit", "server.address": "broker", "server.port": 9092,
    }  # fmt: skip


def test_a_claim_is_exactly_its_block_and_a_second_one_adds_nothing(otel: Any) -> None:
    state = ConsumerState(CONF)
    msg = consumed()
    process.process_one(ACTIVE.telemetry, state, msg, attach=False)
    time.sleep(0.02)  # the message waits before a worker picks it up
    before = time.time_ns()
    with processing(msg):
        assert trace.get_current_span().get_span_context().trace_id == 0xABC
        with processing(msg):  # nested: runs in its context, makes no span
            pass
        time.sleep(0.01)
    after = time.time_ns()
    process.end_open(state)
    (span,) = otel.spans("process t")
    assert before <= span.start_time and span.end_time <= after
    assert span.end_time - span.start_time >= 10_000_000


def test_a_block_that_raises_marks_the_span_and_reraises(otel: Any) -> None:
    state = ConsumerState(CONF)
    msg = consumed()
    process.process_one(ACTIVE.telemetry, state, msg, attach=False)
    with pytest.raises(KeyError), processing(msg):
        raise KeyError("the app's")
    (span,) = otel.spans("process t")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "KeyError"


def test_a_late_claim_makes_no_second_span(otel: Any) -> None:
    state = ConsumerState(CONF)
    msg = consumed()
    process.process_one(ACTIVE.telemetry, state, msg)
    process.end_open(state)  # the poll let go first: the span ended
    with processing(msg):
        current = trace.get_current_span().get_span_context()
    (span,) = otel.spans("process t")
    assert current.span_id == span.context.span_id  # continued under it
    assert state.claims  # from now on, unclaimed messages wait for their claim


def test_a_message_kafkaplus_did_not_poll_gets_a_span_for_its_block(otel: Any) -> None:
    with processing(consumed(offset=9)):
        pass
    (span,) = otel.spans("process t")
    assert span.parent.span_id == 0xDEF and span.attributes["messaging.kafka.offset"] == 9


def test_the_current_record_reads_through_to_the_sdk_span(otel: Any) -> None:
    state = ConsumerState(CONF)
    record = process.process_one(ACTIVE.telemetry, state, consumed())
    current: Any = trace.get_current_span()
    assert current is record
    real = record.real()
    assert real is not record
    for name in ("name", "kind", "parent", "start_time", "status", "resource",
                 "instrumentation_scope", "context", "links", "events"):  # fmt: skip
        assert getattr(current, name) == getattr(real, name), name
    assert current.attributes["messaging.kafka.offset"] == 5
    assert current.name == "process t" and current.kind is SpanKind.CONSUMER
    assert current.parent.span_id == 0xDEF
    assert current.end_time is None
    process.end_open(state)
    assert current.end_time is not None and current.end_time == real.end_time
    assert '"name": "process t"' in current.to_json()
    with pytest.raises(AttributeError):
        current.no_such_field  # noqa: B018 (nothing else reads through)


def test_with_metrics_counts_a_block_records_its_span_and_no_duration(
    otel_factory: Any, caplog: Any
) -> None:
    otel = otel_factory(metrics="counts")
    log = caplog.at_level(logging.DEBUG, logger="opentelemetry_instrumentation_kafkaplus")
    with log, processing(consumed(offset=10)):
        pass
    (span,) = otel.spans("process t")
    assert span.parent.span_id == 0xDEF
    assert otel.metric_points("messaging.process.duration") == []
    assert "failed" not in caplog.text  # no duration was even attempted


def _produce(state: ProducerState, reports: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
    """send.send() with a stand-in for librdkafka that serves the report at once."""
    calls: list[dict[str, Any]] = []

    def librdkafka(client: Any, *pos: Any, **kw: Any) -> None:
        call = bind(PRODUCE, pos, kw)  # what the C method makes of its arguments
        assert call is not None
        calls.append(call)
        delivered = Message(topic=call["topic"], partition=2, offset=41, value=call.get("value"),
                            key=call.get("key"), latency=0.004)  # fmt: skip
        call["on_delivery"](None, delivered)

    tel = ACTIVE.telemetry
    named = bind(PRODUCE, args, kwargs)
    assert named is not None
    user_cb = pop_callback(named)
    info = state.topic(named["topic"], tel)
    call = Call(named, args, kwargs, user_cb, otel_context.get_current())
    send.send(tel, state, info, call, None, librdkafka, tel.tracing(), tel.metering())
    return calls


def test_send_injects_context_and_ends_at_the_report(otel: Any) -> None:
    state = ProducerState(CONF)
    reports: list[Any] = []
    calls = _produce(state, reports, "out", b"v", b"k",
                     on_delivery=lambda e, m: reports.append((e, m.offset(),
                                                              trace.get_current_span().name)))  # fmt: skip
    (span,) = otel.spans("send out")
    (call,) = calls
    ctx = span.context
    flags = f"{int(ctx.trace_flags):02x}"
    assert call["headers"] == [
        ("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags}")
    ]
    assert reports == [(None, 41, "send out")]  # the app's callback, inside the span
    assert span.attributes["messaging.kafka.offset"] == 41
    assert span.attributes["messaging.destination.partition.id"] == "2"
    assert span.end_time - span.start_time == 4_000_000  # start + latency()
    assert state.ledger.topics["out"].count() == 0  # reported: nothing in flight


def test_every_recorded_send_span_has_every_attribute_whatever_came_before(
    otel_factory: Any,
) -> None:
    # Attributes of a span that will not record are not built; a span that
    # records after unsampled ones must still carry them all.
    sampler = PatternSampler("1001101")
    otel = otel_factory(sampler=sampler, capture_headers="app")
    state = ProducerState(CONF)
    for i in range(7):
        value = None if i % 2 else b"v"
        _produce(state, [], "out", value, f"k{i}".encode(), partition=3, headers=[("app", b"x")])
    spans = sorted(
        otel.spans("send out"), key=lambda s: s.attributes["messaging.kafka.message.key"]
    )
    assert [s.attributes["messaging.kafka.message.key"] for s in spans] == ["k0", "k3", "k4", "k6"]
    for span in spans:
        i = int(span.attributes["messaging.kafka.message.key"][1:])
        assert span.attributes.get("messaging.kafka.message.tombstone", False) is bool(i % 2)
        assert span.attributes["messaging.header.app"] == ("x",)
        assert span.attributes["messaging.destination.partition.id"] == "2"  # the report's
    relevant = {"messaging.system": "kafka", "messaging.operation.name": "send",
                "messaging.operation.type": "send", "messaging.destination.name": "out",
                "messaging.destination.partition.id": "3", "server.address": "broker",
                "server.port": 9092}  # fmt: skip
    assert len(sampler.seen) == 7
    for seen in sampler.seen:  # what the conventions call sampling-relevant, every time
        assert relevant.items() <= seen.items()


def test_librdkafka_gets_the_apps_positional_arguments_as_given(otel: Any) -> None:
    # confluent-kafka parses keywords one name at a time: the app's positional
    # topic, value and key stay positional; only what kafkaplus adds is by name.
    state = ProducerState(CONF)
    tel = ACTIVE.telemetry
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def librdkafka(client: Any, *pos: Any, **kw: Any) -> None:
        seen.append((pos, kw))

    def app_cb(err: Any, msg: Any) -> None:
        pass

    for args, kwargs in (
        (("out", b"v", b"k"), {"callback": app_cb, "on_delivery": None}),
        (("out", b"v", b"k", 0, app_cb), {}),  # a positional callback: all by name
    ):
        named = bind(PRODUCE, args, dict(kwargs))
        assert named is not None
        user_cb = pop_callback(named)
        call = Call(named, args, dict(kwargs), user_cb, otel_context.get_current())
        send.send(tel, state, state.topic("out", tel), call, None, librdkafka, True, True)
    (pos, kw), (pos5, kw5) = seen
    assert pos == ("out", b"v", b"k") and sorted(kw) == ["headers", "on_delivery"]
    assert isinstance(kw["on_delivery"], send.Delivery) and kw["on_delivery"].user_cb is app_cb
    assert pos5 == () and sorted(kw5) == ["headers", "key", "on_delivery", "partition", "topic",
                                          "value"]  # fmt: skip
    assert kw5["on_delivery"].user_cb is app_cb


def test_forwarded_headers_are_continued_not_destroyed(otel: Any) -> None:
    state = ProducerState(CONF)
    forwarded = f"00-{0xF00D:032x}-{0xBEEF:016x}-01"  # a context no message here came with
    calls = _produce(state, [], "out", b"v", headers=[("traceparent", forwarded), ("app", b"1")])
    (span,) = otel.spans("send out")
    assert (span.context.trace_id, span.parent.span_id) == (0xF00D, 0xBEEF)
    (call,) = calls
    assert call["headers"][0] == ("app", b"1") and len(call["headers"]) == 2


def test_a_failed_report_marks_the_span_and_counts_the_loss(otel: Any) -> None:
    state = ProducerState(CONF)
    tel = ACTIVE.telemetry
    info = state.topic("out", tel)
    span = send.start_span(tel, info, {"value": b"v"}, None)
    delivery = send.deliver_later(tel, info, span)
    assert delivery is not None
    delivery(KafkaError(KafkaError._MSG_TIMED_OUT), Message(topic="out", latency=0.5))
    (ended,) = otel.spans("send out")
    assert ended.status.status_code is StatusCode.ERROR
    assert ended.attributes["error.type"] == "_MSG_TIMED_OUT"
    (lost,) = otel.metric_points("kafkaplus.producer.undelivered.messages")
    assert lost.value == 1 and lost.attributes["error.type"] == "_MSG_TIMED_OUT"


def test_exit_accounting_counts_in_flight_without_a_record_per_message(otel: Any) -> None:
    state = ProducerState(CONF)
    tel = ACTIVE.telemetry
    info = state.topic("out", tel)
    held = send.deliver_later(tel, info, send.start_span(tel, info, {}, None))
    for _ in range(3):
        send.delivery_for(state, info, None, None, True)  # no span: shared callback
    assert len(state.ledger.spans) == 1  # only the span held to its report is registered
    assert state.ledger.account(loss.EXIT_UNFLUSHED) == 4
    (span,) = otel.spans("send out")
    assert span.attributes["error.type"] == loss.EXIT_UNFLUSHED
    held(None, Message(topic="out", partition=0, offset=1, latency=0.1))  # a late report
    (lost,) = otel.metric_points("kafkaplus.producer.undelivered.messages")
    assert lost.value == 4  # counted once, at exit


def test_settle_of_a_message_without_offset(otel: Any) -> None:
    calls: list[Any] = []
    msg = Message(topic="t", partition=0)  # offset() is None
    call = Call({"message": msg}, (msg,), {})
    settle.settle(ACTIVE.telemetry, {"messaging.system": "kafka"}, call, "store_offsets", None,
                  None, lambda client, *a, **k: calls.append(a))  # fmt: skip
    (span,) = otel.spans("store_offsets")  # no position known: no topic in the name
    assert "messaging.kafka.offset" not in span.attributes
    assert calls == [(msg,)]


def test_a_tracer_that_fails_at_the_span_start_never_reaches_the_app(
    otel: Any, monkeypatch: Any, caplog: Any
) -> None:
    # The span of a message nothing used starts when its record ends (the
    # consumer's next call): a failing SDK there is reported, and the message
    # is still let go and its handling still measured.
    tel = ACTIVE.telemetry
    state = ConsumerState(CONF)
    msg = consumed()
    record = process.process_one(tel, state, msg)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("span processor down")

    monkeypatch.setattr(tel.tracer, "start_span", broken)
    # Reported at WARNING the first time in a process, at DEBUG (with the error) every time.
    with caplog.at_level(logging.DEBUG, logger="opentelemetry_instrumentation_kafkaplus"):
        process.end_open(state)  # raises nothing
    assert record.done and record.msg is None
    assert process._polled(msg) is None  # released: a claim now makes its own record
    assert otel.spans("process t") == []
    assert "span processor down" in caplog.text
    (point,) = otel.metric_points("messaging.process.duration")
    assert point.count == 1


def test_recent_messages_are_bounded_and_keep_the_newest() -> None:
    saved = dict(process._RECENT)
    process._RECENT.clear()
    try:
        for i in range(3 * process.RECENT + 7):
            process._remember(("m", "t", 0, i), i)
        assert process.RECENT <= len(process._RECENT) <= 2 * process.RECENT
        newest = range(3 * process.RECENT + 7 - process.RECENT, 3 * process.RECENT + 7)
        assert all(process._RECENT[("m", "t", 0, i)] == i for i in newest)
        assert ("m", "t", 0, 0) not in process._RECENT
    finally:
        process._RECENT.clear()
        process._RECENT.update(saved)


def test_a_producer_collected_while_another_registers_does_not_deadlock(monkeypatch: Any) -> None:
    # The garbage collector may run at any allocation, including one made while
    # a new producer is being registered: the collected producer's callback
    # must not wait for the registration's lock.
    import gc
    import threading
    import weakref

    class Client:
        cycle: Any = None

    old = Client()
    old.cycle = old  # only the collector frees it
    loss.track_producer(old)
    del old
    real_ref = weakref.ref

    class CollectingRef:
        @staticmethod
        def ref(obj: Any, callback: Any = None) -> Any:
            gc.collect()
            return real_ref(obj, callback)

    monkeypatch.setattr(loss, "weakref", CollectingRef)
    done = threading.Event()
    keep = Client()

    def register() -> None:
        loss.track_producer(keep)
        done.set()

    threading.Thread(target=register, daemon=True).start()
    finished = done.wait(10)
    if not finished:
        loss._lock.release()  # let the stuck thread go, so later tests can run
    assert finished, "the collector's callback deadlocked on the registration lock"


@pytest.mark.parametrize("mode", ["parent", "link"])
def test_with_no_span_processor_the_handling_carries_the_context_on(mode: str) -> None:
    """No span; current while the message is handled: the producer's context (parent
    mode) or the ambient one (link mode, or no producer context)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    inst = KafkaPlusInstrumentor()
    inst.instrument(tracer_provider=TracerProvider(), consumer_context_mode=mode,
                    meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))  # fmt: skip
    ambient = SpanContext(0x123, 0x456, False, TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ambient)))
    try:
        tel = ACTIVE.telemetry
        assert tel is not None and tel.tracing() and tel.spanless()
        state = ConsumerState(CONF)
        process.process_one(tel, state, consumed())
        carried = trace.get_current_span().get_span_context()
        expected = (0xABC, 0xDEF) if mode == "parent" else (0x123, 0x456)
        assert (carried.trace_id, carried.span_id) == expected
        assert not trace.get_current_span().is_recording()
        process.end_open(state)
        assert trace.get_current_span().get_span_context() == ambient  # restored
        process.process_one(tel, state, consumed(6, headers=[]))  # no producer context
        assert trace.get_current_span().get_span_context() == ambient  # nothing else to carry
        process.end_open(state)
    finally:
        otel_context.detach(token)
        inst.uninstrument()


def _plain_calls_seen(monkeypatch: Any) -> tuple[list[Any], Any, list[Any]]:
    """(calls librdkafka got, a librdkafka produce() for them, calls that took ``send.send``).

    The librdkafka stand-in serves each report at once, as its poll() would,
    and refuses the 4th message with a full queue.
    """
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def librdkafka(client: Any, *pos: Any, **kw: Any) -> None:
        seen.append((pos, dict(kw)))
        if len(seen) == 4:
            raise BufferError("Local: Queue full")
        kw["on_delivery"](None, Message(topic="out", partition=1, offset=len(seen), latency=0.001))

    generic: list[Any] = []
    real_send = send.send
    monkeypatch.setattr(send, "send", lambda *a, **k: generic.append(a) or real_send(*a, **k))
    return seen, librdkafka, generic


def test_a_plain_call_not_recorded_goes_to_librdkafka_as_the_app_made_it(
    otel_factory: Any, monkeypatch: Any
) -> None:
    # produce(topic, value, key, callback) whose span does not record: its
    # arguments are not bound; librdkafka gets them as given, plus the trace
    # context and the topic's shared callback (counted at the report).
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    from opentelemetry_instrumentation_kafkaplus.clients import producer

    otel = otel_factory(sampler=ParentBased(ALWAYS_OFF))
    state = ProducerState(CONF)  # no cluster id known, as with a broker that reports none
    reports: list[Any] = []

    def app_cb(err: Any, msg: Any) -> None:
        reports.append(msg.offset())

    seen, librdkafka, generic = _plain_calls_seen(monkeypatch)
    producer.produce(None, state, ("out", b"v", b"k"), {"on_delivery": app_cb}, librdkafka)
    producer.produce(None, state, ("out", b"v", b"k"), {"callback": app_cb}, librdkafka)
    producer.produce(None, state, ("out",), {"value": b"v", "on_delivery": app_cb,
                                             "timestamp": 7}, librdkafka)  # fmt: skip
    with pytest.raises(BufferError):
        producer.produce(None, state, ("out", b"v"), {"on_delivery": app_cb}, librdkafka)
    assert len(generic) == 1  # the topic's first call only: it builds the topic's template
    assert reports == [1, 2, 3]
    assert [pos for pos, _ in seen] == [("out", b"v", b"k"), ("out", b"v", b"k"), ("out",),
                                        ("out", b"v")]  # fmt: skip
    for _, kw in seen[1:]:
        assert sorted(kw) == sorted({"on_delivery", "headers", *(
            ("value", "timestamp") if "value" in kw else ())})  # fmt: skip
        assert isinstance(kw["on_delivery"], send.Delivery) and kw["on_delivery"].user_cb is app_cb
        ((name, traceparent),) = kw["headers"]
        assert name == "traceparent" and traceparent.startswith("00-")
        assert not int(traceparent[-2:], 16) & 1  # not sampled, still carried
    assert seen[2][1]["timestamp"] == 7
    assert otel.spans() == []
    assert state.ledger.topics["out"].count() == 0  # reported, or refused: nothing in flight
    sent = otel.metric_points("messaging.client.sent.messages")
    assert [p.value for p in sent] == [3]


def test_a_plain_call_that_records_goes_to_librdkafka_unbound_with_its_span(
    otel_factory: Any, monkeypatch: Any
) -> None:
    # produce(topic, value, key, callback) at 100 %: its arguments are not
    # bound either; librdkafka gets them as given, plus the trace context and
    # the message's own callback, which ends the span at the report with the
    # app's callback run inside it. Everything the bound path records is there.
    from opentelemetry_instrumentation_kafkaplus.clients import producer

    hooked: list[tuple[Any, Any, Any]] = []
    otel = otel_factory(produce_hook=lambda span, topic, key, value, headers: hooked.append(
        (key, value, headers)))  # fmt: skip
    state = ProducerState(CONF)
    inside: list[Any] = []

    def app_cb(err: Any, msg: Any) -> None:
        inside.append((trace.get_current_span().get_span_context().span_id, msg.offset()))

    seen, librdkafka, generic = _plain_calls_seen(monkeypatch)
    producer.produce(None, state, ("out", b"v", b"k1"), {"on_delivery": app_cb}, librdkafka)
    producer.produce(None, state, ("out", b"v", b"k2"), {"callback": app_cb}, librdkafka)
    producer.produce(None, state, ("out",), {"key": "k3", "on_delivery": app_cb,
                                             "timestamp": 7}, librdkafka)  # fmt: skip
    with pytest.raises(BufferError):
        producer.produce(None, state, ("out", b"v", b"k4"), {"on_delivery": app_cb}, librdkafka)
    assert len(generic) == 1  # the topic's first call only
    assert [pos for pos, _ in seen] == [("out", b"v", b"k1"), ("out", b"v", b"k2"), ("out",),
                                        ("out", b"v", b"k4")]  # fmt: skip
    for _, kw in seen[1:]:
        assert sorted(kw) == sorted({"on_delivery", "headers", *(
            ("key", "timestamp") if "key" in kw else ())})  # fmt: skip
        assert isinstance(kw["on_delivery"], send.Delivery) and kw["on_delivery"].user_cb is app_cb
    assert seen[2][1]["timestamp"] == 7
    spans = otel.spans()
    assert [s.name for s in spans] == ["send out"] * 4
    for span, (_, kw) in zip(spans, seen, strict=True):
        ((name, traceparent),) = kw["headers"]
        assert name == "traceparent"
        ctx = span.context
        assert traceparent == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert [s.attributes.get("messaging.kafka.message.key") for s in spans] == ["k1", "k2", "k3",
                                                                                "k4"]  # fmt: skip
    assert [s.attributes.get("messaging.kafka.message.tombstone") for s in spans] == [
        None, None, True, None]  # fmt: skip
    assert [s.attributes.get("messaging.kafka.offset") for s in spans] == [1, 2, 3, None]
    assert inside == [(s.context.span_id, n) for s, n in zip(spans[:3], (1, 2, 3), strict=True)]
    assert spans[3].status.status_code is StatusCode.ERROR
    assert spans[3].attributes["error.type"] == "BufferError"
    assert hooked == [(b"k1", b"v", None), (b"k2", b"v", None), ("k3", None, None),
                      (b"k4", b"v", None)]  # fmt: skip
    assert state.ledger.topics["out"].count() == 0
    assert state.ledger.spans == {}
    sent = otel.metric_points("messaging.client.sent.messages")
    assert [p.value for p in sent] == [3]
