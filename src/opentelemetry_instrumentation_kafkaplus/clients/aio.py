"""confluent_kafka.aio: AIOProducer and AIOConsumer (and their serializing subclasses).

The aio clients run the blocking client in an executor thread, so a span
started there would belong to no coroutine. They are traced at the async
surface instead:

* ``AIOProducer.produce()`` starts the send span in the calling coroutine's
  context and ends it when the message's future resolves (the delivered
  Message, or the exception). The inner client's ``produce_batch`` is then
  left untraced, so there is exactly one span per message.
* ``AIOConsumer.poll()``/``consume()`` make the process span current in the
  coroutine that awaits the message, not in the executor thread; it ends at
  that consumer's next call or ``close()``.

The aio client adopts the state of the traced client its ``__init__`` creates
(clients/state.py); an aio client whose inner client is not a traced one (a
test double, a client made before ``instrument()``) is left untraced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..core.calls import AIO_PRODUCE
from ..core.errors import report, warn_once
from ..core.telemetry import ACTIVE, end_span, fail_span, suppressed
from ..operations import process, send
from ..operations.process import ConsumerState
from ..operations.send import ProducerState
from .serializing import Patched, patch
from .state import Adoption, attach, state_of

_time_ns = time.time_ns


def _adopting(kind: type[Any]) -> Callable[..., Any]:
    """Wrap an aio client's ``__init__``: adopt the traced client it creates."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        with Adoption() as adoption:
            result = wrapped(*args, **kwargs)
        state = adoption.only(kind)
        if state is not None:
            # The aio layer traces in the caller's coroutine; the inner client
            # then leaves those calls alone: one span per message.
            state.aio = True
            attach(instance, state)
        return result

    return wrapper


async def _produce(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tel = ACTIVE.telemetry
    state = state_of(instance, ProducerState)
    if tel is None or state is None or suppressed() or not tel.tracing():
        return await wrapped(*args, **kwargs)
    span = on_done = info = None
    try:
        fields = dict(zip(AIO_PRODUCE, args, strict=False))
        fields.update(kwargs)
        topic = fields.get("topic")
        if type(topic) is str:
            info = state.topic(topic, tel)
            if not info.excluded:
                span = send.start_span(tel, info, fields, None)
                on_done = send.deliver_later(tel, info, span)
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
        if info is not None:
            send.never_sent(info, on_done)
        if span is not None:
            fail_span(span, exc)
        raise
    if on_done is not None:
        future.add_done_callback(_resolver(on_done))
    elif span is not None:
        end_span(span)
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
    """The error of a message whose future was cancelled before its report."""

    def name(self) -> str:
        return "_CANCELLED"

    def str(self) -> str:
        return "the message's future was cancelled"


async def _poll(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = state_of(instance, ConsumerState)
    if state is None:
        return await wrapped(*args, **kwargs)
    process.end_open(state)
    msg = await wrapped(*args, **kwargs)
    tel = ACTIVE.telemetry
    if msg is not None and tel is not None:
        try:
            if msg.error() is None:
                process.process_one(tel, state, msg)
        except Exception as exc:
            report("aio consumer instrumentation", exc)
    return msg


async def _consume(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = state_of(instance, ConsumerState)
    if state is None:
        return await wrapped(*args, **kwargs)
    process.end_open(state)
    start = _time_ns()
    msgs = await wrapped(*args, **kwargs)
    tel = ACTIVE.telemetry
    if msgs and tel is not None:
        try:
            if not suppressed():
                process.process_batch(tel, state, msgs, start)
        except Exception as exc:
            report("aio consumer instrumentation", exc)
    return msgs


async def _close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = state_of(instance, ConsumerState)
    if state is not None:
        process.end_open(state)
    return await wrapped(*args, **kwargs)


def wrap() -> Patched:
    """Wrap the aio client classes, when this confluent-kafka has them."""
    try:
        from confluent_kafka.aio import AIOConsumer, AIOProducer
    except ImportError:  # confluent-kafka before aio
        return []
    done: Patched = []
    for owner, name, wrapper in (
        (AIOProducer, "__init__", _adopting(ProducerState)),
        (AIOProducer, "produce", _produce),
        (AIOConsumer, "__init__", _adopting(ConsumerState)),
        (AIOConsumer, "poll", _poll),
        (AIOConsumer, "consume", _consume),
        (AIOConsumer, "close", _close),
    ):
        if name in vars(owner):
            patch(done, owner, name, wrapper)
    return done
