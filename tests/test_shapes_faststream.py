"""FastStream's confluent broker: subscriber -> publisher chains, one trace per message.

request -> send A -> process A (a ``@subscriber(A) @publisher(B)`` handler) -> send B
-> process B, for each message, with the app run by FastStream itself against
both real brokers (``async with broker``; TestKafkaBroker fakes the client, and
has a test of its own showing the glue leaves it working). Each test asserts
N/N journeys in one trace, the parent of every span, no span twice, and that
the process span covers the handler's work. With FastStream's telemetry
middleware on, the spans are FastStream's, one per operation, and kafkaplus
makes none of its send and process spans.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("faststream.confluent")

import confluent_kafka
from faststream.confluent import KafkaBroker, KafkaResponse, TestKafkaBroker
from faststream.confluent.opentelemetry import KafkaTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from conftest import ORIGINALS, unique
from kafkaplus_tools.demo import wait_for_spans
from kafkaplus_tools.demo.receiver import Receiver
from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
from shapes import CountingSampler, carried_whole, first_service, journeys, last_service, no_doubles

N = 12
WORK_S = 0.02
KAFKAPLUS = "opentelemetry_instrumentation_kafkaplus"
FASTSTREAM = "opentelemetry.instrumentation.faststream"
#: Consumer settings that make a group join take seconds, not tens of seconds.
GROUP = {
    "auto_offset_reset": "earliest", "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500, "max_poll_interval_ms": 7000,
}  # fmt: skip


def create_topics(bootstrap: str, *topics: str) -> None:
    """Create the topics (a metadata request for each): the app starts consuming at once.

    FastStream is told not to create them (``allow_auto_create_topics=False``):
    its admin request waits a minute for a controller on the mock cluster.
    """
    probe = ORIGINALS["Producer"]({"bootstrap.servers": bootstrap, "log_level": 0})
    for topic in topics:
        md = probe.list_topics(topic, timeout=10).topics[topic]
        assert md.error is None and md.partitions, md.error


class Chain:
    """The app: ``@subscriber(A) @publisher(B)`` transforms, ``@subscriber(B)`` receives.

    Records when each handler worked on each message key (time_ns pairs).
    """

    def __init__(self, bootstrap: str, a: str, b: str, *, middlewares: Any = (),
                 also: Callable[[str], None] | None = None, **subscriber: Any) -> None:  # fmt: skip
        create_topics(bootstrap, a, b)
        self.a, self.b = a, b
        self.handled: dict[str, tuple[int, int]] = {}
        self.received: dict[str, tuple[int, int]] = {}
        self.broker = broker = KafkaBroker(
            bootstrap, middlewares=middlewares, allow_auto_create_topics=False, logger=None
        )

        @broker.subscriber(a, group_id=unique("g"), **GROUP, **subscriber)
        @broker.publisher(b)
        async def transform(body: str) -> KafkaResponse:
            start = time.time_ns()
            await asyncio.sleep(WORK_S)  # the handler's work
            if also is not None:
                also(body)
            self.handled[body] = (start, time.time_ns())
            return KafkaResponse(body.upper(), key=body.encode())

        @broker.subscriber(b, group_id=unique("g"), **GROUP)
        async def receive(body: str) -> None:
            start = time.time_ns()
            await asyncio.sleep(WORK_S / 2)
            self.received[body.lower()] = (start, time.time_ns())

    def run(self, publish: Callable[[KafkaBroker], Awaitable[None]], done: Callable[[], bool],
            timeout: float = 60.0) -> None:  # fmt: skip
        """Start the app, publish, and stop it once ``done()`` (its spans are all ended)."""

        async def main() -> None:
            async with self.broker:
                await self.broker.start()
                await publish(self.broker)
                deadline = time.monotonic() + timeout
                while not done() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)

        asyncio.run(main())
        assert done(), f"handled {len(self.handled)}, received {len(self.received)} of {N}"


def requests(otel: Any, a: str, keys: list[str]) -> Callable[[KafkaBroker], Awaitable[None]]:
    """Publish each key to ``a`` inside a request span of its own."""
    tracer = otel.tracer_provider.get_tracer("app")

    async def publish(broker: KafkaBroker) -> None:
        for key in keys:
            with tracer.start_as_current_span("request", attributes={"key": key}):
                await broker.publish(key, a, key=key.encode())

    return publish


def covers(span: Any, interval: tuple[int, int]) -> bool:
    start, end = interval
    return bool(span.start_time <= start and span.end_time >= end)


def overlapping(intervals: list[tuple[int, int]]) -> bool:
    ordered = sorted(intervals)
    return any(nxt[0] < cur[1] for cur, nxt in itertools.pairwise(ordered))


@pytest.mark.parametrize("workers", [1, 3], ids=["one-task", "max_workers=3"])
def test_subscriber_publisher_chain(bootstrap: str, otel: Any, workers: int) -> None:
    """Zero-code: every message one trace, its process spans exactly its handling.

    ``max_workers=3``: each message is handled in a task of its own while the
    subscriber polls on; the handlers overlap.
    """
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]
    app = Chain(bootstrap, a, b, **({"max_workers": workers} if workers > 1 else {}))
    app.run(requests(otel, a, keys), lambda: len(otel.spans(f"process {b}")) == N)
    spans = otel.spans()
    no_doubles(spans, [f"send {a}", f"process {a}", f"send {b}", f"process {b}"], N)
    for j in journeys(spans, a, b, keys):
        assert covers(j.process_a, app.handled[j.key]), j.key
        assert (j.process_a.end_time - j.process_a.start_time) / 1e9 >= WORK_S
        # The publishing of the handler's result is part of its handling.
        assert j.process_a.start_time <= j.send_b.start_time <= j.process_a.end_time
        assert covers(j.process_b, app.received[j.key]), j.key
    if workers > 1:
        assert overlapping(list(app.handled.values()))


def test_a_faststream_service_that_exports_no_traces_keeps_the_trace_whole(bootstrap: str) -> None:
    """The app in the middle of a pipeline, with a metric reader and no span processor.

    What ``OTEL_TRACES_EXPORTER=none`` gives under the distro: kafkaplus asks the
    SDK for no span, and each message the handler publishes carries the trace of
    the message it handled, so the next service's process spans are children of
    the first service's send spans.
    """
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]
    first = first_service(bootstrap, a, keys)

    sampler = CountingSampler()
    middle = KafkaPlusInstrumentor()
    middle.instrument(tracer_provider=TracerProvider(sampler=sampler),
                      meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))  # fmt: skip
    try:
        app = Chain(bootstrap, a, b)

        async def seeded(broker: KafkaBroker) -> None:
            return None

        app.run(seeded, lambda: len(app.received) == N)
    finally:
        middle.uninstrument()
    assert sampler.asked == 0

    carried_whole(first, last_service(bootstrap, b, N), a, b, keys)


def _key(span: Any) -> str | None:
    key = span.attributes.get("messaging.kafka.message.key")
    return key.decode().lower() if isinstance(key, bytes) else key


def test_faststream_telemetry_on_kafkaplus_yields(bootstrap: str, otel: Any) -> None:
    """KafkaTelemetryMiddleware on: FastStream's spans, one per operation, one trace.

    FastStream's own parents: its ``create`` span is the context its messages
    carry (so ``process B`` is a child of ``A create``, FastStream's origin).
    The app's own producer inside a handler is still traced by kafkaplus,
    under FastStream's process span.
    """
    a, b, c = unique("a"), unique("b"), unique("c")
    keys = [f"k{i}" for i in range(N)]
    raw = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    middleware = KafkaTelemetryMiddleware(tracer_provider=otel.tracer_provider)
    app = Chain(bootstrap, a, b, middlewares=[middleware],
                also=lambda body: raw.produce(c, value=body.encode(), key=body.encode()))  # fmt: skip
    app.run(requests(otel, a, keys), lambda: len(otel.spans(f"{b} process")) == N)
    assert raw.flush(30) == 0
    spans = otel.spans()
    # Commits are kafkaplus's settle spans (FastStream makes none); the rest:
    ours = [s for s in spans if s.instrumentation_scope.name == KAFKAPLUS
            and not s.name.startswith("commit")]  # fmt: skip
    assert Counter(s.name for s in ours) == {f"send {c}": N}
    theirs = [s for s in spans if s.instrumentation_scope.name == FASTSTREAM]
    names = [f"{a} create", f"{a} publish", f"{a} process", f"{b} publish", f"{b} process"]
    assert Counter(s.name for s in theirs) == dict.fromkeys(names, N)
    requests_by_key = {s.attributes["key"]: s for s in spans if s.name == "request"}
    by_key: dict[str, dict[str, Any]] = {}
    for s in [*theirs, *ours]:
        key = _key(s)
        assert key is not None and s.name not in by_key.get(key, {}), s.name
        by_key.setdefault(key, {})[s.name] = s
    assert sorted(by_key) == sorted(keys)
    for key in keys:
        j = by_key[key]
        request = requests_by_key[key]
        create_a, process_a = j[f"{a} create"], j[f"{a} process"]
        parents = {
            f"{a} create": request, f"{a} publish": create_a, f"{a} process": create_a,
            f"{b} publish": process_a, f"{b} process": create_a, f"send {c}": process_a,
        }  # fmt: skip
        for name, parent in parents.items():
            assert j[name].parent.span_id == parent.context.span_id, f"{key}: {name}"
        assert {s.context.trace_id for s in j.values()} == {request.context.trace_id}, key
        assert covers(process_a, app.handled[key]), key
        assert covers(j[f"{b} process"], app.received[key]), key


def test_batch_subscriber(bootstrap: str, otel: Any) -> None:
    """``batch=True``: one process span per batch, exactly the handling of the batch.

    It links to every message's send span (batches take links, never a
    parent), and what the handler publishes is its child.
    """
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]
    create_topics(bootstrap, a, b)
    batches: list[tuple[list[str], int, int]] = []
    received: list[str] = []
    broker = KafkaBroker(bootstrap, allow_auto_create_topics=False, logger=None)

    @broker.subscriber(a, group_id=unique("g"), batch=True, max_records=5, **GROUP)
    @broker.publisher(b)
    async def transform(bodies: list[str]) -> KafkaResponse:
        start = time.time_ns()
        await asyncio.sleep(WORK_S)
        batches.append((bodies, start, time.time_ns()))
        return KafkaResponse(",".join(bodies), key=f"batch{len(batches)}".encode())

    @broker.subscriber(b, group_id=unique("g"), **GROUP)
    async def receive(body: str) -> None:
        received.append(body)

    def done() -> bool:
        got = sum(len(bodies) for bodies, _, _ in batches)
        return got == N and len(otel.spans(f"process {b}")) == len(batches)

    async def main() -> None:
        async with broker:
            await broker.start()
            await requests(otel, a, keys)(broker)
            deadline = time.monotonic() + 60
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)

    asyncio.run(main())
    assert done()
    spans = otel.spans()
    sends = {s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"send {a}")}
    assert sorted(sends) == sorted(keys)
    for s in spans:
        if s.name == "request":
            assert sends[s.attributes["key"]].parent.span_id == s.context.span_id
    counts = Counter(s.name for s in spans)
    assert [counts[f"{op} {a}"] for op in ("poll", "process")] == [len(batches)] * 2
    assert [counts[f"{op} {b}"] for op in ("send", "process")] == [len(batches)] * 2
    processed = sorted(otel.spans(f"process {a}"), key=lambda s: s.start_time)
    out = {s.context.trace_id: s for s in otel.spans(f"send {b}")}
    delivered = {s.context.trace_id: s for s in otel.spans(f"process {b}")}
    for (bodies, start, end), span in zip(sorted(batches, key=lambda x: x[1]), processed,
                                          strict=True):  # fmt: skip
        assert covers(span, (start, end))
        assert span.attributes["messaging.batch.message_count"] == len(bodies)
        linked = {link.context.span_id for link in span.links}
        assert linked == {sends[key].context.span_id for key in bodies}
        send_b = out[span.context.trace_id]
        assert send_b.parent.span_id == span.context.span_id
        assert delivered[span.context.trace_id].parent.span_id == send_b.context.span_id
    assert sorted(",".join(received).split(",")) == sorted(keys)


def test_test_kafka_broker_keeps_working(otel: Any) -> None:
    """TestKafkaBroker (no client, its own messages handed straight to process_message).

    The handlers run and publish as without kafkaplus, which traces Kafka
    clients and so makes no span here.
    """
    try:
        confluent_kafka.Message(topic="t")
    except TypeError:
        pytest.skip("TestKafkaBroker builds Message objects, which this confluent-kafka cannot")
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(3)]
    broker = KafkaBroker("localhost:9092", logger=None)
    received: list[str] = []

    @broker.subscriber(a)
    @broker.publisher(b)
    async def transform(body: str) -> KafkaResponse:
        await asyncio.sleep(WORK_S)
        return KafkaResponse(body.upper(), key=body.encode())

    @broker.subscriber(b)
    async def receive(body: str) -> None:
        received.append(body)

    async def main() -> None:
        async with TestKafkaBroker(broker) as fake:
            for key in keys:
                await fake.publish(key, a, key=key.encode())

    asyncio.run(main())
    assert sorted(received) == sorted(k.upper() for k in keys)
    assert [s.name for s in otel.spans() if s.instrumentation_scope.name == KAFKAPLUS] == []


APP = """
import asyncio, os, sys, time
from faststream.confluent import KafkaBroker, KafkaResponse

bootstrap, a, b = os.environ["APP_BOOTSTRAP"], os.environ["APP_A"], os.environ["APP_B"]
n = int(os.environ["APP_N"])
group = dict(auto_offset_reset="earliest", session_timeout_ms=6000,
             heartbeat_interval_ms=500, max_poll_interval_ms=7000)
broker = KafkaBroker(bootstrap, allow_auto_create_topics=False, logger=None)
got = []

@broker.subscriber(a, group_id=a, **group)
@broker.publisher(b)
async def transform(body: str) -> KafkaResponse:
    await asyncio.sleep(0.02)
    return KafkaResponse(body.upper(), key=body.encode())

@broker.subscriber(b, group_id=b, **group)
async def receive(body: str) -> None:
    got.append(body)

async def main() -> None:
    print("loaded:", ",".join(sorted(m.rsplit(".", 1)[1] for m in sys.modules
          if m.startswith("opentelemetry.instrumentation.") and m.count(".") == 2)))
    async with broker:
        await broker.start()
        for i in range(n):
            await broker.publish(f"k{i}", a, key=f"k{i}".encode())
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last handling ends
    sys.exit(0 if len(got) == n else 1)

asyncio.run(main())
"""


def test_zero_code_under_opentelemetry_instrument(bootstrap: str, tmp_path: Path) -> None:
    """The app has no OpenTelemetry code at all: ``opentelemetry-instrument python app.py``.

    With what opentelemetry-bootstrap usually installs beside (the threading,
    asyncio and logging instrumentations, test dependencies), all loaded.
    """
    here = Path(sys.executable).with_name("opentelemetry-instrument")
    instrument = str(here) if here.exists() else shutil.which("opentelemetry-instrument")
    assert instrument, "opentelemetry-instrument not found (opentelemetry-distro)"
    a, b = unique("a"), unique("b")
    create_topics(bootstrap, a, b)
    script = tmp_path / "app.py"
    script.write_text(APP)
    receiver = Receiver()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "APP_BOOTSTRAP": bootstrap, "APP_A": a, "APP_B": b, "APP_N": str(N),
        "OTEL_SERVICE_NAME": "faststream-app", "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "confluent_kafka",
    })  # fmt: skip
    try:
        proc = subprocess.run([instrument, sys.executable, str(script)], env=env,
                              capture_output=True, timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
        loaded = proc.stdout.decode().split("loaded: ", 1)[1].split()[0].split(",")
        assert {"threading", "asyncio", "logging"} <= set(loaded), loaded
        wait_for_spans(receiver, 4 * N, timeout=20)
    finally:
        receiver.close()
    spans = [s for s in receiver.spans if not s.name.startswith("commit")]
    names = [f"send {a}", f"process {a}", f"send {b}", f"process {b}"]
    assert Counter(s.name for s in spans) == dict.fromkeys(names, N)
    by_key: dict[str, dict[str, Any]] = {}
    for s in spans:
        by_key.setdefault(s.attributes["messaging.kafka.message.key"], {})[s.name] = s
    assert len(by_key) == N
    for key, j in by_key.items():
        chain = [j[name] for name in names]
        assert chain[0].parent_id == "", key  # published by the app with nothing current
        for parent, child in itertools.pairwise(chain):
            assert child.parent_id == parent.span_id, f"{key}: {child.name}"
        assert {s.trace_id for s in chain} == {chain[0].trace_id}, key
