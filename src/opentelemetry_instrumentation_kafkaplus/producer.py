"""Producer tracing: the ``send {topic}`` span, from produce() to the delivery report.

The span starts in ``produce()`` and ends when librdkafka's delivery report for
that message is served (by the app's ``poll()``/``flush()``), so it carries the
partition and offset the broker assigned, or the delivery error. Its end time
is start + ``Message.latency()``. The app's own delivery callback runs inside
ours, exactly once, with the producer span current; its exceptions propagate.

Pending spans are bounded by librdkafka itself: a message's delivery report,
and with it our callback object, is released when served, and librdkafka refuses new
messages (BufferError) once ``queue.buffering.max.messages`` are outstanding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import cimpl
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import clientconfig
from . import semconv as sc
from ._errors import report, warn_once
from .dataloss import ACCOUNTED, PENDING_LIMIT, track_producer
from .telemetry import (
    _SPAN_KEY,
    _SUPPRESS_KEY,
    ACTIVE,
    Telemetry,
    end_span,
    no_sdk,
    suppressed,
)

_CProducer = cimpl.Producer
_orig_produce = cimpl.Producer.produce

_PRODUCE_ARGS = (
    "topic", "value", "key", "partition", "callback", "on_delivery", "timestamp", "headers",
)  # fmt: skip
_KW_POSITION = {name: i for i, name in enumerate(_PRODUCE_ARGS)}
_INVALID = trace.INVALID_SPAN_CONTEXT
_SEND_KIND = SpanKind.PRODUCER
_set_span_in_context = trace.set_span_in_context
_get_current = otel_context.get_current
_get_current_span = trace.get_current_span
_time_ns = time.time_ns


class _Topic:
    """Per client and topic: the span name and attribute templates, built once."""

    __slots__ = ("attrs", "excluded", "metric_attrs", "metric_failed", "name")

    def __init__(self, state: ProducerState, topic: str, tel: Telemetry) -> None:
        opts = tel.options
        self.excluded = opts.topic_excluded(topic)
        self.name = f"send {topic}"
        attrs = dict(state.base_attrs)
        attrs[sc.MESSAGING_OPERATION_NAME] = sc.OP_SEND
        attrs[sc.MESSAGING_OPERATION_TYPE] = sc.OP_SEND
        attrs[sc.MESSAGING_DESTINATION_NAME] = topic
        metric = {k: attrs[k] for k in sc.METRIC_KEYS if k in attrs}
        if opts.semconv_dup:
            attrs[sc.LEGACY_DESTINATION] = topic
            attrs[sc.LEGACY_DESTINATION_KIND] = "queue"
            attrs[sc.LEGACY_OPERATION] = "publish"
        self.attrs = attrs
        self.metric_attrs = metric
        self.metric_failed: dict[str, dict[str, Any]] = {}


class ProducerState:
    """What a producer keeps from its config: nothing secret, nothing unused."""

    __slots__ = (
        "__weakref__", "aio", "base_attrs", "default_cb", "default_known", "only_error",
        "pending", "tel", "topics",
    )  # fmt: skip

    def __init__(self, conf: Mapping[str, Any] | None) -> None:
        known = conf is not None
        conf = conf or {}
        self.base_attrs = sc.client_attributes(conf, consumer=False)
        cb = conf.get("on_delivery")
        self.default_cb: Callable[..., Any] | None = cb if callable(cb) else None
        # Without the config (instance wrapping) the default callback is unknown:
        # then a message with no per-call callback keeps librdkafka's default.
        self.default_known = known
        self.only_error = str(conf.get("delivery.report.only.error", "false")).lower() == "true"
        self.topics: dict[str, _Topic] = {}
        self.tel: Telemetry | None = None
        # Owned by a confluent_kafka.aio.AIOProducer, whose own produce() is traced.
        self.aio = False
        # Messages whose delivery report is not served yet, for exit accounting.
        self.pending = track_producer(self)

    def topic(self, topic: str, tel: Telemetry) -> _Topic:
        if self.tel is not tel:  # re-instrumented: options may have changed
            self.topics = {}
            self.tel = tel
        info = self.topics.get(topic)
        if info is None:
            info = self.topics[topic] = _Topic(self, topic, tel)
        return info


def produce(
    client: Any,
    state: ProducerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_produce,
) -> Any:
    """Traced ``Producer.produce``; the same arguments, results and errors.

    The hot path: one context lookup, and nothing more when no SDK records and
    there is no context to propagate.
    """
    tel = ACTIVE.telemetry
    if tel is None:
        if state.only_error:
            return _produce_filtered(client, state, args, kwargs, orig)
        return orig(client, *args, **kwargs)
    tracing = tel.tracing()
    metering = tel.metering()
    ctx = _get_current()
    if not tracing and not metering and not state.only_error:
        current: Any = ctx.get(_SPAN_KEY)
        if current is None or not current.get_span_context().is_valid:
            return orig(client, *args, **kwargs)
    if ctx.get(_SUPPRESS_KEY):
        if state.only_error:
            return _produce_filtered(client, state, args, kwargs, orig)
        return orig(client, *args, **kwargs)
    n = len(args)
    topic = args[0] if n else kwargs.get("topic")
    if type(topic) is not str or n > 8:
        return orig(client, *args, **kwargs)
    for k in kwargs:
        pos = _KW_POSITION.get(k)
        if pos is None or pos < n:
            # Let confluent-kafka reject it with its own message.
            return orig(client, *args, **kwargs)
    span = None
    try:
        info = state.topics.get(topic) if state.tel is tel else None
        if info is None:
            info = state.topic(topic, tel)
        if info.excluded:
            if state.only_error:
                return _produce_filtered(client, state, args, kwargs, orig)
            return orig(client, *args, **kwargs)
        if tracing:
            span = _start_span(tel, info, args, kwargs, n, ctx)
            span_ctx = span.get_span_context()
            recording = span.is_recording()
        else:
            span = None
            current = ctx.get(_SPAN_KEY)
            span_ctx = current.get_span_context() if current is not None else _INVALID
            recording = False
        call_kwargs = dict(kwargs)
        call_args = args
        if n > 4:
            for i in range(4, n):
                call_kwargs[_PRODUCE_ARGS[i]] = args[i]
            call_args = args[:4]
        if span_ctx.is_valid:
            try:
                headers = tel.injector.inject(call_kwargs.get("headers"), ctx, span_ctx, span)
            except Exception as exc:  # a broken propagator: the message goes without
                report("trace context injection", exc)
            else:
                call_kwargs["headers"] = headers
        if recording or metering or state.only_error:
            user_cb = _chosen_callback(call_kwargs)
            if user_cb is None:
                if state.default_known:
                    user_cb = state.default_cb
                elif recording or metering:
                    # Unknown default callback: end the span now (documented).
                    recording = metering = False
            if recording or metering or state.only_error:
                call_kwargs["on_delivery"] = _Delivery(
                    tel, state, info, span if recording else None, user_cb, metering
                )
    except Exception as exc:
        report("producer instrumentation", exc)
        if span is not None:
            end_span(span)
        return orig(client, *args, **kwargs)
    try:
        result = orig(client, *call_args, **call_kwargs)
    except BaseException as exc:
        state.pending.pop(id(call_kwargs.get("on_delivery")), None)
        if span is not None:
            _fail(span, exc)
        raise
    if span is not None and not recording:
        end_span(span)
    return result


def _chosen_callback(call_kwargs: dict[str, Any]) -> Any:
    """The callback confluent-kafka would call, removed from the call.

    As in its C code: ``callback`` (even given as None) wins over
    ``on_delivery``; None means the client's default ``on_delivery``.
    """
    if "callback" in call_kwargs:
        call_kwargs.pop("on_delivery", None)
        return call_kwargs.pop("callback")
    return call_kwargs.pop("on_delivery", None)


def _start_span(
    tel: Telemetry,
    info: _Topic,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    n: int,
    ctx: Any = None,
) -> Any:
    attrs = info.attrs.copy()
    value = args[1] if n > 1 else kwargs.get("value")
    key = args[2] if n > 2 else kwargs.get("key")
    partition = args[3] if n > 3 else kwargs.get("partition", -1)
    if value is None:
        attrs[sc.MESSAGING_KAFKA_MESSAGE_TOMBSTONE] = True
    elif type(value) is bytes:
        attrs[sc.MESSAGING_MESSAGE_BODY_SIZE] = len(value)
    elif type(value) is str:
        attrs[sc.MESSAGING_MESSAGE_BODY_SIZE] = len(value.encode("utf-8", "surrogatepass"))
    if key is not None and tel.options.capture_key:
        text = sc.key_string(key)
        if text is not None:
            attrs[sc.MESSAGING_KAFKA_MESSAGE_KEY] = text
    if type(partition) is int and partition >= 0:
        attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
    opts = tel.options
    if opts.header_attributes:
        headers = args[7] if n > 7 else kwargs.get("headers")
        sc.header_attributes(attrs, headers, opts.header_attributes)
    span = tel.tracer.start_span(info.name, context=ctx, kind=_SEND_KIND, attributes=attrs)
    if opts.produce_hook is not None and span.is_recording():
        try:
            opts.produce_hook(
                span,
                topic=info.attrs[sc.MESSAGING_DESTINATION_NAME],
                key=key,
                value=value,
                headers=args[7] if n > 7 else kwargs.get("headers"),
            )
        except Exception as exc:
            report("produce_hook", exc)
    return span


def _fail(span: Any, exc: BaseException) -> None:
    try:
        if span.is_recording():
            span.set_attribute(sc.ERROR_TYPE, sc.error_type(exc))
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()
    except Exception as err:
        report("producer span", err)


class _Delivery:
    """The delivery callback given to librdkafka for one message.

    One slotted object per message (rather than a closure, whose function and
    cells are a dozen objects for the garbage collector to walk at high
    rates). It ends the producer span, records the send metrics, and calls
    the app's own callback exactly once, with the span current.
    """

    __slots__ = ("info", "metering", "only_error", "pending", "span", "start_ns", "tel", "user_cb")

    def __init__(
        self,
        tel: Telemetry,
        state: ProducerState,
        info: _Topic,
        span: Any,
        user_cb: Callable[..., Any] | None,
        metering: bool,
    ) -> None:
        self.start_ns = _time_ns()
        self.tel = tel
        self.info = info
        self.span = span
        self.user_cb = user_cb
        self.metering = metering
        self.only_error = state.only_error
        pending = self.pending = state.pending
        if (span is not None or metering) and len(pending) < PENDING_LIMIT:
            pending[id(self)] = self

    def __call__(self, err: Any, msg: Any) -> Any:
        user_cb = self.user_cb
        if self.pending.pop(id(self), None) is ACCOUNTED:  # counted as lost at exit
            if user_cb is not None and not (self.only_error and err is None):
                return user_cb(err, msg)
            return None
        span = self.span
        token = None
        start_ns = self.start_ns
        end_ns = None
        try:
            latency = msg.latency() if msg is not None else None
            end_ns = start_ns + int(latency * 1e9) if latency is not None else _time_ns()
            if span is not None:
                _record_delivery(span, err, msg, self.tel)
                if user_cb is not None:
                    token = otel_context.attach(_set_span_in_context(span))
            if self.metering:
                _record_metrics(self.tel, self.info, err, msg, (end_ns - start_ns) / 1e9)
        except Exception as exc:
            report("delivery report", exc)
        try:
            if user_cb is not None and not (self.only_error and err is None):
                return user_cb(err, msg)
            return None
        finally:
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                try:
                    span.end(end_time=end_ns)
                except Exception as exc:
                    report("producer span", exc)


def _record_delivery(span: Any, err: Any, msg: Any, tel: Telemetry) -> None:
    """The broker's answer on the span (only recording spans are held to the ack)."""
    if err is None:
        partition = msg.partition()
        offset = msg.offset()
        attrs: dict[str, Any] = {}
        dup = tel.options.semconv_dup
        if partition is not None and partition >= 0:
            attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
            if dup:
                attrs[sc.LEGACY_PARTITION] = partition
        if offset is not None and offset >= 0:
            attrs[sc.MESSAGING_KAFKA_OFFSET] = offset
            if dup:
                attrs[sc.LEGACY_MESSAGE_ID] = f"{msg.topic()}.{partition}.{offset}"
        span.set_attributes(attrs)
    else:
        etype = sc.error_type(err)
        span.set_attribute(sc.ERROR_TYPE, etype)
        try:
            desc = err.str()
        except Exception:
            desc = etype
        span.set_status(Status(StatusCode.ERROR, desc))


def _record_metrics(tel: Telemetry, info: _Topic, err: Any, msg: Any, seconds: float) -> None:
    m = tel.metrics
    if err is None:
        attrs = info.metric_attrs
        if tel.options.metrics_partition:
            attrs = dict(attrs)
            attrs[sc.MESSAGING_DESTINATION_PARTITION_ID] = str(msg.partition())
    else:
        etype = sc.error_type(err)
        attrs = info.metric_failed.get(etype)  # type: ignore[assignment]
        if attrs is None:
            attrs = info.metric_failed[etype] = {**info.metric_attrs, sc.ERROR_TYPE: etype}
        m.undelivered.add(1, attrs)
    m.operation_duration.record(seconds, attrs)
    m.sent.add(1, attrs)


def _produce_filtered(
    client: Any, state: ProducerState, args: tuple[Any, ...], kwargs: dict[str, Any], orig: Any
) -> Any:
    """Uninstrumented produce that still honours ``delivery.report.only.error``.

    We turned that setting off in the config, so the app's callback must not
    see successful reports it did not ask for.
    """
    n = len(args)
    if n > 8 or any(_KW_POSITION.get(k, -1) < n for k in kwargs):
        return orig(client, *args, **kwargs)
    call = dict(kwargs)
    for i in range(4, n):
        call[_PRODUCE_ARGS[i]] = args[i]
    user_cb = _chosen_callback(call) or state.default_cb
    if user_cb is not None:

        def only_errors(err: Any, msg: Any) -> Any:
            if err is not None:
                return user_cb(err, msg)
            return None

        call["on_delivery"] = only_errors
    return orig(client, *args[:4], **call)


_orig_produce_batch = getattr(_CProducer, "produce_batch", None)
_BATCH_ARGS = ("topic", "messages", "partition", "callback", "on_delivery")


def produce_batch(
    client: Any,
    state: ProducerState,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    orig: Any = _orig_produce_batch,
) -> Any:
    """Traced ``Producer.produce_batch``: one ``send`` span per message.

    confluent-kafka drops the headers of batched messages, so no trace context
    reaches the consumers on this path (warned once); the spans still record
    each delivery. The caller's message dicts are not replaced: the
    ``_error`` that confluent-kafka sets on messages it could not enqueue is
    copied back onto them, and those spans end with the error.
    """
    tel = ACTIVE.telemetry
    if tel is None or state.aio or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    try:
        call = dict(zip(_BATCH_ARGS, args, strict=False))
        if len(args) > len(_BATCH_ARGS) or any(k in call for k in kwargs):
            return orig(client, *args, **kwargs)
        call.update(kwargs)
        topic, messages = call.get("topic"), call.get("messages")
        if type(topic) is not str or not isinstance(messages, list):
            return orig(client, *args, **kwargs)
        if any(not isinstance(m, dict) for m in messages):
            return orig(client, *args, **kwargs)
        info = state.topic(topic, tel)
        if info.excluded:
            return orig(client, *args, **kwargs)
        if any("headers" in m for m in messages):
            warn_once(
                "produce_batch headers",
                "kafkaplus: Producer.produce_batch() drops message headers (confluent-kafka "
                "limitation), so trace context cannot reach consumers of %s; producer spans "
                "are still recorded.",
                topic,
            )
        batch_cb = _chosen_callback(call) or state.default_cb
        call.pop("on_delivery", None)
        metering = tel.metering()
        spans = []
        copies = []
        batch_partition = call.get("partition", -1)
        for m in messages:
            fields = m if "partition" in m else {**m, "partition": batch_partition}
            span = _start_span(tel, info, (), fields, 0)
            spans.append(span)
            copy = dict(m)
            user_cb = m.get("callback") or batch_cb
            copy["callback"] = _Delivery(
                tel, state, info, span if span.is_recording() else None, user_cb, metering
            )
            copies.append(copy)
        call["messages"] = copies
    except Exception as exc:
        report("produce_batch instrumentation", exc)
        return orig(client, *args, **kwargs)
    try:
        result = orig(client, **call)
    except BaseException as exc:
        for copy in copies:
            state.pending.pop(id(copy["callback"]), None)
        for span in spans:
            _fail(span, exc)
        raise
    for m, copy, span in zip(messages, copies, spans, strict=True):
        err = copy.get("_error")
        if err is not None:
            m["_error"] = err
            state.pending.pop(id(copy["callback"]), None)
            _fail(span, KafkaErrorAsException(err))
        elif not span.is_recording():
            end_span(span)
    return result


class KafkaErrorAsException(Exception):
    """Carries a KafkaError to the span's error recording."""

    def __init__(self, err: Any) -> None:
        super().__init__(str(err))
        self.args = (err,)


def transaction(client: Any, state: ProducerState, op: str, args: tuple[Any, ...],
                kwargs: dict[str, Any], orig: Any) -> Any:  # fmt: skip
    """Traced transaction calls: a CLIENT span named for the operation.

    ``send_offsets_to_transaction`` settles consumed messages, so it is a
    ``commit {topic}`` settle span with the offsets. Delivery reports served
    inside ``commit_transaction`` end their producer spans as usual.
    """
    tel = ACTIVE.telemetry
    if tel is None or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    try:
        attrs = dict(state.base_attrs)
        attrs[sc.MESSAGING_OPERATION_NAME] = op
        name = op
        if op == "send_offsets_to_transaction":
            attrs[sc.MESSAGING_OPERATION_TYPE] = sc.OP_SETTLE
            positions = args[0] if args else kwargs.get("positions") or []
            entries = [(tp.topic, tp.partition, tp.offset) for tp in positions]
            topics = {e[0] for e in entries}
            if len(topics) == 1:
                topic = topics.pop()
                attrs[sc.MESSAGING_DESTINATION_NAME] = topic
                name = f"commit {topic}"
            else:
                name = "commit"
            attrs[sc.KAFKAPLUS_COMMIT_OFFSETS] = [f"{t}/{p}@{o}" for t, p, o in entries]
        span = tel.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs)
    except Exception as exc:
        report("transaction instrumentation", exc)
        return orig(client, *args, **kwargs)
    try:
        result = orig(client, *args, **kwargs)
    except BaseException as exc:
        _fail(span, exc)
        raise
    end_span(span)
    return result


TRANSACTION_OPS = (
    "init_transactions",
    "begin_transaction",
    "send_offsets_to_transaction",
    "commit_transaction",
    "abort_transaction",
)


def transaction_method(op: str, *, proxy: bool = False) -> Any:
    """A traced transaction method, for the Producer subclass or the instance proxy."""
    base = getattr(_CProducer, op)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if proxy:
            client = self.__wrapped__
            return transaction(client, self._self_kafkaplus, op, args, kwargs,
                               getattr(type(client), op))  # fmt: skip
        return transaction(self, self._kafkaplus, op, args, kwargs, base)

    method.__name__ = op
    method.__doc__ = base.__doc__
    return method


class Producer(_CProducer):
    """confluent_kafka.Producer, traced. Substituted for the original class."""

    __slots__ = ("_kafkaplus", "_kafkaplus_stats")
    _kafkaplus: ProducerState
    _kafkaplus_stats: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        clientconfig.init_client(
            self, _CProducer.__init__, args, kwargs, producer=True, state_type=ProducerState
        )

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        # With no SDK anywhere and no context to propagate, call straight
        # through: this check is all the instrumentation costs then.
        if no_sdk(ACTIVE.telemetry) and not self._kafkaplus.only_error:
            current: Any = _get_current().get(_SPAN_KEY)
            if current is None or not current.get_span_context().is_valid:
                return _orig_produce(self, *args, **kwargs)
        return produce(self, self._kafkaplus, args, kwargs)

    def produce_batch(self, *args: Any, **kwargs: Any) -> Any:
        return produce_batch(self, self._kafkaplus, args, kwargs)

    init_transactions = transaction_method("init_transactions")
    begin_transaction = transaction_method("begin_transaction")
    send_offsets_to_transaction = transaction_method("send_offsets_to_transaction")
    commit_transaction = transaction_method("commit_transaction")
    abort_transaction = transaction_method("abort_transaction")
