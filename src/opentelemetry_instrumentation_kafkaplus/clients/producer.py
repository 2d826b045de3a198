"""The traced ``Producer``: a subclass of confluent-kafka's C class, substituted for it.

Every traced method has the form ``fn(client, state, args, kwargs, orig)``,
shared by the subclass, the proxies and the wrapt wrappers: it binds the
call's arguments once and hands them to an operation (send, transaction,
settle), or calls ``orig`` untouched when nothing is to be recorded.
"""

from __future__ import annotations

import functools
from typing import Any

from confluent_kafka import cimpl

from ..core import sdkaccess
from ..core.calls import PRODUCE, PRODUCE_BATCH, SEND_OFFSETS, Call, bind, pop_callback
from ..core.sdkaccess import SPAN_KEY, SUPPRESS_KEY
from ..core.telemetry import ACTIVE, SEND_OWNERS, send_owned_elsewhere, suppressed
from ..operations import send, settle, transaction
from ..operations.send import ProducerState
from . import config
from .state import CLUSTER_KNOWN, TracedClass, document, learn_cluster_id, traced_method

_CProducer = cimpl.Producer
_orig_produce = _CProducer.produce
#: Not in every confluent-kafka version (2.6 has none): then neither has the traced class.
_orig_produce_batch: Any = getattr(_CProducer, "produce_batch", None)
has_produce_batch = _orig_produce_batch is not None
_cluster_id = getattr(_CProducer, "cluster_id", None)  # not in every confluent-kafka version
_orig_close: Any = getattr(_CProducer, "close", None)  # 2.6 has none
_get_current = sdkaccess.get_current
#: By count of positional arguments (1 to 3): the keywords of a plain produce() call.
_PLAIN = (
    frozenset(),
    *(frozenset(PRODUCE[n:]) - {"partition", "headers"} for n in range(1, 4)),
)
_providers_unset = sdkaccess.global_providers_unset


def produce(client: Any, state: ProducerState, args: tuple[Any, ...], kwargs: dict[str, Any],
            orig: Any = _orig_produce) -> Any:  # fmt: skip
    """Traced ``Producer.produce``: the same arguments, results and errors."""
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None:
        return _untraced(client, state, args, kwargs, orig)
    ctx = _get_current()
    if ctx.get(SUPPRESS_KEY):
        return _untraced(client, state, args, kwargs, orig)
    tracing = tel.tracing()
    metering = tel.metering()
    info = None
    if not tracing and not metering and not state.only_error:
        # Nothing records: only a current context could be worth carrying on.
        current: Any = ctx.get(SPAN_KEY)
        if current is None or not current.get_span_context().is_valid:
            return orig(client, *args, **kwargs)
    elif tracing:
        n = len(args)
        if 0 < n < 4 and (not kwargs or kwargs.keys() <= _PLAIN[n]):
            # The plain form (send.send_plain): topic, value and key, by position
            # or name, and a callback or timestamp; no headers, no partition.
            topic = args[0]
            # Another instrumentation's send span (SEND_OWNERS): send() yields to it.
            if (
                type(topic) is str
                and state.tel is tel
                and not (SEND_OWNERS and send_owned_elsewhere(ctx))
            ):
                if state.cluster_retry != CLUSTER_KNOWN:
                    learn_cluster(client, state)  # may rebuild the templates: looked up after
                info = state.topics.get(topic)  # None: its first call, bound below
                if info is not None and not info.excluded:
                    return send.send_plain(tel, state, info, ctx, client, args, kwargs, orig,
                                           metering)  # fmt: skip
    named = bind(PRODUCE, args, kwargs)
    topic = named.get("topic") if named is not None else None
    if type(topic) is not str:
        return orig(client, *args, **kwargs)  # confluent-kafka raises its own error
    user_cb = pop_callback(named)  # type: ignore[arg-type]
    if user_cb is not None and not callable(user_cb):
        return orig(client, *args, **kwargs)
    if info is None:  # not found by the plain check above
        if tracing and state.cluster_retry != CLUSTER_KNOWN:
            learn_cluster(client, state)  # before the span starts, so that it carries a found id
        info = state.topics.get(topic) if state.tel is tel else None
        if info is None:
            info = state.topic(topic, tel)
    if info.excluded:
        return _untraced(client, state, args, kwargs, orig)
    call = Call(named, args, kwargs, user_cb, ctx)  # type: ignore[arg-type]
    return send.send(tel, state, info, call, client, orig, tracing, metering)


def learn_cluster(client: Any, state: ProducerState) -> None:
    """Look for the cluster id when it is unknown and the last look is a second old."""
    learn_cluster_id(client, state, _cluster_id)


def _untraced(client: Any, state: ProducerState, args: tuple[Any, ...], kwargs: dict[str, Any],
              orig: Any) -> Any:  # fmt: skip
    """An untraced produce() that still honours ``delivery.report.only.error``.

    kafkaplus turned that setting off in the configuration, so the app's
    callback must not see successful reports it did not ask for.
    """
    if not state.only_error:
        return orig(client, *args, **kwargs)
    named = bind(PRODUCE, args, kwargs)
    if named is None:
        return orig(client, *args, **kwargs)
    user_cb = pop_callback(named) or state.default_cb
    if user_cb is None or not callable(user_cb):
        return orig(client, *args, **kwargs)
    named["on_delivery"] = _OnlyErrors(user_cb)
    return orig(client, **named)


class _OnlyErrors:
    """The app's delivery callback, called for failed deliveries only."""

    __slots__ = ("user_cb",)

    def __init__(self, user_cb: Any) -> None:
        self.user_cb = user_cb

    def __call__(self, err: Any, msg: Any) -> Any:
        if err is not None:
            return self.user_cb(err, msg)
        return None


def produce_batch(client: Any, state: ProducerState, args: tuple[Any, ...],
                  kwargs: dict[str, Any], orig: Any = _orig_produce_batch) -> Any:  # fmt: skip
    """Traced ``Producer.produce_batch``: one send span per message."""
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or state.aio or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    named = bind(PRODUCE_BATCH, args, kwargs)
    if named is None or type(named.get("topic")) is not str:
        return orig(client, *args, **kwargs)
    messages = named.get("messages")
    if type(messages) is not list or any(type(m) is not dict for m in messages):
        return orig(client, *args, **kwargs)  # the app's own mistake: its own error
    user_cb = pop_callback(named)
    if user_cb is not None and not callable(user_cb):
        return orig(client, *args, **kwargs)
    info = state.topic(named["topic"], tel)
    if info.excluded:
        return orig(client, *args, **kwargs)
    return send.send_batch(tel, state, info, Call(named, args, kwargs, user_cb), client, orig)


def transaction_call(client: Any, state: ProducerState, operation: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], orig: Any) -> Any:  # fmt: skip
    """Traced transaction calls: CLIENT spans, or a settle span for the offsets sent."""
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    if operation == "send_offsets_to_transaction":
        named = bind(SEND_OFFSETS, args, kwargs)
        if named is None:
            return orig(client, *args, **kwargs)
        call = Call(named, args, kwargs, None)
        return settle.settle(tel, state.base_attrs, call, operation, None, client, orig)
    return transaction.transaction(tel, state.base_attrs, operation, client, orig, args, kwargs)


TRANSACTION_CALLS = (*transaction.OPERATIONS, "send_offsets_to_transaction")


def _transaction_method(operation: str) -> Any:
    base = getattr(_CProducer, operation)

    def call(client: Any, state: ProducerState, args: Any, kwargs: Any) -> Any:
        return transaction_call(client, state, operation, args, kwargs, base)

    return traced_method(call, base)


def close(client: Any, state: ProducerState, args: tuple[Any, ...], kwargs: dict[str, Any],
          orig: Any = _orig_close) -> Any:  # fmt: skip
    """Traced ``Producer.close``: the client's statistics series end with it.

    close() flushes first, so the delivery reports of what was in flight end
    their spans as flush() would.
    """
    try:
        return orig(client, *args, **kwargs)
    finally:
        if state.stats is not None:
            state.stats.forget()


class Producer(_CProducer, metaclass=TracedClass):
    """confluent_kafka.Producer, traced. Substituted for the original class."""

    # No slot: its descriptor would be a class member without a docstring, which
    # confluent-kafka's own documentation check rejects; the instance __dict__ is as fast.
    _kafkaplus: ProducerState
    _kafkaplus_original = _CProducer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        construct = functools.partial(_CProducer.__init__, self)
        config.init_client(self, construct, args, kwargs, producer=True)

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        try:
            state = self._kafkaplus
        except AttributeError:  # __init__ never ran: the client's own error
            return _orig_produce(self, *args, **kwargs)
        # With no SDK anywhere and no context to propagate, call straight
        # through: this check is all the instrumentation costs then.
        # Nothing can record (Telemetry.idle, or no provider set yet).
        tel = ACTIVE.telemetry
        if (
            tel is not None
            and (tel.idle or (tel.global_providers and _providers_unset()))
            and not state.only_error
        ):
            current: Any = _get_current().get(SPAN_KEY)
            if current is None or not current.get_span_context().is_valid:
                return _orig_produce(self, *args, **kwargs)
        return produce(self, state, args, kwargs)

    if _orig_produce_batch is not None:
        produce_batch = traced_method(produce_batch, _orig_produce_batch)

    if _orig_close is not None:
        close = traced_method(close, _orig_close)

    init_transactions = _transaction_method("init_transactions")
    begin_transaction = _transaction_method("begin_transaction")
    send_offsets_to_transaction = _transaction_method("send_offsets_to_transaction")
    commit_transaction = _transaction_method("commit_transaction")
    abort_transaction = _transaction_method("abort_transaction")


document(Producer, _CProducer)
