#!/usr/bin/env python3
"""What a span waiting in the BatchSpanProcessor costs: memory, and export time.

For docs/tuning.md's BatchSpanProcessor settings. In one process, kafkaplus
traces a producer and a consumer against librdkafka's mock cluster at 100 %
sampling, into a BatchSpanProcessor that never exports on its own (queue and
batch size 2^20, schedule delay of a day), so every ended span stays queued:

* memory per queued span, send (PRODUCER) and process (CONSUMER) spans
  separately: the RSS growth over the spans queued, after a warmup, then (a
  second batch of messages, with ``tracemalloc`` on) the Python heap growth;
* the OTLP exporters' time per span: the queued spans are exported to the
  benchmark's local receiver (in this process), over gRPC in batches of 128, 512
  (the default) and 2,048, and over HTTP/protobuf in batches of 512; this is the time the BatchSpanProcessor's thread
  spends per span (encoding plus sending), which it takes from the
  application's threads under the GIL.

Run it with the benchmark's environment:
``benchmarks/.venv/bin/python benchmarks/bsp_cost.py [--messages 20000]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    args = ap.parse_args()
    n = args.messages

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    class Never(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    big = 1 << 20
    tp = TracerProvider(sampler=ALWAYS_ON)
    bsp = BatchSpanProcessor(Never(), max_queue_size=big, max_export_batch_size=big,
                             schedule_delay_millis=86_400_000)  # fmt: skip
    tp.add_span_processor(bsp)
    queue = bsp._batch_processor._queue

    import confluent_kafka

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    sys.path.insert(0, str(HERE))
    from otlp_sink import OtlpSink

    from kafkaplus_tools import brokers

    KafkaPlusInstrumentor().instrument(tracer_provider=tp)
    payload = b"x" * 100
    keys = [b"key-%03d" % i for i in range(100)]
    with brokers.mock_cluster() as bootstrap:
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "client.id": "bench-producer"})
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": "bsp-cost", "client.id": "bench-consumer",
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        consumer.subscribe(["bsp-cost"])

        def produce(count: int) -> None:
            for i in range(count):
                producer.produce("bsp-cost", payload, keys[i % 100])
                if i % 1000 == 999:
                    producer.poll(0)
            producer.flush(60)

        def consume(count: int) -> None:
            got = 0
            while got < count:
                m = consumer.poll(1.0)
                if m is not None and m.error() is None:
                    got += 1

        warm = 2_000
        produce(warm)
        consume(warm)
        rows = []
        # RSS without tracemalloc (its own records would count), then the heap with it.
        for kind, step in (("send span (PRODUCER)", produce), ("process span (CONSUMER)", consume)):
            gc.collect()
            q0, rss0 = len(queue), _rss_mb()
            step(n)
            gc.collect()
            q1, rss1 = len(queue), _rss_mb()
            rows.append([kind, q1 - q0, (rss1 - rss0) * 1e6 / (q1 - q0)])
        tracemalloc.start()
        for row, step in zip(rows, (produce, consume), strict=True):
            gc.collect()
            q0, heap0 = len(queue), tracemalloc.get_traced_memory()[0]
            step(n)
            gc.collect()
            q1, heap1 = len(queue), tracemalloc.get_traced_memory()[0]
            row.append((heap1 - heap0) / (q1 - q0))
        tracemalloc.stop()
        consumer.close()

        spans = list(queue)[::-1]  # oldest first
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encoded = len(encode_spans(spans[:512]).SerializeToString()) / 512
        export_rows = []
        for protocol, batch in (("grpc", 128), ("grpc", 512), ("grpc", 2048), ("http/protobuf", 512)):
            sink = OtlpSink(protocol)
            endpoint = sink.start(brokers.free_port())
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                    OTLPSpanExporter,
                )
            exporter = (OTLPSpanExporter(endpoint=endpoint, insecure=True) if protocol == "grpc"
                        else OTLPSpanExporter(endpoint=endpoint + "/v1/traces"))  # fmt: skip
            exporter.export(spans[:batch])  # connection
            t0, c0 = time.perf_counter(), time.thread_time()
            for i in range(0, len(spans), batch):
                exporter.export(spans[i : i + batch])
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            exporter.shutdown()
            sink.stop()
            export_rows.append((f"{protocol}, batch {batch}", len(spans), wall / len(spans) * 1e6,
                                cpu / len(spans) * 1e6))  # fmt: skip

    print(f"{n:,} messages each way (twice), kafkaplus at 100 %, spans held in the BatchSpanProcessor's queue")
    print(f"{'span':<26} {'queued':>8} {'heap B/span':>12} {'RSS B/span':>11}")
    for kind, count, rss, heap in rows:
        print(f"{kind:<26} {count:>8,} {heap:>12,.0f} {rss:>11,.0f}")
    print()
    print(f"OTLP export of those spans to a local receiver (this thread's time); "
          f"{encoded:,.0f} bytes per span encoded")
    print(f"{'protocol':<26} {'spans':>8} {'wall us/span':>12} {'CPU us/span':>11}")
    for protocol, count, wall, cpu in export_rows:
        print(f"{protocol:<26} {count:>8,} {wall:>12.2f} {cpu:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
