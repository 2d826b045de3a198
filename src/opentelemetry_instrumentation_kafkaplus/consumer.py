"""Consumer tracing: ``process {topic}`` spans for poll(), ``poll {topic}`` for consume().

poll() returning a message starts a CONSUMER span ``process {topic}`` whose
parent is the producer's context from the headers (``consumer_context_mode=
parent``, the default; with a link to it too) or the ambient context with a
link (``link``). The span is made current for the app's handling of the
message and ends at the consumer's next poll()/consume()/close().

consume(n) returning messages makes two spans: ``poll {topic}`` (CLIENT,
operation type ``receive``) covering the call, and ``process {topic}``
(CONSUMER) current while the app handles the batch; both link to every
message's creation context (the conventions' rule for batches: links, never a
parent) and carry ``messaging.batch.message_count``.

Current-span bookkeeping lives in the context itself: the context we attach
remembers the one it replaced, and at the next poll we restore it only if ours
is still current in the calling thread or task. So polling from several
threads or asyncio tasks never tries to detach a token from another context
(no "Failed to detach context"), and nothing leaks into unrelated work.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import cimpl
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceFlags

from . import clientconfig
from . import semconv as sc
from ._errors import report
from .dataloss import GAP_EVENT, GapTracker, consumer_error
from .propagation import ORIGIN_KEY, read_headers
from .telemetry import (
    _BAGGAGE_KEY,
    _SPAN_KEY,
    _SUPPRESS_KEY,
    ACTIVE,
    Telemetry,
    end_span,
    no_sdk,
    suppressed,
)

_CConsumer = cimpl.Consumer
_orig_poll = cimpl.Consumer.poll
_orig_consume = cimpl.Consumer.consume
_orig_close = cimpl.Consumer.close

_CONSUMER = SpanKind.CONSUMER
_CLIENT = SpanKind.CLIENT
_time_ns = time.time_ns
_get_current = otel_context.get_current
_ROOT = Context()
#: Marks a context attached by a consumer: its value is the _Open record.
_OPEN_KEY = otel_context.create_key("kafkaplus-open-process-span")
_TS_NOT_AVAILABLE = 0
_SAMPLED = TraceFlags.SAMPLED


class _Topic:
    __slots__ = (
        "excluded",
        "metric_attrs",
        "poll_attrs",
        "poll_name",
        "process_attrs",
        "process_name",
        "topic",
    )

    def __init__(self, state: ConsumerState, topic: str | None, tel: Telemetry) -> None:
        opts = tel.options
        self.topic = topic or ""
        self.excluded = topic is not None and opts.topic_excluded(topic)
        suffix = f" {topic}" if topic else ""
        self.process_name = "process" + suffix
        self.poll_name = "poll" + suffix
        attrs = dict(state.base_attrs)
        if topic is not None:
            attrs[sc.MESSAGING_DESTINATION_NAME] = topic
        process = dict(attrs)
        process[sc.MESSAGING_OPERATION_NAME] = sc.OP_PROCESS
        process[sc.MESSAGING_OPERATION_TYPE] = sc.OP_PROCESS
        poll = dict(attrs)
        poll[sc.MESSAGING_OPERATION_NAME] = "poll"
        poll[sc.MESSAGING_OPERATION_TYPE] = sc.OP_RECEIVE
        if opts.semconv_dup and topic is not None:
            for d in (process, poll):
                d[sc.LEGACY_DESTINATION] = topic
                d[sc.LEGACY_DESTINATION_KIND] = "queue"
            process[sc.LEGACY_OPERATION] = "process"
            poll[sc.LEGACY_OPERATION] = "receive"
        self.process_attrs = process
        self.poll_attrs = poll
        self.metric_attrs = {k: process[k] for k in sc.METRIC_KEYS if k in process}


class _Open:
    """A process span awaiting the consumer's next call."""

    __slots__ = ("ctx", "metric_attrs", "prev", "span", "start_ns")

    def __init__(
        self, span: Any, ctx: Context | None, prev: Context | None, start_ns: int, metric_attrs: Any
    ) -> None:
        self.span = span
        self.ctx = ctx
        self.prev = prev
        self.start_ns = start_ns
        self.metric_attrs = metric_attrs


class ConsumerState:
    """Per consumer: fixed attributes, topic templates, open process spans."""

    __slots__ = (
        "aio", "base_attrs", "commit_results", "gaps", "group", "open", "pending_commits",
        "tel", "topics",
    )  # fmt: skip

    def __init__(self, conf: Mapping[str, Any] | None) -> None:
        conf = conf or {}
        self.base_attrs = sc.client_attributes(conf, consumer=True)
        self.group = self.base_attrs.get(sc.MESSAGING_CONSUMER_GROUP_NAME)
        self.pending_commits: deque[Any] = deque()
        # Set when on_commit reports to us: async commit spans then end with
        # their result instead of when commit() returns.
        self.commit_results = False
        self.topics: dict[str | None, _Topic] = {}
        self.open: deque[_Open] = deque()
        self.tel: Telemetry | None = None
        # Owned by a confluent_kafka.aio.AIOConsumer, which traces in the coroutine.
        self.aio = False
        self.gaps = GapTracker(conf.get("isolation.level"))

    def topic(self, topic: str | None, tel: Telemetry) -> _Topic:
        if self.tel is not tel:
            self.topics = {}
            self.tel = tel
        info = self.topics.get(topic)
        if info is None:
            info = self.topics[topic] = _Topic(self, topic, tel)
        return info


def end_open(state: ConsumerState) -> None:
    """End every open process span of this consumer; restore our own context.

    Only the calling thread's or task's context can be restored: one we
    attached carries its ``_Open`` record, found here even when another
    thread's poll has already ended that span.
    """
    current = _get_current()
    own: Any = current.get(_OPEN_KEY)
    if own is not None and own.ctx is current and own.prev is not None:
        otel_context.attach(own.prev)
        # The record and its context point at each other; without this the
        # pair (and the span it holds) would wait for the cyclic collector.
        own.ctx = None
    pending = state.open
    while pending:  # checked first: no IndexError raised on every poll
        try:
            item = pending.popleft()
        except IndexError:  # another thread's poll took it meanwhile
            return
        end_ns = _time_ns()
        try:
            if item.span is not None:
                item.span.end(end_time=end_ns)
            tel = ACTIVE.telemetry
            if item.metric_attrs is not None and tel is not None:
                tel.metrics.process_duration.record(
                    (end_ns - item.start_ns) / 1e9, item.metric_attrs
                )
        except Exception as exc:
            report("process span end", exc)


def poll(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_poll,
) -> Any:
    """Traced ``Consumer.poll``; the same arguments, results and errors."""
    end_open(state)
    tel = ACTIVE.telemetry
    if tel is None or state.aio:
        return orig(client, *args, **kwargs)
    msg = orig(client, *args, **kwargs)
    if msg is None:
        return msg
    try:
        if msg.error() is None:
            _process_one(tel, state, msg)
        else:
            consumer_error(tel, state, msg)
    except Exception as exc:
        report("consumer instrumentation", exc)
    return msg


def _process_one(tel: Telemetry, state: ConsumerState, msg: Any) -> None:
    """Start the process span of one message and make it current.

    The hot path of every consumer: C getters are called once, and a message
    whose producer did not sample it (when the sampler would drop its child
    anyway) gets no span, only its context made current.
    """
    ambient = _get_current()
    if ambient.get(_SUPPRESS_KEY):
        return
    topic = msg.topic()
    info = state.topics.get(topic) if state.tel is tel else None
    if info is None:
        info = state.topic(topic, tel)
    if info.excluded:
        return
    tracing = tel.tracing()
    metering = tel.metering()
    if not tracing and not metering:
        return
    now = _time_ns()
    partition = msg.partition()
    offset = msg.offset()
    skipped = state.gaps.observe(info.topic, partition, offset) if offset >= 0 else 0
    ts_type, ts = msg.timestamp()
    if ts_type == _TS_NOT_AVAILABLE or ts <= 0:
        ts = None
    headers = msg.headers()
    ext, producer_sc, origin = read_headers(headers)
    attrs: Any = None
    ages = None
    if metering:
        ages = _ages(now, ts, origin)
        attrs = _record_consumed(tel, info, partition, skipped, ages)
    if not tracing:
        state.open.append(_Open(_NOOP_SPAN, None, None, now, attrs))
        return
    parent_mode = tel.options.consumer_context_mode == "parent"
    if (
        parent_mode
        and producer_sc is not None
        and not producer_sc.trace_flags & _SAMPLED
        and tel.drops_unsampled_remote()
    ):
        # The sampler follows the producer's "not sampled": skip building a
        # span the SDK would drop, and keep the producer's context current so
        # it keeps travelling downstream (nothing to end at the next poll).
        span = ext.get(_SPAN_KEY)  # type: ignore[union-attr]
        ended = None
    else:
        span = ended = _start_process_span(
            tel, state, info, msg, ambient, ext, producer_sc, parent_mode, now,
            partition, offset, skipped, ages if ages is not None else _ages(now, ts, origin),
            headers,
        )  # fmt: skip
    # One new context: the ambient one plus our span, the message's baggage and
    # its origin time (so a producer called while processing forwards it; on
    # the first hop, this message's own creation is the origin).
    values = dict(ambient)
    values[_SPAN_KEY] = span
    if ext is not None:
        bag: Any = ext.get(_BAGGAGE_KEY)
        if bag:
            outer: Any = ambient.get(_BAGGAGE_KEY)
            values[_BAGGAGE_KEY] = {**outer, **bag} if outer else bag
    if origin is not None or ts is not None:
        values[ORIGIN_KEY] = origin if origin is not None else ts
    item = _Open(ended, None, ambient, now, attrs)
    values[_OPEN_KEY] = item
    item.ctx = ctx = Context(values)
    otel_context.attach(ctx)
    if ended is not None or attrs is not None:
        # Otherwise nothing to end: the context alone is restored, through
        # the record it carries, by this thread's next call.
        state.open.append(item)


def _ages(now: int, ts: int | None, origin: int | None) -> tuple[float | None, float | None]:
    """Seconds since the message was created, and since its pipeline's origin."""
    now_ms = now / 1e6
    age = max((now_ms - ts) / 1e3, 0.0) if ts is not None else None
    origin_age = max((now_ms - origin) / 1e3, 0.0) if origin is not None else None
    return age, origin_age


def _record_consumed(
    tel: Telemetry,
    info: _Topic,
    partition: int,
    skipped: int,
    ages: tuple[float | None, float | None],
) -> dict[str, Any]:
    """The per-message consumer metrics; returns their attributes."""
    m = tel.metrics
    attrs = info.metric_attrs
    if tel.options.metrics_partition:
        attrs = {**attrs, sc.MESSAGING_DESTINATION_PARTITION_ID: str(partition)}
    m.consumed.add(1, attrs)
    if skipped:
        m.skipped.add(skipped, _with_partition(attrs, partition))
    age, origin_age = ages
    if age is not None:
        m.message_age.record(age, attrs)
    if origin_age is not None:
        m.origin_age.record(origin_age, attrs)
    return attrs


def _start_process_span(
    tel: Telemetry,
    state: ConsumerState,
    info: _Topic,
    msg: Any,
    ambient: Context,
    ext: Context | None,
    producer_sc: Any,
    parent_mode: bool,
    now: int,
    partition: int,
    offset: int,
    skipped: int,
    ages: tuple[float | None, float | None],
    headers: Any,
) -> Any:
    """The ``process`` span of one message: parent and links by context mode."""
    ambient_span: Any = ambient.get(_SPAN_KEY)
    ambient_sc = ambient_span.get_span_context() if ambient_span is not None else None
    links = []
    if parent_mode:
        if producer_sc is not None:
            parent = ext
            links.append(Link(producer_sc))
        else:
            parent = _ROOT
        if ambient_sc is not None and ambient_sc.is_valid:
            links.append(Link(ambient_sc))
    else:
        parent = ambient
        if producer_sc is not None:
            links.append(Link(producer_sc))
    opts = tel.options
    span_attrs = info.process_attrs.copy()
    _message_attributes(span_attrs, msg, tel, partition, offset)
    age, origin_age = ages
    if age is not None:
        span_attrs[sc.KAFKAPLUS_MESSAGE_AGE] = age
    if origin_age is not None:
        span_attrs[sc.KAFKAPLUS_MESSAGE_ORIGIN_AGE] = origin_age
    if opts.header_attributes and headers:
        sc.header_attributes(span_attrs, headers, opts.header_attributes)
    span = tel.tracer.start_span(
        info.process_name, context=parent, kind=_CONSUMER, attributes=span_attrs,
        links=links, start_time=now,
    )  # fmt: skip
    if span.is_recording():
        if skipped:
            span.add_event(GAP_EVENT, state.gaps.event_attributes(skipped, offset))
        if opts.consume_hook is not None:
            try:
                opts.consume_hook(span, msg)
            except Exception as exc:
                report("consume_hook", exc)
    return span


def _with_partition(attrs: dict[str, Any], partition: int) -> dict[str, Any]:
    if sc.MESSAGING_DESTINATION_PARTITION_ID in attrs:
        return attrs
    return {**attrs, sc.MESSAGING_DESTINATION_PARTITION_ID: str(partition)}


def _message_attributes(
    attrs: dict[str, Any], msg: Any, tel: Telemetry, partition: Any, offset: Any
) -> None:
    if partition is not None and partition >= 0:
        attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
        if tel.options.semconv_dup:
            attrs[sc.LEGACY_PARTITION] = partition
    if offset is not None and offset >= 0:
        attrs[sc.MESSAGING_KAFKA_OFFSET] = offset
        if tel.options.semconv_dup:
            attrs[sc.LEGACY_MESSAGE_ID] = f"{msg.topic()}.{partition}.{offset}"
    value = msg.value()
    if value is None:
        attrs[sc.MESSAGING_KAFKA_MESSAGE_TOMBSTONE] = True
    elif isinstance(value, (bytes, str)):  # a DeserializingConsumer hands out objects
        attrs[sc.MESSAGING_MESSAGE_BODY_SIZE] = len(value)
    if tel.options.capture_key:
        key = sc.key_string(msg.key())
        if key is not None:
            attrs[sc.MESSAGING_KAFKA_MESSAGE_KEY] = key


def consume(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_consume,
) -> Any:
    """Traced ``Consumer.consume``; the same arguments, results and errors."""
    end_open(state)
    tel = ACTIVE.telemetry
    if tel is None or state.aio:
        return orig(client, *args, **kwargs)
    start = _time_ns()
    msgs = orig(client, *args, **kwargs)
    if not msgs:
        return msgs
    try:
        if not suppressed():
            _process_batch(tel, state, msgs, start)
    except Exception as exc:
        report("consumer instrumentation", exc)
    return msgs


def _process_batch(tel: Telemetry, state: ConsumerState, msgs: list[Any], start: int) -> None:
    tracing = tel.tracing()
    metering = tel.metering()
    if not tracing and not metering:
        return
    now = _time_ns()
    good = []
    topics = set()
    for msg in msgs:
        if msg.error() is None:
            info = state.topic(msg.topic(), tel)
            if not info.excluded:
                good.append(msg)
                topics.add(msg.topic())
        else:
            consumer_error(tel, state, msg)
    if not good:
        return
    batch_topic = topics.pop() if len(topics) == 1 else None
    batch = state.topic(batch_topic, tel)
    gaps = []
    for msg in good:
        offset = msg.offset()
        skipped = state.gaps.observe(msg.topic(), msg.partition(), offset) if offset >= 0 else 0
        if skipped:
            gaps.append((msg, skipped))
    if metering:
        m = tel.metrics
        for msg, skipped in gaps:
            attrs = state.topic(msg.topic(), tel).metric_attrs
            m.skipped.add(skipped, _with_partition(attrs, msg.partition()))
        for msg in good:
            info = state.topic(msg.topic(), tel)
            m.consumed.add(1, info.metric_attrs)
            ts_type, ts = msg.timestamp()
            if ts_type != _TS_NOT_AVAILABLE and ts > 0:
                age = _ages(now, ts, None)[0]
                m.message_age.record(age, info.metric_attrs)
        receive_attrs = {
            **batch.metric_attrs,
            sc.MESSAGING_OPERATION_NAME: "poll",
            sc.MESSAGING_OPERATION_TYPE: sc.OP_RECEIVE,
        }
        m.operation_duration.record((now - start) / 1e9, receive_attrs)
    if not tracing:
        state.open.append(_Open(_NOOP_SPAN, None, None, now, batch.metric_attrs))
        return
    links = []
    for msg in good:
        headers = msg.headers()
        link_attrs: dict[str, Any] = {}
        partition = msg.partition()
        if partition is not None and partition >= 0:
            link_attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
        offset = msg.offset()
        if offset is not None and offset >= 0:
            link_attrs[sc.MESSAGING_KAFKA_OFFSET] = offset
        if batch_topic is None:
            link_attrs[sc.MESSAGING_DESTINATION_NAME] = msg.topic()
        producer_sc = read_headers(headers)[1]
        if producer_sc is not None:
            links.append(Link(producer_sc, link_attrs))
    count = len(good)
    poll_attrs = batch.poll_attrs.copy()
    poll_attrs[sc.MESSAGING_BATCH_MESSAGE_COUNT] = count
    process_attrs = batch.process_attrs.copy()
    process_attrs[sc.MESSAGING_BATCH_MESSAGE_COUNT] = count
    partitions = {m.partition() for m in good}
    if len(partitions) == 1:
        pid = str(partitions.pop())
        poll_attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = pid
        process_attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = pid
    tracer = tel.tracer
    receive = tracer.start_span(
        batch.poll_name, kind=_CLIENT, attributes=poll_attrs, links=links, start_time=start
    )
    end_span(receive, now)
    ambient = _get_current()
    span = tracer.start_span(
        batch.process_name, context=ambient, kind=_CONSUMER, attributes=process_attrs,
        links=links, start_time=now,
    )  # fmt: skip
    opts = tel.options
    if span.is_recording():
        for msg, skipped in gaps:
            event = state.gaps.event_attributes(skipped, msg.offset())
            event[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(msg.partition())
            span.add_event(GAP_EVENT, event)
    if opts.consume_hook is not None and span.is_recording():
        for msg in good:
            try:
                opts.consume_hook(span, msg)
            except Exception as exc:
                report("consume_hook", exc)
    item = _Open(span, None, ambient, now, batch.metric_attrs if metering else None)
    item.ctx = ctx = Context({**ambient, _SPAN_KEY: span, _OPEN_KEY: item})
    otel_context.attach(ctx)
    state.open.append(item)


_NOOP_SPAN = trace.INVALID_SPAN


def close(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_close,
) -> Any:
    """Traced ``Consumer.close``: open process spans end before the client closes."""
    end_open(state)
    return orig(client, *args, **kwargs)


_orig_commit = cimpl.Consumer.commit
_orig_store_offsets = cimpl.Consumer.store_offsets


def commit(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_commit,
) -> Any:
    """Traced ``Consumer.commit``: a ``commit {topic}`` settle span (CLIENT)."""
    return _settle(client, state, args, kwargs, orig)


def store_offsets(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_store_offsets,
) -> Any:
    """Traced ``Consumer.store_offsets``: a ``commit {topic}`` settle span (CLIENT).

    Storing is local; the commit that follows sends it. Both settle the
    message from the app's point of view, so both are settle spans.
    """
    return _settle(client, state, args, kwargs, orig, operation="store_offsets")


def _settle(
    client: Any,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any,
    operation: str = "commit",
) -> Any:
    tel = ACTIVE.telemetry
    if tel is None or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    try:
        span = _start_settle(tel, state, args, kwargs, operation)
    except Exception as exc:
        report("commit instrumentation", exc)
        return orig(client, *args, **kwargs)
    try:
        result = orig(client, *args, **kwargs)
    except BaseException as exc:
        _end_settle(span, exc, None)
        raise
    if operation == "commit" and state.commit_results and _asynchronous(args, kwargs):
        # Ended by on_commit with the broker's answer; bounded like librdkafka's
        # own queue of commit requests.
        pending = state.pending_commits
        if len(pending) >= _MAX_PENDING_COMMITS:
            end_span(pending.popleft())
        pending.append(span)
        return result
    _end_settle(span, None, result)
    return result


_MAX_PENDING_COMMITS = 1000


def _asynchronous(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.get("asynchronous", args[2] if len(args) > 2 else True))


def _then_app(ours: Callable[..., Any], what: str, user_cb: Any) -> Callable[..., Any]:
    """A callback that runs our bookkeeping (errors reported), then the app's own."""

    def callback(*args: Any) -> Any:
        try:
            ours(*args)
        except Exception as exc:
            report(what, exc)
        if user_cb is not None:
            return user_cb(*args)
        return None

    return callback


def commit_result_callback(state: ConsumerState, user_cb: Any) -> Any:
    """The ``on_commit`` kafkaplus installs: record the result, then call the app's."""
    return _then_app(
        lambda err, partitions: _commit_result(state, err, partitions), "commit result", user_cb
    )


def _commit_result(state: ConsumerState, err: Any, partitions: Any) -> None:
    """End the oldest pending async commit span, or record an automatic commit."""
    if state.pending_commits:
        span = state.pending_commits.popleft()
    else:
        tel = ACTIVE.telemetry
        if tel is None or suppressed() or not tel.tracing():
            return
        # enable.auto.commit: librdkafka settled on its own; a settle span
        # for it too (parent: whatever is current when poll() serves it).
        kwargs = {"offsets": list(partitions or []), "asynchronous": True}
        span = _start_settle(tel, state, (), kwargs, "commit")
        if span.is_recording():
            span.set_attribute(sc.KAFKAPLUS_COMMIT_AUTO, True)
    failed = err
    if failed is None:
        failed = next((tp.error for tp in partitions or [] if tp.error is not None), None)
    _end_settle(span, _KafkaFailure(failed) if failed is not None else None, None)


class _KafkaFailure(Exception):
    def __init__(self, err: Any) -> None:
        super().__init__(str(err))
        self.args = (err,)


def _start_settle(
    tel: Telemetry,
    state: ConsumerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    operation: str,
) -> Any:
    message = args[0] if args else kwargs.get("message")
    offsets = args[1] if len(args) > 1 else kwargs.get("offsets")
    entries: list[tuple[str, int, int]] = []  # topic, partition, offset committed
    if message is not None and hasattr(message, "topic"):
        entries.append((message.topic(), message.partition(), message.offset() + 1))
    elif offsets:
        # Partitions with nothing to commit come back as OFFSET_INVALID (-1001).
        entries.extend((tp.topic, tp.partition, tp.offset) for tp in offsets if tp.offset >= 0)
    topics = {e[0] for e in entries}
    topic = topics.pop() if len(topics) == 1 else None
    attrs = dict(state.base_attrs)
    attrs[sc.MESSAGING_OPERATION_NAME] = operation
    attrs[sc.MESSAGING_OPERATION_TYPE] = sc.OP_SETTLE
    if topic is not None:
        attrs[sc.MESSAGING_DESTINATION_NAME] = topic
    if len(entries) == 1:
        attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(entries[0][1])
        attrs[sc.MESSAGING_KAFKA_OFFSET] = entries[0][2]
    elif entries:
        attrs[sc.MESSAGING_BATCH_MESSAGE_COUNT] = len(entries)
        attrs[sc.KAFKAPLUS_COMMIT_OFFSETS] = [f"{t}/{p}@{o}" for t, p, o in entries]
    if operation == "commit":
        attrs[sc.KAFKAPLUS_COMMIT_ASYNC] = _asynchronous(args, kwargs)
    name = f"commit {topic}" if topic else "commit"
    return tel.tracer.start_span(name, kind=_CLIENT, attributes=attrs)


def _end_settle(span: Any, exc: BaseException | None, result: Any) -> None:
    try:
        if span.is_recording():
            failed = exc
            if failed is None and isinstance(result, list):
                errors = [tp.error for tp in result if getattr(tp, "error", None) is not None]
                if errors:
                    span.set_attribute(sc.ERROR_TYPE, sc.error_type(errors[0]))
                    span.set_status(Status(StatusCode.ERROR, str(errors[0])))
            if failed is not None:
                span.set_attribute(sc.ERROR_TYPE, sc.error_type(failed))
                span.record_exception(failed)
                span.set_status(Status(StatusCode.ERROR, str(failed)))
        span.end()
    except Exception as err:
        report("commit span", err)


def subscribe(client: Any, state: ConsumerState, args: tuple[Any, ...],
              kwargs: dict[str, Any], orig: Any = _CConsumer.subscribe) -> Any:  # fmt: skip
    """``subscribe`` with rebalance callbacks that restart offset-gap tracking.

    A partition that comes back after a rebalance resumes where another member
    left it: that jump is not loss. The app's own callbacks are called as given.
    """
    names = ("topics", "on_assign", "on_revoke", "on_lost")
    call = dict(zip(names, args, strict=False))
    if len(args) > len(names) or any(k in call or k not in names for k in kwargs):
        return orig(client, *args, **kwargs)
    call.update(kwargs)
    for name in names[1:]:
        call[name] = _rebalance_cb(state, call.get(name))
    return orig(client, **call)


def _rebalance_cb(state: ConsumerState, user_cb: Any) -> Any:
    if user_cb is not None and not callable(user_cb):
        return user_cb  # let confluent-kafka reject it
    return _then_app(
        lambda consumer, partitions: state.gaps.forget(partitions), "rebalance", user_cb
    )


def _repositioned(method: str, all_partitions: bool = False) -> Any:
    orig = getattr(_CConsumer, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = orig(self, *args, **kwargs)
        try:
            if all_partitions:
                self._kafkaplus.gaps.forget()
            else:
                target = args[0] if args else next(iter(kwargs.values()), None)
                self._kafkaplus.gaps.forget([target] if hasattr(target, "topic") else target)
        except Exception as exc:
            report("offset tracking", exc)
        return result

    wrapper.__name__ = method
    wrapper.__doc__ = orig.__doc__
    return wrapper


class Consumer(_CConsumer):
    """confluent_kafka.Consumer, traced. Substituted for the original class."""

    __slots__ = ("_kafkaplus", "_kafkaplus_stats")
    _kafkaplus: ConsumerState
    _kafkaplus_stats: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        clientconfig.init_client(
            self, _CConsumer.__init__, args, kwargs, producer=False, state_type=ConsumerState
        )

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        # With no SDK anywhere (so no span of ours is open or current), call
        # straight through: this check is all the instrumentation costs then.
        state = self._kafkaplus
        if no_sdk(ACTIVE.telemetry) and not state.open and _get_current().get(_OPEN_KEY) is None:
            return _orig_poll(self, *args, **kwargs)
        return poll(self, state, args, kwargs)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        return consume(self, self._kafkaplus, args, kwargs)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        return commit(self, self._kafkaplus, args, kwargs)

    def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        return subscribe(self, self._kafkaplus, args, kwargs)

    # Deliberate repositioning restarts offset-gap tracking for those partitions.
    assign = _repositioned("assign")
    incremental_assign = _repositioned("incremental_assign")
    seek = _repositioned("seek")
    unassign = _repositioned("unassign", all_partitions=True)

    def store_offsets(self, *args: Any, **kwargs: Any) -> Any:
        return store_offsets(self, self._kafkaplus, args, kwargs)

    def __del__(self) -> None:
        # Dropped without close(): its last process span still ends (the
        # context it was current in cannot be restored from here).
        try:
            state = self._kafkaplus
        except AttributeError:
            return
        for item in list(state.open):
            if item.span is not None:
                with contextlib.suppress(Exception):
                    item.span.end()
        state.open.clear()

    def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return close(self, self._kafkaplus, args, kwargs)
        finally:
            if self._kafkaplus_stats is not None:
                self._kafkaplus_stats.forget()
