"""produce_batch, transactions, confluent_kafka.aio and ShareConsumer, against real brokers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import confluent_kafka
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from conftest import assigned_consumer, poll_messages, producer, unique


def test_produce_batch_one_span_per_message_and_errors_copied_back(mock_cluster, otel):
    topic = unique()
    p = producer(mock_cluster, **{"queue.buffering.max.messages": 2})
    calls = []
    messages = [
        {"value": b"a", "key": b"k1"},
        {"value": b"b", "callback": lambda e, m: calls.append(("own", m.value()))},
        {"value": b"c"},  # the queue is full: confluent-kafka sets _error on it
    ]
    queued = p.produce_batch(topic, messages, partition=0,
                             on_delivery=lambda e, m: calls.append(("batch", m.value())))
    p.flush(10)
    assert queued == 2
    assert "_error" in messages[2] and "_error" not in messages[0]
    sends = otel.spans(f"send {topic}")
    assert len(sends) == 3
    (failed,) = [s for s in sends if s.status.status_code is StatusCode.ERROR]
    assert failed.attributes["error.type"] == messages[2]["_error"].name()
    ok = sorted((s for s in sends if s is not failed),
                key=lambda s: s.attributes["messaging.kafka.offset"])
    assert ok[0].attributes["messaging.kafka.message.key"] == "k1"
    assert sorted(calls) == [("batch", b"a"), ("own", b"b")]
    assert all(s.attributes["messaging.destination.partition.id"] == "0" for s in ok)


def test_produce_batch_bad_value_raises_as_without_instrumentation(mock_cluster, otel):
    topic = unique()
    p = producer(mock_cluster)
    with pytest.raises(TypeError, match="index 1"):
        p.produce_batch(topic, [{"value": b"a"}, {"value": 5}])
    p.flush(5)
    sends = otel.spans(f"send {topic}")
    assert len(sends) == 2 and all(s.attributes["error.type"] == "TypeError" for s in sends)


@pytest.mark.parametrize("headers", [True, False], ids=["app-headers", "no-headers"])
def test_produce_batch_warns_once_that_headers_cannot_carry_context(mock_cluster, otel, caplog,
                                                                     headers):  # fmt: skip
    from opentelemetry_instrumentation_kafkaplus.core import errors

    errors._seen.discard("produce_batch headers")  # once per process: this test's own
    p = producer(mock_cluster)
    message = {"value": b"a", "headers": [("h", b"v")]} if headers else {"value": b"a"}
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            p.produce_batch(unique(), [dict(message)])
    p.flush(10)
    assert caplog.text.count("produce_batch() sends no message headers") == 1


def test_transactions_are_traced_and_deliveries_end_inside_commit(mock_cluster, otel):
    src, dst = unique("src"), unique("dst")
    p = producer(mock_cluster)
    p.produce(src, b"in", partition=0)
    p.flush(10)
    c = assigned_consumer(mock_cluster, src)
    (m,) = poll_messages(c, 1)
    tp = producer(mock_cluster, **{"transactional.id": unique("txn")})
    tp.init_transactions(10)
    tp.begin_transaction()
    tp.produce(dst, b"out", partition=0)
    tp.send_offsets_to_transaction(
        [confluent_kafka.TopicPartition(src, 0, m.offset() + 1)], c.consumer_group_metadata(), 10)
    tp.commit_transaction(10)  # serves the delivery report of dst
    c.close()
    (send,) = otel.spans(f"send {dst}")
    assert send.attributes["messaging.kafka.offset"] >= 0
    names = [s.name for s in otel.spans() if s.kind is SpanKind.CLIENT]
    for name in ("init_transactions", "begin_transaction", f"send_offsets_to_transaction {src}",
                 "commit_transaction"):  # fmt: skip
        assert name in names
    offsets = otel.span(f"send_offsets_to_transaction {src}")
    assert offsets.attributes["messaging.operation.type"] == "settle"
    # One partition: its id and the committed offset, as on a commit() span.
    assert offsets.attributes["messaging.destination.partition.id"] == "0"
    assert offsets.attributes["messaging.kafka.offset"] == m.offset() + 1
    assert offsets.attributes["messaging.operation.name"] == "send_offsets_to_transaction"
    commit = otel.span("commit_transaction")
    assert commit.end_time >= send.end_time


def test_failed_transaction_call_records_error(mock_cluster, otel):
    p = producer(mock_cluster)  # no transactional.id
    with pytest.raises(confluent_kafka.KafkaException):
        p.begin_transaction()
    span = otel.span("begin_transaction")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"]


aio = pytest.importorskip("confluent_kafka.aio", reason="confluent_kafka.aio needs a newer client")


def test_aio_producer_span_per_message_in_the_callers_context(mock_cluster, otel):
    topic = unique()
    tracer = otel.tracer_provider.get_tracer("app")

    async def main():
        p = aio.AIOProducer({"bootstrap.servers": mock_cluster}, buffer_timeout=0.05)
        with tracer.start_as_current_span("request") as request:
            futures = [await p.produce(topic, value=f"v{i}".encode(), key=b"k", partition=0)
                       for i in range(3)]
            delivered = await asyncio.gather(*futures)
        await p.flush()
        await p.close()
        return request, delivered

    request, delivered = asyncio.run(main())
    sends = sorted(otel.spans(f"send {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"])
    assert len(sends) == 3
    assert [s.attributes["messaging.kafka.offset"] for s in sends] == [m.offset() for m in delivered]
    assert all(s.parent.span_id == request.get_span_context().span_id for s in sends)


def test_aio_consumer_span_current_in_the_awaiting_coroutine(mock_cluster, otel):
    topic = unique()
    p = producer(mock_cluster)
    for i in range(2):
        p.produce(topic, f"v{i}".encode(), partition=0)
    p.flush(10)

    async def main():
        c = aio.AIOConsumer({"bootstrap.servers": mock_cluster, "group.id": unique("g"),
                             "auto.offset.reset": "earliest"})
        await c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        seen = []
        while len(seen) < 2:
            msg = await c.poll(0.5)
            if msg is not None and msg.error() is None:
                current = trace.get_current_span()
                seen.append((msg.offset(), current.attributes["messaging.kafka.offset"]))
        await c.close()
        return seen

    seen = asyncio.run(main())
    assert [a for a, _ in seen] == [b for _, b in seen] == [0, 1]
    sends = {s.attributes["messaging.kafka.offset"]: s for s in otel.spans(f"send {topic}")}
    processes = otel.spans(f"process {topic}")
    assert len(processes) == 2
    for s in processes:
        assert s.parent.span_id == sends[s.attributes["messaging.kafka.offset"]].context.span_id


def test_share_consumer_is_reported_once_as_untraced(mock_cluster, otel, caplog):
    share = getattr(confluent_kafka, "ShareConsumer", None)
    if share is None:
        pytest.skip("this confluent-kafka has no ShareConsumer")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with contextlib.suppress(Exception):
                share({"bootstrap.servers": mock_cluster, "group.id": unique("sg")}).close()
    assert caplog.text.count("ShareConsumer (share groups) is not traced") == 1
