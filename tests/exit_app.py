"""Child process of test_dataloss: produce without flush(), then exit.

Usage: python exit_app.py BOOTSTRAP TOPIC SPANS_FILE METRICS_FILE N

The SDK providers are created first, as apps do, so their atexit shutdown
handlers are registered before kafkaplus's: the exit accounting must still be
recorded before they export. Spans and metrics are written as JSON lines.
"""

from __future__ import annotations

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor


def main() -> None:
    bootstrap, topic, spans_path, metrics_path, n = sys.argv[1:6]
    spans_out = open(spans_path, "w", encoding="utf-8")  # noqa: SIM115 - closed at exit
    metrics_out = open(metrics_path, "w", encoding="utf-8")  # noqa: SIM115
    tp = TracerProvider()
    tp.add_span_processor(
        BatchSpanProcessor(
            ConsoleSpanExporter(out=spans_out, formatter=lambda s: s.to_json(indent=None) + "\n")
        )
    )
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=metrics_out, formatter=lambda m: m.to_json(indent=None) + "\n"),
        export_interval_millis=3_600_000,
    )
    mp = MeterProvider(metric_readers=[reader])
    KafkaPlusInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)

    import confluent_kafka

    # linger.ms keeps the messages in librdkafka's queue until the process exits.
    stuck = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 60000, "log_level": 0}
    )
    for i in range(int(n)):
        stuck.produce(topic, f"v{i}".encode(), partition=0)
    delivered: list[object] = []
    ok = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    ok.produce(topic, b"ok", partition=0, on_delivery=lambda e, m: delivered.append(e))
    assert ok.flush(30) == 0 and delivered == [None]
    print("queued", len(stuck), flush=True)
    globals()["producers"] = (stuck, ok)  # alive until the interpreter exits


if __name__ == "__main__":
    main()
