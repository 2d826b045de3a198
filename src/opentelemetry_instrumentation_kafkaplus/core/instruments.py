"""Metric instruments: the messaging conventions' metrics, message age, data loss.

Instruments are created once per ``instrument()`` call. Attribute sets are
low-cardinality by design (system, operation, topic, group, server, error
type; partition only when the user opts in) and are built once per client and
topic, so recording costs a dict lookup and the SDK's own work.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeter, Observation
from opentelemetry.semconv._incubating.metrics import messaging_metrics as _mm

#: Advised buckets from the conventions: the SDK's defaults fit milliseconds,
#: these metrics are in seconds.
DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
#: Message age spans sub-second hops to hours of backlog.
AGE_BUCKETS = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400,
]  # fmt: skip

CLIENT_OPERATION_DURATION = _mm.MESSAGING_CLIENT_OPERATION_DURATION
PROCESS_DURATION = _mm.MESSAGING_PROCESS_DURATION
SENT_MESSAGES = _mm.MESSAGING_CLIENT_SENT_MESSAGES
CONSUMED_MESSAGES = _mm.MESSAGING_CLIENT_CONSUMED_MESSAGES
MESSAGE_AGE = "kafkaplus.message.age"
MESSAGE_ORIGIN_AGE = "kafkaplus.message.origin_age"
SKIPPED_MESSAGES = "kafkaplus.consumer.skipped.messages"
UNDELIVERED_MESSAGES = "kafkaplus.producer.undelivered.messages"
OFFSET_RESETS = "kafkaplus.consumer.offset.resets"


def _histogram(meter: Meter, name: str, description: str, buckets: list[float]) -> Any:
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # API older than the bucket advisory
        return meter.create_histogram(name, unit="s", description=description)


class Tally:
    """A per-message counter summed here and reported when metrics are collected.

    A synchronous SDK counter costs several microseconds per ``add()`` (it
    validates and hashes the attributes every time); these counts change on
    every message, so they are kept here per attribute set and handed to an
    ObservableCounter (a cumulative, monotonic sum, the same data an exporter
    sees from a Counter). The operations pass the same attribute dict for
    every message of a topic, so a count is found by that dict's identity
    first; adding one is a C-level ``next()``, atomic without a lock.
    """

    __slots__ = ("_by_id", "_counts", "_lock")

    def __init__(self, meter: Meter, name: str, unit: str, description: str) -> None:
        #: attribute items -> the count of that attribute set.
        self._counts: dict[tuple[Any, ...], _Count] = {}
        #: id(a dict passed to add()) -> (that dict, kept so the id stays its own; its count).
        self._by_id: dict[int, tuple[dict[str, Any], _Count]] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            name, callbacks=[self._observe], unit=unit, description=description
        )

    def add(self, amount: int, attributes: dict[str, Any]) -> None:
        known = self._by_id.get(id(attributes))
        if known is not None and known[0] is attributes:
            count = known[1]
        else:
            count = self._count(attributes)
        if amount == 1:
            next(count.ones)
        else:
            with self._lock:
                count.more += amount

    def _count(self, attributes: dict[str, Any]) -> _Count:
        key = tuple(attributes.items())
        with self._lock:
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = _Count(dict(attributes))
            if len(self._by_id) < _MAX_BY_ID:  # dicts made per call: only the first few
                self._by_id[id(attributes)] = (attributes, count)
        return count

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(c.value(), c.attrs) for c in self._counts.values()]


#: Attribute dicts a Tally finds by identity (the templates of the topics in use).
_MAX_BY_ID = 256


class _Count:
    """One attribute set's count: ones added by ``next()``, anything else under the lock."""

    __slots__ = ("attrs", "more", "ones", "reads")

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.ones = itertools.count()
        self.more = 0
        #: How many times value() took a number from ``ones`` (each read takes one).
        self.reads = 0

    def value(self) -> int:
        """The sum so far (called under the Tally's lock)."""
        taken = next(self.ones)
        ones = taken - self.reads
        self.reads += 1
        return ones + self.more


#: The per-message metric sets of the ``metrics`` option.
METRIC_SETS = ("semconv", "all", "counts", "none")


class Metrics:
    """The instruments of one ``instrument()`` call, for the chosen metric set.

    ``semconv`` (the default): the four metrics of the messaging conventions.
    ``all``: also the message-age histograms, which cost an SDK
    ``Histogram.record`` per message each. ``counts``: the message counters
    only (sent and consumed, counted in-process), without the duration
    histograms: each of those costs an SDK ``Histogram.record`` per message,
    and the API offers no cheaper way to feed a histogram. ``none``: no
    per-message metric.
    The data-loss counters (undelivered, skipped, offset resets) are recorded
    in every set: they count failures, not messages. ``enabled`` is False when
    no MeterProvider records.
    """

    __slots__ = (
        "ages",
        "consumed",
        "durations",
        "enabled",
        "message_age",
        "offset_resets",
        "operation_duration",
        "origin_age",
        "per_message",
        "process_duration",
        "sent",
        "skipped",
        "undelivered",
    )

    def __init__(self, meter: Meter, metric_set: str = "semconv") -> None:
        self.enabled = not _is_noop(meter)
        self.per_message = metric_set != "none"
        #: The duration histograms (send, receive and process): not in ``counts``.
        self.durations = metric_set in ("semconv", "all")
        self.ages = metric_set == "all"
        self.operation_duration: Any = None
        self.process_duration: Any = None
        self.sent: Any = None
        self.consumed: Any = None
        self.message_age: Any = None
        self.origin_age: Any = None
        if self.durations:
            self.operation_duration = _histogram(
                meter,
                CLIENT_OPERATION_DURATION,
                "Duration of a messaging operation: send (produce() to delivery report) "
                "or receive.",
                DURATION_BUCKETS,
            )
            self.process_duration = _histogram(
                meter, PROCESS_DURATION, "Duration of processing a message.", DURATION_BUCKETS
            )
        if self.per_message:
            self.sent = Tally(
                meter, SENT_MESSAGES, "{message}", "Messages the producer attempted to send."
            )
            self.consumed = Tally(
                meter, CONSUMED_MESSAGES, "{message}", "Messages delivered to the application."
            )
        if self.ages:
            self.message_age = _histogram(
                meter,
                MESSAGE_AGE,
                "Age of a message when handed to the application (now - message timestamp).",
                AGE_BUCKETS,
            )
            self.origin_age = _histogram(
                meter,
                MESSAGE_ORIGIN_AGE,
                "Age of a message since the first producer of the pipeline created it.",
                AGE_BUCKETS,
            )
        self.skipped = meter.create_counter(
            SKIPPED_MESSAGES,
            unit="{message}",
            description="Offsets skipped within a partition that the consumer never received.",
        )
        self.undelivered = meter.create_counter(
            UNDELIVERED_MESSAGES,
            unit="{message}",
            description="Messages the producer failed to deliver, by error.type.",
        )
        self.offset_resets = meter.create_counter(
            OFFSET_RESETS,
            unit="{reset}",
            description="Automatic offset resets librdkafka reported (auto.offset.reset=error).",
        )


def _is_noop(meter: Meter) -> bool:
    # The proxy meter resolves to the real one once a provider is set; a proxy
    # created before that reports as enabled so no later provider is missed.
    return isinstance(meter, NoOpMeter)
