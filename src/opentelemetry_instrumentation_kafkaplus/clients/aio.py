"""confluent_kafka.aio: AIOProducer and AIOConsumer (and their serializing subclasses).

The aio clients run the blocking client in an executor thread, so a span
started there would belong to no coroutine. They are traced at the async
surface instead:

* ``AIOProducer.produce()`` (``AsyncSerializingProducer.produce()`` ends in it)
  starts the send span in the calling coroutine's context. AIOProducer itself
  buffers messages and hands them to librdkafka with ``produce_batch``, which
  drops headers, and refuses ``headers=``: no trace context could leave it. So
  while tracing, each message of a traced topic is *routed* instead: it goes
  to the inner client's per-message ``produce`` with the send span's context
  in its headers, and its delivery callback ends the span and resolves the
  message's future on the event loop with what AIOProducer's own callback
  would give it (the delivered Message, or ``KafkaException(err)``). The inner
  client's C method is called, not its traced one: one span per message.
* ``AIOConsumer.poll()``/``consume()`` make the process span current in the
  coroutine that awaits the message, not in the executor thread; it ends at
  that consumer's next call or ``close()``.

Routing leans on AIOProducer's private attributes, each checked before use
(the same in confluent-kafka 2.12's ``experimental.aio`` through 2.16):

* ``_producer``, the inner client: used only when it carries the state this
  AIOProducer adopted at ``__init__``, i.e. it is the traced client it made;
* ``_flush_buffer(topic)``: the topic's buffered messages (produced while not
  tracing, e.g. under ``suppress_instrumentation()``) go to librdkafka first,
  so a partition keeps the order of the produce() calls (made from one
  coroutine: AIOProducer itself orders concurrent flushes no better);
* ``_is_closed``: a closed producer's messages take AIOProducer's own path
  and fail as they do without kafkaplus (a missing flag counts as open).

Without the first two, messages take AIOProducer's own path as before: spans
without headers, warned once. A message AIOProducer refuses takes its path
too, so the app's call behaves as it does without kafkaplus: the app's own
``headers=`` raises NotImplementedError, and a ``timestamp=`` fails the
message's future (produce_batch supports no timestamps). A failure librdkafka
reports when the message is handed over (a full queue, an unknown partition)
goes onto the future as the batch path puts it, never out of produce().

AIOProducer serves delivery reports only after each batch, in ``flush()`` and
``poll()``, and (2.13+) after ``buffer_timeout`` of inactivity, so a routed
message awaited on its own would wait about a second for its report. While
routed messages are in flight, a pump polls the inner client in the
producer's executor; librdkafka's poll returns as soon as a report is there.

The aio client adopts the state of the traced client its ``__init__`` creates
(clients/state.py); an aio client whose inner client is not a traced one (a
test double, a client made before ``instrument()``) is left untraced.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, cimpl

from ..core import sdkaccess
from ..core.calls import AIO_PRODUCE, bind
from ..core.errors import report, warn_once
from ..core.telemetry import ACTIVE, Telemetry, suppressed
from ..operations import process, send
from ..operations.process import ConsumerState
from ..operations.send import Delivery, ProducerState, SendTopic
from . import consumer, producer
from .serializing import Patched, patch
from .state import adopting, attach, state_of

_time_ns = time.time_ns
_get_current = sdkaccess.get_current
_c_produce = cimpl.Producer.produce
#: Where an AIOProducer keeps its route (the state itself lives in ``_kafkaplus``).
_ROUTE = "_kafkaplus_route"
#: The pump's poll timeout: poll returns at the first report, so this only bounds
#: how long the pump holds an executor thread once nothing is left to serve.
POLL_S = 0.1


def _adopting(kind: type[Any]) -> Callable[..., Any]:
    """Wrap an aio client's ``__init__``: adopt the traced client it creates."""

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result, state = adopting(wrapped, args, kwargs, kind)
        if state is not None:
            # The aio layer traces in the caller's coroutine; the inner client
            # then leaves those calls alone: one span per message.
            state.aio = True
            attach(instance, state)
            if kind is ProducerState:
                _prepare_route(instance, state)
        return result

    return wrapper


def _prepare_route(instance: Any, state: ProducerState) -> None:
    """Give an AIOProducer its route when its internals are the ones routing relies on."""
    try:
        client = getattr(instance, "_producer", None)
        if (
            state_of(client, ProducerState) is state
            and isinstance(client, cimpl.Producer)
            and callable(getattr(instance, "_flush_buffer", None))
        ):
            setattr(instance, _ROUTE, _Route(client, getattr(instance, "executor", None)))
    except Exception as exc:
        report("aio producer routing", exc)


class _Route:
    """Per AIOProducer: the inner client routed messages go to, and the pump serving their reports.

    Reports arrive in whatever thread polls (the pump, flush(), a batch's
    poll); they are queued and resolved on the event loop, one wake-up for
    all the reports that arrive together.
    """

    __slots__ = ("client", "executor", "inflight", "pump", "reports", "scheduled")

    def __init__(self, client: Any, executor: Any) -> None:
        self.client = client
        self.executor = executor
        #: Routed messages whose report has not been resolved yet (event loop only).
        self.inflight = 0
        self.pump: asyncio.Task[None] | None = None
        self.reports: deque[tuple[asyncio.Future[Any], Any, Any]] = deque()
        self.scheduled = False

    def sent(self, loop: asyncio.AbstractEventLoop) -> None:
        """One more message awaits its report: make sure the pump runs (event loop)."""
        self.inflight += 1
        if self.pump is None:
            # An empty context: the pump's executor jobs are no hand-off of the
            # message a handler may be processing (clients/executors.py), which
            # would hold its process span open for as long as the pump runs.
            self.pump = contextvars.Context().run(loop.create_task, self._serve(loop))

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """Poll the inner client while routed messages await their reports."""
        try:
            while self.inflight > 0:
                await loop.run_in_executor(self.executor, self.client.poll, POLL_S)
        except RuntimeError:
            pass  # the executor was shut down (close()), whose flush() served the reports
        except Exception as exc:
            report("aio delivery reports", exc)
        finally:
            self.pump = None

    def reported(self, future: asyncio.Future[Any], err: Any, msg: Any) -> None:
        """A routed message's report, in the polling thread: resolve it on the loop."""
        self.reports.append((future, err, msg))
        if not self.scheduled:
            self.scheduled = True
            # A closed loop raises RuntimeError: nobody awaits the future any more.
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        self.scheduled = False  # before draining: a report appended later schedules again
        reports = self.reports
        while reports:
            future, err, msg = reports.popleft()
            self.inflight -= 1
            if future.done():
                continue  # cancelled by the app
            if err is None:
                future.set_result(msg)
            else:
                future.set_exception(KafkaException(err))


class _Report:
    """A routed message's delivery callback: the send span's end, then its future."""

    __slots__ = ("delivery", "future", "route")

    def __init__(self, route: _Route, future: asyncio.Future[Any], delivery: Delivery | None):
        self.route = route
        self.future = future
        self.delivery = delivery

    def __call__(self, err: Any, msg: Any) -> None:
        if self.delivery is not None:
            try:
                self.delivery(err, msg)
            except Exception as exc:
                report("aio delivery report", exc)
        self.route.reported(self.future, err, msg)


def _fields(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """What AIOProducer.produce() reads of its arguments, by name; None when it would raise itself.

    Both of its paths (routed and batched) read the message from here. It
    takes topic, value and key (further positional arguments are ignored),
    and of the other keywords partition and headers (``_refused`` says which
    it rejects).
    """
    named = bind(AIO_PRODUCE, args[:3], {k: kwargs[k] for k in AIO_PRODUCE if k in kwargs})
    if named is None or type(named.get("topic")) is not str:
        return None  # a name given twice (Python's own TypeError), or no topic
    for name in ("partition", "headers"):
        if name in kwargs:
            named[name] = kwargs[name]
    return named


async def _produce(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tel = ACTIVE.telemetry
    state = state_of(instance, ProducerState)
    if tel is None or state is None or suppressed() or not tel.tracing():
        return await wrapped(*args, **kwargs)
    route = getattr(instance, _ROUTE, None)
    if type(route) is not _Route:
        return await _batched(tel, state, wrapped, args, kwargs, warn=True)
    if _refused(kwargs) or getattr(instance, "_is_closed", False) is True:
        # AIOProducer's own path, which refuses or fails it as without kafkaplus.
        return await _batched(tel, state, wrapped, args, kwargs, warn=False)
    fields = info = None
    try:
        producer.learn_cluster(route.client, state)  # before the span, which then carries it
        fields = _fields(args, kwargs)
        if fields is not None:
            info = state.topic(fields["topic"], tel)
    except Exception as exc:
        report("aio producer instrumentation", exc)
    if fields is None or info is None or info.excluded:
        return await wrapped(*args, **kwargs)
    loop = asyncio.get_running_loop()
    # The topic's buffered messages first: a partition keeps the produce() order.
    await instance._flush_buffer(fields["topic"])
    return _routed(tel, info, route, loop, fields)


def _refused(kwargs: dict[str, Any]) -> bool:
    """Whether AIOProducer refuses the message (it raises, or fails its future).

    It raises NotImplementedError for ``headers=``, and its ``produce_batch``
    fails every message given a ``timestamp`` (NotImplementedError). Routed,
    such a message would go through: it takes AIOProducer's path instead, so
    the app sees what it sees without kafkaplus.
    """
    return "headers" in kwargs or "timestamp" in kwargs


def _routed(tel: Telemetry, info: SendTopic, route: _Route, loop: asyncio.AbstractEventLoop,
            fields: dict[str, Any]) -> asyncio.Future[Any]:  # fmt: skip
    """Produce one message through the inner client with its span's context in the headers."""
    future = loop.create_future()
    span = delivery = headers = None
    try:
        ctx = _get_current()
        span = send.start_span(tel, info, fields, ctx)
        delivery = send.deliver_later(tel, info, span)
        span_ctx = span.get_span_context()
        if span_ctx.is_valid:  # sampled or not: the trace goes on downstream
            headers = tel.injector.inject(None, ctx, span_ctx, span)
    except Exception as exc:  # the message goes, without what failed
        report("aio producer instrumentation", exc)
    extra = {"partition": fields["partition"]} if "partition" in fields else {}
    try:
        _c_produce(route.client, fields["topic"], fields.get("value"), fields.get("key"),
                   on_delivery=_Report(route, future, delivery), headers=headers,
                   **extra)  # fmt: skip
    except BaseException as exc:
        send.refused(info, delivery, span, exc)
        if not isinstance(exc, Exception):
            raise
        # AIOProducer reports a message librdkafka refused on its future, not
        # from produce(): the same here.
        future.set_exception(_as_batch_error(exc))
        return future
    send.handed_over(span, delivery)
    route.sent(loop)
    return future


def _as_batch_error(exc: Exception) -> Exception:
    """The exception AIOProducer's batch path gives the future for what produce() raised.

    produce_batch marks a message that does not fit the queue with
    ``_QUEUE_FULL`` where produce() raises BufferError; anything else
    (KafkaException, TypeError) is the same exception on both paths.
    """
    if isinstance(exc, BufferError):
        return KafkaException(KafkaError(KafkaError._QUEUE_FULL))
    return exc


async def _batched(tel: Telemetry, state: ProducerState, wrapped: Any, args: Any, kwargs: Any,
                   warn: bool) -> Any:  # fmt: skip
    """AIOProducer's own path, traced: a span per message, no context in the message.

    ``warn``: the producer cannot route (its internals are not the expected
    ones), which the app hears about once.
    """
    span = on_done = info = None
    try:
        fields = _fields(args, kwargs)
        if fields is not None:
            info = state.topic(fields["topic"], tel)
            if not info.excluded:
                span = send.start_span(tel, info, fields, None)
                on_done = send.deliver_later(tel, info, span)
                if warn:
                    warn_once(
                        "aio headers",
                        "kafkaplus: this AIOProducer's internals are not the ones kafkaplus "
                        "routes messages through, so trace context cannot reach consumers of "
                        "its messages; producer spans are still recorded.",
                    )
    except Exception as exc:
        report("aio producer instrumentation", exc)
        if info is not None:
            send.never_sent(info, on_done)  # the message goes untracked
        send.abandon(span)
        span = on_done = None
    try:
        future = await wrapped(*args, **kwargs)
    except BaseException as exc:
        if info is not None:
            send.refused(info, on_done, span, exc)
        raise
    if on_done is not None:
        future.add_done_callback(_resolver(on_done))
    send.handed_over(span, on_done)
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
    tel = state.telemetry or ACTIVE.telemetry
    start = _time_ns() if tel is not None and tel.options.receive_spans else 0
    msg = await wrapped(*args, **kwargs)
    tel = state.telemetry or ACTIVE.telemetry
    if msg is not None and tel is not None:
        # What the sync consumer records (it leaves an aio-owned client alone).
        consumer.received(getattr(instance, "_consumer", None), tel, state, msg, start)
    return msg


async def _consume(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = state_of(instance, ConsumerState)
    if state is None:
        return await wrapped(*args, **kwargs)
    process.end_open(state)
    start = _time_ns()
    msgs = await wrapped(*args, **kwargs)
    tel = state.telemetry or ACTIVE.telemetry
    if msgs and tel is not None:
        consumer.received_batch(getattr(instance, "_consumer", None), tel, state, msgs, start)
    return msgs


async def _close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    state = state_of(instance, ConsumerState)
    if state is not None:
        process.end_open(state)
    return await wrapped(*args, **kwargs)


def _aio_module() -> Any:
    """confluent-kafka's aio module: ``aio`` from 2.13, ``experimental.aio`` in 2.12."""
    for name in ("confluent_kafka.aio", "confluent_kafka.experimental.aio"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def wrap() -> Patched:
    """Wrap the aio client classes, when this confluent-kafka has them."""
    aio = _aio_module()
    if aio is None:  # confluent-kafka before aio
        return []
    producer, consumer = aio.AIOProducer, aio.AIOConsumer
    done: Patched = []
    for owner, name, wrapper in (
        (producer, "__init__", _adopting(ProducerState)),
        (producer, "produce", _produce),
        (consumer, "__init__", _adopting(ConsumerState)),
        (consumer, "poll", _poll),
        (consumer, "consume", _consume),
        (consumer, "close", _close),
    ):
        if name in vars(owner):
            patch(done, owner, name, wrapper)
    return done
