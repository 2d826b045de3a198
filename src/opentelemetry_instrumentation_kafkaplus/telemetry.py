"""What an active instrumentation shares with every client: tracer, metrics, options.

Clients look up ``ACTIVE.telemetry`` on each call, so ``uninstrument()`` stops
already-created clients from emitting anything, and ``instrument()`` with new
providers takes effect everywhere at once.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import baggage as _baggage
from opentelemetry import trace
from opentelemetry import trace as _trace_api
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from opentelemetry.metrics import Meter
from opentelemetry.metrics import _internal as _metrics_api
from opentelemetry.trace import NoOpTracer, ProxyTracer, Tracer
from opentelemetry.trace import propagation as _trace_propagation

from .config import Options
from .metrics import Metrics
from .propagation import Injector


class Telemetry:
    """Signals and options of one ``instrument()`` call."""

    def __init__(self, tracer: Tracer, meter: Meter, options: Options, statistics: Any = None):
        self.tracer = tracer
        self.options = options
        self.metrics = Metrics(meter)
        self.meter = meter
        self.injector = Injector()
        self.statistics = statistics
        self._tracing: bool | None = None
        # Providers passed to instrument() are used as given; the global ones
        # may be set later, which the proxies pick up.
        self._proxy_tracer = isinstance(tracer, ProxyTracer)
        self._proxy_meter = hasattr(meter, "_real_meter")
        self._drops: bool | None = None
        self._metering: bool | None = None
        #: Tracer and meter both come from the global providers: while neither
        #: is set, nothing can record (the producer's cheapest check).
        self.global_providers = self._proxy_tracer and self._proxy_meter

    def tracing(self) -> bool:
        """False while the tracer is the API's no-op (no SDK configured yet).

        A ProxyTracer becomes real when a provider is set later; once it has,
        we call the real tracer directly and stop checking.
        """
        if self._tracing is not None:
            return self._tracing
        tracer = self.tracer
        if self._proxy_tracer and _trace_api._TRACER_PROVIDER is None:
            return False  # the cheapest check while no SDK is configured
        if isinstance(tracer, ProxyTracer):
            real = tracer._tracer
            if isinstance(real, NoOpTracer):
                return False
            self.tracer = real
        elif isinstance(tracer, NoOpTracer):
            self._tracing = False
            return False
        self._tracing = True
        return True

    def drops_unsampled_remote(self) -> bool:
        """Whether the SDK sampler drops spans whose remote parent is not sampled.

        True for the SDK's ParentBased samplers with their default for that
        case (ALWAYS_OFF); then a consumer can skip building such a span.
        """
        if self._drops is None:
            self._drops = _drops_unsampled_remote(self.tracer)
        return self._drops

    def metering(self) -> bool:
        """False while metrics go nowhere (no MeterProvider set yet)."""
        if self._metering is not None:
            return self._metering
        if self._proxy_meter and _metrics_api._METER_PROVIDER is None:
            return False
        if not self.metrics.enabled:
            self._metering = False
            return False
        meter = self.meter
        if hasattr(meter, "_real_meter") and meter._real_meter is None:
            return False
        self._metering = True
        return True


# The context keys the hot paths read directly, saving a call per message.
_SPAN_KEY = _trace_propagation._SPAN_KEY
_SUPPRESS_KEY = _SUPPRESS_INSTRUMENTATION_KEY
_BAGGAGE_KEY = _baggage._BAGGAGE_KEY


def _drops_unsampled_remote(tracer: Any) -> bool:
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
    except ImportError:
        return False
    sampler = getattr(tracer, "sampler", None)
    return isinstance(sampler, ParentBased) and (
        getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
    )


def no_sdk(tel: Telemetry | None) -> bool:
    """True while instrumented with the global providers and neither is set yet.

    Then nothing can record, and the clients' hot methods call straight
    through. Module globals only: this runs on every produce() and poll().
    """
    return (
        tel is not None
        and tel.global_providers
        and _trace_api._TRACER_PROVIDER is None
        and _metrics_api._METER_PROVIDER is None
    )


def end_span(span: Any, end_time: int | None = None) -> None:
    """End a span; a failing span processor is reported, never raised into the app."""
    try:
        span.end(end_time=end_time)
    except Exception as exc:
        from ._errors import report

        report("span end", exc)


def suppressed() -> bool:
    """True inside ``suppress_instrumentation()``."""
    return bool(get_value(_SUPPRESS_INSTRUMENTATION_KEY))


class _Active:
    __slots__ = ("telemetry",)

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None


ACTIVE = _Active()

INVALID_SPAN_CONTEXT = trace.INVALID_SPAN_CONTEXT
