"""settle: a CLIENT span per commit of consumed offsets.

Span        ``commit {topic}`` (``commit`` when the offsets span several topics), kind
            CLIENT, operation type ``settle``; operation name ``commit``,
            ``store_offsets`` or ``send_offsets_to_transaction``.
Starts      in ``Consumer.commit()``, ``Consumer.store_offsets()`` and
            ``Producer.send_offsets_to_transaction()``; and when librdkafka reports an
            automatic commit (``enable.auto.commit``) through ``on_commit``.
Ends        when the call returns or raises; an asynchronous ``commit()`` ends with
            the broker's answer, served to ``on_commit`` (kafkaplus installs one
            that calls the app's own), so its errors are on the span.
Parent      the current span: the message being processed (its process span).
Attributes  messaging.system, operation name/type, destination name, consumer group,
            client id, server; one partition: its id and the committed offset
            (the next offset to read); several: ``kafkaplus.commit.offsets``
            (``topic/partition@offset`` each); ``kafkaplus.commit.async``;
            ``kafkaplus.commit.auto`` on automatic commits. Failures:
            ``error.type`` (the first failed partition's error) and ERROR status.
Metrics     none (the conventions define no settle metric).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from opentelemetry.trace import SpanKind

from ..core import semconv as sc
from ..core.calls import Call
from ..core.errors import KafkaFailure, report
from ..core.telemetry import Telemetry, end_span, fail_span, suppressed

_CLIENT = SpanKind.CLIENT
#: Asynchronous commit spans waiting for their result; librdkafka bounds its own
#: queue of commit requests, this only guards against results that never come.
MAX_PENDING_COMMITS = 1000


class CommitResults:
    """A consumer's asynchronous commit spans waiting for their ``on_commit`` result.

    Results come in the order of the requests, but with ``enable.auto.commit``
    librdkafka's own commits report to the same ``on_commit``: an automatic
    result must not end the app's pending span. So with automatic commits on,
    a result ends the oldest pending commit that asked for exactly the offsets
    it reports; one whose offsets were not given (``commit()`` of the current
    positions, which is what an automatic commit sends too) matches any result
    no exact match claimed. A result no pending commit matches is an
    automatic commit.
    """

    __slots__ = ("auto", "enabled", "pending")

    def __init__(self, auto: bool = False) -> None:
        #: (span, the offsets it commits or None when not given), oldest first.
        self.pending: deque[tuple[Any, frozenset[tuple[str, int, int]] | None]] = deque()
        #: Set when kafkaplus receives this consumer's ``on_commit`` results.
        self.enabled = False
        #: ``enable.auto.commit``: results may be librdkafka's own commits.
        self.auto = auto

    def wait(self, span: Any, offsets: frozenset[tuple[str, int, int]] | None) -> None:
        pending = self.pending
        if len(pending) >= MAX_PENDING_COMMITS:
            end_span(pending.popleft()[0])
        pending.append((span, offsets))

    def take(self, partitions: Any) -> Any:
        """The pending span this result ends, or None (an automatic commit)."""
        pending = self.pending
        if not pending:
            return None
        if not self.auto:
            return pending.popleft()[0]
        reported = _offsets(partitions)
        unknown = None
        for i, (span, offsets) in enumerate(pending):
            if offsets == reported:
                del pending[i]
                return span
            if offsets is None and unknown is None:
                unknown = i
        if unknown is None:
            return None
        span = pending[unknown][0]
        del pending[unknown]
        return span


def _offsets(partitions: Any) -> frozenset[tuple[str, int, int]]:
    """The offsets an ``on_commit`` result reports (the ones with something committed)."""
    return frozenset(
        (tp.topic, tp.partition, tp.offset)
        for tp in partitions or []
        if isinstance(tp.offset, int) and tp.offset >= 0
    )


def settle(tel: Telemetry, base_attrs: dict[str, Any], call: Call, operation: str,
           results: CommitResults | None, client: Any, orig: Any) -> Any:  # fmt: skip
    """Commit, store offsets or send offsets to a transaction, inside a settle span."""
    named = call.named
    try:
        asynchronous = _asynchronous(named) if operation == "commit" else None
        entries = _entries(named, operation)
        span = _start(tel, base_attrs, entries, operation, asynchronous)
    except Exception as exc:
        report("commit instrumentation", exc)
        return call.original(client, orig)
    try:
        result = call.original(client, orig)
    except BaseException as exc:
        fail_span(span, exc)
        raise
    if asynchronous and results is not None and results.enabled:
        # ended by on_commit with the broker's answer
        given = named.get("message") is not None or named.get("offsets") is not None
        results.wait(span, frozenset(entries) if given else None)
        return result
    _end(span, None, result)
    return result


def commit_result(tel: Telemetry | None, results: CommitResults, base_attrs: dict[str, Any],
                  err: Any, partitions: Any) -> None:  # fmt: skip
    """``on_commit``: end the oldest asynchronous commit span, or record an automatic commit."""
    span = results.take(partitions)
    if span is None:
        if tel is None or suppressed() or not tel.tracing():
            return
        # enable.auto.commit: librdkafka settled on its own; a settle span for
        # it too (parent: whatever is current when poll() serves the result).
        offsets = list(partitions or [])
        span = _start(tel, base_attrs, _entries({"offsets": offsets}, "commit"), "commit", True)
        if span.is_recording():
            span.set_attributes(
                sc.with_previous_names({sc.KAFKAPLUS_COMMIT_AUTO: True})
                if tel.options.compat_names
                else {sc.KAFKAPLUS_COMMIT_AUTO: True}
            )
    failed = err
    if failed is None:
        failed = next((tp.error for tp in partitions or [] if tp.error is not None), None)
    _end(span, KafkaFailure(failed) if failed is not None else None, None)


def _asynchronous(named: dict[str, Any]) -> bool:
    return bool(named.get("asynchronous", True))


def _entries(named: dict[str, Any], operation: str) -> list[tuple[str, int, int]]:
    """(topic, partition, committed offset) of each position settled."""
    if operation == "send_offsets_to_transaction":
        positions = named.get("positions") or []
        return [(tp.topic, tp.partition, tp.offset) for tp in positions]
    message = named.get("message")
    if message is not None:
        offset = message.offset()
        if not isinstance(offset, int):  # a message with no offset settles nothing known
            return []
        return [(message.topic(), message.partition(), offset + 1)]
    # Partitions with nothing to commit come back as OFFSET_INVALID (-1001).
    return [
        (tp.topic, tp.partition, tp.offset)
        for tp in named.get("offsets") or []
        if isinstance(tp.offset, int) and tp.offset >= 0
    ]


def _start(tel: Telemetry, base_attrs: dict[str, Any], entries: list[tuple[str, int, int]],
           operation: str, asynchronous: bool | None) -> Any:  # fmt: skip
    name, attrs = sc.settle_attributes(
        base_attrs, operation=operation, entries=entries, asynchronous=asynchronous
    )
    if tel.options.compat_names:
        sc.with_previous_names(attrs)
    return tel.tracer.start_span(name, kind=_CLIENT, attributes=attrs)


def _end(span: Any, exc: BaseException | None, result: Any) -> None:
    """End with the call's outcome: its exception, or the first failed partition."""
    if exc is None and isinstance(result, list):
        errors = [tp.error for tp in result if getattr(tp, "error", None) is not None]
        if errors:
            fail_span(span, errors[0])
            return
    if exc is not None:
        fail_span(span, exc)
    else:
        end_span(span)
