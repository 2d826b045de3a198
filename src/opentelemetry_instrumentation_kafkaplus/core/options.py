"""Options of the instrumentation: keyword arguments of ``instrument()`` and env vars.

Every option has a keyword and an ``OTEL_PYTHON_KAFKAPLUS_<NAME>`` variable so it
works the same under ``opentelemetry-instrument`` as in code. A keyword wins over
the variable. A wrong keyword is a programming error and raises at
``instrument()``; a wrong variable must not stop a service from starting, so it
is logged and the default is used. Boolean variables follow the OpenTelemetry
configuration rule: only ``true`` (any case) is true, ``false`` is false, and
anything else is false with a warning.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import logger
from .instruments import METRIC_SETS

ENV_PREFIX = "OTEL_PYTHON_KAFKAPLUS_"

CONTEXT_MODES = ("parent", "link")

Hook = Callable[..., None]


@dataclass(frozen=True)
class Options:
    """Resolved options; built once per ``instrument()`` call."""

    consumer_context_mode: str = "parent"
    capture_key: bool = True
    capture_body_size: bool = False
    capture_headers: tuple[str, ...] = ()
    exclude_topics: tuple[re.Pattern[str], ...] = ()
    produce_hook: Hook | None = None
    consume_hook: Hook | None = None
    statistics_interval_ms: int = 0
    metrics: str = "semconv"
    metrics_partition: bool = False
    receive_spans: bool = False
    compat_names: bool = False
    semconv_dup: bool = False
    # Names of headers to capture, lower-cased, mapped to their attribute key.
    header_attributes: Mapping[str, str] = field(default_factory=dict)

    def topic_excluded(self, topic: str) -> bool:
        return any(p.search(topic) for p in self.exclude_topics)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected True or False, got {value!r}")


def _parse_env_bool(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value == "true":
        return True
    if value != "false":
        logger.warning(
            "kafkaplus: %s=%r is not 'true' or 'false'; treating it as false (the "
            "OpenTelemetry rule for boolean variables)",
            var,
            raw,
        )
    return False


def _parse_mode(value: Any) -> str:
    v = str(value).strip().lower()
    if v not in CONTEXT_MODES:
        raise ValueError(f"expected one of {', '.join(CONTEXT_MODES)}, got {value!r}")
    return v


def _parse_metric_set(value: Any) -> str:
    v = str(value).strip().lower()
    if v not in METRIC_SETS:
        raise ValueError(f"expected one of {', '.join(METRIC_SETS)}, got {value!r}")
    return v


def _parse_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ValueError(f"expected a list or a comma-separated string, got {value!r}")
    return tuple(s for s in (str(i).strip() for i in items) if s)


def _parse_patterns(value: Any) -> tuple[re.Pattern[str], ...]:
    out = []
    for item in _parse_list(value):
        try:
            out.append(re.compile(item))
        except re.error as exc:
            raise ValueError(f"invalid regular expression {item!r}: {exc}") from None
    return tuple(out)


def _parse_interval(value: Any) -> int:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected milliseconds as an integer, got {value!r}") from None
    if ms < 0 or ms > 86_400_000:
        raise ValueError(f"expected 0..86400000 milliseconds, got {ms}")
    return ms


def _load_hook(value: Any) -> Hook | None:
    if value is None or callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and value.strip():
        module, _, attr = value.strip().partition(":")
        if not attr:
            raise ValueError(f"expected 'module:function', got {value!r}")
        hook = getattr(importlib.import_module(module), attr)
        if not callable(hook):
            raise ValueError(f"{value!r} is not callable")
        return hook  # type: ignore[no-any-return]
    raise ValueError(f"expected a callable or 'module:function', got {value!r}")


def _positional_count(hook: Hook) -> int | None:
    """How many positional parameters ``hook`` takes (None: any number, or unknown)."""
    try:
        params = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            count += 1
    return count


class _ContribProduceHook:
    """A hook in the contrib instrumentations' form: ``hook(span, args, kwargs)``."""

    __slots__ = ("hook",)

    def __init__(self, hook: Hook) -> None:
        self.hook = hook

    def __call__(self, span: Any, *, topic: str, key: Any, value: Any, headers: Any) -> None:
        self.hook(span, (topic,), {"value": value, "key": key, "headers": headers})


class _ContribConsumeHook:
    """A hook in the contrib form: ``hook(span, record, args, kwargs)``."""

    __slots__ = ("hook",)

    def __init__(self, hook: Hook) -> None:
        self.hook = hook

    def __call__(self, span: Any, message: Any) -> None:
        self.hook(span, message, (), {})


def _parse_produce_hook(value: Any) -> Hook | None:
    """``hook(span, topic=, key=, value=, headers=)``, or contrib's ``hook(span, args, kwargs)``."""
    hook = _load_hook(value)
    if hook is not None and _positional_count(hook) == 3:
        return _ContribProduceHook(hook)
    return hook


def _parse_consume_hook(value: Any) -> Hook | None:
    """``hook(span, message)``, or the contrib ``hook(span, record, args, kwargs)``."""
    hook = _load_hook(value)
    if hook is not None and _positional_count(hook) == 4:
        return _ContribConsumeHook(hook)
    return hook


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "consumer_context_mode": _parse_mode,
    "capture_key": _parse_bool,
    "capture_body_size": _parse_bool,
    "capture_headers": _parse_list,
    "exclude_topics": _parse_patterns,
    "produce_hook": _parse_produce_hook,
    "consume_hook": _parse_consume_hook,
    "statistics_interval_ms": _parse_interval,
    "metrics": _parse_metric_set,
    "metrics_partition": _parse_bool,
    "receive_spans": _parse_bool,
    "compat_names": _parse_bool,
}

#: Every option's keyword (its variable is ENV_PREFIX + the keyword in upper case).
NAMES = tuple(_PARSERS)

# Keywords of instrument() that are not options of ours.
_PASSTHROUGH = frozenset({"tracer_provider", "meter_provider", "skip_dep_check"})


def _semconv_dup(env: Mapping[str, str]) -> bool:
    """Whether ``messaging/dup`` is in OTEL_SEMCONV_STABILITY_OPT_IN.

    opentelemetry-instrumentation does not parse the messaging values itself,
    so we do. ``messaging`` alone means new names only, which is our default.
    """
    raw = env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "messaging/dup" in (s.strip().lower() for s in raw.split(","))


def resolve(kwargs: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Options:
    """Merge keyword arguments and environment variables into Options."""
    env = os.environ if env is None else env
    unknown = set(kwargs) - set(_PARSERS) - _PASSTHROUGH
    if unknown:
        raise TypeError(
            f"unknown kafkaplus option(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_PARSERS))}"
        )
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        if kwargs.get(name) is not None:
            try:
                values[name] = parse(kwargs[name])
            except ValueError as exc:
                raise ValueError(f"kafkaplus option {name}: {exc}") from None
            continue
        var = ENV_PREFIX + name.upper()
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        if parse is _parse_bool:
            values[name] = _parse_env_bool(var, raw)
            continue
        try:
            values[name] = parse(raw)
        except Exception as exc:
            logger.warning("kafkaplus: ignoring %s=%r: %s; using the default", var, raw, exc)
    headers = values.get("capture_headers", ())
    values["capture_headers"] = headers
    values["header_attributes"] = {h.lower(): "messaging.header." + h.lower() for h in headers}
    values["semconv_dup"] = _semconv_dup(env)
    return Options(**values)
