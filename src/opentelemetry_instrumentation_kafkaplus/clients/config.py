"""What kafkaplus changes in a client's configuration at construction, and nothing more.

Three changes, all invisible to the app:

* ``delivery.report.only.error`` is turned off, because a span can only end
  on a delivery report; the app's callback is filtered so it still sees only
  the errors it asked for (clients/producer.py);
* ``stats_cb`` is wrapped to feed the statistics bridge when statistics are on
  (the ``statistics_interval_ms`` option, or the app's own
  ``statistics.interval.ms``); the app's own callback receives the identical
  JSON string;
* a consumer's ``on_commit`` goes through kafkaplus first, so asynchronous
  commit spans end with the broker's answer; the app's own is called as before.

The caller's dict is never mutated: a copy is passed to confluent-kafka. A
call the constructor would reject (no configuration at all, a non-dict) goes
to it exactly as given, so it raises its own error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..core.errors import report
from ..core.statistics import StatsCallback, make_stats_cb
from ..core.telemetry import ACTIVE
from ..operations import settle
from ..operations.process import ConsumerState
from ..operations.send import ProducerState
from .state import AppCallback, attach


def init_client(client: Any, construct: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any], *, producer: bool) -> None:  # fmt: skip
    """A traced client's construction: the real constructor, then our state.

    ``construct(*args, **kwargs)`` runs the client's own constructor. Its
    errors propagate untouched; ours are reported and leave a client that is
    traced with fewer attributes.
    """
    conf = merged(args, kwargs) if args or kwargs else None
    if conf is None:
        # No configuration at all, or not a dict: the constructor raises its own
        # error (it tells "no kwargs" from "empty kwargs", so none are added).
        if kwargs:
            construct(*args, **kwargs)
        else:
            construct(*args)
        return
    state = new_state(conf, producer=producer)
    args, kwargs, stats_cb = prepare(args, kwargs, conf, producer=producer, state=state)
    construct(*args, **kwargs)
    state.stats = stats_cb
    attach(client, state)


def new_state(conf: Mapping[str, Any] | None, *, producer: bool) -> Any:
    """A client's state from its configuration (never anything secret)."""
    kind = ProducerState if producer else ConsumerState
    try:
        return kind(conf)
    except Exception as exc:
        report("client setup", exc)
        return kind({})


def merged(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config as confluent-kafka will see it, or None when malformed."""
    if args:
        if len(args) != 1 or not isinstance(args[0], dict):
            return None
        return {**args[0], **kwargs}
    return dict(kwargs)


def _interval(conf: Mapping[str, Any]) -> int:
    try:
        return int(conf.get("statistics.interval.ms", 0) or 0)
    except (TypeError, ValueError):
        return 0


def prepare(args: tuple[Any, ...], kwargs: dict[str, Any], conf: dict[str, Any], *,
            producer: bool, state: Any) -> tuple[tuple[Any, ...], dict[str, Any],
                                                 StatsCallback | None]:  # fmt: skip
    """(args, kwargs) for the real constructor, and the stats callback installed."""
    changes: dict[str, Any] = {}
    stats_cb = None
    try:
        if producer and str(conf.get("delivery.report.only.error", "")).lower() in ("true", "1"):
            changes["delivery.report.only.error"] = False
        tel = ACTIVE.telemetry
        bridge = tel.statistics if tel is not None else None
        if bridge is not None:
            interval = _interval(conf) or tel.options.statistics_interval_ms  # type: ignore[union-attr]
            user_cb = conf.get("stats_cb")
            if interval > 0 and (user_cb is None or callable(user_cb)):
                group = conf.get("group.id") if not producer else None
                stats_cb = make_stats_cb(
                    bridge, user_cb, group_id=group if isinstance(group, str) else None
                )
                changes["stats_cb"] = stats_cb
                changes["statistics.interval.ms"] = interval
        if not producer:
            on_commit = conf.get("on_commit")
            if on_commit is None or callable(on_commit):  # else confluent-kafka rejects it
                changes["on_commit"] = AppCallback(
                    _commit_result(state), on_commit, "commit result"
                )
                state.commits.enabled = True
    except Exception as exc:
        report("client config", exc)
        return args, kwargs, None
    if not changes:
        return args, kwargs, None
    if args:
        args = ({**args[0], **{k: v for k, v in changes.items() if k not in kwargs}},)
    kwargs = {**kwargs, **{k: v for k, v in changes.items() if k in kwargs or not args}}
    return args, kwargs, stats_cb


def _commit_result(state: ConsumerState) -> Any:
    """What kafkaplus does with an ``on_commit`` result: the commit span's outcome."""

    def record(err: Any, partitions: Any) -> None:
        tel = state.telemetry or ACTIVE.telemetry
        settle.commit_result(tel, state.commits, state.base_attrs, err, partitions)

    return record
