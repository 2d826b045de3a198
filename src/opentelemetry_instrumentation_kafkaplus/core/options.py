"""Options of the instrumentation: keyword arguments of ``instrument()`` and env vars.

Every option has a keyword and an ``OTEL_PYTHON_KAFKAPLUS_<NAME>`` variable so it
works the same under ``opentelemetry-instrument`` as in code. A keyword wins over
the variable. A wrong keyword is a programming error and raises at
``instrument()``; a wrong variable must not stop a service from starting, so it
is logged and the default is used.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import logger
from .instruments import METRIC_SETS

ENV_PREFIX = "OTEL_PYTHON_KAFKAPLUS_"

CONTEXT_MODES = ("parent", "link")

ProduceHook = Callable[..., None]
ConsumeHook = Callable[..., None]


@dataclass(frozen=True)
class Options:
    """Resolved options; built once per ``instrument()`` call."""

    consumer_context_mode: str = "parent"
    capture_key: bool = True
    capture_body_size: bool = True
    capture_headers: tuple[str, ...] = ()
    exclude_topics: tuple[re.Pattern[str], ...] = ()
    produce_hook: ProduceHook | None = None
    consume_hook: ConsumeHook | None = None
    statistics_interval_ms: int = 0
    metrics_partition: bool = False
    metrics: str = "all"
    semconv_dup: bool = False
    # Names of headers to capture, lower-cased, mapped to their attribute key.
    header_attributes: Mapping[str, str] = field(default_factory=dict)

    def topic_excluded(self, topic: str) -> bool:
        return any(p.search(topic) for p in self.exclude_topics)


# name -> (parser, default)
def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
    raise ValueError(f"expected a boolean, got {value!r}")


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


def _parse_hook(value: Any) -> Callable[..., None] | None:
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


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "consumer_context_mode": _parse_mode,
    "capture_key": _parse_bool,
    "capture_body_size": _parse_bool,
    "capture_headers": _parse_list,
    "exclude_topics": _parse_patterns,
    "produce_hook": _parse_hook,
    "consume_hook": _parse_hook,
    "statistics_interval_ms": _parse_interval,
    "metrics_partition": _parse_bool,
    "metrics": _parse_metric_set,
}

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
        try:
            values[name] = parse(raw)
        except Exception as exc:
            logger.warning("kafkaplus: ignoring %s=%r: %s; using the default", var, raw, exc)
    headers = values.get("capture_headers", ())
    values["capture_headers"] = headers
    values["header_attributes"] = {h.lower(): "messaging.header." + h.lower() for h in headers}
    values["semconv_dup"] = _semconv_dup(env)
    return Options(**values)
