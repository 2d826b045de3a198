"""The statistics bridge, against crafted payloads and librdkafka's own mock cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from opentelemetry_instrumentation_kafkaplus.core.statistics import (
    METRIC_NAMES,
    StatisticsBridge,
    make_stats_cb,
)

Points = dict[str, list[tuple[float, dict[str, Any]]]]

# -- helpers -------------------------------------------------------------------


@pytest.fixture
def env() -> Iterator[tuple[InMemoryMetricReader, StatisticsBridge]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, StatisticsBridge(provider.get_meter("test"))
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> Points:
    points: Points = {}
    data = reader.get_metrics_data()
    if data is None:
        return points
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(
                    (p.value, dict(p.attributes or {}))
                    for p in metric.data.data_points
                    if isinstance(p, NumberDataPoint)
                )
    return points


def values(points: Points, name: str, **match: Any) -> list[float]:
    """Values of ``name`` whose attributes contain ``match`` (dots written as __)."""
    wanted = {k.replace("__", "."): v for k, v in match.items()}
    return sorted(
        v for v, attrs in points.get(name, []) if all(attrs.get(k) == w for k, w in wanted.items())
    )


def window(avg: int, p50: int, p99: int, mx: int, cnt: int) -> dict[str, int]:
    return {
        "min": 0,
        "max": mx,
        "avg": avg,
        "sum": avg * cnt,
        "stddev": 0,
        "p50": p50,
        "p75": p50,
        "p90": p99,
        "p95": p99,
        "p99": p99,
        "p99_99": mx,
        "outofrange": 0,
        "hdrsize": 11376,
        "cnt": cnt,
    }


def broker(nodeid: int, nodename: str, source: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": f"{nodename}/{nodeid}",
        "nodeid": nodeid,
        "nodename": nodename,
        "source": source,
        "state": "UP",
        "outbuf_cnt": 0,
        "waitresp_cnt": 2,
        "tx": 583,
        "txbytes": 9000,
        "txerrs": 1,
        "txretries": 3,
        "req_timeouts": 4,
        "rx": 580,
        "rxbytes": 7000,
        "rxerrs": 2,
        "connects": 1,
        "disconnects": 0,
        "rtt": window(137, 100, 619, 655, 192),
        "throttle": window(0, 0, 0, 0, 0),
        "outbuf_latency": window(25, 20, 193, 231, 192),
        "int_latency": window(19818, 19000, 20607, 20685, 4150),
    }
    doc.update(extra)
    return doc


def producer_payload(name: str = "p-stats#producer-5") -> str:
    return json.dumps(
        {
            "name": name,
            "client_id": "p-stats",
            "type": "producer",
            "replyq": 3,
            "msg_cnt": 100,
            "msg_size": 10000,
            "msg_max": 100000,
            "msg_size_max": 1073741824,
            "txmsgs": 11600,
            "txmsg_bytes": 1206890,
            "rxmsgs": 0,
            "brokers": {
                "127.0.0.1:32875/1": broker(1, "127.0.0.1:32875", "learned"),
                "127.0.0.1:32875/bootstrap": broker(-1, "127.0.0.1:32875", "configured"),
            },
            "topics": {
                "t2": {
                    "batchsize": window(2511, 2400, 4300, 4393, 192),
                    "batchcnt": window(21, 20, 37, 38, 192),
                    "partitions": {
                        "0": {
                            "msgq_cnt": 7,
                            "msgq_bytes": 700,
                            "xmit_msgq_cnt": 5,
                            "xmit_msgq_bytes": 500,
                            "msgs_inflight": 2,
                            "desired": False,
                            "committed_offset": -1001,
                            "consumer_lag": -1,
                        },
                        "-1": {
                            "msgq_cnt": 99,
                            "msgq_bytes": 9900,
                            "xmit_msgq_cnt": 0,
                            "xmit_msgq_bytes": 0,
                            "msgs_inflight": 0,
                        },
                    },
                }
            },
        }
    )


def consumer_payload(name: str = "c1#consumer-7", lag: int = 2) -> str:
    part = {
        "desired": True,
        "fetch_state": "active",
        "fetchq_cnt": 4,
        "fetchq_size": 400,
        "next_offset": 3,
        "stored_offset": -1001,
        "committed_offset": 1,
        "hi_offset": 1 + lag,
        "consumer_lag": lag,
        "consumer_lag_stored": -1,
        "msgq_cnt": 0,
    }
    return json.dumps(
        {
            "name": name,
            "client_id": "c1",
            "type": "consumer",
            "replyq": 0,
            "msg_cnt": 0,
            "rxmsgs": 9,
            "rxmsg_bytes": 29,
            "brokers": {
                "127.0.0.1:44025/1": broker(1, "127.0.0.1:44025", "learned"),
                "GroupCoordinator": broker(-1, "127.0.0.1:44025", "logical", tx=12),
            },
            "topics": {
                "t1": {
                    "batchsize": window(0, 0, 0, 0, 0),
                    "partitions": {
                        "0": part,
                        # Revoked in a rebalance: librdkafka keeps the stale values.
                        "1": {**part, "desired": False, "fetch_state": "stopped"},
                        # Assigned but nothing committed yet.
                        "2": {**part, "committed_offset": -1001, "consumer_lag": -1},
                        "-1": {**part, "desired": False},
                    },
                }
            },
            "cgrp": {
                "state": "up",
                "join_state": "steady",
                "rebalance_cnt": 3,
                "assignment_size": 2,
            },
        }
    )


Env = tuple[InMemoryMetricReader, StatisticsBridge]

# -- crafted payloads: exact points ---------------------------------------------------

PRODUCER_BASE = {
    "messaging.system": "kafka",
    "messaging.client.id": "p-stats",
    "kafkaplus.client.name": "p-stats#producer-5",
}
BROKER_1 = {"server.address": "127.0.0.1", "server.port": 32875, "kafkaplus.broker.id": 1}


def test_producer_payload_gives_exact_points(env: Env) -> None:
    reader, bridge = env
    bridge.record(producer_payload())
    points = collect(reader)

    assert points["kafkaplus.client.reply_queue.event.count"] == [(3, PRODUCER_BASE)]
    assert points["kafkaplus.producer.queue.message.count"] == [(100, PRODUCER_BASE)]
    assert points["kafkaplus.producer.queue.size"] == [(10000, PRODUCER_BASE)]
    assert points["kafkaplus.producer.queue.message.limit"] == [(100000, PRODUCER_BASE)]
    assert points["kafkaplus.producer.sent.messages"] == [(11600, PRODUCER_BASE)]
    assert points["kafkaplus.producer.sent.bytes"] == [(1206890, PRODUCER_BASE)]
    # A producer reports no consumer-side series at all.
    for name in METRIC_NAMES:
        if name.startswith("kafka.consumer."):
            assert name not in points, name

    # Only the learned broker: the bootstrap entry (nodeid -1) is skipped.
    broker_attrs = {**PRODUCER_BASE, **BROKER_1}
    assert points["kafkaplus.broker.requests"] == [(583, broker_attrs)]
    assert points["kafkaplus.broker.responses"] == [(580, broker_attrs)]
    assert points["kafkaplus.broker.request.errors"] == [(1, broker_attrs)]
    assert points["kafkaplus.broker.response.errors"] == [(2, broker_attrs)]
    assert points["kafkaplus.broker.request.retries"] == [(3, broker_attrs)]
    assert points["kafkaplus.broker.request.timeouts"] == [(4, broker_attrs)]
    assert points["kafkaplus.broker.inflight.request.count"] == [(2, broker_attrs)]

    # Window stats: microseconds and milliseconds become seconds, one point per stat.
    assert sorted((a["kafkaplus.stat"], v) for v, a in points["kafkaplus.broker.rtt"]) == [
        ("avg", 0.000137),
        ("max", 0.000655),
        ("p50", 0.0001),
        ("p99", 0.000619),
    ]
    assert values(points, "kafkaplus.producer.queue.time", kafkaplus__stat="avg") == [0.019818]
    assert values(points, "kafkaplus.broker.request.queue_time", kafkaplus__stat="p99") == [0.000193]
    # No throttle sample in the interval means no throttling, reported as 0.
    assert sorted(v for v, _ in points["kafkaplus.broker.throttle.time"]) == [0, 0, 0, 0]
    rtt_attrs = next(a for v, a in points["kafkaplus.broker.rtt"] if a["kafkaplus.stat"] == "avg")
    assert rtt_attrs == {**broker_attrs, "kafkaplus.stat": "avg"}

    topic_attrs = {**PRODUCER_BASE, "messaging.destination.name": "t2"}
    assert sorted((a["kafkaplus.stat"], v) for v, a in points["kafkaplus.producer.batch.size"]) == [
        ("avg", 2511),
        ("max", 4393),
        ("p50", 2400),
        ("p99", 4300),
    ]
    assert values(points, "kafkaplus.producer.batch.message.count", kafkaplus__stat="avg") == [21]
    assert all(
        {k: v for k, v in a.items() if k != "kafkaplus.stat"} == topic_attrs
        for _, a in points["kafkaplus.producer.batch.size"]
    )

    # Partition "-1" (the unassigned queue) is skipped; partition ids are strings.
    part_attrs = {**topic_attrs, "messaging.destination.partition.id": "0"}
    assert points["kafkaplus.producer.partition.queue.message.count"] == [(7, part_attrs)]
    assert points["kafkaplus.producer.partition.queue.size"] == [(700, part_attrs)]
    assert points["kafkaplus.producer.partition.transmit_queue.message.count"] == [(5, part_attrs)]
    assert points["kafkaplus.producer.partition.transmit_queue.size"] == [(500, part_attrs)]
    assert points["kafkaplus.producer.partition.inflight.message.count"] == [(2, part_attrs)]


def test_consumer_payload_skips_logical_broker_unknown_offsets_and_revoked(env: Env) -> None:
    reader, bridge = env
    bridge.record(consumer_payload(), group_id="g1")
    points = collect(reader)
    base = {
        "messaging.system": "kafka",
        "messaging.client.id": "c1",
        "kafkaplus.client.name": "c1#consumer-7",
        "messaging.consumer.group.name": "g1",
    }
    part0 = {
        **base,
        "messaging.destination.name": "t1",
        "messaging.destination.partition.id": "0",
    }
    part2 = {**part0, "messaging.destination.partition.id": "2"}

    # GroupCoordinator (logical, nodeid -1) would have reported tx=12 a second time.
    assert points["kafkaplus.broker.requests"] == [
        (583, {**base, "server.address": "127.0.0.1", "server.port": 44025, "kafkaplus.broker.id": 1})
    ]
    # Partition 1 was revoked (desired false): its stale lag belongs to another member.
    # Partition 2 has no committed offset (-1001) and an unknown lag (-1).
    assert points["kafkaplus.consumer.lag"] == [(2, part0)]
    assert "kafkaplus.consumer.lag_stored" not in points  # -1 everywhere
    assert points["kafkaplus.consumer.committed_offset"] == [(1, part0)]
    assert sorted(points["kafkaplus.consumer.fetch_queue.message.count"], key=str) == sorted(
        [(4, part0), (4, part2)], key=str
    )
    assert points["kafkaplus.consumer.received.messages"] == [(9, base)]
    assert points["kafkaplus.consumer.received.bytes"] == [(29, base)]
    assert points["kafkaplus.consumer.group.rebalances"] == [(3, base)]
    assert points["kafkaplus.consumer.group.assigned_partition.count"] == [(2, base)]
    # Producer-only series stay empty for a consumer; an empty batch window gives nothing.
    assert "kafkaplus.producer.queue.message.count" not in points
    assert "kafkaplus.producer.partition.queue.message.count" not in points
    assert "kafkaplus.producer.queue.time" not in points
    assert "kafkaplus.producer.batch.size" not in points


def test_latest_snapshot_wins_and_clients_are_separate(env: Env) -> None:
    reader, bridge = env
    bridge.record(consumer_payload(lag=5), group_id="g1")
    bridge.record(consumer_payload(lag=7), group_id="g1")
    bridge.record(consumer_payload(name="c1#consumer-8", lag=11), group_id="g1")
    points = collect(reader)
    assert values(points, "kafkaplus.consumer.lag") == [7, 11]
    assert {a["kafkaplus.client.name"] for _, a in points["kafkaplus.consumer.lag"]} == {
        "c1#consumer-7",
        "c1#consumer-8",
    }
    # Collecting again without a new payload reports the same snapshot.
    assert values(collect(reader), "kafkaplus.consumer.lag") == [7, 11]


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "not json",
        "[1, 2]",
        '{"client_id": "no-name"}',
        '{"name": 5}',
        '{"name": "broken#producer-1", "type": "producer", "msg_cnt": ',
        # Found by the corruption property test: a negative count is no count.
        '{"name": "neg#producer-1", "type": "producer", "replyq": -1, "msg_cnt": -5}',
        '{"name": "weird#producer-1", "type": "producer", "msg_cnt": "lots", "replyq": true,'
        ' "brokers": [1], "topics": {"t": {"partitions": {"0": "x", "1": {"msgq_cnt": 1.5}}}}}',
        '{"name": "weird#consumer-1", "type": "consumer", "brokers": {"b": {"nodeid": "1"}},'
        ' "topics": {"t": {"partitions": []}, "u": 3}, "cgrp": {"rebalance_cnt": null}}',
        '{"name": "windows#producer-1", "type": "producer", "brokers": {"b/1": {"nodeid": 1,'
        ' "nodename": "nohost", "rtt": {"cnt": "many"}, "throttle": [], "int_latency":'
        ' {"cnt": 3, "avg": "x", "p50": null}}}}',
    ],
)
def test_bad_payloads_never_raise_and_report_nothing(env: Env, payload: str) -> None:
    reader, bridge = env
    bridge.record(payload)
    # Not one of them holds a single valid value.
    assert collect(reader) == {}


def test_unreadable_payload_is_logged_with_traceback_at_debug(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    reader, bridge = env
    caplog.set_level(logging.DEBUG, logger="opentelemetry_instrumentation_kafkaplus")
    bridge.record('{"name": "broken#producer-1", "msg_cnt": ')
    collect(reader)
    failures = [r for r in caplog.records if "kafka statistics" in r.getMessage()]
    assert failures
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in failures)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2000, 2**63) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


def _leaf_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaf_paths(v, (*prefix, k))] + [prefix]
    return [prefix]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_corruption_of_a_real_shape_never_raises(data: st.DataObject) -> None:
    """Replace any one field (or object) of a valid payload with arbitrary JSON."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    bridge = StatisticsBridge(provider.get_meter("test"))
    kind = data.draw(st.sampled_from([producer_payload, consumer_payload]))
    doc = json.loads(kind())
    path = data.draw(st.sampled_from(_leaf_paths(doc)[:-1]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(_json)
    bridge.record(json.dumps(doc), group_id="g")
    points = collect(reader)
    provider.shutdown()
    for name, found in points.items():
        assert name in METRIC_NAMES
        assert all(v >= 0 for v, _ in found)
        assert all(a.get("messaging.destination.partition.id") != "-1" for _, a in found)


def test_non_string_payload_never_raises(env: Env) -> None:
    reader, bridge = env
    bridge.record(None)  # type: ignore[arg-type]
    bridge.record(b'{"name": "x"}')  # type: ignore[arg-type]
    assert collect(reader) == {}


def test_malformed_payload_keeps_previous_snapshot(env: Env) -> None:
    reader, bridge = env
    bridge.record(consumer_payload(lag=5))
    assert values(collect(reader), "kafkaplus.consumer.lag") == [5]
    bridge.record('{"name": "c1#consumer-7", "type": "consumer", "topics": {')
    assert values(collect(reader), "kafkaplus.consumer.lag") == [5]


def test_escaped_client_name(env: Env) -> None:
    reader, bridge = env
    name = 'odd "id"\\#producer-1'
    bridge.record(producer_payload(name=name))
    points = collect(reader)
    assert points["kafkaplus.producer.queue.message.count"][0][1]["kafkaplus.client.name"] == name
    bridge.forget(name)
    assert collect(reader) == {}


def test_forget_drops_only_that_client(env: Env) -> None:
    reader, bridge = env
    bridge.record(producer_payload())
    bridge.record(consumer_payload(), group_id="g1")
    bridge.forget("p-stats#producer-5")
    bridge.forget("never-seen#producer-9")
    points = collect(reader)
    assert "kafkaplus.producer.queue.message.count" not in points
    assert values(points, "kafkaplus.consumer.lag") == [2]


def test_clients_nobody_refreshes_go_stale(env: Env) -> None:
    reader, bridge = env
    bridge.record(producer_payload())
    assert "kafkaplus.producer.queue.message.count" in collect(reader)
    # As if the last payload had arrived longer ago than stale_after_s.
    bridge._clients["p-stats#producer-5"].received -= 10_000
    assert collect(reader) == {}


def test_stale_eviction_can_be_disabled() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    bridge = StatisticsBridge(provider.get_meter("test"), stale_after_s=None)
    bridge.record(producer_payload())
    bridge._clients["p-stats#producer-5"].received -= 10_000
    assert "kafkaplus.producer.queue.message.count" in collect(reader)
    provider.shutdown()


# -- stats_cb factories ----------------------------------------------------------------


def test_stats_cb_passes_identical_string_and_return_value(env: Env) -> None:
    reader, bridge = env
    seen: list[str] = []
    sentinel = object()

    def user_cb(stats: str) -> object:
        seen.append(stats)
        return sentinel

    cb = make_stats_cb(bridge, user_cb, group_id="g1")
    payload = consumer_payload()
    assert cb(payload) is sentinel
    assert len(seen) == 1 and seen[0] is payload
    assert values(collect(reader), "kafkaplus.consumer.lag", messaging__consumer__group__name="g1") == [
        2
    ]
    assert cb.client_names == frozenset({"c1#consumer-7"})
    assert cb.user_cb is user_cb


def test_stats_cb_user_exception_propagates_after_feeding(env: Env) -> None:
    reader, bridge = env

    class Boom(Exception):
        pass

    def user_cb(stats: str) -> None:
        raise Boom(stats[:10])

    cb = make_stats_cb(bridge, user_cb)
    with pytest.raises(Boom):
        cb(producer_payload())
    assert "kafkaplus.producer.queue.message.count" in collect(reader)


def test_stats_cb_without_user_cb_and_with_garbage(env: Env) -> None:
    reader, bridge = env
    cb = make_stats_cb(bridge, None)
    assert cb("garbage") is None
    assert cb(producer_payload()) is None
    assert "kafkaplus.producer.queue.message.count" in collect(reader)


def test_stats_cb_forget_stops_its_clients(env: Env) -> None:
    reader, bridge = env
    cb = make_stats_cb(bridge, None)
    other = make_stats_cb(bridge, None)
    cb(producer_payload())
    other(consumer_payload())
    cb.forget()
    cb(producer_payload())  # a late payload after close is ignored
    points = collect(reader)
    assert "kafkaplus.producer.queue.message.count" not in points
    assert values(points, "kafkaplus.consumer.lag") == [2]


# -- real librdkafka (in-process mock cluster) -----------------------------------------

DEADLINE_S = 60.0


def poll_until(
    poll: Callable[[], object],
    reader: InMemoryMetricReader,
    condition: Callable[[Points], bool],
    what: str,
) -> Points:
    """Serve callbacks until the collected metrics satisfy ``condition``.

    The deadline only turns a hang into a readable failure; the assertions are on
    values, never on how long they took.
    """
    end = time.monotonic() + DEADLINE_S
    points: Points = {}
    while time.monotonic() < end:
        poll()
        points = collect(reader)
        if condition(points):
            return points
    seen = {k: v for k, v in points.items() if k.startswith("kafka.")}
    raise AssertionError(f"never saw {what}; last metrics: {seen}")


def mock_producer(**conf: Any) -> Producer:
    return Producer({"test.mock.num.brokers": 1, **conf})


def broker_address(producer: Producer) -> str:
    brokers = producer.list_topics(timeout=10).brokers
    b = next(iter(brokers.values()))
    return f"{b.host}:{b.port}"


def test_real_producer_queue_depth_then_sent(env: Env) -> None:
    reader, bridge = env
    received: list[str] = []
    n = 120
    producer = mock_producer(
        **{
            "statistics.interval.ms": 1000,
            "linger.ms": 100000,  # hold everything in the queue until flush()
            "message.timeout.ms": 300000,
            "client.id": "stats-producer",
            "stats_cb": make_stats_cb(bridge, received.append),
        }
    )
    topic = f"stats-q-{uuid.uuid4().hex[:8]}"
    for i in range(n):
        producer.produce(topic, value=b"v" * 100, key=str(i).encode())

    points = poll_until(
        lambda: producer.poll(0.2),
        reader,
        lambda p: bool(values(p, "kafkaplus.producer.queue.message.count")),
        "a producer snapshot",
    )
    assert values(points, "kafkaplus.producer.queue.message.count") == [n]
    assert values(points, "kafkaplus.producer.queue.size")[0] >= n * 100
    assert values(points, "kafkaplus.producer.sent.messages") == [0]
    (_, attrs) = points["kafkaplus.producer.queue.message.count"][0]
    assert attrs["messaging.client.id"] == "stats-producer"
    assert attrs["kafkaplus.client.name"].startswith("stats-producer#producer-")
    assert received, "the application's own stats_cb was not called"

    assert producer.flush(30) == 0
    points = poll_until(
        lambda: producer.poll(0.2),
        reader,
        lambda p: values(p, "kafkaplus.producer.sent.messages") == [n],
        "all messages sent",
    )
    assert values(points, "kafkaplus.producer.queue.message.count") == [0]
    # Per-partition counts sum to what was produced once the topic is known; no "-1".
    partitions = {
        a["messaging.destination.partition.id"]
        for _, a in points["kafkaplus.producer.partition.queue.message.count"]
    }
    assert partitions and "-1" not in partitions
    assert all(a["server.port"] > 0 for _, a in points["kafkaplus.broker.requests"])
    assert all(a["kafkaplus.broker.id"] >= 0 for _, a in points["kafkaplus.broker.requests"])
    # Every payload the bridge saw went to the application unchanged.
    assert all(json.loads(s)["client_id"] == "stats-producer" for s in received)


def test_real_consumer_lag_then_zero(env: Env) -> None:
    reader, bridge = env
    producer = mock_producer()
    bootstrap = broker_address(producer)
    topic = f"stats-lag-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    # Every partition gets messages in phase 1, so each has a committed offset (a
    # partition never committed has lag -1, "unknown", which is not reported).
    for i in range(8):
        producer.produce(topic, value=b"first", partition=i % 4)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "statistics.interval.ms": 1000,
            "stats_cb": make_stats_cb(bridge, None, group_id=group),
        }
    )
    try:
        consumer.subscribe([topic])
        consumed = 0

        def consume() -> None:
            nonlocal consumed
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                consumed += 1

        # Phase 1: read everything and commit, so librdkafka knows a committed offset.
        end = time.monotonic() + DEADLINE_S
        while consumed < 8 and time.monotonic() < end:
            consume()
        assert consumed == 8
        consumer.commit(asynchronous=False)
        poll_until(
            consume,
            reader,
            lambda p: (
                values(p, "kafkaplus.consumer.committed_offset") != []
                and sum(values(p, "kafkaplus.consumer.committed_offset")) == 8
                and sum(values(p, "kafkaplus.consumer.lag")) == 0
            ),
            "the first commit",
        )

        # Phase 2: new messages arrive; consuming them without committing leaves the lag.
        extra = 13
        for i in range(extra):
            producer.produce(topic, value=b"second", partition=i % 4)
        assert producer.flush(30) == 0
        points = poll_until(
            consume,
            reader,
            lambda p: sum(values(p, "kafkaplus.consumer.lag")) == extra,
            f"a lag of {extra}",
        )
        lag_points = points["kafkaplus.consumer.lag"]
        assert all(v >= 0 for v, _ in lag_points)
        assert {a["messaging.destination.name"] for _, a in lag_points} == {topic}
        assert all(a["messaging.consumer.group.name"] == group for _, a in lag_points)
        assert all(isinstance(a["messaging.destination.partition.id"], str) for _, a in lag_points)
        assert "-1" not in {a["messaging.destination.partition.id"] for _, a in lag_points}
        assert values(points, "kafkaplus.consumer.group.rebalances")[0] >= 1
        assert values(points, "kafkaplus.consumer.group.assigned_partition.count")[0] >= 1
        # The GroupCoordinator is not reported next to the real broker.
        assert all(a["kafkaplus.broker.id"] >= 0 for _, a in points["kafkaplus.broker.requests"])
        assert len(points["kafkaplus.broker.requests"]) == 1

        # Phase 3: commit what was consumed: lag back to 0, committed offsets sum to 21.
        end = time.monotonic() + DEADLINE_S
        while consumed < 8 + extra and time.monotonic() < end:
            consume()
        assert consumed == 8 + extra
        consumer.commit(asynchronous=False)
        points = poll_until(
            consume,
            reader,
            lambda p: sum(values(p, "kafkaplus.consumer.committed_offset")) == 8 + extra,
            "the second commit",
        )
        assert sum(values(points, "kafkaplus.consumer.lag")) == 0
        assert values(points, "kafkaplus.consumer.received.messages") == [8 + extra]
    finally:
        consumer.close()


def test_real_user_stats_cb_exception_propagates_out_of_poll(env: Env) -> None:
    reader, bridge = env

    class StatsBoom(Exception):
        pass

    def user_cb(stats: str) -> None:
        raise StatsBoom(stats)

    producer = mock_producer(
        **{"statistics.interval.ms": 1000, "stats_cb": make_stats_cb(bridge, user_cb)}
    )
    end = time.monotonic() + DEADLINE_S
    with pytest.raises(StatsBoom) as raised:
        while time.monotonic() < end:
            producer.poll(0.2)
    # The bridge was fed with the very payload the application got.
    name = json.loads(str(raised.value.args[0]))["name"]
    points = collect(reader)
    assert {a["kafkaplus.client.name"] for _, a in points["kafkaplus.producer.queue.message.count"]} == {name}


def test_real_aio_producer_with_async_stats_cb_under_instrumentation(otel_factory: Any) -> None:
    """An AIOProducer awaits its stats_cb: the app's coroutine callback still gets
    every payload, and the statistics bridge of the instrumentation is fed too."""
    aio = pytest.importorskip("confluent_kafka.aio")
    otel = otel_factory(statistics_interval_ms=1000)
    seen: list[str] = []

    async def user_cb(stats: str) -> None:
        await asyncio.sleep(0)
        seen.append(stats)

    async def main() -> None:
        producer = aio.AIOProducer(
            {"test.mock.num.brokers": 1, "client.id": "stats-aio", "stats_cb": user_cb}
        )
        try:
            delivered = await (await producer.produce(f"stats-aio-{uuid.uuid4().hex[:8]}", b"v"))
            assert delivered.error() is None
            end = time.monotonic() + DEADLINE_S
            while time.monotonic() < end and not otel.metric_points("kafkaplus.producer.sent.messages"):
                await producer.poll(0.2)
        finally:
            await producer.close()

    asyncio.run(main())
    assert [p.value for p in otel.metric_points("kafkaplus.producer.sent.messages")] == [1]
    assert seen and all(json.loads(s)["client_id"] == "stats-aio" for s in seen)
