"""process and receive: the consumer's spans, from a message handed to the app to its handling.

poll() (one message)
  Span        ``process {topic}``, kind CONSUMER, operation type ``process``.
  Parent      ``parent`` mode (default): the producer's context from the headers (a new
              root when there is none), with the ambient span, if any, as a link.
              ``link`` mode: the ambient context, with a link to the producer.
              No span processor (``Telemetry.spanless``): no span; the producer's
              context (``parent`` mode), else the ambient one, is what is current.
  Context     the message's context (the process span, the message's baggage, the
              pipeline's origin time) is made current in the polling thread or task.
  Lifetime    the span belongs to whoever handles the message, and covers that:
              * by default, the thread or task that polled: from poll() to the
                consumer's next poll()/consume()/close();
              * a task handed to a ``ThreadPoolExecutor`` (or ``run_in_executor``) while
                the message is current (clients/executors.py): the span also waits for
                that task, and starts when the task starts if the polling thread did
                nothing traced with the message;
              * ``processing(msg)`` (the public API, any thread or task): the span is
                exactly that block; once a consumer's messages are claimed this way,
                its unclaimed messages wait for their claim instead of ending at the
                next poll. A claim that comes after the span has ended continues the
                trace under it.
              * framework glue (FastStream) claims each message the same way.
              The span object is started when something first needs it (a child span,
              a read of its context, its end), so its start is the start of the
              handling that owns it.
  Attributes  system, operation, destination, consumer group, client id, server,
              partition, offset, key, tombstone, body size (opt-in), message age and
              origin age, captured headers; an offset gap is a span event.

consume(n) (a batch)
  Spans       ``poll {topic}`` (CLIENT, operation type ``receive``) covering the call,
              and ``process {topic}`` (CONSUMER) for the handling of the batch, ended at
              the consumer's next call; the topic is left out of the names when the
              batch mixes topics.
  Links       both link to every message's creation context (batches take links,
              never a parent), each link carrying its partition and offset.
  Claimed     ``processing(batch)`` with the list consume() returned (or a tuple of
              its messages; FastStream's batch subscribers through the framework
              glue): the batch's process span is exactly that block, its context
              current there, as for one message.
  Attributes  as above for what the batch shares, plus messaging.batch.message_count.

Metrics       messaging.client.consumed.messages and the message ages (per message,
              when handed to the app), messaging.process.duration (when the process
              span ends), messaging.client.operation.duration for the consume() call;
              kafkaplus.consumer.skipped.messages and kafkaplus.consumer.offset.resets (loss.py).

Contexts made current by a poll remember the one they replaced, and the
consumer's next call restores it only if ours is still current in the calling
thread or task: polling from several threads or tasks never detaches a token
of another context (no "Failed to detach context"), and nothing leaks into
unrelated work.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanKind,
    TraceFlags,
)

from ..core import sdkaccess
from ..core import semconv as sc
from ..core.errors import report
from ..core.propagation import MESSAGE_KEY, ORIGIN_KEY, read_headers
from ..core.sdkaccess import BAGGAGE_KEY, SPAN_KEY, SUPPRESS_KEY, span_fields
from ..core.telemetry import ACTIVE, CARRIER, Telemetry, end_span, mark_error
from . import loss
from .settle import CommitResults

_CONSUMER = SpanKind.CONSUMER
_CLIENT = SpanKind.CLIENT
_time_ns = time.time_ns
_get_current = sdkaccess.get_current
_attach = sdkaccess.attach
_ROOT = Context()
_TS_NOT_AVAILABLE = 0
_SAMPLED = TraceFlags.SAMPLED
_INVALID_SPAN = trace.INVALID_SPAN
#: Records may wait for a claim at most this many per consumer; beyond, the
#: oldest ends as if unclaimed (a consumer whose app claims only some messages).
MAX_WAITING = 10_000
#: Guards every change of a record's owner and the start of its span. Reentrant:
#: starting a span may read the context of another record (its parent).
_LOCK = threading.RLock()
_acquire = _LOCK.acquire
_release = _LOCK.release
#: id(message) -> the record of the message polled last with that identity.
_BY_MESSAGE: dict[int, Record] = {}
#: id(first message of a consume() batch) -> the batch's record, for a claim of
#: the batch (its messages alone keep their own claims, see ``_unpolled``).
_BATCHES: dict[int, Record] = {}
#: The last RECENT (to twice that) traced messages, by two keys: the producer
#: context that created the message (a worker that forwards its headers to
#: produce() continues under its process span) and, once its span ended, its
#: position (a claim that comes late continues under that span instead of making
#: a second one). Values: the live record, then what remains of it (``Trail``).
#: A plain dict (insertion-ordered), trimmed to the newest RECENT when it holds
#: twice that: an OrderedDict's per-message eviction cost more than the rest of
#: this bookkeeping.
_RECENT: dict[tuple[Any, ...], Any] = {}
RECENT = 4096
_RECENT_MAX = 2 * RECENT


class ConsumerState:
    """Per consumer: fixed attributes, topic templates, the records awaiting its next call."""

    __slots__ = (
        "aio", "base_attrs", "claims", "cluster_retry", "commits", "detached", "gaps", "group",
        "open", "stats", "tel", "telemetry", "topics", "waiting",
    )  # fmt: skip

    def __init__(self, conf: Mapping[str, Any] | None) -> None:
        conf = conf or {}
        self.base_attrs = sc.client_attributes(conf, consumer=True)
        self.group = self.base_attrs.get(sc.MESSAGING_CONSUMER_GROUP_NAME)
        auto = str(conf.get("enable.auto.commit", "true")).lower() not in ("false", "0")
        self.commits = CommitResults(auto)
        self.topics: dict[str | None, ProcessTopic] = {}
        #: Records whose polling owner is released by the consumer's next call.
        self.open: deque[Record] = deque()
        #: Unclaimed records released by their poll, waiting for a claim.
        self.waiting: deque[Record] = deque()
        self.tel: Telemetry | None = None
        #: Owned by a confluent_kafka.aio.AIOConsumer, which traces in the coroutine.
        self.aio = False
        #: Polled on behalf of code elsewhere (a framework, an awaiting task): a
        #: poll makes no context current in the polling thread.
        self.detached = False
        #: The app claims this consumer's messages (processing()): unclaimed
        #: records wait for their claim instead of ending at the next poll.
        self.claims = False
        #: The statistics callback installed in its configuration, if any.
        self.stats: Any = None
        #: Telemetry of its own (a client wrapped with its own providers), else None:
        #: the active instrumentation's.
        self.telemetry: Telemetry | None = None
        #: When to look for the cluster id again (clients/state.py); inf once known.
        self.cluster_retry = 0.0
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
        "process_name", "receive_duration_attrs", "receive_metric_attrs", "topic",
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
        self.receive_duration_attrs = sc.duration_attributes(self.poll_attrs)


class Record(Span):
    """The process span of one polled message (or one batch): owned, then ended.

    It stands in the context as the current span and starts the real one on
    first use, so a span that a later owner (a worker task, a ``processing``
    block) takes over before anything used it starts when that owner starts.
    Every ``Span`` method passes through to the real span.
    """

    __slots__ = (
        "attrs", "baggage", "begin_ns", "claimed", "ctx", "done", "first", "holds", "metric_attrs",
        "msg", "origin", "parent_ctx", "polled", "position", "prev", "producer_key", "span",
        "span_events", "span_links", "span_name", "state", "tel", "window_end",
    )  # fmt: skip

    def __init__(self, tel: Telemetry, state: ConsumerState, name: str, parent: Context | None,
                 links: list[Link] | None, attrs: dict[str, Any] | None, begin_ns: int,
                 metric_attrs: dict[str, Any] | None, msg: Any) -> None:  # fmt: skip
        self.tel = tel
        self.state = state
        # Named apart from the SDK span's own attributes (name, parent, links,
        # events), which reads through to the real span return.
        self.span_name = name
        self.parent_ctx = parent
        self.span_links = links
        #: Span attributes; None when the span is the producer's own (not sampled) or
        #: when nothing traces (metrics only).
        self.attrs = attrs
        self.begin_ns = begin_ns
        #: Attributes of its process duration; None when none is recorded (no
        #: meter, or a metric set without durations): nothing to record at its end.
        self.metric_attrs = metric_attrs
        self.msg = msg
        #: A consume() batch's first message: the key a claim of the batch finds it by.
        self.first: Any = None
        self.span_events: list[tuple[str, dict[str, Any]]] | None = None
        self.span: Any = None
        #: Owners still handling it: the poll (until the consumer's next call) and
        #: any task it was handed to.
        self.holds = 1
        self.polled = True
        self.claimed = False
        self.done = False
        #: The context a poll made current, and the one it replaced (for restoring).
        self.ctx: Context | None = None
        self.prev: Context | None = None
        #: What the message adds to a context besides its span: baggage, origin time.
        self.baggage: Any = None
        self.origin: int | None = None
        self.window_end = 0
        #: Its keys in RECENT, when known at its start (the message's position; the
        #: producer context that created it): its end need not look them up again.
        self.position: tuple[Any, ...] | None = None
        self.producer_key: tuple[Any, ...] | None = None

    # -- the real span, started when first needed -----------------------------------

    def real(self) -> Any:
        span = self.span
        if span is not None:
            return span
        with _LOCK:
            span = self.span
            if span is None:
                span = self.span = self._start()
        return span

    def _start(self) -> Any:
        if self.attrs is None:  # not sampled by the producer, or nothing traces
            current = self.parent_ctx.get(SPAN_KEY) if self.parent_ctx is not None else None
            return current if current is not None else _INVALID_SPAN
        tel = self.tel
        # By position, in the API's order (name, context, kind, attributes, links,
        # start_time): a call with keywords costs a few hundred instructions more.
        span = tel.tracer.start_span(
            self.span_name, self.parent_ctx, _CONSUMER, self.attrs, self.span_links, self.begin_ns
        )
        if span.is_recording():
            for name, attributes in self.span_events or ():
                span.add_event(name, attributes)
            hook = tel.options.consume_hook
            if hook is not None and self.msg is not None:
                try:
                    hook(span, self.msg)
                except Exception as exc:
                    report("consume_hook", exc)
        return span

    def get_span_context(self) -> Any:
        return self.real().get_span_context()

    def is_recording(self) -> bool:
        return bool(self.real().is_recording())

    def set_attribute(self, key: str, value: Any) -> None:
        self.real().set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        self.real().set_attributes(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.real().add_event(name, attributes, timestamp)

    def add_link(self, context: Any, attributes: Any = None) -> None:
        self.real().add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self.real().update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.real().set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:  # fmt: skip
        self.real().record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        """Ending it by hand ends the real span (kafkaplus then has nothing left to end)."""
        self.real().end(end_time)

    def __repr__(self) -> str:
        return f"<kafkaplus process record {self.span_name!r} done={self.done}>"


def _read_through(name: str) -> property:
    def read(self: Record) -> Any:
        return getattr(self.real(), name)

    return property(read, doc=f"The real span's ``{name}``.")


# What the SDK span offers beyond the API, read through to the real span. As
# properties, not a ``__getattr__``: a class with one has every attribute read
# of its instances take CPython's slow path, and the record's own fields are
# read dozens of times per message.
for _name in (
    "attributes", "context", "dropped_attributes", "dropped_events", "dropped_links",
    "end_time", "events", "instrumentation_info", "instrumentation_scope", "kind", "links",
    "name", "parent", "resource", "start_time", "status", "to_json",
):  # fmt: skip
    setattr(Record, _name, _read_through(_name))
del _name


# --- who ends a record --------------------------------------------------------------


def finish(record: Record, end_ns: int, error: BaseException | None = None, *,
           unless_claimed: bool = False) -> None:  # fmt: skip
    """End the record's span and record its process duration (once).

    ``unless_claimed``: leave it to the claim that took it meanwhile. A span
    nothing used yet starts here, with the time its record began, under the
    same lock that settles who ends it: one acquisition per message. A span
    that fails (a broken SDK) loses nothing else: the duration is recorded and
    the message let go all the same.
    """
    with _LOCK:
        if record.done or (unless_claimed and record.claimed):
            return
        span = _settle(record)
    _end(record, span, end_ns, error)


def _settle(record: Record) -> Any:
    """Mark the record done (the caller holds _LOCK); its span, started now if nothing has."""
    record.done = True
    if record.attrs is None:
        return None
    span = record.span
    if span is None:
        try:
            span = record.span = record._start()
        except Exception as exc:
            report("process span start", exc)
    return span


def _end(record: Record, span: Any, end_ns: int, error: BaseException | None) -> None:
    """What ``finish`` does once the record is settled: each part fails on its own."""
    msg = record.msg
    if span is not None:
        try:
            if error is not None:
                mark_error(span, error)
            span.end(end_ns)
            # Keep only what a late claim or a forwarded header needs: a trail,
            # whose span is made from this context if one of them needs it.
            ended = Trail(None, record.baggage, record.origin, record.state)
            ended.span_ctx = span.get_span_context()
            position = record.position
            if position is None and msg is not None:
                position = _position(msg)
            recent = _RECENT
            if position is not None:
                recent[position] = ended
            made_by = record.producer_key
            if made_by is not None and recent.get(made_by) is record:
                recent[made_by] = ended
            if len(recent) > _RECENT_MAX:
                _trim()
        except Exception as exc:
            report("process span end", exc)
    attrs = record.metric_attrs
    if attrs is not None:  # set only where a process duration is recorded
        try:
            if error is not None:
                attrs = {**attrs, sc.ERROR_TYPE: sc.error_type(error)}
            record.tel.metrics.process_duration.record((end_ns - record.begin_ns) / 1e9, attrs)
        except Exception as exc:
            report("process duration", exc)
    if msg is not None:
        key = id(msg)
        if _BY_MESSAGE.get(key) is record:
            _BY_MESSAGE.pop(key, None)
        record.msg = None  # the app's message is not kept alive by its telemetry
    if record.first is not None:
        _unregister_batch(record)


def release(record: Record, end_ns: int) -> None:
    """A task it was handed to is done with the record: the last owner ends it, unless claimed."""
    with _LOCK:
        record.holds -= 1
        if record.done or record.claimed or record.holds > 0:
            return
        span = _settle(record)  # not done: checked under this same lock
    _end(record, span, end_ns, None)


def end_open(state: ConsumerState) -> None:
    """The consumer's next call: its polls let go of their records; restore our context.

    A record's last owner ends it, unless a claim owns it. Once the app claims
    this consumer's messages (``processing``), a record nothing used (no child
    span, no read of its context) when its poll lets go waits for its claim
    instead; if none comes (at most MAX_WAITING wait, or the consumer closes)
    it ends with the time its poll let go.

    Only the calling thread's or task's context can be restored: a context we
    made current carries its record, found here even when another thread's
    poll has already released it. The loop takes at most the records present
    when it starts, so it ends whatever else polls meanwhile. The hot path of
    every poll: one lock acquisition for all of it, ``restore`` inlined.
    """
    current = _get_current()
    own: Any = current.get(MESSAGE_KEY)
    if own is not None and own.ctx is current and own.prev is not None:  # restore()
        _attach(own.prev)
        own.ctx = None
    pending = state.open
    if not pending:
        return
    end_ns = _time_ns()
    ending = []
    _acquire()  # not "with": the hot path, and a with-block costs more
    try:
        for _ in range(len(pending)):
            try:
                record = pending.popleft()
            except IndexError:  # another thread's poll took it meanwhile
                break
            if not record.polled:
                continue
            record.polled = False
            record.holds -= 1
            if record.done or record.claimed or record.holds > 0:
                continue
            ends_at = end_ns
            if state.claims and record.msg is not None and record.span is None:
                record.window_end = end_ns
                waiting = state.waiting
                while waiting and (waiting[0].claimed or waiting[0].done):
                    waiting.popleft()  # claimed since they came: their claims end them
                waiting.append(record)
                if len(waiting) <= MAX_WAITING:
                    continue
                record = waiting.popleft()
                ends_at = record.window_end
            ending.append((record, _settle(record), ends_at))
    finally:
        _release()
    for record, span, ends_at in ending:
        _end(record, span, ends_at, None)


def _end_waiting(state: ConsumerState, count: int) -> None:
    """End up to ``count`` records still waiting (a claim may have taken some meanwhile)."""
    waiting = state.waiting
    for _ in range(count):
        try:
            record = waiting.popleft()
        except IndexError:
            return
        finish(record, record.window_end, unless_claimed=True)


def restore(current: Context) -> None:
    """If ``current`` is a context a poll made current here, put back the one it replaced."""
    own: Any = current.get(MESSAGE_KEY)
    if own is not None and own.ctx is current and own.prev is not None:
        _attach(own.prev)
        # The record and its context point at each other; without this the
        # pair (and the span it holds) would wait for the cyclic collector.
        own.ctx = None


def drop_open(state: ConsumerState) -> None:
    """The consumer is gone without close(): end what it still owns or waits for."""
    end_ns = _time_ns()
    for queue in (state.open, state.waiting):
        while queue:
            try:
                record = queue.popleft()
            except IndexError:
                break
            finish(record, record.window_end or end_ns)


def close_waiting(state: ConsumerState) -> None:
    """The consumer closes: records still waiting for a claim end as polled."""
    _end_waiting(state, len(state.waiting))


# --- poll(): one message ---------------------------------------------------------------


def process_one(tel: Telemetry, state: ConsumerState, msg: Any, attach: bool = True,
                received_at: int = 0) -> Any:  # fmt: skip
    """The record of one polled message, made current (``attach``) for its handling.

    The hot path of every consumer: C getters are called once, and a message
    whose producer did not sample it (when the sampler would drop its child
    anyway) gets no span of its own, only its context carried on. Returns the
    record, or None when nothing is recorded for the message.
    """
    ambient = _get_current()
    if ambient.get(SUPPRESS_KEY):
        return None
    topic = msg.topic()
    info = state.topics.get(topic) if state.tel is tel else None
    if info is None:
        info = state.topic(topic, tel)
    if info.excluded:
        return None
    tracing = tel.tracing()
    metering = tel.metering()
    if not tracing and not metering:
        return None
    now = _time_ns()
    partition = msg.partition()
    offset = msg.offset()
    skipped = state.gaps.observe(info.topic, partition, offset) if offset >= 0 else 0
    ts_type, ts = msg.timestamp()  # _timestamp(), inlined
    ts = int(ts) if ts_type != _TS_NOT_AVAILABLE and ts > 0 else None
    headers = msg.headers()
    if tracing or tel.metrics.ages:
        ext, producer_sc, origin = read_headers(headers)
    else:  # metrics without ages: nothing here reads the headers
        ext = producer_sc = origin = None
    metric_attrs = (
        _record_consumed(tel, info, partition, skipped, now, ts, origin) if metering else None
    )
    if not tracing and metric_attrs is None:
        return None  # counted (loss counters, ages); no span, no duration to wait for
    if received_at:
        _receive(tel, info, ambient, producer_sc, (partition, offset), (received_at, now))
    attrs = None
    parent: Context | None = None
    links = None
    if tracing:
        parent_mode = tel.options.consumer_context_mode == "parent"
        spanless = tel.tracer is CARRIER  # tel.spanless(), inlined
        if (
            parent_mode
            and producer_sc is not None
            and (
                spanless
                or (not span_fields(producer_sc)[2] & _SAMPLED and tel.drops_unsampled_remote())
            )
        ):
            # The sampler follows the producer's "not sampled", or no span is
            # made at all: no span of our own, the producer's context carried on.
            parent = ext
            if metric_attrs is None:  # and nothing to end: no record at all
                trail = Trail(ext.get(SPAN_KEY), ext.get(BAGGAGE_KEY), origin or ts, state)  # type: ignore[union-attr]
                if attach and not state.detached:
                    make_current(trail, ambient)
                return trail
        elif spanless:  # no span, and no producer context to carry on (or link mode)
            if metric_attrs is None:
                return None  # the ambient context stays current
            parent = ambient  # and so while the record waits for its process duration
        else:
            parent, links = _parentage(ambient, ext, producer_sc, parent_mode)
            ages = _ages(now, ts, origin)
            attrs = _span_attributes(tel, info, msg, partition, offset, ages, headers)
    record = Record(tel, state, info.process_name, parent, links, attrs, now, metric_attrs, msg)
    if attrs is not None:  # a span of its own: remembered once it ends (_end)
        record.position = ("m", topic, partition, offset)
        if producer_sc is not None:
            trace_id, span_id, _, _, _ = span_fields(producer_sc)
            key = record.producer_key = ("p", trace_id, span_id)
            _remember(key, record)
    if skipped and attrs is not None:
        event = state.gaps.event_attributes(skipped, offset)
        if tel.options.compat_names:
            sc.with_previous_names(event)
        record.span_events = [(loss.GAP_EVENT, event)]
    if tracing:
        record.baggage = ext.get(BAGGAGE_KEY) if ext is not None else None
        record.origin = origin if origin is not None else ts
        if attach and not state.detached:
            make_current(record, ambient)
    _BY_MESSAGE[id(msg)] = record
    state.open.append(record)
    return record


def make_current(record: Record | Trail, current: Context | None = None) -> None:
    """Make the message's context current here, until the consumer's next call restores it."""
    if current is None:
        current = _get_current()
    record.prev = current
    record.ctx = ctx = message_context(current, record)
    _attach(ctx)


def message_context(base: Context, record: Record | Trail) -> Context:
    """``base`` plus the message: its record as the current span, its baggage, its origin.

    The origin (the pipeline's first creation time) lets a producer called
    while the message is handled carry it on; on the first hop the message's
    own timestamp is the origin.
    """
    values = dict(base)
    span = record if type(record) is Record else record.span
    if span is None:  # an ended record's trail: its span, made from the context kept
        span = record.span = NonRecordingSpan(record.span_ctx)  # type: ignore[union-attr]
    values[SPAN_KEY] = span
    values[MESSAGE_KEY] = record
    bag = record.baggage
    if bag:
        outer: Any = base.get(BAGGAGE_KEY)
        values[BAGGAGE_KEY] = {**outer, **bag} if outer else bag
    if record.origin is not None:
        values[ORIGIN_KEY] = record.origin
    return Context(values)


def _remember(key: tuple[Any, ...], value: Any) -> None:
    recent = _RECENT
    recent[key] = value
    if len(recent) > _RECENT_MAX:
        _trim()


def _trim() -> None:
    """Keep the newest RECENT entries of ``_RECENT``."""
    with _LOCK:
        # list() of a dict runs in C without releasing the GIL: a consistent
        # copy even while other threads insert.
        keys = list(_RECENT)
        for key in keys[: len(keys) - RECENT]:
            _RECENT.pop(key, None)


def created_by(producer_sc: Any) -> Any:
    """The record (or what remains of it) of a recent message this producer context created."""
    return _RECENT.get(("p", producer_sc.trace_id, producer_sc.span_id))


class Trail:
    """A message's context without a record: enough to continue its trace.

    What a message leaves when nothing of it is to be ended (its producer did
    not sample it and no metric waits for its end), and what remains of a
    record once its span ended (for a late claim, or forwarded headers).
    """

    __slots__ = ("baggage", "ctx", "origin", "prev", "span", "span_ctx", "state")

    def __init__(self, span: Any, baggage: Any, origin: int | None, state: ConsumerState) -> None:
        #: The span it continues; for an ended record, made from ``span_ctx`` when needed.
        self.span = span
        self.span_ctx: Any = None
        self.baggage = baggage
        self.origin = origin
        self.state = state
        self.ctx: Context | None = None
        self.prev: Context | None = None


def _position(msg: Any) -> tuple[Any, ...]:
    return ("m", msg.topic(), msg.partition(), msg.offset())


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
    now: int,
    ts: int | None,
    origin: int | None,
) -> dict[str, Any] | None:
    """The metrics of one message handed to the app (a receive: ``poll``).

    ``now``, ``ts`` and ``origin``: when it was handed over (ns), its timestamp
    and its pipeline's origin (ms), for the ages. Returns the attributes its
    process duration will carry; None when no process duration is recorded
    (``metrics=counts`` or ``none``), so that nothing waits for the end of its
    handling.
    """
    metrics = tel.metrics
    received = info.receive_metric_attrs
    if tel.options.metrics_partition:
        received = sc.with_partition(received, partition)
    if skipped:
        loss.count_skipped(tel, received, partition, skipped)
    if metrics.per_message:
        metrics.consumed.add(1, received)
    if metrics.ages:
        age, origin_age = _ages(now, ts, origin)
        if age is not None:
            metrics.message_age.record(age, received)
        if origin_age is not None:
            metrics.origin_age.record(origin_age, received)
    if not metrics.durations:
        return None
    processed = info.metric_attrs
    if tel.options.metrics_partition:
        processed = sc.with_partition(processed, partition)
    return processed


def _receive(
    tel: Telemetry,
    info: ProcessTopic,
    ambient: Context,
    producer_sc: Any,
    position: tuple[int, int],
    window: tuple[int, int],
) -> None:
    """The ``receive_spans`` option: a ``poll {topic}`` span for the poll() that got the message.

    CLIENT, operation type ``receive``, from the call to its return, linked to
    the message's creation context (a receive span never takes it as parent).
    """
    start, end = window
    if tel.metrics.durations and tel.metering():
        tel.metrics.operation_duration.record((end - start) / 1e9, info.receive_duration_attrs)
    if not tel.tracing():
        return
    attrs = info.poll_attrs.copy()
    partition, offset = position
    sc.position_attributes(attrs, info.topic, partition, offset, False)
    links = [Link(producer_sc)] if producer_sc is not None else None
    span = tel.tracer.start_span(
        info.poll_name, context=ambient, kind=_CLIENT, attributes=attrs, links=links,
        start_time=start,
    )  # fmt: skip
    end_span(span, end)


def _parentage(ambient: Context, ext: Context | None, producer_sc: Any,
               parent_mode: bool) -> tuple[Context, list[Link]]:  # fmt: skip
    """(parent, links) of one message's process span, by context mode."""
    ambient_span: Any = ambient.get(SPAN_KEY)
    ambient_sc = ambient_span.get_span_context() if ambient_span is not None else None
    links = []
    if not parent_mode:
        if producer_sc is not None:
            links.append(Link(producer_sc))
        return ambient, links
    # The creation context is the parent: a link to it would only repeat it.
    parent = ext if producer_sc is not None and ext is not None else _ROOT
    if ambient_sc is not None and ambient_sc.is_valid:
        links.append(Link(ambient_sc))
    return parent, links


def _span_attributes(
    tel: Telemetry,
    info: ProcessTopic,
    msg: Any,
    partition: int,
    offset: int,
    ages: tuple[float | None, float | None],
    headers: Any,
) -> dict[str, Any]:
    opts = tel.options
    attrs = info.process_attrs.copy()
    # topic, partition, offset, dup; value, key, capture_key, capture_body
    sc.position_attributes(attrs, info.topic, partition, offset, opts.semconv_dup)
    sc.message_attributes(attrs, msg.value(), msg.key(), opts.capture_key, opts.capture_body_size)
    age, origin_age = ages
    if age is not None:
        attrs[sc.KAFKAPLUS_MESSAGE_AGE] = age
    if origin_age is not None:
        attrs[sc.KAFKAPLUS_MESSAGE_ORIGIN_AGE] = origin_age
    if opts.header_attributes and headers:
        sc.header_attributes(attrs, headers, opts.header_attributes)
    if opts.compat_names:
        sc.with_previous_names(attrs)
    return attrs


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
            loss.offset_reset(tel, info.receive_metric_attrs, msg.partition())
    except Exception as exc:
        report("offset reset", exc)


# --- consume(): a batch ----------------------------------------------------------------


def process_batch(tel: Telemetry, state: ConsumerState, msgs: list[Any], start: int, *,
                  attach: bool = True) -> Record | None:  # fmt: skip
    """The spans and metrics of a ``consume()`` batch (see the module docstring).

    Returns the batch's process record (None when nothing is recorded).
    """
    tracing = tel.tracing()
    metering = tel.metering()
    if not tracing and not metering:
        return None
    now = _time_ns()
    good = []
    for msg in msgs:
        if msg.error() is None:
            if not state.topic(msg.topic(), tel).excluded:
                good.append(msg)
        else:
            error_event(tel, state, msg)
    if not good:
        return None
    topics = {m.topic() for m in good}
    batch_topic = topics.pop() if len(topics) == 1 else None
    batch = state.topic(batch_topic, tel)
    events = []
    links = []
    for msg in good:
        info = state.topic(msg.topic(), tel)
        partition = msg.partition()
        offset = msg.offset()
        skipped = state.gaps.observe(info.topic, partition, offset) if offset >= 0 else 0
        if skipped:
            event = state.gaps.event_attributes(skipped, offset)
            event[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
            if tel.options.compat_names:
                sc.with_previous_names(event)
            events.append((loss.GAP_EVENT, event))
        _, producer_sc, origin = read_headers(msg.headers())
        if metering:
            _record_consumed(tel, info, partition, skipped, now, _timestamp(msg), origin)
        if tracing and producer_sc is not None:
            link_attrs = sc.link_attributes(
                topic=None if batch_topic is not None else msg.topic(),
                partition=partition, offset=offset,
            )  # fmt: skip
            links.append(Link(producer_sc, link_attrs))
    durations = metering and tel.metrics.durations
    if durations:
        tel.metrics.operation_duration.record((now - start) / 1e9, batch.receive_duration_attrs)
    metric_attrs = batch.metric_attrs if durations else None
    if not tracing:
        record = Record(tel, state, "", None, None, None, now, metric_attrs, None)
        _register_batch(record, good[0])
        state.open.append(record)
        return record
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
    receive = tel.tracer.start_span(
        batch.poll_name, kind=_CLIENT, attributes=poll_attrs, links=links, start_time=start
    )
    end_span(receive, now)
    ambient = _get_current()
    record = Record(tel, state, batch.process_name, ambient, links, process_attrs, now,
                    metric_attrs, None)  # fmt: skip
    record.span_events = events
    hook = tel.options.consume_hook
    if hook is not None:
        span = record.real()
        if span.is_recording():
            for msg in good:
                try:
                    hook(span, msg)
                except Exception as exc:
                    report("consume_hook", exc)
    if attach and not state.detached:
        make_current(record)
    _register_batch(record, good[0])
    state.open.append(record)
    return record


def _register_batch(record: Record, first: Any) -> None:
    record.first = first
    _BATCHES[id(first)] = record


def _unregister_batch(record: Record) -> None:
    first = record.first
    if _BATCHES.get(id(first)) is record:
        _BATCHES.pop(id(first), None)
    record.first = None


# --- handling elsewhere: hand-offs and claims -----------------------------------------


def current_message(ctx: Context) -> Record | Trail | None:
    """What ``ctx`` carries of the message being handled there: its live record, or its trail."""
    found: Any = ctx.get(MESSAGE_KEY)
    if type(found) is Trail or (type(found) is Record and not found.done):
        return found
    return None


def hand_off(record: Record) -> bool:
    """A task will handle the record's message elsewhere: it holds the record until done.

    Returns False when the record ended meanwhile (the task then only carries
    its context).
    """
    with _LOCK:
        if record.done:
            return False
        record.holds += 1
        return True


def task_started(record: Record) -> None:
    """A handed-off task starts: if nothing else handled the message, the span starts now."""
    with _LOCK:
        if record.span is None and not record.polled and not record.claimed:
            record.begin_ns = _time_ns()


def task_done(record: Record) -> None:
    release(record, _time_ns())


#: Templates for messages kafkaplus did not see polled (no client attributes known).
_STRAY = ConsumerState(None)


class Claim:
    """A block that handles one message: its process span, exactly.

    Returned by ``processing(msg)``; see the package's public API.
    """

    __slots__ = ("_owner", "_record", "_token", "msg")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        self._record: Any = None
        self._owner = False
        self._token: Any = None

    def __enter__(self) -> Claim:
        try:
            record, self._owner = _claim(self.msg)
            self._record = record
            if record is not None and carries(record):
                self._token = otel_context.attach(message_context(_get_current(), record))
        except Exception as exc:
            report("processing()", exc)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
            record = self._record
            if record is not None and self._owner:
                finish(record, _time_ns(), exc)
        except Exception as err:
            report("processing()", err)

    async def __aenter__(self) -> Claim:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


def discard(msg: Any) -> None:
    """Another instrumentation makes this message's process span: kafkaplus makes none.

    For framework telemetry the app switched on; ``msg`` is a polled message or
    a consume() batch (a list or tuple of its messages). The record ends with
    no span and no process duration, unless something already started its span
    (then it ends as usual: a started span is never dropped).
    """
    record = _polled(msg)
    if record is None:
        return
    with _LOCK:
        if record.done or record.claimed or record.span is not None:
            return
        record.done = True
    if record.first is not None:
        _unregister_batch(record)
    else:
        _BY_MESSAGE.pop(id(msg), None)
        record.msg = None


def _polled(msg: Any) -> Record | None:
    """The live record of a polled message, or of a consume() batch given as a list or tuple."""
    if type(msg) is list or type(msg) is tuple:
        for one in msg:  # its first message, unless the app dropped some before it
            record = _BATCHES.get(id(one))
            if record is not None and record.first is one:
                return record
        return None
    record = _BY_MESSAGE.get(id(msg))
    return record if record is not None and record.msg is msg else None


def _claim(msg: Any) -> tuple[Any, bool]:
    """(record, owner): what the claim continues, and whether it ends the message's span."""
    record = _polled(msg)
    if record is not None:
        with _LOCK:
            record.state.claims = True
            if record.done or record.claimed:
                return record, False  # too late, or another block has it: its context only
            record.claimed = True
            if record.span is None:
                record.begin_ns = _time_ns()
        return record, True
    try:
        ended = _RECENT.get(_position(msg))
    except Exception:  # not a message we can place
        ended = None
    if ended is not None:
        # Its span ended before this claim: continue under it, make no second one.
        ended.state.claims = True
        return ended, False
    return _unpolled(msg), True


def _unpolled(msg: Any) -> Record | None:
    """A record for a message kafkaplus did not see polled (a batch's, or from elsewhere)."""
    tel = ACTIVE.telemetry
    if tel is None or not (tel.tracing() or tel.metering()):
        return None
    try:
        topic = msg.topic()
        if not isinstance(topic, str):
            return None
    except Exception:
        return None
    state = _STRAY
    info = state.topic(topic, tel)
    if info.excluded:
        return None
    now = _time_ns()
    ext, producer_sc, origin = read_headers(msg.headers())
    ages = _ages(now, _timestamp(msg), origin)
    metric_attrs = info.metric_attrs if tel.metrics.durations and tel.metering() else None
    attrs = parent = links = None
    if tel.tracing():
        parent_mode = tel.options.consumer_context_mode == "parent"
        parent, links = _parentage(_get_current(), ext, producer_sc, parent_mode)
        attrs = _span_attributes(tel, info, msg, msg.partition(), msg.offset(), ages, msg.headers())
    record = Record(tel, state, info.process_name, parent, links, attrs, now, metric_attrs, msg)
    record.polled = False
    record.holds = 0
    record.claimed = True
    record.baggage = ext.get(BAGGAGE_KEY) if ext is not None else None
    record.origin = origin if origin is not None else _timestamp(msg)
    return record


def carries(record: Record | Trail | None) -> bool:
    """Whether the record has a trace context to make current (not metrics only)."""
    if isinstance(record, Record):
        return record.parent_ctx is not None
    return record is not None


def context_of(msg: Any) -> Context | None:
    """The context of a polled message (its process span, baggage, origin), or None."""
    record = _BY_MESSAGE.get(id(msg))
    if record is None or record.msg is not msg or not carries(record):
        return None
    return message_context(_get_current(), record)
