"""loss: data loss made visible: offsets a consumer never received, messages never delivered.

No span of its own. It ends send spans whose delivery report never came and
counts what was lost.

Consumer side   per partition, the next offset this consumer expects is the last
                one it received + 1. A message further ahead means the offsets
                between were skipped: deleted by retention before they were read,
                jumped over by an offset reset, or (not loss) compacted away, used
                by transaction markers, or aborted transactional messages filtered
                under ``read_committed``. Tracking restarts for a partition whenever
                its position changes on purpose (assign, seek, rebalance) or goes
                backwards. An ``_AUTO_OFFSET_RESET`` error event
                (``auto.offset.reset=error``) is counted too.
Producer side   each producer keeps a ledger: per topic, how many messages were
                handed to librdkafka and how many reports came back (two atomic
                counters, no per-message entry), plus the send spans still waiting
                for their report. At interpreter exit, what is still in flight is
                counted with ``error.type=_EXIT_UNFLUSHED`` and those spans end with
                ERROR; a producer garbage-collected with messages in flight
                (librdkafka drops them without a report) gets ``_DESTROY``. Nothing
                is flushed or polled on the application's behalf.
Metrics         kafkaplus.consumer.skipped.messages (+ a ``kafkaplus.offset_gap`` event on the
                process span), kafkaplus.consumer.offset.resets,
                kafkaplus.producer.undelivered.messages (and messaging.client.sent.messages
                for the messages lost at exit). See docs/data-loss.md.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from typing import Any

from ..core import semconv as sc
from ..core.errors import report
from ..core.telemetry import ACTIVE, Telemetry, fail_span

#: Span event added to the process span of the first message after a gap.
GAP_EVENT = "kafkaplus.offset_gap"
ISOLATION_LEVEL = sc.KAFKAPLUS_ISOLATION_LEVEL
#: librdkafka's default ``isolation.level``.
DEFAULT_ISOLATION = "read_committed"

#: ``error.type`` of messages still awaiting their delivery report at exit.
EXIT_UNFLUSHED = "_EXIT_UNFLUSHED"
#: ``error.type`` of messages in flight when their producer was garbage-collected
#: (librdkafka's own name for "handle destroyed").
DESTROYED = "_DESTROY"
#: At most this many send spans wait for their report per producer. librdkafka
#: bounds them first (``queue.buffering.max.messages``, 100000 by default).
PENDING_LIMIT = 1 << 20
#: librdkafka's code for an automatic offset reset reported as an error event.
AUTO_OFFSET_RESET = "_AUTO_OFFSET_RESET"

_DESCRIPTIONS = {
    EXIT_UNFLUSHED: "process exited before the delivery report was served (no flush())",
    DESTROYED: "producer was garbage-collected before the delivery report was served",
}


# --- consumer: offsets never received ------------------------------------------------


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
                except (AttributeError, TypeError):
                    continue

    def event_attributes(self, skipped: int, offset: int) -> dict[str, Any]:
        """Attributes of the ``kafkaplus.offset_gap`` event."""
        return {
            sc.KAFKAPLUS_SKIPPED_MESSAGES: skipped,
            sc.KAFKAPLUS_EXPECTED_OFFSET: offset - skipped,
            sc.MESSAGING_KAFKA_OFFSET: offset,
            ISOLATION_LEVEL: self.isolation,
        }


def count_skipped(tel: Telemetry, metric_attrs: dict[str, Any], partition: int, n: int) -> None:
    """``n`` offsets of this partition were never received."""
    tel.metrics.skipped.add(n, sc.with_partition(metric_attrs, partition))


def offset_reset(tel: Telemetry, metric_attrs: dict[str, Any], partition: Any) -> None:
    """An error event from poll()/consume() told of an automatic offset reset.

    librdkafka reports one as an event only when ``auto.offset.reset=error``
    (code ``_AUTO_OFFSET_RESET``, with the topic, partition and the offset it
    could not fetch). The app sees the event unchanged.
    """
    tel.metrics.offset_resets.add(1, sc.with_partition(metric_attrs, partition))


def is_offset_reset(err: Any) -> bool:
    try:
        return bool(err.name() == AUTO_OFFSET_RESET)
    except Exception:
        return False


# --- producer: messages never delivered ----------------------------------------------


class InFlight:
    """One topic's messages handed to librdkafka and not reported yet, for one producer.

    Two ``itertools.count`` objects: ``next()`` on them is atomic, so threads
    producing at once never lose an increment, and nothing is stored per message.
    """

    __slots__ = ("metric_attrs", "produced", "reported")

    def __init__(self, metric_attrs: dict[str, Any]) -> None:
        self.metric_attrs = metric_attrs
        self.produced = itertools.count()
        self.reported = itertools.count()

    def count(self) -> int:
        # Reading a count means advancing it: both advance, the difference stays.
        return next(self.produced) - next(self.reported)


class Ledger:
    """What a producer has in flight: counts per topic and the send spans awaiting a report."""

    __slots__ = ("closed", "spans", "topics")

    def __init__(self) -> None:
        self.topics: dict[str, InFlight] = {}
        #: id(delivery callback) -> the callback, for send spans held to the report.
        self.spans: dict[int, Any] = {}
        #: Set once what was in flight has been counted as lost: a report that
        #: still arrives then reaches only the application's callback.
        self.closed = False

    def topic(self, topic: str, metric_attrs: dict[str, Any]) -> InFlight:
        entry = self.topics.get(topic)
        if entry is None:
            entry = self.topics[topic] = InFlight(metric_attrs)
        else:
            entry.metric_attrs = metric_attrs  # re-instrumented: the current attributes
        return entry

    def hold(self, key: int, delivery: Any) -> None:
        """Keep a send span until its report (bounded; librdkafka bounds it first)."""
        if len(self.spans) < PENDING_LIMIT:
            self.spans[key] = delivery

    def account(self, error_type: str) -> int:
        """Count everything in flight as undelivered; end the held spans with ERROR."""
        if self.closed:
            return 0
        self.closed = True
        for delivery in list(self.spans.values()):
            description = _DESCRIPTIONS.get(error_type, error_type)
            fail_span(delivery.span, None, etype=error_type, description=description)
        self.spans.clear()
        total = 0
        tel = ACTIVE.telemetry
        for inflight in list(self.topics.values()):
            n = inflight.count()
            if n <= 0:
                continue
            total += n
            if tel is not None and tel.metering():
                try:
                    attrs = {**inflight.metric_attrs, sc.ERROR_TYPE: error_type}
                    metrics = tel.metrics
                    metrics.undelivered.add(n, attrs)
                    if metrics.per_message:
                        metrics.sent.add(n, attrs)
                except Exception as exc:
                    report("exit accounting", exc)
        return total


_lock = threading.Lock()
#: id(producer state) -> (a weak reference to it, its ledger), for every live producer.
_ledgers: dict[int, tuple[Any, Ledger]] = {}
#: Ledgers of producers that died with messages in flight, counted soon after
#: (never from inside the garbage collector, which may run while an SDK lock
#: is held).
_orphaned: list[Ledger] = []
_exited = False


def track_producer(state: Any) -> Ledger:
    """A new ledger for ``state``, watched until exit.

    Also moves the exit handler after every atexit registration made so far
    (atexit runs last-registered first), so it runs before the shutdown of
    tracer and meter providers created before this producer.
    """
    ledger = Ledger()
    key = id(state)

    def gone(_ref: Any) -> None:
        # Called by the garbage collector, which can run at any allocation,
        # including one made while this thread holds _lock (the registration
        # below): taking the lock here would deadlock. A dict pop is atomic.
        _ledgers.pop(key, None)
        if not _exited and not ledger.closed:
            _orphaned.append(ledger)

    with _lock:
        _ledgers[key] = (weakref.ref(state, gone), ledger)
    try:
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)
    except Exception as exc:  # pragma: no cover - atexit never fails in CPython
        report("exit accounting", exc)
    if _orphaned:
        account_orphaned()
    return ledger


def account_orphaned() -> int:
    """Count the messages of producers garbage-collected with reports pending."""
    total = 0
    while _orphaned:
        try:
            ledger = _orphaned.pop()
        except IndexError:
            break
        total += ledger.account(DESTROYED)
    return total


def _at_exit() -> None:
    """Runs once at interpreter exit: never flushes, polls or blocks on I/O."""
    global _exited
    if _exited:
        return
    _exited = True
    try:
        account_orphaned()
        with _lock:
            # list() copies in C, so a collection meanwhile cannot change it under us.
            ledgers = [ledger for _ref, ledger in list(_ledgers.values())]
        for ledger in ledgers:
            ledger.account(EXIT_UNFLUSHED)
    except Exception as exc:
        report("exit accounting", exc)
