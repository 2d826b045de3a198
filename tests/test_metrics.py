"""Messaging metrics, message age and the statistics bridge, through the instrumentation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import (
    assigned_consumer,
    consumer,
    poll_messages,
    produce_and_flush,
    producer,
    unique,
)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


def _by_topic(points, topic):
    return [p for p in points if p.attributes.get("messaging.destination.name") == topic]


def test_semconv_metrics_count_what_was_sent_and_consumed(mock_cluster, otel):
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic, 7)
    c = assigned_consumer(mock_cluster, topic, **{"group.id": "m-group"})
    poll_messages(c, 7)
    c.close()

    (sent,) = _by_topic(otel.metric_points("messaging.client.sent.messages"), topic)
    assert sent.value == 7
    assert sent.attributes["messaging.operation.name"] == "send"
    # The operation type goes on messaging.client.operation.duration only, the one
    # metric the conventions give it to.
    assert "messaging.operation.type" not in sent.attributes
    assert "messaging.kafka.offset" not in sent.attributes
    assert "messaging.destination.partition.id" not in sent.attributes  # opt-in only
    (consumed,) = _by_topic(otel.metric_points("messaging.client.consumed.messages"), topic)
    assert consumed.value == 7
    assert consumed.attributes["messaging.consumer.group.name"] == "m-group"
    # Counted where messages are handed to the app: the receive operation.
    assert consumed.attributes["messaging.operation.name"] == "poll"
    assert "messaging.operation.type" not in consumed.attributes
    durations = _by_topic(otel.metric_points("messaging.client.operation.duration"), topic)
    (send_duration,) = [p for p in durations if p.attributes["messaging.operation.type"] == "send"]
    assert send_duration.count == 7
    assert tuple(send_duration.explicit_bounds) == BUCKETS
    (process,) = _by_topic(otel.metric_points("messaging.process.duration"), topic)
    assert process.count == 7 and tuple(process.explicit_bounds) == BUCKETS
    assert process.attributes["messaging.operation.name"] == "process"
    assert "messaging.operation.type" not in process.attributes
    # The default set is the conventions' metrics: no message-age histograms.
    assert otel.metric_points("kafkaplus.message.age") == []


def test_metric_sets_all_and_none(mock_cluster, otel_factory):
    """metrics=all adds the age histograms; metrics=none records no per-message metric
    but keeps counting data loss."""
    topic = unique()
    everything = otel_factory(metrics="all")
    produce_and_flush(producer(mock_cluster), topic, 3)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 3)
    c.close()
    (age,) = _by_topic(everything.metric_points("kafkaplus.message.age"), topic)
    assert age.count == 3 and age.min >= 0
    everything.instrumentor.uninstrument()

    from kafkaplus_tools.brokers import free_port

    nothing = otel_factory(metrics="none")
    produce_and_flush(producer(mock_cluster), topic, 2)
    dead = producer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 300})
    dead.produce(topic, b"x")
    dead.flush(10)
    names = {m.name for rm in nothing.reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}  # fmt: skip
    assert names == {"kafkaplus.producer.undelivered.messages"}
    (lost,) = _by_topic(nothing.metric_points("kafkaplus.producer.undelivered.messages"), topic)
    assert lost.value == 1


def test_metric_set_counts_keeps_the_counters_and_drops_the_histograms(mock_cluster, otel_factory):
    """metrics=counts: sent and consumed messages (with error.type on a failed send),
    no duration histogram; the spans are unchanged."""
    from kafkaplus_tools.brokers import free_port

    otel = otel_factory(metrics="counts")
    topic = unique()
    produce_and_flush(producer(mock_cluster), topic, 4)
    c = assigned_consumer(mock_cluster, topic, **{"group.id": "counts-group"})
    poll_messages(c, 4)
    c.close()
    dead = producer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 300})
    dead.produce(topic, b"x")
    dead.flush(10)

    sent = _by_topic(otel.metric_points("messaging.client.sent.messages"), topic)
    by_error = {p.attributes.get("error.type"): p.value for p in sent}
    assert by_error == {None: 4, "_MSG_TIMED_OUT": 1}
    (consumed,) = _by_topic(otel.metric_points("messaging.client.consumed.messages"), topic)
    assert consumed.value == 4
    assert consumed.attributes["messaging.consumer.group.name"] == "counts-group"
    assert otel.metric_points("messaging.client.operation.duration") == []
    assert otel.metric_points("messaging.process.duration") == []
    (lost,) = _by_topic(otel.metric_points("kafkaplus.producer.undelivered.messages"), topic)
    assert lost.value == 1
    # Spans as with every other set: each process span has its send span as parent.
    sends = {s.context.span_id for s in otel.spans(f"send {topic}")}
    processes = otel.spans(f"process {topic}")
    assert len(processes) == 4 and {s.parent.span_id for s in processes} <= sends


def test_failed_deliveries_carry_error_type(otel):
    from kafkaplus_tools.brokers import free_port

    topic = unique()
    p = producer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 300})
    for _ in range(3):
        p.produce(topic, b"x")
    p.flush(10)
    (sent,) = _by_topic(otel.metric_points("messaging.client.sent.messages"), topic)
    assert sent.value == 3 and sent.attributes["error.type"] == "_MSG_TIMED_OUT"
    assert "messaging.operation.type" not in sent.attributes
    (timed,) = _by_topic(otel.metric_points("messaging.client.operation.duration"), topic)
    assert timed.count == 3 and timed.attributes["error.type"] == "_MSG_TIMED_OUT"
    assert timed.attributes["messaging.operation.type"] == "send"
    (lost,) = _by_topic(otel.metric_points("kafkaplus.producer.undelivered.messages"), topic)
    assert lost.value == 3


def test_origin_age_survives_two_hops(mock_cluster, otel_factory):
    otel = otel_factory(metrics="all")
    first, second = unique("hop1"), unique("hop2")
    p = producer(mock_cluster)
    produce_and_flush(p, first)
    c1 = assigned_consumer(mock_cluster, first)
    (m,) = poll_messages(c1, 1)
    time.sleep(0.3)  # the first hop's processing
    p.produce(second, m.value(), partition=0)  # no headers forwarded: context carries origin
    p.flush(10)
    c1.close()
    c2 = assigned_consumer(mock_cluster, second)
    (m2,) = poll_messages(c2, 1)
    c2.close()
    (origin,) = _by_topic(otel.metric_points("kafkaplus.message.origin_age"), second)
    (age,) = _by_topic(otel.metric_points("kafkaplus.message.age"), second)
    assert origin.min >= age.max + 0.3
    (process,) = otel.spans(f"process {second}")
    assert process.attributes["kafkaplus.message.origin_age"] >= 0.3
    # The second hop carries the first message's creation time, not its own.
    assert dict(m2.headers())["kafkaplus-origin-ms"] == str(m.timestamp()[1]).encode()


def test_statistics_consumer_lag_rises_then_returns_to_zero(mock_cluster, otel_factory):
    otel = otel_factory(statistics_interval_ms=1000)
    topic = unique()
    group = unique("lag")
    p = producer(mock_cluster)
    produce_and_flush(p, topic, 5)
    c = consumer(mock_cluster, group)
    c.subscribe([topic])

    def lag():
        pts = [x for x in otel.metric_points("kafkaplus.consumer.lag")
               if x.attributes.get("messaging.destination.name") == topic
               and x.attributes.get("messaging.consumer.group.name") == group]
        return sum(x.value for x in pts) if pts else None

    got = poll_messages(c, 1)
    c.commit(got[0], asynchronous=False)  # committed 1 of 5
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not lag():
        m = c.poll(0.2)  # stats are served by poll
        if m is not None and m.error() is None:
            got.append(m)
    assert lag() == 4
    got += poll_messages(c, 5 - len(got))
    c.commit(got[-1], asynchronous=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and lag() != 0:
        c.poll(0.2)
    assert lag() == 0
    c.close()


def test_app_stats_cb_gets_identical_json_and_batch_metrics_follow_linger(mock_cluster, otel):
    def batch_messages(linger_ms):
        topic = unique()
        seen = []
        p = producer(mock_cluster, **{"linger.ms": linger_ms, "statistics.interval.ms": 1000,
                                      "stats_cb": seen.append})  # fmt: skip

        def observed():
            return [x.value for x in otel.metric_points("kafkaplus.producer.batch.message.count")
                    if x.attributes.get("messaging.destination.name") == topic
                    and x.attributes.get("kafkaplus.stat") == "avg"]

        # Produce steadily until statistics have reported a few intervals with
        # batches in them (served by poll(); a busy machine may take longer).
        samples: list[float] = []
        reports = 0
        deadline = time.monotonic() + 30
        while len(samples) < 3 and time.monotonic() < deadline:
            for _ in range(200):
                p.produce(topic, b"x" * 100, partition=0)
            p.poll(0.05)
            if len(seen) > reports:  # a new statistics report was served
                reports = len(seen)
                samples.extend(observed())
        p.flush(10)
        assert seen and all(isinstance(s, str) and s.startswith("{") for s in seen)
        assert samples, "no batch statistics reported"
        return max(samples)

    assert batch_messages(200) > 2 * batch_messages(0)


def test_consume_batches_record_what_poll_records(mock_cluster, otel_factory):
    """consume() and poll() hand messages to the app alike: the same metrics, with the
    partition when asked (metrics_partition) and the origin age of a second hop."""
    otel = otel_factory(metrics="all", metrics_partition=True)
    first, second = unique("hop1"), unique("hop2")
    p = producer(mock_cluster)
    produce_and_flush(p, first)
    c1 = assigned_consumer(mock_cluster, first)
    poll_messages(c1, 1)
    p.produce(second, b"next", partition=0)  # while the first message is processed
    assert p.flush(10) == 0
    c1.close()
    c2 = assigned_consumer(mock_cluster, second)
    got = []
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        got = [m for m in c2.consume(10, 0.5) if m.error() is None]
    c2.close()
    assert len(got) == 1
    (consumed,) = _by_topic(otel.metric_points("messaging.client.consumed.messages"), second)
    assert consumed.attributes["messaging.destination.partition.id"] == "0"
    # The partition goes on the send duration and count as well; the operation type
    # on the durations only (send, and the consume() call's receive).
    (sent,) = _by_topic(otel.metric_points("messaging.client.sent.messages"), second)
    assert sent.attributes["messaging.destination.partition.id"] == "0"
    assert "messaging.operation.type" not in sent.attributes
    timed = {
        p.attributes["messaging.operation.name"]: p
        for p in _by_topic(otel.metric_points("messaging.client.operation.duration"), second)
    }
    assert timed["send"].attributes["messaging.destination.partition.id"] == "0"
    assert timed["send"].attributes["messaging.operation.type"] == "send"
    assert timed["poll"].attributes["messaging.operation.type"] == "receive"
    (processed,) = _by_topic(otel.metric_points("messaging.process.duration"), second)
    assert "messaging.operation.type" not in processed.attributes
    (origin,) = _by_topic(otel.metric_points("kafkaplus.message.origin_age"), second)
    assert origin.count == 1
    assert origin.attributes["messaging.destination.partition.id"] == "0"


def test_statistics_series_of_a_closed_producer_stop(mock_cluster, otel_factory):
    otel = otel_factory(statistics_interval_ms=200)
    client_id = unique("closing")
    p = producer(mock_cluster, **{"client.id": client_id})
    if not hasattr(p, "close"):
        pytest.skip("this confluent-kafka's Producer has no close()")

    def series():
        return [x for x in otel.metric_points("kafkaplus.producer.queue.message.count")
                if x.attributes.get("messaging.client.id") == client_id]  # fmt: skip

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not series():
        p.poll(0.2)  # statistics are served by poll
    assert series(), "no statistics from the producer"
    p.close()
    assert series() == []  # without close() traced they stay for stale_after_s (300 s)


@pytest.mark.parametrize("metrics", ["semconv", "none"])
def test_unsampled_messages_reach_their_own_callbacks_and_are_counted(mock_cluster, otel_factory,
                                                                      metrics):  # fmt: skip
    """Messages without a span share their topic's report handler per app callback:
    each message still reaches the callback it was produced with, once, and each
    delivery (or failure) is counted."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    from kafkaplus_tools.brokers import free_port

    otel = otel_factory(metrics=metrics, sampler=ParentBased(ALWAYS_OFF))
    topic = unique()
    got: dict[str, list[Any]] = {"a": [], "b": []}

    def cb_a(err, msg):
        got["a"].append((err, msg.value()))

    def cb_b(err, msg):
        got["b"].append((err, msg.value()))

    p = producer(mock_cluster)
    for i, cb in enumerate([cb_a, cb_a, cb_b, cb_a, cb_b, cb_b]):
        p.produce(topic, str(i).encode(), partition=0, on_delivery=cb)
    assert p.flush(10) == 0
    assert got == {"a": [(None, b"0"), (None, b"1"), (None, b"3")],
                   "b": [(None, b"2"), (None, b"4"), (None, b"5")]}  # fmt: skip
    dead = producer(f"127.0.0.1:{free_port()}", **{"message.timeout.ms": 300})
    failed = []

    def cb_fail(err, msg):
        failed.append(err)

    for cb in (cb_a, cb_fail, cb_a):
        dead.produce(topic, b"x", on_delivery=cb)
    dead.flush(10)
    assert len(failed) == 1 and len(got["a"]) == 5 and got["a"][-1][0] is not None
    (lost,) = _by_topic(otel.metric_points("kafkaplus.producer.undelivered.messages"), topic)
    assert lost.value == 3
    sent = _by_topic(otel.metric_points("messaging.client.sent.messages"), topic)
    if metrics == "none":
        assert sent == []
    else:
        assert sorted(s.value for s in sent) == [3, 6]  # delivered; failed (with error.type)


def test_a_meter_provider_without_readers_is_sent_nothing_until_one_is_added(mock_cluster):
    """What ``OTEL_METRICS_EXPORTER=none`` gives under the distro: an SDK MeterProvider
    with no reader. Measurements would go nowhere, so none is made (each costs what a
    recorded one costs); spans are unchanged. A reader added later gets the metrics of
    the messages from then on."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    mp = MeterProvider()
    # A spy on the SDK: every measurement of every instrument passes through here.
    sdk_consumer = mp._measurement_consumer
    measured: list[str] = []
    consume = sdk_consumer.consume_measurement
    sdk_consumer.consume_measurement = lambda m: (measured.append(m.instrument.name), consume(m))
    inst = KafkaPlusInstrumentor()
    inst.instrument(tracer_provider=tp, meter_provider=mp, metrics="all")
    try:
        topic = unique()
        produce_and_flush(producer(mock_cluster), topic, 3)
        c = assigned_consumer(mock_cluster, topic)
        poll_messages(c, 3)
        c.close()
        assert measured == []
        spans = exporter.get_finished_spans()
        sends = [s for s in spans if s.name == f"send {topic}"]
        processes = [s for s in spans if s.name == f"process {topic}"]
        assert len(sends) == 3 and len(processes) == 3
        assert [s.attributes["messaging.kafka.offset"] for s in sends] == [0, 1, 2]
        assert {p.parent.span_id for p in processes} == {s.context.span_id for s in sends}

        if not hasattr(mp, "add_metric_reader"):  # SDK releases before readers could be added
            return
        reader = InMemoryMetricReader()
        mp.add_metric_reader(reader)
        produce_and_flush(producer(mock_cluster), topic, 2)
        assert "messaging.client.operation.duration" in measured
        points = [
            p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == "messaging.client.sent.messages"
            for p in m.data.data_points if p.attributes.get("messaging.destination.name") == topic
        ]  # fmt: skip
        assert [p.value for p in points] == [2]
    finally:
        inst.uninstrument()
