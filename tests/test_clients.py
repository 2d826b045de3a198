"""SerializingProducer, DeserializingConsumer, commits, instance wrappers, import order."""

from __future__ import annotations

import importlib
import sys
import textwrap
import time

import confluent_kafka
from confluent_kafka.serialization import StringDeserializer, StringSerializer
from opentelemetry.trace import SpanKind, StatusCode

from conftest import (
    ORIGINALS,
    assigned_consumer,
    original_producer,
    poll_messages,
    produce_and_flush,
    producer,
    unique,
)


def test_serializing_producer_one_span_per_message_key_from_the_app(mock_cluster, otel):
    topic = unique()
    calls = []

    class CountingSerializer(StringSerializer):
        def __call__(self, obj, ctx=None):
            calls.append(obj)
            return super().__call__(obj, ctx)

    p = confluent_kafka.SerializingProducer({
        "bootstrap.servers": mock_cluster, "key.serializer": CountingSerializer(),
        "value.serializer": StringSerializer(), "client.id": "ser",
    })  # fmt: skip
    reports = []
    p.produce(topic, key="k-1", value="hello", partition=0,
              on_delivery=lambda e, m: reports.append((e, m.offset())))
    p.flush(10)
    assert calls == ["k-1"]  # serializer ran once, by the app's call only
    (send,) = otel.spans(f"send {topic}")
    assert send.attributes["messaging.kafka.message.key"] == "k-1"
    assert send.attributes["messaging.client.id"] == "ser"
    assert reports == [(None, send.attributes["messaging.kafka.offset"])]

    c = confluent_kafka.DeserializingConsumer({
        "bootstrap.servers": mock_cluster, "group.id": unique("g"),
        "key.deserializer": StringDeserializer(), "value.deserializer": StringDeserializer(),
    })  # fmt: skip
    c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    (msg,) = poll_messages(c, 1)
    assert msg.value() == "hello" and msg.key() == "k-1"
    c.close()
    (process,) = otel.spans(f"process {topic}")
    assert process.parent.span_id == send.context.span_id
    assert process.attributes["messaging.kafka.message.key"] == "k-1"


def test_commit_and_store_offsets_are_settle_spans(tansu, otel):
    topic = unique()
    produce_and_flush(producer(tansu), topic, 2)
    c = assigned_consumer(tansu, topic, **{"enable.auto.offset.store": False})
    _, m2 = poll_messages(c, 2)
    c.store_offsets(m2)
    result = c.commit(message=m2, asynchronous=False)
    assert result[0].offset == m2.offset() + 1
    c.close()
    process = {s.attributes["messaging.kafka.offset"]: s for s in otel.spans(f"process {topic}")}
    # Each span is named for its operation: {messaging.operation.name} {destination}.
    (store,) = otel.spans(f"store_offsets {topic}")
    (sync,) = otel.spans(f"commit {topic}")
    for span in (store, sync):
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["messaging.operation.type"] == "settle"
        assert span.attributes["messaging.kafka.offset"] == m2.offset() + 1
        assert span.attributes["messaging.destination.partition.id"] == "0"
        assert span.parent.span_id == process[m2.offset()].context.span_id
    assert store.attributes["messaging.operation.name"] == "store_offsets"
    assert sync.attributes["messaging.operation.name"] == "commit"
    assert sync.attributes["kafkaplus.commit.async"] is False


def test_failed_commit_records_the_error(mock_cluster, otel):
    c = assigned_consumer(mock_cluster, unique())
    try:
        c.commit(asynchronous=False)  # nothing consumed: _NO_OFFSET
    except confluent_kafka.KafkaException as exc:
        code = exc.args[0].name()
    c.close()
    (span,) = otel.spans("commit")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == code


def test_instance_wrappers_trace_and_forward_everything(mock_cluster, otel):
    from opentelemetry_instrumentation_kafkaplus import instrument_consumer, instrument_producer

    topic = unique()
    conf = {"bootstrap.servers": mock_cluster, "client.id": "pre"}
    raw = original_producer(conf)
    p = instrument_producer(raw, conf)
    assert isinstance(p, ORIGINALS["Producer"])
    assert topic not in p.list_topics(timeout=5).topics or True  # forwarded
    produce_and_flush(p, topic)
    (send,) = otel.spans(f"send {topic}")
    assert send.attributes["messaging.kafka.offset"] == 0
    assert send.attributes["messaging.client.id"] == "pre"
    craw = ORIGINALS["Consumer"]({"bootstrap.servers": mock_cluster, "group.id": "pre-g"})
    c = instrument_consumer(craw, {"group.id": "pre-g"})
    c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    assert [tp.topic for tp in c.assignment()] == [topic]
    poll_messages(c, 1)
    c.close()
    (process,) = otel.spans(f"process {topic}")
    assert process.parent.span_id == send.context.span_id
    assert process.attributes["messaging.consumer.group.name"] == "pre-g"


def test_names_imported_before_instrument_are_traced_too(mock_cluster, otel_factory, tmp_path, monkeypatch):
    (tmp_path / "early_app.py").write_text(textwrap.dedent("""
        from confluent_kafka import Producer as KafkaProducer
        def make(conf):
            return KafkaProducer(conf)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("early_app", None)
    early = importlib.import_module("early_app")
    assert early.KafkaProducer is ORIGINALS["Producer"]
    otel = otel_factory()
    topic = unique()
    produce_and_flush(early.make({"bootstrap.servers": mock_cluster}), topic)
    assert len(otel.spans(f"send {topic}")) == 1
    otel.instrumentor.uninstrument()
    assert early.KafkaProducer is ORIGINALS["Producer"]


def test_async_commit_span_ends_with_the_brokers_answer(tansu, otel):
    topic = unique()
    produce_and_flush(producer(tansu), topic, 2)
    results = []
    c = assigned_consumer(tansu, topic, on_commit=lambda err, parts: results.append(
        (err, [(tp.topic, tp.partition, tp.offset) for tp in parts])))
    _, m2 = poll_messages(c, 2)
    assert c.commit(message=m2) is None  # asynchronous
    assert otel.spans(f"commit {topic}") == []  # waiting for the answer
    deadline = time.monotonic() + 20
    while not results and time.monotonic() < deadline:
        c.poll(0.2)
    c.close()
    assert results == [(None, [(topic, 0, m2.offset() + 1)])]  # the app's on_commit, as given
    (span,) = otel.spans(f"commit {topic}")
    assert span.attributes["kafkaplus.commit.async"] is True
    assert span.attributes["messaging.kafka.offset"] == m2.offset() + 1
    assert span.status.status_code is StatusCode.UNSET


def test_an_automatic_commit_result_does_not_end_the_apps_pending_commit(mock_cluster, otel):
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic, 3)
    results = []
    c = assigned_consumer(mock_cluster, topic, on_commit=lambda err, parts: results.append(
        [tp.offset for tp in parts]), **{"enable.auto.commit": True, "auto.commit.interval.ms": 100,
                                         "enable.auto.offset.store": False})  # fmt: skip
    poll_messages(c, 3)  # nothing stored yet: automatic commits have nothing to send
    tp = confluent_kafka.TopicPartition(topic, 0, 3)
    c.store_offsets(offsets=[tp])  # the next automatic commit sends offset 3
    # Results wait for poll(). Once the group shows offset 3 committed, the answer
    # to librdkafka's automatic commit is in, or ahead on the same connection of
    # the answer to the app's commit of offset 1: served in that order.
    deadline = time.monotonic() + 20
    while c.committed([tp], 10)[0].offset != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.commit(offsets=[confluent_kafka.TopicPartition(topic, 0, 1)], asynchronous=True)
    deadline = time.monotonic() + 20
    while [1] not in results and time.monotonic() < deadline:
        c.poll(0.1)
    c.close()
    assert results[:2] == [[3], [1]], results  # the order the test relies on
    spans = otel.spans(f"commit {topic}")
    manual = [s for s in spans if "kafkaplus.commit.auto" not in s.attributes]
    auto = [s for s in spans if s.attributes.get("kafkaplus.commit.auto") is True]
    assert len(manual) == 1 and manual[0].attributes["messaging.kafka.offset"] == 1
    assert manual[0].attributes["kafkaplus.commit.async"] is True
    # Each automatic result is a span of its own, with the offsets it reported.
    assert sorted(s.attributes["messaging.kafka.offset"] for s in auto) == sorted(
        r[0] for r in results if r != [1]
    )


def test_auto_commits_are_settle_spans_too(mock_cluster, otel):
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic, 1)
    c = assigned_consumer(mock_cluster, topic, **{"enable.auto.commit": True,
                                                  "auto.commit.interval.ms": 200})
    poll_messages(c, 1)
    deadline = time.monotonic() + 20
    while not otel.spans(f"commit {topic}") and time.monotonic() < deadline:
        c.poll(0.2)
    c.close()
    spans = otel.spans(f"commit {topic}")
    assert spans and all(s.attributes["kafkaplus.commit.auto"] is True for s in spans)
    assert spans[0].attributes["messaging.kafka.offset"] == 1


def test_the_contrib_form_with_a_tracer_provider_as_second_argument(mock_cluster, otel):
    """``instrument_producer(producer, tracer_provider)``: that provider gets the spans."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from opentelemetry_instrumentation_kafkaplus import instrument_producer

    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    topic = unique()
    p = instrument_producer(original_producer({"bootstrap.servers": mock_cluster}), provider)
    produce_and_flush(p, topic)
    (send,) = [s for s in own.get_finished_spans() if s.name == f"send {topic}"]
    assert send.attributes["messaging.kafka.offset"] == 0
    assert otel.spans(f"send {topic}") == []
