"""Hand-offs kafkaplus follows with no code: thread pools and asyncio's thread helpers.

* ``concurrent.futures.ThreadPoolExecutor.submit`` (and what is built on it:
  ``loop.run_in_executor``, ``asyncio.to_thread``) while a polled message is
  being handled: the task runs in the message's context, and the message's
  process span waits for the task (operations/process.py).
* ``loop.run_in_executor(executor, consumer.poll, ...)`` and
  ``asyncio.to_thread(consumer.poll, ...)`` with a traced consumer (also
  ``consume``, and ``functools.partial`` of them): the message's context is made
  current in the awaiting task, not in the executor's thread (where it would
  leak into the thread's next job); the span ends at that consumer's next call,
  and that call (``close`` included) made the same way puts the task's own
  context back.

The hooks are installed once and stay: another instrumentation may wrap the
same functions afterwards, and taking ours out would take theirs too. While
kafkaplus is not instrumenting they call straight through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from asyncio import base_events
from collections.abc import Callable, Generator
from typing import Any

import wrapt
from opentelemetry import context as otel_context

from ..core import sdkaccess
from ..core.errors import report
from ..core.telemetry import ACTIVE
from ..operations import process
from ..operations.process import ConsumerState
from . import consumer as _consumer
from .proxy import ConsumerProxy
from .state import state_of

_installed = False
_get_current = sdkaccess.get_current


def install() -> None:
    """Install the hooks (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    wrapt.wrap_function_wrapper(concurrent.futures.ThreadPoolExecutor, "submit", _submit)
    wrapt.wrap_function_wrapper(base_events.BaseEventLoop, "run_in_executor", _run_in_executor)
    wrapt.wrap_function_wrapper(asyncio.threads, "to_thread", _to_thread)
    asyncio.to_thread = asyncio.threads.to_thread


# --- a task handed a message ------------------------------------------------------------


def _submit(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not args or ACTIVE.telemetry is None:
        return wrapped(*args, **kwargs)
    ctx = _get_current()
    found = process.current_message(ctx)
    if found is None:
        return wrapped(*args, **kwargs)
    # A record is held until the task is done; a trail (nothing to end) only travels.
    record = found if type(found) is process.Record and process.hand_off(found) else None
    task = _HandedOff(args[0], ctx, record)
    try:
        future = wrapped(task, *args[1:], **kwargs)
    except BaseException:
        if record is not None:
            process.task_done(record)  # refused (shut down): it never holds the message
        raise
    future.add_done_callback(task.cancelled)
    return future


class _HandedOff:
    """A task submitted while a message was handled: its context, its hold on the span."""

    __slots__ = ("ctx", "fn", "record", "started")

    def __init__(self, fn: Callable[..., Any], ctx: Any, record: process.Record | None) -> None:
        self.fn = fn
        self.ctx = ctx
        self.record = record
        self.started = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.started = True
        record = self.record
        token = otel_context.attach(self.ctx)
        if record is not None:
            try:
                process.task_started(record)
            except Exception as exc:
                report("executor hand-off", exc)
        try:
            return self.fn(*args, **kwargs)
        finally:
            otel_context.detach(token)
            if record is not None:
                process.task_done(record)

    def cancelled(self, future: Any) -> None:
        """A task cancelled before it ran never releases its hold: release it here."""
        if not self.started and self.record is not None:
            process.task_done(self.record)


# --- a consumer polled in an executor for an awaiting task --------------------------------


class _ForTask:
    """``consumer.poll``/``consume`` run in an executor; the result adopted by the awaiting task."""

    __slots__ = ("args", "client", "found", "kwargs", "method", "state")

    def __init__(self, client: Any, state: ConsumerState, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:  # fmt: skip
        self.client = client
        self.state = state
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.found: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args = self.args + args
        kwargs = {**self.kwargs, **kwargs}
        if self.method == "poll":
            msg, self.found = _consumer.poll_detached(self.client, self.state, args, kwargs)
            return msg
        if self.method == "close":
            return _consumer.close(self.client, self.state, args, kwargs)
        msgs, self.found = _consumer.consume_detached(self.client, self.state, args, kwargs)
        return msgs

    def adopt(self) -> None:
        """In the awaiting task: the message's context becomes current there."""
        found = self.found
        if found is not None and (
            type(found) is not process.Record or found.parent_ctx is not None
        ):
            try:
                process.make_current(found)
            except Exception as exc:
                report("executor hand-off", exc)


def _for_task(func: Any) -> _ForTask | None:
    """A ``_ForTask`` when ``func`` is a traced consumer's poll or consume (or a partial)."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    if type(func) is functools.partial:
        args, kwargs, func = func.args, dict(func.keywords), func.func
    method = _CONSUMER_METHODS.get(getattr(func, "__func__", None))
    if method is None:
        return None
    client = func.__self__
    state = state_of(client, ConsumerState)
    if state is None:
        return None
    inner = getattr(client, "__wrapped__", client)  # a proxy: the client it wraps
    return _ForTask(inner, state, method, args, kwargs)


#: The traced consumers' methods whose results an awaiting task adopts.
_CONSUMER_METHODS: dict[Any, str] = {
    cls.__dict__[name]: name
    for cls in (_consumer.Consumer, ConsumerProxy)
    for name in ("poll", "consume", "close")
}


def _run_in_executor(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:  # fmt: skip
    call = _for_task(args[1]) if len(args) >= 2 and ACTIVE.telemetry is not None else None
    if call is None:
        return wrapped(*args, **kwargs)
    process.restore(_get_current())  # the previous message of this task steps aside
    inner = wrapped(args[0], call, *args[2:], **kwargs)
    return _Adopting(inner, call, instance)


async def _to_thread(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:  # fmt: skip
    call = _for_task(args[0]) if args and ACTIVE.telemetry is not None else None
    if call is None:
        return await wrapped(*args, **kwargs)
    process.restore(_get_current())
    result = await wrapped(call, *args[1:], **kwargs)
    call.adopt()
    return result


class _Adopting(asyncio.Future):  # type: ignore[type-arg]
    """The future ``run_in_executor`` returns, whose ``await`` adopts the message."""

    def __init__(self, inner: asyncio.Future[Any], call: _ForTask, loop: Any) -> None:
        super().__init__(loop=loop)
        self._inner = inner
        self._call = call
        inner.add_done_callback(self._settle)

    def _settle(self, inner: asyncio.Future[Any]) -> None:
        if self.done():
            return
        if inner.cancelled():
            super().cancel()
        elif inner.exception() is not None:
            self.set_exception(inner.exception())  # type: ignore[arg-type]
        else:
            self.set_result(inner.result())

    def cancel(self, *args: Any, **kwargs: Any) -> bool:
        self._inner.cancel()
        return super().cancel(*args, **kwargs)

    def __await__(self) -> Generator[Any, None, Any]:
        result = yield from super().__await__()
        self._call.adopt()
        return result

    __iter__ = __await__
