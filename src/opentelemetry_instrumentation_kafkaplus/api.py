"""The public API for code that handles a message away from the thread that polled it.

Most shapes need nothing: the thread or task that polls handles the message
inside its process span, and a task handed to an executor while the message
is current carries it on (clients/executors.py). Where kafkaplus cannot see
the hand-off (a queue between a polling thread and worker threads, a
framework it does not know), one line in the handler is enough::

    with processing(msg):      # any thread, any task; `async with` works too
        handle(msg)

The message's context is current inside the block (so its producer calls,
log records and child spans belong to the message's trace), and the message's
``process`` span is that block: it starts when the block starts (unless
something used it earlier) and ends when it ends, with ``error.type`` and
ERROR status when the block raises (the exception propagates unchanged).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context

from .operations.process import Claim, context_of


def processing(msg: Any) -> Claim:
    """A context manager for the handling of ``msg``: its context current, its process span.

    ``msg`` is a message a traced consumer returned (poll(), an aio consumer, a
    framework); for any other message (from ``consume()`` batches, or another
    consumer) the block gets a process span of its own from the message's
    headers. ``msg`` may also be the list ``consume()`` returned (or a tuple of
    its messages): the block is then the batch's process span. Once a
    consumer's messages are claimed this way, its unclaimed messages wait for
    their claim rather than ending at the next poll.
    """
    return Claim(msg)


def message_context(msg: Any) -> Context | None:
    """The context of a polled message (its process span, baggage and origin), or None.

    For code that manages contexts itself: ``context.attach(message_context(msg))``,
    or ``tracer.start_as_current_span(..., context=message_context(msg))``.
    """
    return context_of(msg)
