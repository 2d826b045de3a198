"""What an active instrumentation shares with every client: tracer, metrics, options.

Clients look up ``ACTIVE.telemetry`` on each call, so ``uninstrument()`` stops
already-created clients from emitting anything, and ``instrument()`` with new
providers takes effect everywhere at once. The two ways a span ends here
(``end_span``, ``fail_span``) are the only ones: a failing span processor is
reported, never raised into the application.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter, NoOpMeter
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    NoOpTracer,
    ProxyTracer,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)

from ..version import __version__
from . import sdkaccess
from .errors import report
from .instruments import Metrics
from .options import Options
from .propagation import Injector
from .semconv import ERROR_TYPE, SCHEMA_URL, error_type

#: The instrumentation scope name of every span and metric kafkaplus emits.
SCOPE = "opentelemetry_instrumentation_kafkaplus"


class Telemetry:
    """Signals and options of one ``instrument()`` call (or of one wrapped client)."""

    @classmethod
    def build(cls, tracer_provider: Any, meter_provider: Any, options: Options,
              statistics: Any = None) -> Telemetry:  # fmt: skip
        """Tracer and meter from these providers (None: the global ones)."""
        tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider, schema_url=SCHEMA_URL)
        return cls(tracer, meter, options, statistics=statistics)

    def __init__(self, tracer: Tracer, meter: Meter, options: Options, statistics: Any = None):
        self.tracer = tracer
        self.options = options
        self.metrics = Metrics(meter, options.metrics)
        self.meter = meter
        self.injector = Injector()
        self.statistics = statistics
        self._tracing: bool | None = None
        #: For an SDK tracer, once resolved: its provider's span processors now,
        #: and the real tracer, which the carrier stands in for while there are none.
        self._spans: Callable[[], Any] | None = None
        self._processors: Any = None
        self._real: Any = None
        # Providers passed to instrument() are used as given; the global ones
        # may be set later, which the proxies pick up.
        self._proxy_tracer = isinstance(tracer, ProxyTracer)
        self._proxy_meter = sdkaccess.is_proxy_meter(meter)
        self._drops: bool | None = None
        self._metering: bool | None = None
        #: For an SDK meter, once resolved: whether its provider has a reader now.
        self._readers: Callable[[], Any] | None = None
        #: Tracer and meter both come from the global providers: while neither
        #: is set, nothing can record (the clients' cheapest check). False once
        #: either resolves: a global provider, once set, stays.
        self.global_providers = self._proxy_tracer and self._proxy_meter
        #: Known for good that nothing records: no-op tracer and no metrics (for
        #: example providers that hand out no-ops, as with OTEL_SDK_DISABLED=true).
        #: The clients' hot methods call straight through while ``idle`` is True,
        #: or while ``global_providers`` and neither global provider is set yet.
        self.idle = False

    def tracing(self) -> bool:
        """False while the tracer is the API's no-op (no SDK configured yet).

        A ProxyTracer becomes real when a provider is set later; once it has,
        we call the real tracer directly and stop checking. An SDK provider
        with no span processor (what ``OTEL_TRACES_EXPORTER=none`` gives under
        the distro) makes spans that go nowhere: while it has none, ``tracer``
        is the carrier, which makes none and carries the parent's context on
        (re-checked on every call: a processor can be added later).
        """
        spans = self._spans
        if spans is not None:
            processors = spans()
            if processors is not self._processors:  # the SDK replaces the tuple on a change
                self._processors = processors
                self.tracer = self._real if processors else CARRIER
            return True
        if self._tracing is not None:
            return self._tracing
        tracer = self.tracer
        if self._proxy_tracer and not sdkaccess.tracer_provider_set():
            return False  # the cheapest check while no SDK is configured
        if isinstance(tracer, ProxyTracer):
            real = sdkaccess.proxied_tracer(tracer)
            if real is None:
                return False
            if isinstance(real, NoOpTracer):  # the provider set hands out no-ops: for good
                return self._no_tracing()
            self.tracer = real
        elif isinstance(tracer, NoOpTracer):
            return self._no_tracing()
        self._tracing = True
        self.global_providers = False  # a provider is set, for good: stop asking
        self._real = self.tracer
        self._spans = sdkaccess.processors_probe(self.tracer)
        return self.tracing() if self._spans is not None else True

    def spanless(self) -> bool:
        """Whether the carrier stands in for the tracer (no span processor right now)."""
        return self.tracer is CARRIER

    def _no_tracing(self) -> bool:
        self._tracing = False
        self.idle = self._metering is False
        return False

    def drops_unsampled_remote(self) -> bool:
        """Whether the SDK sampler drops spans whose remote parent is not sampled."""
        if self._drops is None:
            self._drops = sdkaccess.drops_unsampled_remote(self._real or self.tracer)
        return self._drops

    def metering(self) -> bool:
        """False while per-message metrics go nowhere.

        That is: none chosen, no MeterProvider, or an SDK MeterProvider with no
        metric reader (what ``OTEL_METRICS_EXPORTER=none`` gives under the
        distro), re-checked on every call since a reader can be added later.
        """
        readers = self._readers
        if readers is not None:
            return bool(readers())
        if self._metering is not None:
            return self._metering
        if self._proxy_meter and not sdkaccess.meter_provider_set():
            return False  # the cheapest check while no MeterProvider is set
        if not self.metrics.enabled:
            return self._no_metering()
        real = self.meter
        if self._proxy_meter:
            real = sdkaccess.proxied_meter(self.meter)
            if real is None:
                return False
            if isinstance(real, NoOpMeter):  # the provider set hands out no-ops: for good
                return self._no_metering()
        readers = self._readers = sdkaccess.readers_probe(real)
        self._metering = True
        self.global_providers = False  # a provider is set, for good: stop asking
        return readers is None or bool(readers())

    def _no_metering(self) -> bool:
        self._metering = False
        self.idle = self._tracing is False
        return False


class _Carrier(Tracer):
    """Stands in for an SDK tracer whose provider has no span processor: makes no span.

    What it returns is the parent's own context as a non-recording span, as the
    SDK does for a tracer its configuration disables: every operation then takes
    its path for a span that does not record, and the context that arrived
    (a consumed message's producer, the current span) is what the headers carry
    on. A service that exports no traces keeps the trace of the messages that
    pass through it whole, at the cost of an unsampled message.
    """

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Any:
        span = (context if context is not None else sdkaccess.get_current()).get(sdkaccess.SPAN_KEY)
        if span is None:
            return INVALID_SPAN
        if type(span) is NonRecordingSpan:
            return span
        return NonRecordingSpan(span.get_span_context())

    # The API's abstract method; kafkaplus itself only calls start_span. The
    # API's own return type names a private decorator's class.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Any = None, *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        with trace.use_span(self.start_span(name, context), end_on_exit=False) as span:
            yield span


#: The one carrier: ``Telemetry.tracer`` is it while the SDK provider has no processor.
CARRIER = _Carrier()


#: Instrumentation scopes that make their own send spans and trace headers (a
#: framework's own telemetry, switched on by the app). While a send span of
#: theirs is current, kafkaplus makes no send span and leaves the headers as
#: they are: one span per operation, theirs.
SEND_OWNERS: set[str] = set()
#: The kinds of a send span. Another kind of theirs (a framework's process span
#: around a handler) owns no send: the app's own produce() calls are traced here.
_SEND_KINDS = (SpanKind.PRODUCER, SpanKind.CLIENT)


def send_owned_elsewhere(ctx: Any) -> bool:
    """Whether the current span is a send span of an instrumentation that owns send spans."""
    if not SEND_OWNERS:
        return False
    span = ctx.get(sdkaccess.SPAN_KEY)
    scope = getattr(span, "instrumentation_scope", None)
    return (
        scope is not None
        and scope.name in SEND_OWNERS
        and getattr(span, "kind", None) in _SEND_KINDS
    )


def suppressed() -> bool:
    """True inside ``suppress_instrumentation()``."""
    return bool(sdkaccess.get_current().get(sdkaccess.SUPPRESS_KEY))


def end_span(span: Any, end_time: int | None = None) -> None:
    """End a span; a failing span processor is reported, never raised into the app."""
    try:
        span.end(end_time)  # by position: the cheaper call
    except Exception as exc:
        report("span end", exc)


def fail_span(
    span: Any,
    error: Any,
    *,
    end_time: int | None = None,
    etype: str | None = None,
    description: str | None = None,
) -> None:
    """End a span with an error: ``error.type``, ERROR status, and the exception event."""
    try:
        mark_error(span, error, etype=etype, description=description)
        span.end(end_time=end_time)
    except Exception as exc:
        report("span end", exc)


def mark_error(
    span: Any, error: Any, *, etype: str | None = None, description: str | None = None
) -> None:
    """Record an error on a span (it ends later): ``error.type``, ERROR status, the event.

    ``error`` is an exception (recorded as an event) or an error value such as
    a librdkafka ``KafkaError`` (its name becomes ``error.type``, its text the
    status description).
    """
    if not span.is_recording():
        return
    span.set_attribute(ERROR_TYPE, etype or error_type(error))
    if isinstance(error, BaseException):
        span.record_exception(error)
    if description is None:
        description = _describe(error)
    span.set_status(Status(StatusCode.ERROR, description))


def _describe(error: Any) -> str:
    if isinstance(error, BaseException):
        return str(error)
    try:
        text = error.str()  # KafkaError's own description
        if isinstance(text, str):
            return text
    except Exception:
        pass
    return str(error)


class _Active:
    __slots__ = ("telemetry",)

    def __init__(self) -> None:
        self.telemetry: Telemetry | None = None


ACTIVE = _Active()
