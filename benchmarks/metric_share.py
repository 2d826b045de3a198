#!/usr/bin/env python3
"""How much of kafkaplus's cost at 1 % sampling is its duration histograms, in a real loop.

``run.py``'s distro table shows kafkaplus's default metrics costing more per
message than the rest of its work, and the official plugin (which records no
metrics) ahead of it at 1 % sampling. This script splits that cost in one
process per case, in the loop an application runs, with no export and no
receiver to share the CPU with: librdkafka's mock cluster, a
``ParentBased(TraceIdRatioBased(0.01))`` SDK tracer with a BatchSpanProcessor
into an exporter that drops spans, and an SDK MeterProvider with an in-memory
reader (every measurement is aggregated as under the distro). The messages
consumed carry an unsampled ``traceparent``, as 99 in 100 do at 1 %.

Cases, per produced and per consumed message:

* uninstrumented, and the official plugin (no metrics of its own);
* kafkaplus with ``metrics=none``, ``counts`` and the default ``semconv``;
* ``semconv`` with the duration histograms' ``record`` replaced by a no-op:
  what kafkaplus itself does to measure the durations (the consumer's record
  that waits for the end of a message's handling, the producer's latency
  read). The difference to ``semconv`` is the SDK's ``Histogram.record``.

Each cell is the median over ``--runs`` fresh processes of the best of three
timed passes. Run it with the benchmark's environment:
``benchmarks/.venv/bin/python benchmarks/metric_share.py [--messages 25000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

CASES = ("uninstrumented", "official", "none", "counts", "semconv", "semconv-no-record")
VALUE = b"x" * 100


class _NoRecord:
    """A histogram whose ``record`` does nothing: the SDK's share taken out."""

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass


def _setup(case: str) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    if case == "uninstrumented":
        return
    tp = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    tp.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    if case == "official":
        from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

        ConfluentKafkaInstrumentor().instrument()
        return
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
    from opentelemetry_instrumentation_kafkaplus.core.telemetry import ACTIVE

    KafkaPlusInstrumentor().instrument(metrics=case.replace("-no-record", ""))
    if case.endswith("-no-record"):
        tel = ACTIVE.telemetry
        assert tel is not None
        tel.metrics.operation_duration = _NoRecord()
        tel.metrics.process_duration = _NoRecord()


def _worker(case: str, n: int) -> dict[str, float]:
    """Produce and consume ``n`` messages three times each: the best µs per message of each."""
    import confluent_kafka

    # Messages to consume, made before any instrumentation: each with its own
    # unsampled context, spread over four partitions.
    seed = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 0})
    broker = next(iter(seed.list_topics(timeout=10).brokers.values()))
    bootstrap = f"{broker.host}:{broker.port}"
    for i in range(3 * n + 10):
        while True:
            try:
                seed.produce("consumed", VALUE, b"key", partition=i % 4,
                             headers=[("traceparent", f"00-{i + 1:032x}-{i + 1:016x}-00")])  # fmt: skip
                break
            except BufferError:
                seed.poll(0.01)
    seed.flush(60)
    _setup(case)
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    producer.list_topics(timeout=10)
    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        delivered[0] += 1

    def produce_pass() -> float:
        start = time.perf_counter()
        for i in range(n):
            while True:
                try:
                    producer.produce("produced", VALUE, b"key", on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 999:
                producer.poll(0)
        if producer.flush(60):
            raise RuntimeError("messages left after flush")
        return (time.perf_counter() - start) / n * 1e6

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "share",
                                         "log_level": 0, "enable.auto.commit": False})  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition("consumed", p, 0) for p in range(4)])
    while consumer.poll(5) is None:  # the first message: connections made
        pass

    def consume_pass() -> float:
        got = 0
        start = time.perf_counter()
        while got < n:
            m = consumer.poll(1)
            if m is not None and m.error() is None:
                got += 1
        return (time.perf_counter() - start) / n * 1e6

    produce = min(produce_pass() for _ in range(3))
    consume = min(consume_pass() for _ in range(3))
    consumer.close()
    return {"produce": produce, "consume": consume}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=25_000, help="messages per timed pass")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per case (median)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return 0
    results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    env = {**os.environ, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ""}
    for run in range(args.runs):  # interleaved: a slow minute touches every case alike
        for case in CASES:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", case, str(args.messages)],
                capture_output=True, text=True, env=env, check=True, timeout=900,
            )  # fmt: skip
            results[case].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"[{run + 1}/{args.runs}] {case}", file=sys.stderr, flush=True)
    med = {
        case: {op: statistics.median(r[op] for r in runs) for op in ("produce", "consume")}
        for case, runs in results.items()
    }
    base = med["uninstrumented"]
    official = {op: med["official"][op] - base[op] for op in base}
    print(f"1 % sampling, {args.messages:,} messages per pass, median of {args.runs} processes")
    print(f"{'case':<38}{'produce +us':>12}{'x offic':>9}{'consume +us':>13}{'x offic':>9}")
    labels = {
        "uninstrumented": "uninstrumented (us per message)",
        "official": "official plugin",
        "none": "kafkaplus, metrics=none",
        "counts": "kafkaplus, metrics=counts",
        "semconv": "kafkaplus, metrics=semconv (default)",
        "semconv-no-record": "  the same, histograms not recorded",
    }
    for case in CASES:
        row = f"{labels[case]:<38}"
        for op in ("produce", "consume"):
            if case == "uninstrumented":
                row += f"{base[op]:>12.2f}{'':>9}" + ("  " if op == "produce" else "")
                continue
            added = med[case][op] - base[op]
            ratio = f"{official[op] / added:.2f}x" if case != "official" and added > 0 else ""
            row += f"{added:>+12.2f}{ratio:>9}" + ("  " if op == "produce" else "")
        print(row)
    for op in ("produce", "consume"):
        hist = med["semconv"][op] - med["semconv-no-record"][op]
        own = med["semconv-no-record"][op] - med["counts"][op]
        print(f"{op}: the SDK's Histogram.record {hist:+.2f} us per message; kafkaplus's own "
              f"duration work {own:+.2f} us")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
