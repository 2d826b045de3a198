"""Bridge from librdkafka's statistics JSON (``stats_cb``) to OpenTelemetry metrics.

librdkafka already counts what operators need (consumer lag, producer queue
depth, broker round trips, retries...) and hands it to ``stats_cb`` as one JSON
document every ``statistics.interval.ms``. This module turns the latest document
of each client into observable instruments.

Design choices, and why:

* ``record()`` runs inside the application's ``poll()``/``flush()`` (for
  ``confluent_kafka.aio``, in the executor thread that polls the inner client),
  so it does almost nothing: it finds
  the client's ``name`` with a regular expression on the first bytes and keeps
  the string. The JSON is decoded only when a metric reader collects, on the
  reader's thread, and only for the latest payload of each client: payloads
  that arrive between two collections are never decoded at all.
* Everything is reported from the latest snapshot, so counters are
  ``ObservableCounter`` (librdkafka's cumulative totals since the client
  started, one series per client ``name``, so they never go backwards) and
  everything else is an ``ObservableGauge``.
* Window statistics (``rtt``, ``int_latency``, ``batchsize``...) are already
  summaries of the last interval; their percentiles cannot be rebuilt from a
  histogram of averages, so they are gauges with a ``kafkaplus.stat`` attribute
  (``avg``, ``p50``, ``p99``, ``max``). An interval without samples reports no
  point instead of a misleading zero (except throttle, where no sample means no
  throttling).
* Nothing is double counted: the unassigned partition ``"-1"``, logical brokers
  (``GroupCoordinator``) and bootstrap/internal brokers (``nodeid`` -1) are
  skipped, and so are partitions a consumer no longer owns (``desired`` false):
  after a rebalance librdkafka keeps their last lag and committed offset, which
  would otherwise be reported by two group members at once.
* A malformed payload never reaches the client: failures are logged once per
  kind and the previous good snapshot of that client stays in place.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_CLIENT_ID,
    MESSAGING_CONSUMER_GROUP_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_SYSTEM,
    MessagingSystemValues,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT

from .errors import report

__all__ = [
    "StatisticsBridge",
    "StatsCallback",
    "make_stats_cb",
]

KAFKA_CLIENT_NAME = "kafkaplus.client.name"
"""librdkafka's unique handle name (``client.id#producer-N``).

``client.id`` defaults to ``rdkafka`` for every client, so it cannot tell two
clients of one process apart; without this attribute their cumulative counters
would overwrite each other.
"""
KAFKA_BROKER_ID = "kafkaplus.broker.id"
KAFKA_STAT = "kafkaplus.stat"

WINDOW_STATS = ("avg", "p50", "p99", "max")
"""Which summaries of a window statistic are reported (the ``kafkaplus.stat`` values)."""

DEFAULT_STALE_AFTER_S = 300.0

_KAFKA = MessagingSystemValues.KAFKA.value
# Divisors to seconds: dividing (not multiplying by 1e-6) keeps 137 us == 0.000137 exactly.
_US = 1_000_000
_MS = 1_000

# librdkafka writes "name" first; matching it avoids decoding the whole document on
# the application's thread. Anything unusual falls back to json.loads.
_NAME_RE = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"')

_COUNTER = "counter"
_GAUGE = "gauge"

# (name, kind, unit, description). The table in docs/statistics.md mirrors this list.
_SPECS: tuple[tuple[str, str, str, str], ...] = (
    # client level
    (
        "kafkaplus.client.reply_queue.event.count",
        _GAUGE,
        "{event}",
        "Callbacks and events waiting for the application to call poll() (replyq).",
    ),
    (
        "kafkaplus.producer.queue.message.count",
        _GAUGE,
        "{message}",
        "Messages in the producer's queues, not yet acknowledged (msg_cnt).",
    ),
    (
        "kafkaplus.producer.queue.size",
        _GAUGE,
        "By",
        "Bytes of messages in the producer's queues (msg_size).",
    ),
    (
        "kafkaplus.producer.queue.message.limit",
        _GAUGE,
        "{message}",
        "Producer queue limit in messages, queue.buffering.max.messages (msg_max).",
    ),
    (
        "kafkaplus.producer.queue.size.limit",
        _GAUGE,
        "By",
        "Producer queue limit in bytes, queue.buffering.max.kbytes (msg_size_max).",
    ),
    (
        "kafkaplus.producer.sent.messages",
        _COUNTER,
        "{message}",
        "Messages transmitted to brokers since the client started (txmsgs).",
    ),
    (
        "kafkaplus.producer.sent.bytes",
        _COUNTER,
        "By",
        "Message bytes, framing included, transmitted to brokers (txmsg_bytes).",
    ),
    (
        "kafkaplus.consumer.received.messages",
        _COUNTER,
        "{message}",
        "Messages received from brokers since the client started (rxmsgs).",
    ),
    (
        "kafkaplus.consumer.received.bytes",
        _COUNTER,
        "By",
        "Message bytes, framing included, received from brokers (rxmsg_bytes).",
    ),
    # broker level
    ("kafkaplus.broker.requests", _COUNTER, "{request}", "Requests sent to the broker (tx)."),
    (
        "kafkaplus.broker.responses",
        _COUNTER,
        "{response}",
        "Responses received from the broker (rx).",
    ),
    ("kafkaplus.broker.sent.bytes", _COUNTER, "By", "Bytes sent to the broker (txbytes)."),
    (
        "kafkaplus.broker.received.bytes",
        _COUNTER,
        "By",
        "Bytes received from the broker (rxbytes).",
    ),
    (
        "kafkaplus.broker.request.errors",
        _COUNTER,
        "{error}",
        "Errors while sending requests to the broker (txerrs).",
    ),
    (
        "kafkaplus.broker.response.errors",
        _COUNTER,
        "{error}",
        "Errors while receiving responses from the broker (rxerrs).",
    ),
    (
        "kafkaplus.broker.request.retries",
        _COUNTER,
        "{request}",
        "Requests retried to the broker (txretries).",
    ),
    (
        "kafkaplus.broker.request.timeouts",
        _COUNTER,
        "{request}",
        "Requests that timed out (req_timeouts).",
    ),
    (
        "kafkaplus.broker.connects",
        _COUNTER,
        "{connection}",
        "Connection attempts that succeeded (connects).",
    ),
    (
        "kafkaplus.broker.disconnects",
        _COUNTER,
        "{connection}",
        "Connections closed or lost (disconnects).",
    ),
    (
        "kafkaplus.broker.outbuf.request.count",
        _GAUGE,
        "{request}",
        "Requests waiting to be written to the broker's socket (outbuf_cnt).",
    ),
    (
        "kafkaplus.broker.inflight.request.count",
        _GAUGE,
        "{request}",
        "Requests sent and awaiting a response (waitresp_cnt).",
    ),
    (
        "kafkaplus.broker.rtt",
        _GAUGE,
        "s",
        "Request round-trip time over the last statistics interval (rtt).",
    ),
    (
        "kafkaplus.broker.throttle.time",
        _GAUGE,
        "s",
        "Broker throttle time over the last statistics interval (throttle).",
    ),
    (
        "kafkaplus.broker.request.queue_time",
        _GAUGE,
        "s",
        "Time a request waited before being written to the socket (outbuf_latency).",
    ),
    (
        "kafkaplus.producer.queue.time",
        _GAUGE,
        "s",
        "Time a message spent in the producer queue before joining a request (int_latency).",
    ),
    # topic level
    (
        "kafkaplus.producer.batch.size",
        _GAUGE,
        "By",
        "Produce batch (MessageSet) size over the last statistics interval (batchsize).",
    ),
    (
        "kafkaplus.producer.batch.message.count",
        _GAUGE,
        "{message}",
        "Messages per produce batch over the last statistics interval (batchcnt).",
    ),
    # partition level
    (
        "kafkaplus.producer.partition.queue.message.count",
        _GAUGE,
        "{message}",
        "Messages waiting in the partition's queue (msgq_cnt).",
    ),
    (
        "kafkaplus.producer.partition.queue.size",
        _GAUGE,
        "By",
        "Bytes waiting in the partition's queue (msgq_bytes).",
    ),
    (
        "kafkaplus.producer.partition.transmit_queue.message.count",
        _GAUGE,
        "{message}",
        "Messages in the partition's broker transmit queue (xmit_msgq_cnt).",
    ),
    (
        "kafkaplus.producer.partition.transmit_queue.size",
        _GAUGE,
        "By",
        "Bytes in the partition's broker transmit queue (xmit_msgq_bytes).",
    ),
    (
        "kafkaplus.producer.partition.inflight.message.count",
        _GAUGE,
        "{message}",
        "Messages sent and awaiting acknowledgement (msgs_inflight).",
    ),
    (
        "kafkaplus.consumer.lag",
        _GAUGE,
        "{message}",
        "High watermark (or last stable offset) minus committed offset (consumer_lag).",
    ),
    (
        "kafkaplus.consumer.lag_stored",
        _GAUGE,
        "{message}",
        "High watermark (or last stable offset) minus stored offset (consumer_lag_stored).",
    ),
    (
        "kafkaplus.consumer.committed_offset",
        _GAUGE,
        "{offset}",
        "Last committed offset of the partition (committed_offset).",
    ),
    (
        "kafkaplus.consumer.fetch_queue.message.count",
        _GAUGE,
        "{message}",
        "Pre-fetched messages waiting for the application (fetchq_cnt).",
    ),
    (
        "kafkaplus.consumer.fetch_queue.size",
        _GAUGE,
        "By",
        "Bytes of pre-fetched messages waiting for the application (fetchq_size).",
    ),
    # consumer group
    (
        "kafkaplus.consumer.group.rebalances",
        _COUNTER,
        "{rebalance}",
        "Rebalances (assignments or revocations) since the client started (cgrp.rebalance_cnt).",
    ),
    (
        "kafkaplus.consumer.group.assigned_partition.count",
        _GAUGE,
        "{partition}",
        "Partitions currently assigned to this consumer (cgrp.assignment_size).",
    ),
)

METRIC_NAMES: tuple[str, ...] = tuple(spec[0] for spec in _SPECS)

# (field, metric) pairs read the same way from every object of one level.
_CLIENT_FIELDS = (("replyq", "kafkaplus.client.reply_queue.event.count"),)
_PRODUCER_CLIENT_FIELDS = (
    ("msg_cnt", "kafkaplus.producer.queue.message.count"),
    ("msg_size", "kafkaplus.producer.queue.size"),
    ("msg_max", "kafkaplus.producer.queue.message.limit"),
    ("msg_size_max", "kafkaplus.producer.queue.size.limit"),
    ("txmsgs", "kafkaplus.producer.sent.messages"),
    ("txmsg_bytes", "kafkaplus.producer.sent.bytes"),
)
_CONSUMER_CLIENT_FIELDS = (
    ("rxmsgs", "kafkaplus.consumer.received.messages"),
    ("rxmsg_bytes", "kafkaplus.consumer.received.bytes"),
)
_BROKER_FIELDS = (
    ("tx", "kafkaplus.broker.requests"),
    ("rx", "kafkaplus.broker.responses"),
    ("txbytes", "kafkaplus.broker.sent.bytes"),
    ("rxbytes", "kafkaplus.broker.received.bytes"),
    ("txerrs", "kafkaplus.broker.request.errors"),
    ("rxerrs", "kafkaplus.broker.response.errors"),
    ("txretries", "kafkaplus.broker.request.retries"),
    ("req_timeouts", "kafkaplus.broker.request.timeouts"),
    ("connects", "kafkaplus.broker.connects"),
    ("disconnects", "kafkaplus.broker.disconnects"),
    ("outbuf_cnt", "kafkaplus.broker.outbuf.request.count"),
    ("waitresp_cnt", "kafkaplus.broker.inflight.request.count"),
)
# (field, metric, divisor to the metric's unit, report zeros for an empty window)
_BROKER_WINDOWS = (
    ("rtt", "kafkaplus.broker.rtt", _US, False),
    ("throttle", "kafkaplus.broker.throttle.time", _MS, True),
    ("outbuf_latency", "kafkaplus.broker.request.queue_time", _US, False),
)
_PRODUCER_BROKER_WINDOWS = (("int_latency", "kafkaplus.producer.queue.time", _US, False),)
_TOPIC_WINDOWS = (
    ("batchsize", "kafkaplus.producer.batch.size", 1, False),
    ("batchcnt", "kafkaplus.producer.batch.message.count", 1, False),
)
_PRODUCER_PARTITION_FIELDS = (
    ("msgq_cnt", "kafkaplus.producer.partition.queue.message.count"),
    ("msgq_bytes", "kafkaplus.producer.partition.queue.size"),
    ("xmit_msgq_cnt", "kafkaplus.producer.partition.transmit_queue.message.count"),
    ("xmit_msgq_bytes", "kafkaplus.producer.partition.transmit_queue.size"),
    ("msgs_inflight", "kafkaplus.producer.partition.inflight.message.count"),
)
# Lags of -1 and offsets of -1001 mean "unknown": every valid value is >= 0.
_CONSUMER_PARTITION_FIELDS = (
    ("consumer_lag", "kafkaplus.consumer.lag"),
    ("consumer_lag_stored", "kafkaplus.consumer.lag_stored"),
    ("committed_offset", "kafkaplus.consumer.committed_offset"),
    ("fetchq_cnt", "kafkaplus.consumer.fetch_queue.message.count"),
    ("fetchq_size", "kafkaplus.consumer.fetch_queue.size"),
)

_Attrs = dict[str, Any]
_Points = dict[str, list[Observation]]


def _int(value: object) -> int | None:
    """A librdkafka integer, or None for anything else (bool is not a number here)."""
    return value if type(value) is int else None


def _split_host_port(nodename: str) -> tuple[str, int | None]:
    host, sep, port = nodename.rpartition(":")
    if not sep:
        return nodename, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return host, int(port)
    except ValueError:
        return nodename, None


class _Client:
    """What the bridge keeps per librdkafka handle."""

    __slots__ = ("attr_cache", "group", "pending", "points", "received")

    def __init__(self) -> None:
        self.pending: str | dict[str, Any] | None = None
        self.group: str | None = None
        self.received = 0.0
        self.points: _Points = {}
        # Attribute dicts are built when a partition or broker first appears and then
        # reused, instead of thousands of new dicts for every snapshot.
        self.attr_cache: dict[tuple[object, ...], _Attrs] = {}


class StatisticsBridge:
    """Latest librdkafka statistics of every client, exposed as observable instruments.

    One bridge per ``Meter``: it creates its instruments once, and a second bridge
    on the same meter would register the same names twice.
    """

    def __init__(
        self, meter: Meter, *, stale_after_s: float | None = DEFAULT_STALE_AFTER_S
    ) -> None:
        # A client that is garbage collected without close() never calls forget();
        # dropping snapshots nobody refreshed keeps its series from living forever.
        self._stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._instruments: list[object] = []
        for name, kind, unit, description in _SPECS:
            callback = self._callback_for(name)
            if kind == _COUNTER:
                instrument: object = meter.create_observable_counter(
                    name, callbacks=[callback], unit=unit, description=description
                )
            else:
                instrument = meter.create_observable_gauge(
                    name, callbacks=[callback], unit=unit, description=description
                )
            self._instruments.append(instrument)

    # -- feeding ---------------------------------------------------------------

    def record(self, stats_json: str, *, group_id: str | None = None) -> None:
        """Keep one ``stats_cb`` payload as its client's latest snapshot; never raises.

        ``group_id`` is the consumer's ``group.id``: librdkafka's statistics do not
        carry it, so whoever built the client passes it along.
        """
        self._record(stats_json, group_id)

    def _record(self, stats_json: object, group_id: str | None) -> str | None:
        try:
            pending: str | dict[str, Any]
            if not isinstance(stats_json, str):
                raise TypeError(f"statistics payload is {type(stats_json).__name__}, not str")
            match = _NAME_RE.match(stats_json)
            if match is not None:
                name = match.group(1)
                if "\\" in name:
                    name = json.loads(f'"{name}"')
                pending = stats_json
            else:
                decoded = json.loads(stats_json)
                if not isinstance(decoded, dict) or not isinstance(decoded.get("name"), str):
                    raise ValueError("statistics payload is not an object with a name")
                name = decoded["name"]
                pending = decoded
            now = time.monotonic()
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    client = self._clients[name] = _Client()
                client.pending = pending
                client.group = group_id if isinstance(group_id, str) and group_id else None
                client.received = now
            return name
        except Exception as exc:
            report("kafka statistics (record)", exc)
            return None

    def forget(self, client_name: str) -> None:
        """Stop reporting a closed client (``client_name`` is the statistics ``name``)."""
        try:
            with self._lock:
                self._clients.pop(client_name, None)
        except Exception as exc:  # pragma: no cover - dict.pop on a str key
            report("kafka statistics (forget)", exc)

    # -- reading ---------------------------------------------------------------

    def _callback_for(self, metric: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return self._observe(metric)
            except Exception as exc:
                report("kafka statistics (observe)", exc)
                return []

        return callback

    def _observe(self, metric: str) -> list[Observation]:
        clients = self._refresh()
        points: list[Observation] = []
        for client in clients:
            found = client.points.get(metric)
            if found:
                points.extend(found)
        return points

    def _refresh(self) -> list[_Client]:
        """Decode the payloads that arrived since the last collection, drop stale clients."""
        now = time.monotonic()
        with self._lock:
            if self._stale_after_s is not None:
                limit = now - self._stale_after_s
                for name in [n for n, c in self._clients.items() if c.received < limit]:
                    del self._clients[name]
            clients = list(self._clients.items())
        for name, client in clients:
            pending = client.pending
            if pending is None:
                continue
            try:
                data = json.loads(pending) if isinstance(pending, str) else pending
                if not isinstance(data, dict):
                    raise ValueError("statistics payload is not a JSON object")
                points = _build(name, data, client)
            except Exception as exc:
                # Keep the previous good snapshot: one bad payload should not leave a gap.
                report("kafka statistics (parse)", exc)
                points = None
            with self._lock:
                # A payload that arrived meanwhile wins; the next collection decodes it.
                if client.pending is pending:
                    client.pending = None
                    if points is not None:
                        client.points = points
        return [client for _, client in clients]


def _build(name: str, data: dict[str, Any], client: _Client) -> _Points:
    """Turn one decoded document into the observations of every instrument."""
    points: _Points = {metric: [] for metric in METRIC_NAMES}
    cache = client.attr_cache
    kind = data.get("type")
    is_producer = kind == "producer"
    is_consumer = kind == "consumer"
    client_id = data.get("client_id")
    group = client.group if is_consumer else None

    base_key: tuple[object, ...] = ("client", client_id, group)
    base = cache.get(base_key)
    if base is None:
        base = {MESSAGING_SYSTEM: _KAFKA, KAFKA_CLIENT_NAME: name}
        if isinstance(client_id, str):
            base[MESSAGING_CLIENT_ID] = client_id
        if group is not None:
            base[MESSAGING_CONSUMER_GROUP_NAME] = group
        # A new base (client.id or group changed) invalidates everything built on it.
        cache.clear()
        cache[base_key] = base

    _fields(data, _CLIENT_FIELDS, base, points)
    if is_producer:
        _fields(data, _PRODUCER_CLIENT_FIELDS, base, points)
    if is_consumer:
        _fields(data, _CONSUMER_CLIENT_FIELDS, base, points)

    brokers = data.get("brokers")
    if isinstance(brokers, dict):
        for broker_name, broker in brokers.items():
            if not isinstance(broker, dict):
                continue
            node_id = _int(broker.get("nodeid"))
            # Logical (GroupCoordinator) and bootstrap/internal entries (nodeid -1)
            # are views of, or placeholders for, the learned brokers listed too.
            if node_id is None or node_id < 0 or broker.get("source") == "logical":
                continue
            key = ("broker", broker_name)
            attrs = cache.get(key)
            if attrs is None:
                attrs = dict(base)
                nodename = broker.get("nodename")
                if isinstance(nodename, str) and nodename:
                    host, port = _split_host_port(nodename)
                    attrs[SERVER_ADDRESS] = host
                    if port is not None:
                        attrs[SERVER_PORT] = port
                attrs[KAFKA_BROKER_ID] = node_id
                cache[key] = attrs
            _fields(broker, _BROKER_FIELDS, attrs, points)
            _windows(broker, _BROKER_WINDOWS, key, attrs, cache, points)
            if is_producer:
                _windows(broker, _PRODUCER_BROKER_WINDOWS, key, attrs, cache, points)

    topics = data.get("topics")
    if isinstance(topics, dict) and (is_producer or is_consumer):
        for topic_name, topic in topics.items():
            if not isinstance(topic, dict) or not isinstance(topic_name, str):
                continue
            topic_key = ("topic", topic_name)
            topic_attrs = cache.get(topic_key)
            if topic_attrs is None:
                topic_attrs = dict(base)
                topic_attrs[MESSAGING_DESTINATION_NAME] = topic_name
                cache[topic_key] = topic_attrs
            if is_producer:
                _windows(topic, _TOPIC_WINDOWS, topic_key, topic_attrs, cache, points)
            partitions = topic.get("partitions")
            if isinstance(partitions, dict):
                _partitions(topic_name, partitions, is_producer, topic_attrs, cache, points)

    cgrp = data.get("cgrp")
    if is_consumer and isinstance(cgrp, dict):
        value = _int(cgrp.get("rebalance_cnt"))
        if value is not None and value >= 0:
            points["kafkaplus.consumer.group.rebalances"].append(Observation(value, base))
        value = _int(cgrp.get("assignment_size"))
        if value is not None and value >= 0:
            points["kafkaplus.consumer.group.assigned_partition.count"].append(
                Observation(value, base)
            )
    return points


def _fields(
    source: dict[str, Any],
    fields: tuple[tuple[str, str], ...],
    attrs: _Attrs,
    points: _Points,
) -> None:
    for field, metric in fields:
        value = source.get(field)
        if type(value) is int and value >= 0:
            points[metric].append(Observation(value, attrs))


_INF = float("inf")


def _windows(
    source: dict[str, Any],
    windows: tuple[tuple[str, str, int, bool], ...],
    key: tuple[object, ...],
    attrs: _Attrs,
    cache: dict[tuple[object, ...], _Attrs],
    points: _Points,
) -> None:
    for field, metric, divisor, zero_when_empty in windows:
        window = source.get(field)
        if not isinstance(window, dict):
            continue
        count = window.get("cnt")
        if type(count) is not int:
            continue
        empty = count <= 0
        if empty and not zero_when_empty:
            continue
        out = points[metric]
        for stat in WINDOW_STATS:
            value = window.get(stat)
            if empty:
                value = 0
            elif (type(value) is not int and type(value) is not float) or not 0 <= value < _INF:
                continue  # durations and sizes: never negative, NaN or infinite
            stat_key = (*key, stat)
            stat_attrs = cache.get(stat_key)
            if stat_attrs is None:
                stat_attrs = dict(attrs)
                stat_attrs[KAFKA_STAT] = stat
                cache[stat_key] = stat_attrs
            out.append(Observation(value / divisor if divisor != 1 else value, stat_attrs))


def _partitions(
    topic_name: str,
    partitions: dict[str, Any],
    is_producer: bool,
    topic_attrs: _Attrs,
    cache: dict[tuple[object, ...], _Attrs],
    points: _Points,
) -> None:
    # The hot loop with 1,000 partitions: locals instead of repeated lookups.
    fields = _PRODUCER_PARTITION_FIELDS if is_producer else _CONSUMER_PARTITION_FIELDS
    outs = [(field, points[metric]) for field, metric in fields]
    for partition_id, partition in partitions.items():
        # "-1" is the internal queue of messages not yet assigned a partition.
        if partition_id == "-1" or type(partition) is not dict:
            continue
        # A consumer keeps the last values of partitions it lost in a rebalance;
        # only the current owner (desired) reports them.
        if not is_producer and partition.get("desired") is False:
            continue
        key = ("partition", topic_name, partition_id)
        attrs = cache.get(key)
        if attrs is None:
            attrs = dict(topic_attrs)
            attrs[MESSAGING_DESTINATION_PARTITION_ID] = str(partition_id)
            cache[key] = attrs
        for field, out in outs:
            value = partition.get(field)
            if type(value) is int and value >= 0:
                out.append(Observation(value, attrs))


# -- stats_cb factories -------------------------------------------------------


class _CallbackBase:
    __slots__ = ("_bridge", "_closed", "_group_id", "_names", "_user_cb")

    def __init__(
        self,
        bridge: StatisticsBridge,
        user_cb: Callable[[str], object] | None,
        group_id: str | None,
    ) -> None:
        self._bridge = bridge
        self._user_cb = user_cb
        self._group_id = group_id
        self._names: set[str] = set()
        self._closed = False

    @property
    def user_cb(self) -> Callable[[str], object] | None:
        """The application's own ``stats_cb``, for wrappers that need to hand it back."""
        return self._user_cb

    @property
    def client_names(self) -> frozenset[str]:
        """Statistics ``name``s seen so far: what ``forget`` will drop."""
        return frozenset(self._names)

    def forget(self) -> None:
        """Stop reporting the client(s) this callback fed; call it when the client closes.

        Python cannot ask librdkafka for a handle's ``name``, so the callback
        remembers the names it saw, and ignores statistics that arrive afterwards.
        """
        self._closed = True
        for name in list(self._names):
            self._bridge.forget(name)

    def _feed(self, stats_json: str) -> None:
        try:
            if self._closed:
                return
            name = self._bridge._record(stats_json, self._group_id)
            if name is not None and name not in self._names:
                self._names.add(name)
        except Exception as exc:  # pragma: no cover - _record already guards itself
            report("kafka statistics (stats_cb)", exc)


class StatsCallback(_CallbackBase):
    """A ``stats_cb`` that feeds the bridge, then calls the application's callback."""

    __slots__ = ()

    def __call__(self, stats_json: str) -> object:
        self._feed(stats_json)
        if self._user_cb is None:
            return None
        return self._user_cb(stats_json)


def make_stats_cb(
    bridge: StatisticsBridge,
    user_cb: Callable[[str], object] | None,
    *,
    group_id: str | None = None,
) -> StatsCallback:
    """Build the ``stats_cb`` to put in a client's configuration.

    The application's callback receives the identical string, its return value is
    passed back and its exceptions propagate unchanged (librdkafka then raises them
    out of ``poll()``, as it would without instrumentation).
    """
    return StatsCallback(bridge, user_cb, group_id)
