"""A service that exports no traces, in the middle of a pipeline: no span, the trace kept whole.

What ``OTEL_TRACES_EXPORTER=none`` gives under the distro is an SDK TracerProvider
with no span processor. kafkaplus then asks the SDK for no span at all (each
would cost what a recorded one costs and go nowhere), records its metrics, and
carries each consumed message's trace context on to what the service produces:
the next service's process spans are children of the first service's send spans.

Three services in one process, one after the other: the first and the last
traced, the middle one with a metric reader and no span processor, in the
shapes services have (polling thread, worker pool, queue workers forwarding
headers or claiming with ``processing()``, confluent_kafka.aio clients).
"""

from __future__ import annotations

import asyncio
import importlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from conftest import GROUP_SETTINGS, assigned_consumer, poll_messages, producer, unique
from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor, processing
from shapes import CountingSampler, carried_whole, first_service, last_service, queue_workers

N = 6


def _transform(p: Any, b: str, msg: Any, forward: bool = False) -> None:
    p.produce(b, value=msg.value().upper(), key=msg.key(), partition=0,
              headers=msg.headers() if forward else None)  # fmt: skip


def _inline(c: Any, p: Any, b: str) -> None:
    poll_messages(c, N, submit=lambda m: _transform(p, b, m))


def _worker_pool(c: Any, p: Any, b: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        poll_messages(c, N, submit=lambda m: pool.submit(_transform, p, b, m))


def _queue_workers(c: Any, p: Any, b: str, claim: bool) -> None:
    """Plain threads fed by a queue: they forward the headers, or claim with processing()."""

    def handle(msg: Any) -> None:
        if claim:
            with processing(msg):
                _transform(p, b, msg)
        else:
            _transform(p, b, msg, forward=True)

    queue_workers(c, N, handle, threads=2)


def _aio(bootstrap: str, a: str, b: str) -> None:
    """An AIOConsumer's handler produces with an AIOProducer."""
    try:
        aio = importlib.import_module("confluent_kafka.aio")
    except ImportError:  # 2.12 has the same classes as an experimental API; before it, none
        aio = pytest.importorskip("confluent_kafka.experimental.aio")

    async def service() -> None:
        c = aio.AIOConsumer({
            "bootstrap.servers": bootstrap, "group.id": unique("g"), "log_level": 0,
            "enable.auto.commit": False, **GROUP_SETTINGS,
        })  # fmt: skip
        await c.assign([confluent_kafka.TopicPartition(a, 0, confluent_kafka.OFFSET_BEGINNING)])
        p = aio.AIOProducer({"bootstrap.servers": bootstrap, "log_level": 0})
        got = 0
        while got < N:
            msg = await c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            got += 1
            await p.produce(b, value=msg.value().upper(), key=msg.key(), partition=0)
        await c.close()
        await p.close()

    asyncio.run(asyncio.wait_for(service(), 60))


SHAPES = {
    "polling-thread": _inline,
    "worker-pool": _worker_pool,
    "queue-forwarded-headers": lambda c, p, b: _queue_workers(c, p, b, claim=False),
    "queue-processing": lambda c, p, b: _queue_workers(c, p, b, claim=True),
    "aio": None,  # AIOConsumer and AIOProducer: their own clients
}


def _points(reader: InMemoryMetricReader, name: str, topic: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == name for p in m.data.data_points
        if p.attributes.get("messaging.destination.name") == topic
    ]  # fmt: skip


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_service_that_exports_no_traces_keeps_the_trace_whole(bootstrap: str,
                                                                 shape: str) -> None:  # fmt: skip
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]

    first = first_service(bootstrap, a, keys)

    sampler = CountingSampler()  # the middle service: metrics, and no span processor
    reader = InMemoryMetricReader()
    middle = KafkaPlusInstrumentor()
    middle.instrument(tracer_provider=TracerProvider(sampler=sampler),
                      meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
    try:
        run = SHAPES[shape]
        if run is None:
            _aio(bootstrap, a, b)
        else:
            c = assigned_consumer(bootstrap, a)
            p = producer(bootstrap)
            run(c, p, b)
            c.close()
            assert p.flush(30) == 0
        assert sampler.asked == 0  # the SDK was asked for no span
        assert [pt.value for pt in _points(reader, "messaging.client.consumed.messages", a)] == [N]
        assert [pt.value for pt in _points(reader, "messaging.client.sent.messages", b)] == [N]
        durations = _points(reader, "messaging.client.operation.duration", b)
        assert [pt.count for pt in durations] == [N]
    finally:
        middle.uninstrument()

    carried_whole(first, last_service(bootstrap, b, N), a, b, keys)
