"""FastStream's confluent broker (``faststream[confluent]``), with no code in the app.

FastStream polls its consumer in a one-thread executor and hands each message
(a tuple of them for a batch subscriber) to ``process_message``, which runs the
middlewares, the handler and the publishing of its result (``@publisher``) in
one task; with ``max_workers`` every message gets a task of its own while
polling goes on. kafkaplus follows that hand-off:

* the consumer an ``AsyncConfluentConsumer`` creates is adopted
  (clients/state.py): its polls make nothing current in the executor thread
  (``detached``), and its records wait for their claim (``claims``), since the
  handling may come after the next poll;
* ``LogicSubscriber.process_message(msg)`` claims the message (``Claim``, the
  public ``processing(msg)``): the process span is exactly the handling, and
  the message's context is current in the task that handles it, so what the
  handler and its publishers send continues the message's trace. A batch
  subscriber's tuple claims the batch's span (one process span per batch,
  linked to every producer, as for ``consume()``).

FastStream's own telemetry (``KafkaTelemetryMiddleware``, tracer scope
``opentelemetry.instrumentation.faststream``) makes a span for every publish
and every process when the app switches it on. Then kafkaplus yields, so that
each operation has one span, FastStream's: the app asked for those spans
explicitly, and they carry FastStream's names, attributes and metrics.

* send: FastStream's scope owns send spans (core.telemetry.SEND_OWNERS) from
  the moment ``faststream.opentelemetry`` is imported: while its publish span
  is current, kafkaplus makes no send span and leaves its ``traceparent``.
* process: checked per message (middlewares can be added at any time): when
  the subscriber's broker middlewares include FastStream's telemetry,
  kafkaplus's record of the message is discarded (no span, no duration)
  instead of claimed.

The hooks run when the FastStream modules are imported (before or after
``instrument()``) and stay installed, as the executor hooks do: another
instrumentation may wrap the same methods afterwards. While kafkaplus is not
instrumenting they call straight through.
"""

from __future__ import annotations

from typing import Any

import wrapt
from confluent_kafka import cimpl

from ..core import sdkaccess
from ..core.errors import report
from ..core.telemetry import ACTIVE, SEND_OWNERS
from ..operations import process
from ..operations.process import Claim, ConsumerState
from .state import adopting

CLIENT_MODULE = "faststream.confluent.helpers.client"
SUBSCRIBER_MODULE = "faststream.confluent.subscriber.usecase"
TELEMETRY_MODULE = "faststream.opentelemetry.middleware"
CONSTS_MODULE = "faststream.opentelemetry.consts"
#: FastStream's tracer scope (its ``INSTRUMENTING_MODULE_NAME``), when its module does not say.
SCOPE = "opentelemetry.instrumentation.faststream"

_installed = False
_get_current = sdkaccess.get_current
_Message = cimpl.Message


class _Found:
    """What the hooks found in FastStream's modules."""

    #: FastStream's ``TelemetryMiddleware`` class, once its module is imported.
    telemetry: Any = None


def install() -> None:
    """Register the import hooks (once per process); each runs now if its module is loaded."""
    global _installed
    if _installed:
        return
    _installed = True
    wrapt.register_post_import_hook(_hook_client, CLIENT_MODULE)
    wrapt.register_post_import_hook(_hook_subscriber, SUBSCRIBER_MODULE)
    wrapt.register_post_import_hook(_hook_telemetry, TELEMETRY_MODULE)
    wrapt.register_post_import_hook(_hook_consts, CONSTS_MODULE)


def _hook_client(module: Any) -> None:
    _wrap(module, "AsyncConfluentConsumer.__init__", _adopt_consumer)


def _hook_subscriber(module: Any) -> None:
    _wrap(module, "LogicSubscriber.process_message", _process_message)


def _hook_telemetry(module: Any) -> None:
    _Found.telemetry = getattr(module, "TelemetryMiddleware", None)


def _hook_consts(module: Any) -> None:
    name = getattr(module, "INSTRUMENTING_MODULE_NAME", SCOPE)
    SEND_OWNERS.add(name if isinstance(name, str) else SCOPE)


def _wrap(module: Any, name: str, wrapper: Any) -> None:
    """Wrap ``module.name``; a FastStream that moved it is left alone, with a report."""
    try:
        wrapt.wrap_function_wrapper(module, name, wrapper)
    except Exception as exc:
        report(f"FastStream glue ({module.__name__}.{name})", exc)


def _adopt_consumer(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """FastStream creates its consumer: polled for the handler's task, claimed there."""
    result, state = adopting(wrapped, args, kwargs, ConsumerState)
    if state is not None:
        state.detached = True
        state.claims = True
    return result


async def _process_message(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """One message (or batch) handled: its process span is this call, or FastStream's."""
    msg = args[0] if args else None
    if ACTIVE.telemetry is None or not _from_kafka(msg):
        return await wrapped(*args, **kwargs)
    claim = None
    try:
        # A subscriber that polls and handles in one task has the poll's context
        # current here (clients/executors.py): the claim, or FastStream's own
        # span, takes over, and nothing of a discarded record stays current.
        process.restore(_get_current())
        if _faststream_traces(instance):
            process.discard(msg)
        else:
            claim = Claim(msg)
    except Exception as exc:
        report("FastStream glue", exc)
    if claim is None:
        return await wrapped(*args, **kwargs)
    async with claim:
        return await wrapped(*args, **kwargs)


def _from_kafka(msg: Any) -> bool:
    """Whether ``msg`` (or a batch's first message) came from a Kafka client.

    TestKafkaBroker hands ``process_message`` messages it made itself (a
    ``Message`` subclass, all at offset 0): no client was involved, so there is
    nothing of kafkaplus's to claim, and their identical positions would pass
    for one message claimed again.
    """
    if type(msg) is tuple and msg:
        msg = msg[0]
    return type(msg) is _Message


def _faststream_traces(subscriber: Any) -> bool:
    """Whether FastStream's telemetry middleware is among the subscriber's middlewares."""
    telemetry = _Found.telemetry
    if telemetry is None:
        return False
    try:
        middlewares = subscriber._broker_middlewares  # broker's and routers', in order
    except Exception:
        return False
    return any(isinstance(m, telemetry) for m in middlewares)
