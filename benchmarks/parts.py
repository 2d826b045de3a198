#!/usr/bin/env python3
"""Where a traced message's time goes: per-component costs, in microseconds per call.

``run.py`` measures throughput against real brokers, where the broker, the
garbage collector and the span processor's export thread all share the CPU.
This script isolates the Python work, in one process with ``timeit``, so a
change to a hot path can be judged in seconds:

* the OpenTelemetry SDK alone, doing what ``run.py``'s floor does (a span with
  the same attributes plus inject, or extract plus a span with a link);
* kafkaplus's whole produce path (``produce()`` plus its delivery callback)
  and poll path (the process span, made current and ended at the next poll),
  with only librdkafka's own call replaced by one returning a real message;
* at 1 %, the produce path again with the SDK's tracer stubbed (it hands out
  an unsampled span): kafkaplus's own work, without the SDK's sampling;
* the W3C header writer and reader, kafkaplus's and the propagator's;
* one metric measurement through the SDK (a histogram value, a counter
  increment) and through kafkaplus's in-process message counter.

Each at 1 % (``ParentBased(TraceIdRatioBased(0.01))``, and a consumed parent
that was not sampled) and at 100 % sampling, with a BatchSpanProcessor into an
exporter that drops spans. The messages are real: produced to and consumed
from a librdkafka mock cluster before the measurements. Run it with the
benchmark's environment (``benchmarks/.venv/bin/python benchmarks/parts.py``)
or any environment with this package and the SDK installed.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

TOPIC = "parts"
VALUE = b"x" * 100
KEY = b"key-042"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}"


def _messages() -> tuple[Any, dict[str, Any]]:
    """A delivered message, and consumed ones by parent flags, before instrumentation."""
    import confluent_kafka

    p = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    broker = next(iter(p.list_topics(timeout=10).brokers.values()))
    delivered: list[Any] = []
    for flags in ("00", "01"):
        p.produce(TOPIC, VALUE, KEY, partition=0, headers=[("traceparent", TRACEPARENT.format(flags=flags))],
                  on_delivery=lambda err, msg: delivered.append(msg))  # fmt: skip
    p.flush(10)
    c = confluent_kafka.Consumer({
        "bootstrap.servers": f"{broker.host}:{broker.port}", "group.id": "parts",
        "log_level": 0, "enable.auto.commit": False,
    })  # fmt: skip
    c.assign([confluent_kafka.TopicPartition(TOPIC, 0, confluent_kafka.OFFSET_BEGINNING)])
    consumed: dict[str, Any] = {}
    while len(consumed) < 2:
        m = c.poll(5)
        if m is not None and m.error() is None:
            consumed["sampled" if m.offset() == 1 else "unsampled"] = m
    c.close()
    return delivered[0], {"p": p, "bootstrap": f"{broker.host}:{broker.port}", **consumed}


def _provider(ratio: float) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tp = TracerProvider(sampler=ALWAYS_ON if ratio >= 1 else ParentBased(TraceIdRatioBased(ratio)))
    tp.add_span_processor(BatchSpanProcessor(Drop()))
    return tp


def _cases(ratio: float, delivered: Any, msgs: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, SpanKind

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
    from opentelemetry_instrumentation_kafkaplus.clients import consumer as kp_consumer
    from opentelemetry_instrumentation_kafkaplus.clients import producer as kp_producer
    from opentelemetry_instrumentation_kafkaplus.core.propagation import (
        GETTER,
        Injector,
        headers_carrier,
        read_headers,
    )
    from opentelemetry_instrumentation_kafkaplus.core.telemetry import ACTIVE
    from opentelemetry_instrumentation_kafkaplus.operations.process import end_open

    tp = _provider(ratio)
    inst = KafkaPlusInstrumentor()
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()
    inst.instrument(tracer_provider=tp)
    import confluent_kafka

    # Clients of the mock cluster, as in a service: they know its id (looked
    # up once) before the measurements.
    bootstrap = msgs["bootstrap"]
    client = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "client.id": "parts",
                                       "log_level": 0})  # fmt: skip
    state = client._kafkaplus
    cons = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "parts",
                                     "client.id": "parts", "log_level": 0})  # fmt: skip
    cstate = cons._kafkaplus
    client.list_topics(timeout=10)
    cons.list_topics(timeout=10)
    consumed = msgs["sampled" if ratio >= 1 else "unsampled"]
    tracer = tp.get_tracer("parts")
    state.topic(TOPIC, ACTIVE.telemetry)  # templates built once, as in a real run
    send_attrs = dict(state.topics[TOPIC].attrs)
    proc_attrs = dict(cstate.topic(TOPIC, ACTIVE.telemetry).process_attrs)
    headers = consumed.headers()
    carrier = headers_carrier(headers)

    def app_callback(err: Any, msg: Any) -> None:
        pass

    def librdkafka_produce(client: Any, *args: Any, **kwargs: Any) -> None:
        cb = kwargs.get("on_delivery")
        if cb is not None and cb is not app_callback:
            cb(None, delivered)  # the report librdkafka would serve later

    def kafkaplus_produce() -> None:
        kp_producer.produce(client, state, (TOPIC, VALUE, KEY), {"on_delivery": app_callback},
                            librdkafka_produce)  # fmt: skip

    def sdk_produce() -> None:
        attrs = send_attrs.copy()
        attrs["messaging.kafka.message.key"] = "key-042"
        attrs["messaging.message.body.size"] = 100
        span = tracer.start_span("send " + TOPIC, kind=SpanKind.PRODUCER, attributes=attrs)
        propagate.inject({}, context=trace.set_span_in_context(span))
        span.set_attribute("messaging.destination.partition.id", "0")
        span.set_attribute("messaging.kafka.offset", 1)
        span.end()

    def librdkafka_poll(client: Any, *args: Any, **kwargs: Any) -> Any:
        return consumed

    def kafkaplus_poll() -> None:
        kp_consumer.poll(cons, cstate, (0,), {}, librdkafka_poll)
        end_open(cstate)  # what the next poll does first

    def sdk_consume() -> None:
        ctx = propagate.extract(carrier, getter=GETTER)
        parent = trace.get_current_span(ctx).get_span_context()
        attrs = proc_attrs.copy()
        attrs["messaging.kafka.message.key"] = "key-042"
        attrs["messaging.message.body.size"] = 100
        attrs["messaging.destination.partition.id"] = "0"
        attrs["messaging.kafka.offset"] = 1
        tracer.start_span("process " + TOPIC, context=ctx, kind=SpanKind.CONSUMER,
                          attributes=attrs, links=[Link(parent)]).end()  # fmt: skip

    span = tracer.start_span("x")
    span_ctx = span.get_span_context()
    span_in_ctx = trace.set_span_in_context(span, Context())
    injector = Injector()

    return {
        "produce: SDK alone (span, attributes, inject, end)": sdk_produce,
        "produce: kafkaplus (produce() + delivery callback)": kafkaplus_produce,
        "poll: SDK alone (extract, span with a link, end)": sdk_consume,
        "poll: kafkaplus (process span, current, ended)": kafkaplus_poll,
        "traceparent write: propagator": lambda: propagate.inject({}, context=span_in_ctx),
        "traceparent write: kafkaplus": lambda: injector.inject(None, span_in_ctx, span_ctx, span),
        "traceparent read: propagator": lambda: propagate.extract(
            headers_carrier(headers), getter=GETTER
        ),
        "traceparent read: kafkaplus": lambda: read_headers(headers),
    }


def _metric_cases() -> dict[str, Callable[[], Any]]:
    """What the SDK's metrics cost per call, with the attribute set kafkaplus records."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from opentelemetry_instrumentation_kafkaplus.core.instruments import DURATION_BUCKETS, Tally

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("parts")
    hist = meter.create_histogram(
        "parts.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
    )
    counter = meter.create_counter("parts.count")
    tally = Tally(meter, "parts.tally", "{message}", "")
    attrs = {
        "messaging.system": "kafka", "messaging.operation.name": "send",
        "messaging.operation.type": "send", "messaging.destination.name": TOPIC,
        "server.address": "127.0.0.1", "server.port": 9092,
    }  # fmt: skip
    required = {k: attrs[k] for k in list(attrs)[:4]}
    return {
        "SDK Histogram.record, 6 attributes": lambda: hist.record(0.003, attrs),
        # The conventions' required and conditionally required set for a send
        # (system, operation name and type, destination): the fewest a
        # conforming messaging.client.operation.duration can carry.
        "SDK Histogram.record, 4 attributes (required set)": lambda: hist.record(0.003, required),
        "SDK Histogram.record, no attributes": lambda: hist.record(0.003),
        "SDK Counter.add, 6 attributes": lambda: counter.add(1, attrs),
        "kafkaplus in-process counter, 6 attributes": lambda: tally.add(1, attrs),
    }


def _own_work(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """``fn``'s time with the SDK's tracer replaced by one that hands out an unsampled span.

    What remains is kafkaplus's own work on an unsampled message (the
    architecture issue's hot-path comparison): the SDK's sampling decision and
    span creation are taken out, everything else runs as in the real case.
    """
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from opentelemetry_instrumentation_kafkaplus.core.telemetry import ACTIVE

    span = NonRecordingSpan(SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                                        False, TraceFlags(0)))  # fmt: skip

    class Unsampled:
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            return span

    tel = ACTIVE.telemetry
    assert tel is not None
    real, tel.tracer = tel.tracer, Unsampled()  # type: ignore[assignment]
    try:
        return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6
    finally:
        tel.tracer = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20_000, help="calls per timing (default 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per case; the best is kept")
    args = ap.parse_args()
    delivered, msgs = _messages()
    rows: list[tuple[str, str, float]] = []
    for label, ratio in (("1 %", 0.01), ("100 %", 1.0)):
        cases = _cases(ratio, delivered, msgs)
        for name, fn in cases.items():
            best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
            rows.append((label, name, best / args.number * 1e6))
        if ratio < 1:
            produce = cases["produce: kafkaplus (produce() + delivery callback)"]
            rows.append((label, "produce: kafkaplus's own work (SDK tracer stubbed)",
                         _own_work(produce, args.number, args.repeat)))  # fmt: skip
    for name, fn in _metric_cases().items():
        best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
        rows.append(("metrics", name, best / args.number * 1e6))
    width = max(len(name) for _, name, _ in rows)
    print(f"{'sampling':8}  {'component':{width}}  us/call")
    for label, name, us in rows:
        print(f"{label:8}  {name:{width}}  {us:7.2f}")


if __name__ == "__main__":
    main()
