#!/usr/bin/env python3
"""What each plugin's spans cost the OTLP exporter to encode, per span, side by side.

At 100 % sampling the BatchSpanProcessor's thread encodes every span, and that
time comes out of the application's share of the GIL: a span with more
attributes costs more to export than to make (docs/tuning.md). This script
measures the encoding alone, for the spans each plugin makes for one produced
and one consumed message: each plugin runs in its own subprocess (an
instrumentor patches module globals), traces a producer and a consumer against
librdkafka's mock cluster into an in-memory exporter, and times the OTLP
encoder (``encode_spans(...).SerializeToString()``, what the gRPC and the HTTP
exporter both do before sending) on batches of 512 copies of each span.

Run it with the benchmark's environment:
``benchmarks/.venv/bin/python benchmarks/encode_cost.py [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import timeit
from typing import Any

PLUGINS = ("official", "kafkaplus")
BATCH = 512


def _worker(plugin: str, repeat: int) -> list[dict[str, Any]]:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if plugin == "kafkaplus":
        from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

        KafkaPlusInstrumentor().instrument(metrics="none")
    else:
        from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

        ConfluentKafkaInstrumentor().instrument()
    import confluent_kafka

    producer = confluent_kafka.Producer({"test.mock.num.brokers": 1, "client.id": "encode",
                                         "log_level": 0})  # fmt: skip
    bootstrap = producer.list_topics(timeout=10).orig_broker_name.split("/")[0]
    producer.produce("encode", b"x" * 100, b"key-042", on_delivery=lambda err, msg: None)
    producer.flush(10)
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "encode", "client.id": "encode",
        "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0,
    })  # fmt: skip
    consumer.subscribe(["encode"])
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    else:
        raise SystemExit("no message consumed from the mock cluster")
    consumer.poll(0.1)  # ends the process span (the next poll)
    consumer.close()
    rows = []
    for span in exporter.get_finished_spans():
        if span.kind.name not in ("PRODUCER", "CONSUMER"):
            continue
        batch = [span] * BATCH
        best = min(timeit.repeat(lambda b=batch: encode_spans(b).SerializeToString(),
                                 number=3, repeat=repeat))  # fmt: skip
        rows.append({
            "plugin": plugin, "span": span.name, "kind": span.kind.name,
            "attributes": len(span.attributes or {}), "names": sorted(span.attributes or {}),
            "links": len(span.links),
            "bytes": len(encode_spans([span]).SerializeToString()),
            "us": best / 3 / BATCH * 1e6,
        })  # fmt: skip
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="timings per span; the best is kept")
    ap.add_argument("--worker", choices=PLUGINS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.repeat)))
        return 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    rows: list[dict[str, Any]] = []
    for plugin in PLUGINS:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", plugin, "--repeat", str(args.repeat)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    print(f"OTLP encoding per span (encode_spans + SerializeToString, batches of {BATCH}, "
          f"best of {args.repeat})")  # fmt: skip
    print(
        f"{'plugin':10} {'span':22} {'kind':9} {'attrs':>5} {'links':>5} {'bytes':>6} {'us/span':>8}"
    )
    for r in rows:
        print(f"{r['plugin']:10} {r['span']:22} {r['kind']:9} {r['attributes']:5d} {r['links']:5d} "
              f"{r['bytes']:6d} {r['us']:8.1f}")  # fmt: skip
    for r in rows:
        print(f"  {r['plugin']} {r['span']}: {', '.join(r['names'])}")
    for kind, label in (("PRODUCER", "produced"), ("CONSUMER", "consumed")):
        per = {p: sum(r["us"] for r in rows if r["plugin"] == p and r["kind"] == kind)
               for p in PLUGINS}  # fmt: skip
        print(f"per {label} message: official {per['official']:.1f} us, kafkaplus "
              f"{per['kafkaplus']:.1f} us ({per['kafkaplus'] - per['official']:+.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
