"""confluent_kafka.aio: AIOProducer and AIOConsumer (and their serializing subclasses).

The aio clients run the blocking client in an executor thread, so a span
started there would belong to no coroutine. We trace at the async surface
instead:

* ``AIOProducer.produce()`` starts the ``send`` span in the calling coroutine's
  context and ends it when the message's future resolves (the delivered
  Message, or the exception). The inner client's ``produce_batch`` is then
  left untraced, so there is exactly one span per message.
* ``AIOConsumer.poll()``/``consume()`` make the process span current in the
  coroutine that awaits the message, not in the executor thread; it ends at
  that consumer's next call or ``close()``.

AIOProducer refuses headers in its batch mode and ``produce_batch`` drops them,
so trace context cannot travel from an AIOProducer to its consumers: the
producer spans are still recorded, a warning is logged once, and the README
lists the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import consumer as _consumer
from . import producer as _producer
from ._errors import report, warn_once
from .serializing import patch
from .telemetry import ACTIVE, end_span, suppressed


def _producer_state(instance: Any) -> Any:
    inner = getattr(instance, "_producer", None)
    return getattr(inner, "_kafkaplus", None)


def _consumer_state(instance: Any) -> Any:
    inner = getattr(instance, "_consumer", None)
    return getattr(inner, "_kafkaplus", None)


def _owned_by_aio(inner: str) -> Callable[..., Any]:
    """Wrap an aio client's ``__init__``: mark its inner traced client as aio-owned.

    The aio layer traces in the caller's coroutine; the inner client then
    leaves those calls alone, so each message gets exactly one span.
    """

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        state = getattr(getattr(instance, inner, None), "_kafkaplus", None)
        if state is not None:
            state.aio = True
        return result

    return wrapper


async def _produce(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tel = ACTIVE.telemetry
    state = _producer_state(instance)
    if tel is None or state is None or suppressed() or not tel.tracing():
        return await wrapped(*args, **kwargs)
    span = None
    try:
        fields = dict(zip(("topic", "value", "key"), args, strict=False))
        fields.update(kwargs)
        topic = fields.get("topic")
        if type(topic) is str:
            info = state.topic(topic, tel)
            if not info.excluded:
                span = _producer._start_span(tel, info, (), fields, 0)
                metering = tel.metering()
                on_done = _producer._Delivery(
                    tel, state, info, span if span.is_recording() else None, None, metering
                )
                warn_once(
                    "aio headers",
                    "kafkaplus: AIOProducer cannot send headers, so trace context cannot reach "
                    "consumers of its messages; producer spans are still recorded.",
                )
    except Exception as exc:
        report("aio producer instrumentation", exc)
        if span is not None:
            end_span(span)
            span = None
    try:
        future = await wrapped(*args, **kwargs)
    except BaseException as exc:
        if span is not None:
            state.pending.pop(id(on_done), None)  # never queued: not lost at exit
            _producer._fail(span, exc)
        raise
    if span is not None:
        if not span.is_recording() and not tel.metering():
            end_span(span)
        else:
            future.add_done_callback(_resolver(on_done))
    return future


def _resolver(on_done: Callable[[Any, Any], Any]) -> Callable[[Any], None]:
    def done(future: Any) -> None:
        try:
            if future.cancelled():
                on_done(_Cancelled(), None)
                return
            exc = future.exception()
            if exc is None:
                on_done(None, future.result())
            else:
                err = exc.args[0] if exc.args and hasattr(exc.args[0], "name") else exc
                on_done(err, None)
        except Exception as err:
            report("aio delivery", err)

    return done


class _Cancelled:
    def name(self) -> str:
        return "_CANCELLED"

    def str(self) -> str:
        return "the message's future was cancelled"


async def _poll(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = _consumer_state(instance)
    if state is None:
        return await wrapped(*args, **kwargs)
    _consumer.end_open(state)
    msg = await wrapped(*args, **kwargs)
    tel = ACTIVE.telemetry
    if msg is not None and tel is not None:
        try:
            if msg.error() is None and not suppressed():
                _consumer._process_one(tel, state, msg)
        except Exception as exc:
            report("aio consumer instrumentation", exc)
    return msg


async def _consume(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = _consumer_state(instance)
    if state is None:
        return await wrapped(*args, **kwargs)
    _consumer.end_open(state)
    start = _consumer._time_ns()
    msgs = await wrapped(*args, **kwargs)
    tel = ACTIVE.telemetry
    if msgs and tel is not None:
        try:
            if not suppressed():
                _consumer._process_batch(tel, state, msgs, start)
        except Exception as exc:
            report("aio consumer instrumentation", exc)
    return msgs


async def _close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = _consumer_state(instance)
    if state is not None:
        _consumer.end_open(state)
    return await wrapped(*args, **kwargs)


def wrap() -> list[tuple[Any, str, Any]]:
    """Wrap the aio client classes, when this confluent-kafka has them."""
    try:
        from confluent_kafka.aio import AIOConsumer, AIOProducer
    except ImportError:
        return []
    done: list[tuple[Any, str, Any]] = []
    for owner, name, wrapper in (
        (AIOProducer, "__init__", _owned_by_aio("_producer")),
        (AIOProducer, "produce", _produce),
        (AIOConsumer, "__init__", _owned_by_aio("_consumer")),
        (AIOConsumer, "poll", _poll),
        (AIOConsumer, "consume", _consume),
        (AIOConsumer, "close", _close),
    ):
        if name in vars(owner):
            patch(done, owner, name, wrapper)
    return done
