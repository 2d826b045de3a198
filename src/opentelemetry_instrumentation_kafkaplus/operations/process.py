"""process and receive: the consumer's spans, from the message handed to the app to its handling.

poll() (one message)
  Span        ``process {topic}``, kind CONSUMER, operation type ``process``.
  Starts      when poll() returns a message (none for an empty poll or an error event).
  Ends        at the consumer's next poll()/consume()/close(): the app's handling.
  Parent      ``parent`` mode (default): the producer's context from the headers, or
              a new root when there is none; the ambient span, if any, is a link.
              ``link`` mode: the ambient context, with a link to the producer.
  Context     made current in the calling thread or task (with the message's
              baggage and origin time) until that next call.
  Attributes  system, operation, destination, consumer group, client id, server,
              partition, offset, key, tombstone, body size (opt-in), message age
              and origin age, captured headers; an offset gap is an event.

consume(n) (a batch)
  Spans       ``poll {topic}`` (CLIENT, operation type ``receive``) covering the call,
              and ``process {topic}`` (CONSUMER) current while the app handles the
              batch; the topic is left out of the names when the batch mixes topics.
  Links       both link to every message's creation context (batches take links,
              never a parent), each link carrying its partition and offset.
  Attributes  as above for what the batch shares, plus messaging.batch.message_count.

Metrics       messaging.client.consumed.messages and the message ages (per message,
              as handed to the app), messaging.process.duration (when the process
              span ends), messaging.client.operation.duration for the consume() call;
              kafka.consumer.skipped_messages and kafka.consumer.offset_resets (loss.py).

Current-span bookkeeping lives in the context itself: the context made current
remembers the one it replaced, and the next call restores it only if ours is
still current in the calling thread or task. So polling from several threads or
tasks never detaches a token of another context (no "Failed to detach context"),
and nothing leaks into unrelated work.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, TraceFlags

from ..core import semconv as sc
from ..core.errors import report
from ..core.propagation import MESSAGE_KEY, ORIGIN_KEY, read_headers
from ..core.sdkaccess import BAGGAGE_KEY, SPAN_KEY, SUPPRESS_KEY
from ..core.telemetry import ACTIVE, Telemetry, end_span
from . import loss
from .settle import CommitResults

_CONSUMER = SpanKind.CONSUMER
_CLIENT = SpanKind.CLIENT
_time_ns = time.time_ns
_get_current = otel_context.get_current
_ROOT = Context()
_TS_NOT_AVAILABLE = 0
_SAMPLED = TraceFlags.SAMPLED
_NOOP_SPAN = trace.INVALID_SPAN


class ConsumerState:
    """Per consumer: fixed attributes, topic templates, open process spans."""

    __slots__ = (
        "aio", "base_attrs", "commits", "gaps", "group", "open", "stats", "tel", "topics",
    )  # fmt: skip

    def __init__(self, conf: Mapping[str, Any] | None) -> None:
        conf = conf or {}
        self.base_attrs = sc.client_attributes(conf, consumer=True)
        self.group = self.base_attrs.get(sc.MESSAGING_CONSUMER_GROUP_NAME)
        self.commits = CommitResults()
        self.topics: dict[str | None, ProcessTopic] = {}
        self.open: deque[Open] = deque()
        self.tel: Telemetry | None = None
        #: Owned by a confluent_kafka.aio.AIOConsumer, which traces in the coroutine.
        self.aio = False
        #: The statistics callback installed in its configuration, if any.
        self.stats: Any = None
        self.gaps = loss.GapTracker(conf.get("isolation.level"))

    def topic(self, topic: str | None, tel: Telemetry) -> ProcessTopic:
        """The topic's template for this instrumentation (rebuilt when re-instrumented)."""
        if self.tel is not tel:
            self.topics = {}
            self.tel = tel
        info = self.topics.get(topic)
        if info is None:
            info = self.topics[topic] = ProcessTopic(self, topic, tel)
        return info


class ProcessTopic:
    """Per consumer and topic (None: a batch of several topics): names and templates."""

    __slots__ = (
        "excluded", "metric_attrs", "poll_attrs", "poll_name", "process_attrs",
        "process_name", "receive_metric_attrs", "topic",
    )  # fmt: skip

    def __init__(self, state: ConsumerState, topic: str | None, tel: Telemetry) -> None:
        opts = tel.options
        self.topic = topic or ""
        self.excluded = topic is not None and opts.topic_excluded(topic)
        suffix = f" {topic}" if topic else ""
        self.process_name = "process" + suffix
        self.poll_name = "poll" + suffix
        dup = opts.semconv_dup
        self.process_attrs = sc.operation_attributes(
            state.base_attrs, operation_name=sc.OP_PROCESS, operation_type=sc.OP_PROCESS,
            topic=topic, legacy_operation="process" if topic else None, dup=dup,
        )  # fmt: skip
        self.poll_attrs = sc.operation_attributes(
            state.base_attrs, operation_name="poll", operation_type=sc.OP_RECEIVE,
            topic=topic, legacy_operation="receive" if topic else None, dup=dup,
        )  # fmt: skip
        self.metric_attrs = sc.metric_attributes(self.process_attrs)
        self.receive_metric_attrs = sc.metric_attributes(self.poll_attrs)


class Open:
    """A process span (or only its metrics) awaiting the consumer's next call."""

    __slots__ = ("ctx", "metric_attrs", "prev", "span", "start_ns")

    def __init__(self, span: Any, prev: Context | None, start_ns: int, metric_attrs: Any) -> None:
        self.span = span
        self.ctx: Context | None = None
        self.prev = prev
        self.start_ns = start_ns
        self.metric_attrs = metric_attrs


def end_open(state: ConsumerState) -> None:
    """End every open process span of this consumer; restore our own context.

    Only the calling thread's or task's context can be restored: one we
    attached carries its ``Open`` record, found here even when another
    thread's poll has already ended that span. The loop takes at most the
    records present when it starts, so it ends whatever else polls meanwhile.
    """
    current = _get_current()
    own: Any = current.get(MESSAGE_KEY)
    if type(own) is Open and own.ctx is current and own.prev is not None:
        otel_context.attach(own.prev)
        # The record and its context point at each other; without this the
        # pair (and the span it holds) would wait for the cyclic collector.
        own.ctx = None
    pending = state.open
    for _ in range(len(pending)):
        try:
            item = pending.popleft()
        except IndexError:  # another thread's poll took it meanwhile
            return
        end_ns = _time_ns()
        try:
            if item.span is not None:
                item.span.end(end_time=end_ns)
            tel = ACTIVE.telemetry
            if item.metric_attrs is not None and tel is not None and tel.metrics.per_message:
                tel.metrics.process_duration.record(
                    (end_ns - item.start_ns) / 1e9, item.metric_attrs
                )
        except Exception as exc:
            report("process span end", exc)


def process_one(tel: Telemetry, state: ConsumerState, msg: Any) -> None:
    """Start the process span of one polled message and make it current.

    The hot path of every consumer: C getters are called once, and a message
    whose producer did not sample it (when the sampler would drop its child
    anyway) gets no span, only its context made current.
    """
    ambient = _get_current()
    if ambient.get(SUPPRESS_KEY):
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
    ts = _timestamp(msg)
    headers = msg.headers()
    ext, producer_sc, origin = read_headers(headers)
    ages = _ages(now, ts, origin)
    attrs: Any = None
    if metering:
        attrs = _record_consumed(tel, info, partition, skipped, ages)
    if not tracing:
        state.open.append(Open(_NOOP_SPAN, None, now, attrs))
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
        span = ext.get(SPAN_KEY)  # type: ignore[union-attr]
        ended = None
    else:
        parent, links = _parentage(ambient, ext, producer_sc, parent_mode)
        span = ended = _start_process_span(
            tel, state, info, msg, parent, links, now, partition, offset, skipped, ages, headers
        )
    # One new context: the ambient one plus our span, the message's baggage and
    # its origin time (so a producer called while processing forwards it; on
    # the first hop, this message's own creation is the origin).
    values = dict(ambient)
    values[SPAN_KEY] = span
    if ext is not None:
        bag: Any = ext.get(BAGGAGE_KEY)
        if bag:
            outer: Any = ambient.get(BAGGAGE_KEY)
            values[BAGGAGE_KEY] = {**outer, **bag} if outer else bag
    if origin is not None or ts is not None:
        values[ORIGIN_KEY] = origin if origin is not None else ts
    item = Open(ended, ambient, now, attrs)
    values[MESSAGE_KEY] = item
    item.ctx = ctx = Context(values)
    otel_context.attach(ctx)
    if ended is not None or attrs is not None:
        # Otherwise nothing to end: the context alone is restored, through
        # the record it carries, by this thread's next call.
        state.open.append(item)


def _timestamp(msg: Any) -> int | None:
    """The message's timestamp in ms since the epoch, when it has one."""
    ts_type, ts = msg.timestamp()
    if ts_type == _TS_NOT_AVAILABLE or ts <= 0:
        return None
    return int(ts)


def _ages(now: int, ts: int | None, origin: int | None) -> tuple[float | None, float | None]:
    """Seconds since the message was created, and since its pipeline's origin."""
    now_ms = now / 1e6
    age = max((now_ms - ts) / 1e3, 0.0) if ts is not None else None
    origin_age = max((now_ms - origin) / 1e3, 0.0) if origin is not None else None
    return age, origin_age


def _record_consumed(
    tel: Telemetry,
    info: ProcessTopic,
    partition: int,
    skipped: int,
    ages: tuple[float | None, float | None],
) -> dict[str, Any]:
    """The metrics of one message handed to the app; returns their attributes."""
    metrics = tel.metrics
    attrs = info.metric_attrs
    if tel.options.metrics_partition:
        attrs = sc.with_partition(attrs, partition)
    if skipped:
        loss.count_skipped(tel, attrs, partition, skipped)
    if metrics.per_message:
        metrics.consumed.add(1, attrs)
    if metrics.ages:
        age, origin_age = ages
        if age is not None:
            metrics.message_age.record(age, attrs)
        if origin_age is not None:
            metrics.origin_age.record(origin_age, attrs)
    return attrs


def _parentage(
    ambient: Context, ext: Context | None, producer_sc: Any, parent_mode: bool
) -> tuple[Context, list[Link]]:
    """(parent, links) of one message's process span, by context mode."""
    ambient_span: Any = ambient.get(SPAN_KEY)
    ambient_sc = ambient_span.get_span_context() if ambient_span is not None else None
    links = []
    if not parent_mode:
        if producer_sc is not None:
            links.append(Link(producer_sc))
        return ambient, links
    if producer_sc is not None:
        parent = ext
        links.append(Link(producer_sc))
    else:
        parent = _ROOT
    if ambient_sc is not None and ambient_sc.is_valid:
        links.append(Link(ambient_sc))
    return parent or _ROOT, links


def _start_process_span(
    tel: Telemetry,
    state: ConsumerState,
    info: ProcessTopic,
    msg: Any,
    parent: Context,
    links: list[Link],
    now: int,
    partition: int,
    offset: int,
    skipped: int,
    ages: tuple[float | None, float | None],
    headers: Any,
) -> Any:
    opts = tel.options
    attrs = info.process_attrs.copy()
    sc.position_attributes(
        attrs, topic=info.topic, partition=partition, offset=offset, dup=opts.semconv_dup
    )
    sc.message_attributes(
        attrs, value=msg.value(), key=msg.key(), capture_key=opts.capture_key,
        capture_body=opts.capture_body_size,
    )  # fmt: skip
    age, origin_age = ages
    if age is not None:
        attrs[sc.KAFKAPLUS_MESSAGE_AGE] = age
    if origin_age is not None:
        attrs[sc.KAFKAPLUS_MESSAGE_ORIGIN_AGE] = origin_age
    if opts.header_attributes and headers:
        sc.header_attributes(attrs, headers, opts.header_attributes)
    span = tel.tracer.start_span(
        info.process_name, context=parent, kind=_CONSUMER, attributes=attrs,
        links=links, start_time=now,
    )  # fmt: skip
    if span.is_recording():
        if skipped:
            span.add_event(loss.GAP_EVENT, state.gaps.event_attributes(skipped, offset))
        if opts.consume_hook is not None:
            try:
                opts.consume_hook(span, msg)
            except Exception as exc:
                report("consume_hook", exc)
    return span


def error_event(tel: Telemetry, state: ConsumerState, msg: Any) -> None:
    """An error event from poll()/consume(): count offset resets (loss.py)."""
    try:
        if not tel.metering() or not loss.is_offset_reset(msg.error()):
            return
        topic = msg.topic()
        if not isinstance(topic, str):
            return
        info = state.topic(topic, tel)
        if not info.excluded:
            loss.offset_reset(tel, info.metric_attrs, msg.partition())
    except Exception as exc:
        report("offset reset", exc)


def process_batch(tel: Telemetry, state: ConsumerState, msgs: list[Any], start: int) -> None:
    """The spans and metrics of a ``consume()`` batch (see the module docstring)."""
    tracing = tel.tracing()
    metering = tel.metering()
    if not tracing and not metering:
        return
    now = _time_ns()
    good = []
    for msg in msgs:
        if msg.error() is None:
            if not state.topic(msg.topic(), tel).excluded:
                good.append(msg)
        else:
            error_event(tel, state, msg)
    if not good:
        return
    topics = {m.topic() for m in good}
    batch_topic = topics.pop() if len(topics) == 1 else None
    batch = state.topic(batch_topic, tel)
    gaps = []
    links = []
    for msg in good:
        info = state.topic(msg.topic(), tel)
        partition = msg.partition()
        offset = msg.offset()
        skipped = state.gaps.observe(info.topic, partition, offset) if offset >= 0 else 0
        if skipped:
            gaps.append((msg, skipped))
        _, producer_sc, origin = read_headers(msg.headers())
        if metering:
            _record_consumed(tel, info, partition, skipped, _ages(now, _timestamp(msg), origin))
        if tracing and producer_sc is not None:
            link_attrs = sc.link_attributes(
                topic=None if batch_topic is not None else msg.topic(),
                partition=partition, offset=offset,
            )  # fmt: skip
            links.append(Link(producer_sc, link_attrs))
    if metering and tel.metrics.per_message:
        tel.metrics.operation_duration.record((now - start) / 1e9, batch.receive_metric_attrs)
    if not tracing:
        state.open.append(Open(_NOOP_SPAN, None, now, batch.metric_attrs))
        return
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
            span.add_event(loss.GAP_EVENT, event)
        if opts.consume_hook is not None:
            for msg in good:
                try:
                    opts.consume_hook(span, msg)
                except Exception as exc:
                    report("consume_hook", exc)
    item = Open(span, ambient, now, batch.metric_attrs if metering else None)
    item.ctx = ctx = Context({**ambient, SPAN_KEY: span, MESSAGE_KEY: item})
    otel_context.attach(ctx)
    state.open.append(item)


def drop_open(state: ConsumerState) -> None:
    """The consumer was dropped without close(): its open spans still end.

    The context they were current in cannot be restored from here (the
    garbage collector may run in any thread).
    """
    for item in list(state.open):
        if item.span is not None:
            end_span(item.span)
    state.open.clear()
