"""Every private name of the OpenTelemetry API and SDK that kafkaplus reads, in one place.

Each is read for one reason: to make the hot paths (``produce()``, ``poll()``)
cost almost nothing when nothing records, or to skip work the SDK would throw
away. None is written. If a future release renames one, only this module
changes, and each use degrades to the slower public path rather than failing
(the ``getattr`` defaults below).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import baggage as _baggage
from opentelemetry import context as _context
from opentelemetry import trace as _trace
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace import propagation as _trace_propagation
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

#: Context keys read directly from a Context (a dict lookup) instead of through
#: ``get_value`` / ``get_current_span`` (a call and a lookup of the current context).
SPAN_KEY: str = _trace_propagation._SPAN_KEY
SUPPRESS_KEY: str = _context._SUPPRESS_INSTRUMENTATION_KEY
BAGGAGE_KEY: str = _baggage._BAGGAGE_KEY


def _runtime_var() -> ContextVar[Any] | None:
    """The default runtime context's ContextVar; None under another runtime.

    ``opentelemetry.context.get_current()`` and ``attach()`` are each two
    Python calls around one read or set of that ContextVar, and every poll
    reads the context and makes two contexts current. Another runtime context
    (``OTEL_PYTHON_CONTEXT``) keeps the public functions.
    """
    runtime = getattr(_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(var, ContextVar):
        return var
    return None


_VAR = _runtime_var()
#: ``opentelemetry.context.get_current``, without its two Python calls.
get_current: Callable[[], Any] = _VAR.get if _VAR is not None else _context.get_current
#: ``opentelemetry.context.attach``, without its two Python calls: what it does
#: with the default runtime (set the ContextVar; the token it returns).
attach: Callable[[Any], Any] = _VAR.set if _VAR is not None else _context.attach
#: ``opentelemetry.context.detach``, without its two Python calls. Unlike the
#: API's, it raises for a token of another context: callers catch it.
detach: Callable[[Any], Any] = _VAR.reset if _VAR is not None else _context.detach


def _tuple_layout() -> bool:
    """Whether a SpanContext is the tuple the API has always built.

    That is (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid);
    its properties are each a Python call that indexes it, and the hot paths
    read three or four of them per message.
    """
    try:
        probe = SpanContext(3, 5, True, TraceFlags(1))
        return (
            isinstance(probe, tuple)
            and tuple(probe) == (3, 5, True, 1, DEFAULT_TRACE_STATE, True)
            and probe[4] is DEFAULT_TRACE_STATE
            and _remote_fast(3, 5, TraceFlags(1)) == probe
        )
    except Exception:
        return False


def _remote_fast(trace_id: int, span_id: int, flags: TraceFlags) -> SpanContext:
    return tuple.__new__(SpanContext, (trace_id, span_id, True, flags, DEFAULT_TRACE_STATE, True))


def _remote_public(trace_id: int, span_id: int, flags: TraceFlags) -> SpanContext:
    return SpanContext(trace_id, span_id, True, flags)


def _fields_public(span_context: SpanContext) -> tuple[int, int, int, Any, bool]:
    sc = span_context
    return sc.trace_id, sc.span_id, sc.trace_flags, sc.trace_state, sc.is_valid


_LAYOUT = _tuple_layout()
#: (trace_id, span_id, trace_flags, trace_state, is_valid) of a SpanContext: one
#: C call instead of five Python property calls, when the layout is the API's.
span_fields: Callable[[SpanContext], tuple[int, int, int, Any, bool]] = (
    operator.itemgetter(0, 1, 3, 4, 5) if _LAYOUT else _fields_public
)
#: The remote SpanContext of ids the caller has checked (non-zero, in range),
#: with no trace state: what ``SpanContext(trace_id, span_id, True, flags)``
#: makes, without its Python ``__new__`` re-checking the ids.
remote_span_context: Callable[[int, int, TraceFlags], SpanContext] = (
    _remote_fast if _LAYOUT else _remote_public
)


def current_with_span(span: Any) -> _context.Context:
    """``trace.set_span_in_context(span)``: the current context with ``span`` as its span.

    What the API builds (a copy with one key set), without its three Python calls.
    """
    values = dict(get_current())
    values[SPAN_KEY] = span
    return _context.Context(values)


def tracer_provider_set() -> bool:
    """Whether a global TracerProvider was set (the API keeps it in a module global)."""
    return _trace._TRACER_PROVIDER is not None


def meter_provider_set() -> bool:
    """Whether a global MeterProvider was set."""
    return _metrics_internal._METER_PROVIDER is not None


def global_providers_unset() -> bool:
    """Neither global provider is set yet: the cheapest "nothing can record" check."""
    return _trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None


def proxied_tracer(tracer: Any) -> Any:
    """The tracer behind an API ``ProxyTracer`` (None if the proxy is not resolved yet)."""
    return getattr(tracer, "_tracer", None)


def is_proxy_meter(meter: Any) -> bool:
    """Whether ``meter`` is the API's proxy meter, which resolves when a provider is set."""
    return hasattr(meter, "_real_meter")


def proxied_meter(meter: Any) -> Any:
    """The meter behind an API proxy meter (None until a provider is set)."""
    return getattr(meter, "_real_meter", None)


def readers_probe(meter: Any) -> Callable[[], Any] | None:
    """For an SDK meter: a call returning its provider's reader storages (empty: no reader).

    The distro installs an SDK ``MeterProvider`` even with
    ``OTEL_METRICS_EXPORTER=none``, with no reader: every measurement then goes
    nowhere, yet each costs what a recorded one costs. Readers can be added
    and removed later (``add_metric_reader``), and the SDK replaces the
    mapping rather than changing it, so a fresh read each time sees them.
    None for a meter that is not the SDK's.
    """
    consumer = getattr(meter, "_measurement_consumer", None)
    if consumer is None or not isinstance(getattr(consumer, "_reader_storages", None), Mapping):
        return None
    return functools.partial(getattr, consumer, "_reader_storages")


def processors_probe(tracer: Any) -> Callable[[], Any] | None:
    """For an SDK tracer: a call returning its provider's span processors (empty: none).

    The distro installs an SDK ``TracerProvider`` even with
    ``OTEL_TRACES_EXPORTER=none``, with no span processor: every span is then
    built and thrown away. Processors can be added later
    (``add_span_processor``), and the SDK replaces its tuple rather than
    changing it, so a fresh read each time sees them. None for a tracer that
    is not the SDK's.
    """
    multi = getattr(tracer, "span_processor", None)
    if not isinstance(getattr(multi, "_span_processors", None), tuple):
        return None
    return functools.partial(getattr, multi, "_span_processors")


def composite_members(propagator: Any) -> Any:
    """The propagators inside a ``CompositePropagator`` (None if not readable)."""
    return getattr(propagator, "_propagators", None)


def drops_unsampled_remote(tracer: Any) -> bool:
    """Whether the SDK tracer's sampler drops spans whose remote parent is not sampled.

    True for the SDK's ParentBased samplers with their default for that case
    (ALWAYS_OFF). A consumer can then skip building a span the SDK would drop.
    """
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:  # the SDK is optional
        return False
    sampler = getattr(tracer, "sampler", None)
    return isinstance(sampler, ParentBased) and (
        getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
    )
