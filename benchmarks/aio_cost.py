#!/usr/bin/env python3
"""What tracing an ``AIOProducer`` costs: kafkaplus's routed messages against the untraced one.

Untraced, ``confluent_kafka.aio.AIOProducer`` buffers messages and hands them
to librdkafka in batches (``produce_batch``, which cannot carry headers).
Traced by kafkaplus, each message goes through the per-message ``produce``
with its trace context in the headers, and a pump serves its delivery report
(clients/aio.py). Both sides of that trade are measured here, in one run,
against a librdkafka mock cluster:

* throughput: N fire-and-forget ``await producer.produce()`` calls, then
  ``await producer.flush()``, all futures resolved; best of ``--rounds``, as
  messages per second (wall time) and as the process's CPU time per message
  (all threads), which the load of a shared machine disturbs less;
* latency: ``await (await producer.produce())``, one message at a time, the
  way request handlers often send. AIOProducer untraced serves a report only
  after ``buffer_timeout`` (1 s by default) of inactivity, so that case is
  sampled with fewer messages (``--latency-untraced``).

Cases: uninstrumented; kafkaplus with an SDK TracerProvider at 100 % and at
1 % (``ParentBased(TraceIdRatioBased)``), a BatchSpanProcessor into an
exporter that drops spans, no metrics. Each case runs in a fresh subprocess
(instrumentation is per process). Run it with any environment that has this
package, kafkaplus-tools and the SDK installed, e.g. the tests' one::

    python benchmarks/aio_cost.py --messages 20000 --latency 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

VALUE = b"x" * 100
KEYS = [b"key-%03d" % i for i in range(100)]
CASES: dict[str, float | None] = {"uninstrumented": None, "kafkaplus-100pct": 1.0,
                                  "kafkaplus-1pct": 0.01}  # fmt: skip
LABELS = {
    "uninstrumented": "AIOProducer, uninstrumented",
    "kafkaplus-100pct": "kafkaplus, 100 % sampled",
    "kafkaplus-1pct": "kafkaplus, 1 % sampled",
}


def _instrument(ratio: float) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    KafkaPlusInstrumentor().instrument(tracer_provider=provider)
    return provider


async def _throughput(aio: Any, bootstrap: str, n: int) -> tuple[float, float]:
    """(messages per second, CPU microseconds per message): n produce() calls, then flush().

    The CPU time is the whole process's (every thread: the loop, the executor,
    librdkafka's), which a shared machine's load disturbs less than wall time.
    """
    topic = f"aio-cost-{uuid.uuid4().hex[:8]}"
    p = aio.AIOProducer({"bootstrap.servers": bootstrap, "log_level": 0})
    await (await p.produce(topic, VALUE, KEYS[0]))  # topic and connection up
    start, cpu = time.perf_counter(), time.process_time()
    futures = [await p.produce(topic, VALUE, KEYS[i % len(KEYS)]) for i in range(n)]
    await p.flush()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(f.done() and f.exception() is None for f in futures)
    await p.close()
    return n / elapsed, cpu / n * 1e6


async def _latency(aio: Any, bootstrap: str, m: int) -> list[float]:
    """Seconds per ``await (await produce())``, one message at a time."""
    topic = f"aio-cost-{uuid.uuid4().hex[:8]}"
    p = aio.AIOProducer({"bootstrap.servers": bootstrap, "log_level": 0})
    await (await p.produce(topic, VALUE, KEYS[0]))
    out = []
    for i in range(m):
        start = time.perf_counter()
        await (await p.produce(topic, VALUE, KEYS[i % len(KEYS)]))
        out.append(time.perf_counter() - start)
    await p.close()
    return out


def run_case(case: str, bootstrap: str, n: int, m: int, rounds: int) -> dict[str, Any]:
    """One case, in this (fresh) process."""
    ratio = CASES[case]
    provider = _instrument(ratio) if ratio is not None else None
    try:
        from confluent_kafka import aio
    except ImportError:  # 2.12
        from confluent_kafka.experimental import aio  # type: ignore[no-redef]

    runs = [asyncio.run(_throughput(aio, bootstrap, n)) for _ in range(rounds)]
    latencies = asyncio.run(_latency(aio, bootstrap, m))
    if provider is not None:
        provider.shutdown()
    return {"case": case, "rates": [r for r, _ in runs], "cpu_us": [c for _, c in runs],
            "latencies": latencies}  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000, help="messages per throughput round")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (best one counts)")
    ap.add_argument("--latency", type=int, default=200, help="awaited messages, traced cases")
    ap.add_argument("--latency-untraced", type=int, default=10,
                    help="awaited messages, uninstrumented (about 1 s each)")  # fmt: skip
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        m = args.latency_untraced if CASES[args.case] is None else args.latency
        print(json.dumps(run_case(args.case, args.bootstrap, args.messages, m, args.rounds)))
        return

    from confluent_kafka import cimpl

    from kafkaplus_tools import brokers

    results: dict[str, dict[str, Any]] = {}
    with brokers.mock_cluster(cimpl.Producer) as bootstrap:
        for case in CASES:
            print(f"running {case} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--case", case, "--bootstrap", bootstrap,
                   "--messages", str(args.messages), "--rounds", str(args.rounds),
                   "--latency", str(args.latency),
                   "--latency-untraced", str(args.latency_untraced)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[case] = json.loads(out.strip().splitlines()[-1])

    import confluent_kafka

    base = results["uninstrumented"]
    base_rate, base_cpu = max(base["rates"]), min(base["cpu_us"])
    base_p50 = statistics.median(base["latencies"])
    version = confluent_kafka.version()
    print(f"confluent-kafka {version[0] if isinstance(version, tuple) else version}, librdkafka "
          f"{confluent_kafka.libversion()[0]}; {args.messages} messages x {args.rounds} rounds "
          f"(best); latency over {args.latency} messages "
          f"({args.latency_untraced} uninstrumented)")  # fmt: skip
    header = (f"{'case':<28} {'produce+flush msg/s':>19} {'x untraced':>10} {'CPU us/msg':>10} "
              f"{'x untraced':>10} {'await-each p50 ms':>17} {'p99 ms':>7} {'x untraced':>10}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for case, r in results.items():
        rate, cpu = max(r["rates"]), min(r["cpu_us"])
        p50 = statistics.median(r["latencies"])
        p99 = _pct(r["latencies"], 0.99)
        print(f"{LABELS[case]:<28} {rate:>19,.0f} {rate / base_rate:>10.2f} {cpu:>10.1f} "
              f"{cpu / base_cpu:>10.2f} {p50 * 1e3:>17.2f} {p99 * 1e3:>7.2f} "
              f"{p50 / base_p50:>10.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
