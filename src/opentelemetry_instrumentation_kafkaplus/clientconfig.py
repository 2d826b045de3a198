"""What kafkaplus changes in a client's configuration, and nothing more.

Two changes, both invisible to the app:

* ``delivery.report.only.error`` is turned off, because a span can only end
  on a delivery report; the app's callback is filtered so it still sees only
  the errors it asked for (see producer.py);
* ``stats_cb`` is wrapped to feed the statistics bridge when statistics are on
  (the ``statistics_interval_ms`` option, or the app's own
  ``statistics.interval.ms``); the app's own callback receives the identical
  JSON string.

The caller's dict is never mutated: a copy is passed to confluent-kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import report
from .telemetry import ACTIVE


def init_client(
    client: Any,
    base_init: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    producer: bool,
    state_type: Any,
) -> None:
    """The traced clients' ``__init__``: the real constructor, then our state.

    The constructor's own errors propagate untouched; ours are reported and
    leave a client that is traced with fewer attributes.
    """
    args, kwargs, conf, stats_cb = prepare(args, kwargs, producer=producer)
    try:
        state = state_type(conf)
    except Exception as exc:
        report("client setup", exc)
        state = state_type({})
    if not producer and conf is not None:
        args, kwargs = _with_commit_results(args, kwargs, conf, state)
    base_init(client, *args, **kwargs)
    client._kafkaplus_stats = stats_cb
    client._kafkaplus = state


def _with_commit_results(
    args: tuple[Any, ...], kwargs: dict[str, Any], conf: Mapping[str, Any], state: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Route ``on_commit`` through kafkaplus so async commits end with their result.

    The app's own ``on_commit`` is called as before, with the same arguments.
    """
    user_cb = conf.get("on_commit")
    if user_cb is not None and not callable(user_cb):
        return args, kwargs  # let confluent-kafka reject it
    from .consumer import commit_result_callback

    callback = commit_result_callback(state, user_cb)
    state.commit_results = True
    if "on_commit" in kwargs or not args:
        return args, {**kwargs, "on_commit": callback}
    return ({**args[0], "on_commit": callback},), kwargs


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


def prepare(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, producer: bool
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any] | None, Any]:
    """(args, kwargs) for the real constructor, the merged config, the stats callback."""
    conf = merged(args, kwargs)
    if conf is None:
        return args, kwargs, None, None
    changes: dict[str, Any] = {}
    stats_cb = None
    try:
        if producer and str(conf.get("delivery.report.only.error", "")).lower() in ("true", "1"):
            changes["delivery.report.only.error"] = False
        tel = ACTIVE.telemetry
        bridge = tel.statistics if tel is not None else None
        if bridge is not None:
            interval = _interval(conf) or tel.options.statistics_interval_ms  # type: ignore[union-attr]
            if interval > 0:
                from .statistics import make_stats_cb

                user_cb = conf.get("stats_cb")
                group = conf.get("group.id") if not producer else None
                stats_cb = make_stats_cb(
                    bridge,
                    user_cb if callable(user_cb) else None,
                    group_id=group if isinstance(group, str) else None,
                )
                if user_cb is None or callable(user_cb):
                    changes["stats_cb"] = stats_cb
                    changes["statistics.interval.ms"] = interval
                else:
                    stats_cb = None  # not callable: let confluent-kafka reject it
    except Exception as exc:
        report("client config", exc)
        return args, kwargs, conf, None
    if not changes:
        return args, kwargs, conf, None
    if args:
        first = {**args[0], **{k: v for k, v in changes.items() if k not in kwargs}}
        args = (first,)
    kwargs = {**kwargs, **{k: v for k, v in changes.items() if k in kwargs or not args}}
    return args, kwargs, conf, stats_cb
