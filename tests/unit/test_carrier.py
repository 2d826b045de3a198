"""When spans are made: only while the SDK's TracerProvider has a span processor to take them.

Without one (``OTEL_TRACES_EXPORTER=none`` under the distro) the carrier stands in
for the tracer: no span, the parent's context carried on.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from opentelemetry_instrumentation_kafkaplus.core.options import Options
from opentelemetry_instrumentation_kafkaplus.core.telemetry import CARRIER, Telemetry
from shapes import CountingSampler

PARENT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                     TraceFlags(TraceFlags.SAMPLED))  # fmt: skip


def test_a_provider_without_processors_gets_no_span_and_the_parent_goes_on() -> None:
    sampler = CountingSampler()
    tel = Telemetry.build(TracerProvider(sampler=sampler), None, Options())
    assert tel.tracing() and tel.spanless()
    parent = Context({"current-span-key": None})  # any context without a span: no parent
    assert not tel.tracer.start_span("send t", context=parent).get_span_context().is_valid
    ctx = trace.set_span_in_context(NonRecordingSpan(PARENT))
    span = tel.tracer.start_span("send t", context=ctx)
    assert span.get_span_context() == PARENT and not span.is_recording()
    assert sampler.asked == 0  # the SDK made no span


def test_a_recording_parent_is_carried_as_its_context_and_never_ended() -> None:
    tp = TracerProvider()
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    app_span = tp.get_tracer("app").start_span("request")
    tel = Telemetry.build(TracerProvider(), None, Options())
    assert tel.tracing() and tel.spanless()
    span = tel.tracer.start_span("send t", context=trace.set_span_in_context(app_span))
    assert span is not app_span and span.get_span_context() == app_span.get_span_context()
    span.end()
    assert app_span.is_recording()  # the app's own span is the app's to end
    with CARRIER.start_as_current_span("x", context=trace.set_span_in_context(app_span)) as cur:
        assert trace.get_current_span().get_span_context() == cur.get_span_context()
    app_span.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


def test_spans_follow_a_processor_added_later() -> None:
    sampler = CountingSampler()
    tp = TracerProvider(sampler=sampler)
    tel = Telemetry.build(tp, None, Options())
    assert tel.tracing() and tel.spanless()
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    assert tel.tracing() and not tel.spanless()
    tel.tracer.start_span("send t").end()
    assert sampler.asked == 1 and [s.name for s in exporter.get_finished_spans()] == ["send t"]


def test_a_tracer_that_is_not_the_sdks_is_used_as_given() -> None:
    class Other(trace.Tracer):
        """Not the SDK's and not the API's no-op: another implementation."""

        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            return trace.INVALID_SPAN

        start_as_current_span = trace.NoOpTracer.start_as_current_span

    class OtherProvider(trace.TracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
            return Other()

    tel = Telemetry.build(OtherProvider(), None, Options())
    tracer = tel.tracer
    assert tel.tracing() and not tel.spanless() and tel.tracer is tracer
