"""Soak: produce and consume continuously, traced at 100 %, and watch the memory.

Outside the default run (marker ``soak``). Run it with::

    KAFKAPLUS_SOAK_SECONDS=600 python -m pytest -m soak tests/test_soak.py -s

It starts its own tansu broker, so the broker's memory is not counted. The
resident set size (RSS) of this process is sampled every 10 s; after a warm-up
(a quarter of the run, at most 60 s) it must not grow by more than 20 MB, and
every span must reach the exporter: sends == produced, processes == consumed.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from conftest import assigned_consumer, producer, unique
from kafkaplus_tools.brokers import tansu_broker
from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

SECONDS = float(os.environ.get("KAFKAPLUS_SOAK_SECONDS", "600"))
SAMPLE_EVERY = 10.0
RSS_BOUND = 20 * 1024 * 1024
BATCH = 200
MAX_LAG = 5_000


class CountingExporter(SpanExporter):
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for s in spans:
                kind = s.name.split(" ", 1)[0]
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 600)
def test_soak_memory_is_flat_and_no_span_is_lost() -> None:
    exporter = CountingExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=500_000, schedule_delay_millis=500,
        max_export_batch_size=4096,
    ))  # fmt: skip
    inst = KafkaPlusInstrumentor()
    inst.instrument(tracer_provider=tp)
    try:
        with tansu_broker() as bootstrap:
            figures = _run(bootstrap, tp, exporter)
    finally:
        inst.uninstrument()
        tp.shutdown()
    print("\nsoak figures:", figures)
    assert figures["sends exported"] == figures["produced"]
    assert figures["processes exported"] == figures["consumed"]
    assert figures["consumed"] == figures["produced"]
    assert figures["failed deliveries"] == 0
    assert figures["rss growth after warm-up MB"] * 1024 * 1024 < RSS_BOUND, figures


def _run(bootstrap: str, tp: TracerProvider, exporter: CountingExporter) -> dict[str, Any]:
    topic = unique("soak")
    p = producer(bootstrap, **{"linger.ms": 5})
    c = assigned_consumer(bootstrap, topic, **{"fetch.wait.max.ms": 50})
    failed = 0
    produced = consumed = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    start = time.monotonic()
    warmup = min(60.0, SECONDS / 4)
    samples: list[tuple[float, int]] = [(0.0, rss_bytes())]
    next_sample = start + SAMPLE_EVERY
    while time.monotonic() - start < SECONDS:
        for _ in range(BATCH):
            p.produce(topic, b"x" * 100, key=str(produced).encode(), partition=0,
                      on_delivery=on_delivery)  # fmt: skip
            produced += 1
        p.poll(0)
        while True:
            m = c.poll(0.05 if produced - consumed > MAX_LAG else 0)
            if m is None:
                if produced - consumed <= MAX_LAG:
                    break
                p.poll(0)
                continue
            if m.error() is None:
                consumed += 1
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_bytes()))
            next_sample += SAMPLE_EVERY
    assert p.flush(60) == 0
    deadline = time.monotonic() + 120
    while consumed < produced and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            consumed += 1
    c.close()
    tp.force_flush(60_000)
    samples.append((time.monotonic() - start, rss_bytes()))
    after = [rss for t, rss in samples if t >= warmup]
    base = after[0]
    mb = 1024 * 1024
    return {
        "seconds": round(time.monotonic() - start, 1),
        "produced": produced,
        "consumed": consumed,
        "failed deliveries": failed,
        "sends exported": exporter.counts.get("send", 0),
        "processes exported": exporter.counts.get("process", 0),
        "messages per second": round(produced / (time.monotonic() - start)),
        "rss start MB": round(samples[0][1] / mb, 1),
        "rss after warm-up MB": round(base / mb, 1),
        "rss end MB": round(samples[-1][1] / mb, 1),
        "rss max after warm-up MB": round(max(after) / mb, 1),
        "rss growth after warm-up MB": round((max(after) - base) / mb, 1),
        "rss samples MB": [round(r / mb, 1) for _, r in samples],
    }
