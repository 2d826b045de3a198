"""The traced ``Consumer``: a subclass of confluent-kafka's C class, substituted for it.

The traced-call functions (``fn(client, state, args, kwargs, orig)``) are
shared by the subclass, the proxies and the wrapt wrappers of the Python
clients; they hand poll results to the process operation and commits to the
settle operation.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from confluent_kafka import cimpl

from ..core import sdkaccess
from ..core.calls import COMMIT, SUBSCRIBE, Call, bind
from ..core.errors import report
from ..core.propagation import MESSAGE_KEY
from ..core.telemetry import ACTIVE, suppressed
from ..operations import process, settle
from ..operations.process import ConsumerState
from . import config
from .state import (
    CLUSTER_KNOWN,
    AppCallback,
    TracedClass,
    document,
    learn_cluster_id,
    traced_method,
)

_CConsumer = cimpl.Consumer
_orig_poll = _CConsumer.poll
_orig_consume = _CConsumer.consume
_orig_close = _CConsumer.close
_orig_commit = _CConsumer.commit
_orig_store_offsets = _CConsumer.store_offsets
_orig_subscribe = _CConsumer.subscribe
_cluster_id = getattr(_CConsumer, "cluster_id", None)  # not in every confluent-kafka version
_get_current = sdkaccess.get_current
_providers_unset = sdkaccess.global_providers_unset
_time_ns = time.time_ns


def poll(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
         orig: Any = _orig_poll) -> Any:  # fmt: skip
    """Traced ``Consumer.poll``: the same arguments, results and errors."""
    process.end_open(state)
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or state.aio:
        return orig(client, *args, **kwargs)
    start = _time_ns() if tel.options.receive_spans else 0
    msg = orig(client, *args, **kwargs)
    if msg is not None:
        received(client, tel, state, msg, start)
    return msg


def poll_detached(client: Any, state: ConsumerState, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> tuple[Any, Any]:  # fmt: skip
    """``poll`` on behalf of code elsewhere: (message, its record), nothing made current here."""
    process.end_open(state)
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or state.aio:
        return _orig_poll(client, *args, **kwargs), None
    start = _time_ns() if tel.options.receive_spans else 0
    msg = _orig_poll(client, *args, **kwargs)
    if msg is None:
        return msg, None
    return msg, received(client, tel, state, msg, start, False)


def received(client: Any, tel: Any, state: ConsumerState, msg: Any, start: int,
             attach: bool = True) -> Any:  # fmt: skip
    """A message or error event poll() returned: to the process operation; its record.

    ``start``: when poll() was called (ns), 0 without receive spans. Shared by
    the sync and the aio consumer, so both record the same.
    """
    try:
        if msg.error() is None:
            if state.cluster_retry != CLUSTER_KNOWN:
                learn_cluster(client, state)
            # By position: a call with keywords costs the hot path more.
            return process.process_one(tel, state, msg, attach, start)
        process.error_event(tel, state, msg)
    except Exception as exc:
        report("consumer instrumentation", exc)
    return None


def received_batch(client: Any, tel: Any, state: ConsumerState, msgs: Any, start: int,
                   attach: bool = True) -> Any:  # fmt: skip
    """A consume() batch: to the process operation; the batch's record."""
    try:
        if not suppressed():
            learn_cluster(client, state)
            return process.process_batch(tel, state, msgs, start, attach=attach)
    except Exception as exc:
        report("consumer instrumentation", exc)
    return None


def learn_cluster(client: Any, state: ConsumerState) -> None:
    """Look for the cluster id when it is unknown and the last look is a second old."""
    learn_cluster_id(client, state, _cluster_id)


def consume(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
            orig: Any = _orig_consume) -> Any:  # fmt: skip
    """Traced ``Consumer.consume``: the same arguments, results and errors."""
    return _consume(client, state, args, kwargs, orig, True)[0]


def consume_detached(client: Any, state: ConsumerState, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> tuple[Any, Any]:  # fmt: skip
    """``consume`` on behalf of code elsewhere: (messages, the batch's record)."""
    return _consume(client, state, args, kwargs, _orig_consume, False)


def _consume(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
             orig: Any, attach: bool) -> tuple[Any, Any]:  # fmt: skip
    process.end_open(state)
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or state.aio:
        return orig(client, *args, **kwargs), None
    start = _time_ns()
    msgs = orig(client, *args, **kwargs)
    if not msgs:
        return msgs, None
    return msgs, received_batch(client, tel, state, msgs, start, attach)


def close(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
          orig: Any = _orig_close) -> Any:  # fmt: skip
    """Traced ``Consumer.close``: open process spans end before the client closes."""
    process.end_open(state)
    process.close_waiting(state)
    try:
        return orig(client, *args, **kwargs)
    finally:
        if state.stats is not None:
            state.stats.forget()


def commit(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
           orig: Any = _orig_commit) -> Any:  # fmt: skip
    """Traced ``Consumer.commit``: a settle span."""
    return _settle(client, state, args, kwargs, orig, "commit")


def store_offsets(client: Any, state: ConsumerState, args: tuple[Any, ...],
                  kwargs: dict[str, Any], orig: Any = _orig_store_offsets) -> Any:  # fmt: skip
    """Traced ``Consumer.store_offsets``: a settle span.

    Storing is local; the commit that follows sends it. Both settle the
    message from the app's point of view, so both are settle spans.
    """
    return _settle(client, state, args, kwargs, orig, "store_offsets")


def _settle(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
            orig: Any, operation: str) -> Any:  # fmt: skip
    tel = state.telemetry or ACTIVE.telemetry
    if tel is None or suppressed() or not tel.tracing():
        return orig(client, *args, **kwargs)
    named = bind(COMMIT if operation == "commit" else COMMIT[:2], args, kwargs)
    if named is None:
        return orig(client, *args, **kwargs)
    call = Call(named, args, kwargs, None)
    return settle.settle(tel, state.base_attrs, call, operation, state.commits, client, orig)


def subscribe(client: Any, state: ConsumerState, args: tuple[Any, ...], kwargs: dict[str, Any],
              orig: Any = _orig_subscribe) -> Any:  # fmt: skip
    """``subscribe`` with rebalance callbacks that restart offset-gap tracking.

    A partition that comes back after a rebalance resumes where another member
    left it: that jump is not loss. The app's own callbacks are called as given;
    without an ``on_lost`` of the app's, lost partitions go to its ``on_revoke``,
    as confluent-kafka documents.
    """
    named = bind(SUBSCRIBE, args, kwargs)
    if named is None:
        return orig(client, *args, **kwargs)
    for name in SUBSCRIBE[1:]:
        user_cb = named.get(name)
        if user_cb is not None and not callable(user_cb):
            return orig(client, *args, **kwargs)  # confluent-kafka rejects it
    on_revoke = named.get("on_revoke")
    forget = _forget_partitions(state)
    named["on_assign"] = AppCallback(forget, named.get("on_assign"), "rebalance")
    named["on_revoke"] = AppCallback(forget, on_revoke, "rebalance")
    named["on_lost"] = AppCallback(forget, named.get("on_lost") or on_revoke, "rebalance")
    return orig(client, **named)


def _forget_partitions(state: ConsumerState) -> Any:
    """Rebalance bookkeeping: partitions that move restart their offset-gap tracking."""

    def forget(consumer: Any, partitions: Any) -> None:
        state.gaps.forget(partitions)

    return forget


def _repositioned(method: str, all_partitions: bool = False) -> Any:
    """A traced assign/seek/unassign: deliberate repositioning restarts gap tracking."""
    orig = getattr(_CConsumer, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = orig(self, *args, **kwargs)
        try:
            gaps = self._kafkaplus.gaps
            if all_partitions:
                gaps.forget()
            else:
                target = args[0] if args else next(iter(kwargs.values()), None)
                gaps.forget([target] if hasattr(target, "topic") else target)
        except AttributeError:  # __init__ never ran: nothing tracked
            pass
        except Exception as exc:
            report("offset tracking", exc)
        return result

    wrapper.__name__ = wrapper.__qualname__ = method
    return wrapper


class Consumer(_CConsumer, metaclass=TracedClass):
    """confluent_kafka.Consumer, traced. Substituted for the original class."""

    # No slot: its descriptor would be a class member without a docstring, which
    # confluent-kafka's own documentation check rejects; the instance __dict__ is as fast.
    _kafkaplus: ConsumerState
    _kafkaplus_original = _CConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        construct = functools.partial(_CConsumer.__init__, self)
        config.init_client(self, construct, args, kwargs, producer=False)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        try:
            state = self._kafkaplus
        except AttributeError:  # __init__ never ran: the client's own error
            return _orig_poll(self, *args, **kwargs)
        # With no SDK anywhere (so no span of ours is open or current), call
        # straight through: this check is all the instrumentation costs then.
        # Nothing can record (Telemetry.idle, or no provider set yet).
        tel = ACTIVE.telemetry
        if (
            tel is not None
            and (tel.idle or (tel.global_providers and _providers_unset()))
            and not state.open
            and _get_current().get(MESSAGE_KEY) is None
        ):
            return _orig_poll(self, *args, **kwargs)
        return poll(self, state, args, kwargs)

    consume = traced_method(consume, _orig_consume)
    commit = traced_method(commit, _orig_commit)
    store_offsets = traced_method(store_offsets, _orig_store_offsets)
    subscribe = traced_method(subscribe, _orig_subscribe)
    close = traced_method(close, _orig_close)

    # Deliberate repositioning restarts offset-gap tracking for those partitions.
    assign = _repositioned("assign")
    incremental_assign = _repositioned("incremental_assign")
    seek = _repositioned("seek")
    unassign = _repositioned("unassign", all_partitions=True)

    def __del__(self) -> None:
        # Dropped without close(): its last process span still ends.
        try:
            state = self._kafkaplus
        except AttributeError:
            return
        process.drop_open(state)


document(Consumer, _CConsumer)
