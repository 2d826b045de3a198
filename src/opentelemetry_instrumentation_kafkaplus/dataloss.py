"""Data loss made visible: offsets a consumer never received, messages never delivered.

Consumer side: per partition, the next offset this consumer expects is the
last one it received + 1. A message further ahead means the offsets between
were skipped: deleted by retention before they were read, jumped over by an
offset reset, or (not loss) compacted away, used by transaction markers, or
aborted transactional messages filtered under ``read_committed``. The count is
``kafka.consumer.skipped_messages`` and an event on the process span.
Tracking restarts for a partition whenever its position is changed on purpose
(assign, seek, rebalance) or goes backwards. An ``_AUTO_OFFSET_RESET`` error
event (``auto.offset.reset=error``) is counted in ``kafka.consumer.offset_resets``.

Producer side: every failed delivery is counted in
``kafka.producer.undelivered_messages`` with its ``error.type``. Each
producer keeps a registry of the messages whose delivery report has not been
served yet (one dict entry per message, removed by the report). At
interpreter exit, those still pending are counted with ``error.type``
``_EXIT_UNFLUSHED`` and their spans end with ERROR status; a producer
garbage-collected with messages pending (librdkafka then drops them without
a report) gets the same treatment with ``_DESTROY``. Nothing is flushed or
polled on the application's behalf. See docs/data-loss.md.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

from confluent_kafka import KafkaError
from opentelemetry.trace import Status, StatusCode

from . import semconv as sc
from ._errors import report
from .telemetry import ACTIVE, Telemetry

#: Span event added to the process span of the first message after a gap.
GAP_EVENT = "kafka.offset_gap"
#: On the gap event: the consumer's ``isolation.level`` (what a gap may hide).
ISOLATION_LEVEL = "messaging.kafka.isolation_level"
#: librdkafka's default ``isolation.level``.
DEFAULT_ISOLATION = "read_committed"

#: ``error.type`` of messages still awaiting their delivery report at exit.
EXIT_UNFLUSHED = "_EXIT_UNFLUSHED"
#: ``error.type`` of messages pending when their producer was garbage-collected
#: (librdkafka's own name for "handle destroyed").
DESTROYED = "_DESTROY"
#: At most this many pending messages are tracked per producer. librdkafka
#: bounds them first (``queue.buffering.max.messages``, 100000 by default).
PENDING_LIMIT = 1 << 20
#: Marks a registry entry already counted as lost; a late report for it then
#: only reaches the application's callback.
ACCOUNTED: Any = object()

_AUTO_OFFSET_RESET = KafkaError._AUTO_OFFSET_RESET
_DESCRIPTIONS = {
    EXIT_UNFLUSHED: "process exited before the delivery report was served (no flush())",
    DESTROYED: "producer was garbage-collected before the delivery report was served",
}


class GapTracker:
    """Next expected offset per (topic, partition) for one consumer."""

    __slots__ = ("_lock", "_next", "isolation")

    def __init__(self, isolation_level: Any = None) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        level = str(isolation_level or DEFAULT_ISOLATION).strip().lower()
        self.isolation = level if level in ("read_committed", "read_uncommitted") else "other"

    def observe(self, topic: str, partition: int, offset: int) -> int:
        """Offsets skipped before this message (0 when none or unknown)."""
        key = (topic, partition)
        expected = self._next.get(key)
        self._next[key] = offset + 1
        if expected is None or offset <= expected:
            return 0
        return offset - expected

    def forget(self, partitions: Any = None) -> None:
        """Stop tracking these TopicPartitions (all when None)."""
        with self._lock:
            if partitions is None:
                self._next.clear()
                return
            for tp in partitions:
                try:
                    self._next.pop((tp.topic, tp.partition), None)
                except AttributeError:
                    continue

    def event_attributes(self, skipped: int, offset: int) -> dict[str, Any]:
        """Attributes of the ``kafka.offset_gap`` event."""
        return {
            sc.KAFKAPLUS_SKIPPED_MESSAGES: skipped,
            sc.KAFKAPLUS_EXPECTED_OFFSET: offset - skipped,
            sc.MESSAGING_KAFKA_OFFSET: offset,
            ISOLATION_LEVEL: self.isolation,
        }


def partition_attributes(attrs: dict[str, Any], partition: Any) -> dict[str, Any]:
    """``attrs`` with the partition id, as the loss metrics always carry it."""
    if sc.MESSAGING_DESTINATION_PARTITION_ID in attrs or partition is None or partition < 0:
        return attrs
    return {**attrs, sc.MESSAGING_DESTINATION_PARTITION_ID: str(partition)}


def consumer_error(tel: Telemetry, state: Any, msg: Any) -> None:
    """An error event from poll()/consume(): count offset resets.

    librdkafka reports an automatic offset reset as an event only when
    ``auto.offset.reset=error`` (code ``_AUTO_OFFSET_RESET``, with the topic,
    partition and the offset it could not fetch). The app sees the event
    unchanged.
    """
    try:
        err = msg.error()
        if err is None or err.code() != _AUTO_OFFSET_RESET or not tel.metering():
            return
        topic = msg.topic()
        if not isinstance(topic, str):
            return
        info = state.topic(topic, tel)
        if info.excluded:
            return
        tel.metrics.offset_resets.add(1, partition_attributes(info.metric_attrs, msg.partition()))
    except Exception as exc:
        report("offset reset", exc)


# --- producer: messages whose delivery report was never served ---------------

_lock = threading.Lock()
#: id(ProducerState) -> (weak reference to it, its pending registry).
_producers: dict[int, tuple[Any, dict[int, Any]]] = {}
#: Registries of producers that died with messages pending, counted soon after
#: (never from inside the garbage collector, which may run while an SDK lock
#: is held).
_orphaned: list[dict[int, Any]] = []
_exited = False


def track_producer(state: Any) -> dict[int, Any]:
    """A new pending registry for ``state``, watched until exit.

    Also moves the exit handler after every atexit registration made so far
    (atexit runs last-registered first), so it runs before the shutdown of
    tracer and meter providers created before this producer.
    """
    pending: dict[int, Any] = {}
    key = id(state)

    def gone(_ref: Any) -> None:
        _producers.pop(key, None)
        if pending and not _exited:
            _orphaned.append(pending)

    with _lock:
        _producers[key] = (weakref.ref(state, gone), pending)
    try:
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)
    except Exception as exc:  # pragma: no cover - atexit never fails in CPython
        report("exit accounting", exc)
    if _orphaned:
        account_orphaned()
    return pending


def account_orphaned() -> int:
    """Count the messages of producers garbage-collected with reports pending."""
    total = 0
    while _orphaned:
        try:
            pending = _orphaned.pop()
        except IndexError:
            break
        total += account(pending, DESTROYED)
    return total


def account(pending: dict[int, Any], error_type: str) -> int:
    """Count every still-pending message as undelivered; end its span with ERROR."""
    tel = ACTIVE.telemetry
    counts: dict[int, list[Any]] = {}
    total = 0
    for key, entry in list(pending.items()):
        if entry is ACCOUNTED:
            continue
        pending[key] = ACCOUNTED
        info, span = entry.info, entry.span
        total += 1
        if span is not None:
            _fail_span(span, error_type)
        slot = counts.get(id(info))
        if slot is None:
            counts[id(info)] = [info, 1]
        else:
            slot[1] += 1
    if tel is not None and counts:
        try:
            if tel.metering():
                m = tel.metrics
                for info, n in counts.values():
                    attrs = {**info.metric_attrs, sc.ERROR_TYPE: error_type}
                    m.undelivered.add(n, attrs)
                    m.sent.add(n, attrs)
        except Exception as exc:
            report("exit accounting", exc)
    return total


def _fail_span(span: Any, error_type: str) -> None:
    try:
        if span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, _DESCRIPTIONS.get(error_type, error_type)))
            span.end()
    except Exception as exc:
        report("exit accounting", exc)


def pending_count() -> int:
    """Messages awaiting a delivery report in all live instrumented producers."""
    with _lock:
        registries = [pending for _ref, pending in _producers.values()]
    return sum(1 for p in registries for e in list(p.values()) if e is not ACCOUNTED)


def _at_exit() -> None:
    """Runs once at interpreter exit: never flushes, polls or blocks on I/O."""
    global _exited
    if _exited:
        return
    _exited = True
    try:
        account_orphaned()
        with _lock:
            registries = [pending for _ref, pending in _producers.values()]
        for pending in registries:
            if pending:
                account(pending, EXIT_UNFLUSHED)
    except Exception as exc:
        report("exit accounting", exc)
