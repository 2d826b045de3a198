"""send: a PRODUCER span per message, from produce() to the broker's acknowledgement.

Span        ``send {topic}``, kind PRODUCER; one per message of ``produce()``,
            ``produce_batch()`` and ``AIOProducer.produce()``.
Starts      in the call, before the message is handed to librdkafka.
Ends        when the message's delivery report is served (by the app's poll() or
            flush()), with end time = start + ``Message.latency()``; at once when the
            call raises; with ``_EXIT_UNFLUSHED``/``_DESTROY`` when no report ever comes
            (loss.py).
Parent      the current span, when it belongs to the message being processed here
            (a process span of kafkaplus) or shares the forwarded context's trace.
            Otherwise, a valid trace context in the headers the caller passes
            (``msg.headers()`` forwarded by a worker) is the parent, and the current
            span, if any, a link. In ``link`` mode a forwarded context is a link and the
            current span the parent. Under ``suppress_instrumentation()``: no span, and
            the headers go out as given. No span processor (``Telemetry.spanless``): the
            "span" is the parent's own context, which the headers carry on.
Headers     the span's context (W3C ``traceparent`` by default) replaces any trace header
            the caller passed; their list or dict is never mutated. The origin time of
            the pipeline's first message travels on in ``kafkaplus-origin-ms``.
At start    messaging.system, messaging.operation.name/type ``send``, destination name,
            partition (when the app chose one), client id, server address and port;
            key (UTF-8 text), tombstone, body size (opt-in), captured headers (these
            four are not sampling-relevant: after an unsampled span they are added
            only once the span records, see start_span).
At the ack  partition and offset; or ``error.type`` and ERROR status.
Plain calls ``produce(topic, value, key)`` with a callback or timestamp and no headers or
            partition: ``send_plain`` never binds the call's arguments; they go to
            librdkafka as the app gave them, with only the headers and the delivery
            callback added (the topic's shared one while the span does not record).
Metrics     at the report: messaging.client.operation.duration and
            messaging.client.sent.messages (per-message set), and
            kafkaplus.producer.undelivered.messages for a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind

from ..core import sdkaccess
from ..core import semconv as sc
from ..core.calls import Call, chosen_callback
from ..core.errors import KafkaFailure, report, warn_once
from ..core.options import Options
from ..core.propagation import MESSAGE_KEY, ORIGIN_KEY, forwarded
from ..core.sdkaccess import BAGGAGE_KEY, SPAN_KEY, current_with_span
from ..core.telemetry import (
    SEND_OWNERS,
    Telemetry,
    end_span,
    fail_span,
    mark_error,
    send_owned_elsewhere,
)
from . import loss, process

_PRODUCER = SpanKind.PRODUCER
_INVALID = trace.INVALID_SPAN_CONTEXT
_get_current = sdkaccess.get_current
_attach = sdkaccess.attach
_detach = sdkaccess.detach
_time_ns = time.time_ns


class ProducerState:
    """What a producer keeps from its config: nothing secret, nothing unused."""

    __slots__ = (
        "__weakref__", "aio", "base_attrs", "cluster_retry", "default_cb", "default_known",
        "ledger", "only_error", "stats", "tel", "telemetry", "topics",
    )  # fmt: skip

    def __init__(self, conf: Mapping[str, Any] | None) -> None:
        known = conf is not None
        conf = conf or {}
        self.base_attrs = sc.client_attributes(conf, consumer=False)
        cb = conf.get("on_delivery")
        self.default_cb: Callable[..., Any] | None = cb if callable(cb) else None
        # Without the config (an instance wrapped later) the default callback is
        # unknown: a message with no callback of its own then keeps librdkafka's
        # default, and its span ends when produce() returns.
        self.default_known = known
        self.only_error = str(conf.get("delivery.report.only.error", "false")).lower() in (
            "true",
            "1",
        )
        self.topics: dict[str, SendTopic] = {}
        self.tel: Telemetry | None = None
        #: Owned by a confluent_kafka.aio.AIOProducer, whose own produce() is traced.
        self.aio = False
        #: The statistics callback installed in its configuration, if any.
        self.stats: Any = None
        #: Telemetry of its own (a client wrapped with its own providers), else None:
        #: the active instrumentation's.
        self.telemetry: Telemetry | None = None
        #: When to look for the cluster id again (clients/state.py); inf once known.
        self.cluster_retry = 0.0
        self.ledger = loss.track_producer(self)

    def topic(self, topic: str, tel: Telemetry) -> SendTopic:
        """The topic's template for this instrumentation (rebuilt when re-instrumented)."""
        if self.tel is not tel:
            self.topics = {}
            self.tel = tel
        info = self.topics.get(topic)
        if info is None:
            info = self.topics[topic] = SendTopic(self, topic, tel)
        return info


class SendTopic:
    """Per client and topic: the span name and attribute template, and what reports need."""

    __slots__ = ("attrs", "eager", "excluded", "name", "own", "report", "shared", "start_attrs")

    def __init__(self, state: ProducerState, topic: str, tel: Telemetry) -> None:
        opts = tel.options
        self.excluded = opts.topic_excluded(topic)
        self.name = f"send {topic}"
        self.attrs = sc.operation_attributes(
            state.base_attrs, operation_name=sc.OP_SEND, operation_type=sc.OP_SEND,
            topic=topic, legacy_operation="publish", dup=opts.semconv_dup,
        )  # fmt: skip
        #: The template as the tracer gets it: read-only, so no tracer can change it
        #: for the next message, and never copied per message.
        self.start_attrs: Mapping[str, Any] = MappingProxyType(self.attrs)
        #: Whether the last span started recorded: then the next one is given every
        #: attribute at its start (start_span).
        self.eager = True
        self.report = TopicReport(topic, tel, self.attrs, state)
        #: The callback of every message that holds no span and has no callback of
        #: its own: no object per message.
        self.shared = Delivery(self.report, None, 0, state.default_cb)
        #: The same for messages that bring their own callback: the last one made,
        #: reused while the app passes the same function (what most apps do).
        self.own = self.shared


class TopicReport:
    """What a delivery report of this topic needs (apart from the template: no cycle)."""

    __slots__ = (
        "duration_attrs", "failed", "inflight", "ledger", "metric_attrs", "name", "only_error",
        "tel",
    )  # fmt: skip

    def __init__(
        self, topic: str, tel: Telemetry, template: Mapping[str, Any], state: ProducerState
    ) -> None:
        self.name = f"send {topic}"
        self.tel = tel
        #: The counters' attributes, and the send duration's (with the operation type).
        self.metric_attrs = sc.metric_attributes(template)
        self.duration_attrs = sc.duration_attributes(template)
        #: error.type -> (counter attributes, duration attributes) of a failed delivery.
        self.failed: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.ledger = state.ledger
        self.inflight = state.ledger.topic(topic, self.metric_attrs)
        self.only_error = state.only_error


def send(tel: Telemetry, state: ProducerState, info: SendTopic, call: Call, client: Any,
         orig: Any, tracing: bool, metering: bool) -> Any:  # fmt: skip
    """Produce one message with its span: the traced body of ``produce()``.

    ``tracing`` and ``metering`` are what the telemetry records right now, as
    the client already asked.
    """
    named = call.named
    ctx = call.ctx
    callback = call.callback
    span = None
    try:
        headers = named.get("headers")
        out_ctx = ctx
        # Forwarded headers matter when a span is made, or when a current context
        # would otherwise be written over them.
        if headers and ctx.get(MESSAGE_KEY) is None and (tracing or ctx.get(SPAN_KEY)):
            parent, links, out_ctx = _forwarded(tel, ctx, headers)
        else:
            parent = ctx
            links = None
        if tracing and SEND_OWNERS and send_owned_elsewhere(ctx):
            tracing = False  # another instrumentation's send span: no span, headers as given
            out_ctx = None
        if tracing:
            span = start_span(tel, info, named, parent, links)
            span_ctx = span.get_span_context()
            recording = span.is_recording()
        else:
            span_ctx = _span_context(parent) if out_ctx is ctx else _INVALID
            recording = False
        if span_ctx.is_valid:
            try:
                headers = named["headers"] = tel.injector.inject(headers, out_ctx, span_ctx, span)
            except Exception as exc:  # a broken propagator: the message goes without
                report("trace context injection", exc)
        if recording or metering or state.only_error:
            callback = delivery_for(state, info, callback, span if recording else None, metering)
            # A recording span is held to the report by the callback returned
            # (None: the client's unknown default, which ends it below).
            recording = recording and callback is not None
    except Exception as exc:
        report("producer instrumentation", exc)
        abandon(span)
        return call.original(client, orig)
    try:
        # librdkafka's produce(), with the message's headers and delivery callback.
        # The app's positional arguments (topic, value, key, partition: never
        # changed here) go positionally as the app passed them: confluent-kafka
        # parses keyword arguments one name at a time, so a call made all of
        # keywords costs more in C than the one the app made.
        args = call.args
        if len(args) > 4:  # a positional callback, timestamp or headers: all by name
            if callback is not None:
                named["on_delivery"] = callback
            result = orig(client, **named)
        else:
            out = call.kwargs  # the traced method's own dict, never the app's: reused
            if "callback" in out:
                del out["callback"]
            if callback is not None:
                out["on_delivery"] = callback
            elif "on_delivery" in out:
                del out["on_delivery"]
            if headers is not None:
                out["headers"] = headers
            result = orig(client, *args, **out)
    except BaseException as exc:
        refused(info, callback, span, exc)
        raise
    # handed_over(), inlined: an unsampled span has nothing to end; a recording
    # one ends at its report.
    if span is not None and not recording and type(span) is not NonRecordingSpan:
        end_span(span)
    return result


def send_plain(tel: Telemetry, state: ProducerState, info: SendTopic, ctx: Context, client: Any,
               args: tuple[Any, ...], kwargs: dict[str, Any], orig: Any,
               metering: bool) -> Any:  # fmt: skip
    """``produce()`` of the plain form, with the app's own arguments, never bound.

    The plain form (clients/producer.py checks it, and that no other
    instrumentation owns the send span here): topic, value and key by
    position or name, a delivery callback or timestamp; no headers, no
    partition. Nothing of ``send`` depends on what such a call leaves out
    (no forwarded context, no partition, no captured headers), so the
    app's arguments go to librdkafka as they are, with only the headers and
    the delivery callback added. The span starts as ``start_span`` starts it:
    after an unsampled span of the topic, from the template alone, and a span
    that records then gets the rest (value and key are only read then).
    """
    user_cb = chosen_callback(kwargs)
    if user_cb is not None and not callable(user_cb):
        return orig(client, *args, **kwargs)  # confluent-kafka raises its own error
    span = delivery = headers = None
    try:
        if info.eager:
            span = start_span(tel, info, _plain_fields(args, kwargs), ctx)
            recording = span.is_recording()
        else:
            # By position (name, context, kind, attributes), as in start_span.
            span = tel.tracer.start_span(info.name, ctx, _PRODUCER, info.start_attrs)
            recording = span.is_recording()
            if recording:
                _recorded_late(tel, info, _plain_fields(args, kwargs), span)
        span_ctx = span.get_span_context()
        if span_ctx.is_valid:
            headers = tel.injector.inject(None, ctx, span_ctx, span)
        if recording or metering or state.only_error:
            delivery = delivery_for(state, info, user_cb, span if recording else None, metering)
            recording = recording and delivery is not None  # held to the report, as in send
    except Exception as exc:
        report("producer instrumentation", exc)
        abandon(span)
        return orig(client, *args, **kwargs)
    if headers is not None:
        kwargs["headers"] = headers
    if delivery is not None:  # it calls the app's callback, whichever name the app gave it
        kwargs.pop("callback", None)
        kwargs["on_delivery"] = delivery
    try:
        result = orig(client, *args, **kwargs)
    except BaseException as exc:
        refused(info, delivery, span, exc)
        raise
    if not recording and type(span) is not NonRecordingSpan:  # handed_over(), as in send
        end_span(span)
    return result


def _plain_fields(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """What ``start_span`` reads of a plain call: its value and key."""
    n = len(args)
    return {
        "value": args[1] if n > 1 else kwargs.get("value"),
        "key": args[2] if n > 2 else kwargs.get("key"),
    }


def _forwarded(
    tel: Telemetry, ctx: Context, headers: Any
) -> tuple[Context, list[Link] | None, Context]:
    """(parent context, links, context whose baggage and origin go out) of a send span.

    The forwarded-context rule of the module docstring, for a call that passes
    headers while no message is being processed in this context.
    """
    fwd_ctx, fwd_sc, origin = forwarded(headers)
    if fwd_sc is None:
        return ctx, None, ctx
    current = _span_context(ctx)
    if current.trace_id == fwd_sc.trace_id:
        return ctx, None, ctx
    consumed = process.created_by(fwd_sc)
    if consumed is not None and tel.options.consumer_context_mode == "parent":
        # The forwarded headers are those of a message consumed here: continue
        # under its process span, as if its context were current.
        base = process.message_context(ctx, consumed)
        return base, ([Link(current)] if current.is_valid else None), base
    values = dict(ctx)
    bag: Any = fwd_ctx.get(BAGGAGE_KEY) if fwd_ctx is not None else None
    if bag:
        outer: Any = ctx.get(BAGGAGE_KEY)
        values[BAGGAGE_KEY] = {**outer, **bag} if outer else bag
    if origin is not None:
        values[ORIGIN_KEY] = origin
    if tel.options.consumer_context_mode == "link":
        return ctx, [Link(fwd_sc)], Context(values)
    values[SPAN_KEY] = NonRecordingSpan(fwd_sc)
    parent = Context(values)
    return parent, ([Link(current)] if current.is_valid else None), parent


def _span_context(ctx: Context) -> Any:
    span: Any = ctx.get(SPAN_KEY)
    return span.get_span_context() if span is not None else _INVALID


def start_span(tel: Telemetry, info: SendTopic, named: Mapping[str, Any], parent: Context | None,
               links: list[Link] | None = None) -> Any:  # fmt: skip
    """Start one message's send span with what is known before the broker answers.

    The SDK takes attributes cheapest at the start (adding them to a started
    span costs 2.5-5 µs more), but building them for a span that will not
    record is wasted: at 1 % sampling that is 99 messages in 100. So each
    topic follows its last span: after a recording one, every attribute is
    built before the start; after one that did not record, the start gets
    only what the conventions call sampling-relevant (the template, and a
    partition the app chose), and a span that turns out to record gets the
    rest (key, tombstone, body size, captured headers) at once.
    """
    opts = tel.options
    partition = named.get("partition", -1)
    chosen = type(partition) is int and partition >= 0
    if info.eager:
        attrs = info.attrs.copy()
        if chosen:
            attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
        _message_attributes(attrs, named, opts)
        # By position, in the API's order (name, context, kind, attributes, links):
        # a call with keywords costs a few hundred instructions more.
        span = tel.tracer.start_span(info.name, parent, _PRODUCER, attrs, links)
        if not span.is_recording():
            info.eager = False
        elif opts.produce_hook is not None:
            _produce_hook(opts, info, named, span)
        return span
    start: Mapping[str, Any] = info.start_attrs
    if chosen:
        start = {**info.attrs, sc.MESSAGING_DESTINATION_PARTITION_ID: str(partition)}
    span = tel.tracer.start_span(info.name, parent, _PRODUCER, start, links)
    if span.is_recording():
        _recorded_late(tel, info, named, span)
    return span


def _recorded_late(tel: Telemetry, info: SendTopic, named: Mapping[str, Any], span: Any) -> None:
    """A span started with the sampling-relevant attributes alone records: it gets the rest."""
    info.eager = True
    opts = tel.options
    extra: dict[str, Any] = {}
    _message_attributes(extra, named, opts)
    if extra:
        span.set_attributes(extra)
    if opts.produce_hook is not None:
        _produce_hook(opts, info, named, span)


def _produce_hook(opts: Options, info: SendTopic, named: Mapping[str, Any], span: Any) -> None:
    """The app's ``produce_hook`` on a recording span (its callers check there is one)."""
    try:
        opts.produce_hook(  # type: ignore[misc]
            span, topic=info.attrs[sc.MESSAGING_DESTINATION_NAME], key=named.get("key"),
            value=named.get("value"), headers=named.get("headers"),
        )  # fmt: skip
    except Exception as exc:
        report("produce_hook", exc)


def _message_attributes(attrs: dict[str, Any], named: Mapping[str, Any], opts: Options) -> None:
    """The attributes one message adds to its send span, not sampling-relevant."""
    # value, key, capture_key, capture_body
    sc.message_attributes(
        attrs, named.get("value"), named.get("key"), opts.capture_key, opts.capture_body_size
    )
    if opts.header_attributes:
        sc.header_attributes(attrs, named.get("headers"), opts.header_attributes)


def delivery_for(
    state: ProducerState, info: SendTopic, user_cb: Any, span: Any, metering: bool
) -> Any:
    """The delivery callback to hand librdkafka for one message (None: the client's default).

    A message that holds a span gets its own ``Delivery``. Any other message
    shares one of its topic's: the client's default callback's, or the one of
    the callback the app passed last, while it passes the same function; so
    nothing is built per message. When nothing is recorded at the report,
    the app's own callback goes to librdkafka untouched. A message without a
    callback of its own on a client whose default is unknown is left alone:
    that default must not be bypassed.
    """
    if span is None:
        if not state.only_error and not metering:
            return user_cb
        if user_cb is None:
            if not state.default_known:
                return None
            delivery = info.shared
        else:
            delivery = info.own  # read once: another thread may replace it
            if delivery.user_cb is not user_cb:
                delivery = info.own = Delivery(info.report, None, 0, user_cb)
        next(info.report.inflight.produced)
        return delivery
    if user_cb is None:
        if not state.default_known:
            return None
        user_cb = state.default_cb
    report = info.report
    delivery = Delivery(report, span, _started(span), user_cb)
    next(report.inflight.produced)
    report.ledger.hold(id(delivery), delivery)
    return delivery


def _started(span: Any) -> int:
    """When the span started: its end is that + ``Message.latency()``."""
    start = getattr(span, "start_time", None)  # the SDK span's; any other span: now
    return start if isinstance(start, int) else _time_ns()


def deliver_later(tel: Telemetry, info: SendTopic, span: Any) -> Delivery | None:
    """A ``Delivery`` its caller calls itself once the outcome is known (the aio futures).

    None when nothing would be recorded at the report: the span, if any, can
    end now.
    """
    recording = span is not None and span.is_recording()
    if not recording and not tel.metering():
        return None
    report = info.report
    delivery = Delivery(
        report, span if recording else None, _started(span) if recording else 0, None
    )
    next(report.inflight.produced)
    if recording:
        report.ledger.hold(id(delivery), delivery)
    return delivery


def never_sent(info: SendTopic, callback: Any) -> None:
    """The call raised: the message was never in flight."""
    if isinstance(callback, Delivery):
        next(info.report.inflight.reported)
        info.report.ledger.spans.pop(id(callback), None)


def refused(info: SendTopic, callback: Any, span: Any, exc: BaseException) -> None:
    """The produce call raised: never in flight, and the span fails with the call's error."""
    never_sent(info, callback)
    if span is not None:
        fail_span(span, exc)


def handed_over(span: Any, callback: Any) -> None:
    """The message is in flight: its span ends now unless ``callback`` ends it at the report."""
    if span is not None and not holds(callback, span):
        end_span(span)


def abandon(span: Any) -> None:
    """The instrumentation failed before the message went: its span ends, recording nothing more."""
    if span is not None:
        end_span(span)


def holds(callback: Any, span: Any) -> bool:
    """Whether ``callback`` ends ``span`` at the report (else it must end now)."""
    return isinstance(callback, Delivery) and callback.span is span


class Delivery:
    """The delivery callback librdkafka calls for a message.

    It ends the message's send span, records the send metrics, and calls the
    app's own callback exactly once, with the send span current; the app's
    exceptions propagate. One slotted object (not a closure, whose cells the
    garbage collector would walk) per message that needs one.
    """

    __slots__ = ("report", "span", "start_ns", "user_cb")

    def __init__(self, report: TopicReport, span: Any, start_ns: int, user_cb: Any) -> None:
        self.report = report
        self.span = span
        self.start_ns = start_ns
        self.user_cb = user_cb

    def __call__(self, err: Any, msg: Any) -> Any:
        info = self.report
        user_cb = self.user_cb
        span = self.span
        next(info.inflight.reported)
        if span is None:  # a shared one (most messages at a low sampling rate): the metrics only
            if not info.ledger.closed:
                try:
                    tel = info.tel
                    metrics = tel.metrics
                    if (metrics.per_message or err is not None) and tel.metering():
                        latency = msg.latency() if msg is not None and metrics.durations else None
                        _record_metrics(tel, info, err, msg, latency)
                except Exception as exc:
                    report("delivery report", exc)
            if user_cb is not None and not (info.only_error and err is None):
                return user_cb(err, msg)
            return None
        token = None
        end_ns = None
        if not info.ledger.closed:
            try:
                tel = info.tel
                metrics = tel.metrics
                latency = msg.latency() if msg is not None else None
                info.ledger.spans.pop(id(self), None)
                if latency is not None:
                    end_ns = self.start_ns + int(latency * 1e9)
                _record_ack(span, err, msg, info)
                if user_cb is not None:
                    token = _attach(current_with_span(span))
                if (metrics.per_message or err is not None) and tel.metering():
                    _record_metrics(tel, info, err, msg, latency)
            except Exception as exc:
                report("delivery report", exc)
        else:
            span = None  # ended when it was counted as lost
        try:
            if user_cb is not None and not (info.only_error and err is None):
                return user_cb(err, msg)
            return None
        finally:
            if token is not None:
                try:
                    _detach(token)
                except Exception as exc:
                    report("delivery report", exc)
            if span is not None:
                end_span(span, end_ns)


def _record_ack(span: Any, err: Any, msg: Any, info: TopicReport) -> None:
    """The broker's answer on the span (only recording spans are held to the ack)."""
    if err is None:
        attrs: dict[str, Any] = {}
        dup = info.tel.options.semconv_dup
        # topic, partition, offset, dup
        sc.position_attributes(
            attrs, msg.topic() if dup else None, msg.partition(), msg.offset(), dup
        )
        span.set_attributes(attrs)
    else:
        mark_error(span, err)


def _record_metrics(
    tel: Telemetry, info: TopicReport, err: Any, msg: Any, latency: float | None
) -> None:
    metrics = tel.metrics
    partition = None  # with metrics_partition: added to the duration's set only if recorded
    if err is None:
        attrs = info.metric_attrs
        timed = info.duration_attrs
        if tel.options.metrics_partition:
            partition = msg.partition()
            attrs = sc.with_partition(attrs, partition)
    else:
        etype = sc.error_type(err)
        failed = info.failed.get(etype)
        if failed is None:
            failed = info.failed[etype] = (
                {**info.metric_attrs, sc.ERROR_TYPE: etype},
                {**info.duration_attrs, sc.ERROR_TYPE: etype},
            )
        attrs, timed = failed
        metrics.undelivered.add(1, attrs)
    if metrics.per_message:
        if latency is not None and metrics.durations:
            if partition is not None:
                timed = sc.with_partition(timed, partition)
            metrics.operation_duration.record(latency, timed)
        metrics.sent.add(1, attrs)


def send_batch(tel: Telemetry, state: ProducerState, info: SendTopic, call: Call, client: Any,
               orig: Any) -> Any:  # fmt: skip
    """``produce_batch()``: one send span per message, each ended by its own report.

    confluent-kafka drops the headers of batched messages, so no trace context
    reaches the consumers on this path (warned once); the spans still record
    each delivery. The caller's message dicts are not replaced: the ``_error``
    confluent-kafka sets on messages it could not enqueue is copied back onto
    them, and those spans end with the error.
    """
    named = call.named
    messages = named["messages"]
    spans: list[Any] = []
    copies: list[dict[str, Any]] = []
    try:
        # Whether or not the app gave headers: the context kafkaplus would add
        # cannot travel either.
        warn_once(
            "produce_batch headers",
            "kafkaplus: Producer.produce_batch() sends no message headers (confluent-kafka "
            "limitation), so trace context cannot reach consumers of %s; producer spans "
            "are still recorded. produce() carries it.",
            info.attrs[sc.MESSAGING_DESTINATION_NAME],
        )
        batch_cb = call.callback
        batch_partition = named.get("partition", -1)
        metering = tel.metering()
        ctx = _get_current()
        for m in messages:
            fields = m if "partition" in m else {**m, "partition": batch_partition}
            span = start_span(tel, info, fields, ctx)
            spans.append(span)
            copy = dict(m)
            own = m.get("callback") or batch_cb
            recording = span if span.is_recording() else None
            callback = delivery_for(state, info, own, recording, metering)
            if callback is not None:
                copy["callback"] = callback
            copies.append(copy)
    except Exception as exc:
        report("produce_batch instrumentation", exc)
        for span in spans:
            end_span(span)
        return call.original(client, orig)
    named["messages"] = copies
    if batch_cb is not None:
        named["on_delivery"] = batch_cb
    try:
        result = orig(client, **named)
    except BaseException as exc:
        for copy in copies:
            never_sent(info, copy.get("callback"))
        for span in spans:
            fail_span(span, exc)
        raise
    for m, copy, span in zip(messages, copies, spans, strict=True):
        err = copy.get("_error")
        if err is not None:
            m["_error"] = err
            never_sent(info, copy.get("callback"))
            fail_span(span, KafkaFailure(err))
        else:
            handed_over(span, copy.get("callback"))
    return result
