"""Fixtures: real brokers (tansu, librdkafka's mock cluster) and in-memory OTel SDK signals."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import cimpl
from opentelemetry import context as otel_context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from kafkaplus_tools import brokers
from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

# The classes as confluent-kafka defines them, before any instrument(). Kept in
# a dict: instrument() re-points module-level names bound to these classes.
ORIGINALS = {"Producer": cimpl.Producer, "Consumer": cimpl.Consumer}


def original_producer(conf: dict[str, Any]) -> Any:
    return ORIGINALS["Producer"](conf)

#: Consumer settings that make a group join take ~3 s instead of ~23 s on tansu.
GROUP_SETTINGS = {
    "session.timeout.ms": 6000,
    "max.poll.interval.ms": 7000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
}


@pytest.fixture(autouse=True)
def _restore_context() -> Iterator[None]:
    """Leave the thread's OpenTelemetry context as each test found it.

    A consumer's process span stays current until its next poll; a test that
    ends without closing its consumer must not leak that into the next test.
    """
    token = otel_context.attach(otel_context.get_current())
    try:
        yield
    finally:
        otel_context.detach(token)


@pytest.fixture(scope="session")
def tansu() -> Iterator[str]:
    with brokers.tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def mock_cluster() -> Iterator[str]:
    """librdkafka's mock cluster, held open by an uninstrumented producer."""
    with brokers.mock_cluster(ORIGINALS["Producer"]) as bootstrap:
        yield bootstrap


@pytest.fixture(params=["tansu", "mock"])
def bootstrap(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once against each broker."""
    return str(request.getfixturevalue("tansu" if request.param == "tansu" else "mock_cluster"))


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    instrumentor: KafkaPlusInstrumentor

    def spans(self, name: str | None = None) -> list[Any]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> Any:
        found = self.spans(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        points.extend(m.data.data_points)
        return points


class PatternSampler(Sampler):
    """Decides in a fixed order ("1" samples; "0", and every call past the end, drops).

    As a root sampler (``ParentBased(PatternSampler(...))``) it picks which
    traces are sampled, as a ratio sampler would, but knowably. ``seen``: the
    attributes of each span it was asked about.
    """

    def __init__(self, pattern: str) -> None:
        self.decisions = iter(pattern)
        self.seen: list[dict[str, Any]] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> SamplingResult:  # fmt: skip
        self.seen.append(dict(attributes or {}))
        if next(self.decisions, "0") == "1":
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)  # as the SDK's samplers
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "pattern"


def make_otel(**options: Any) -> Otel:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=options.pop("sampler", None))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    inst = KafkaPlusInstrumentor()
    inst.instrument(tracer_provider=tp, meter_provider=mp, **options)
    return Otel(exporter, reader, tp, mp, inst)


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    try:
        yield o
    finally:
        o.instrumentor.uninstrument()


@pytest.fixture
def otel_factory() -> Iterator[Any]:
    """Instrument with options: ``otel_factory(consumer_context_mode="link")``."""
    made: list[Otel] = []

    def factory(**options: Any) -> Otel:
        o = make_otel(**options)
        made.append(o)
        return o

    yield factory
    for o in made:
        o.instrumentor.uninstrument()


def producer(bootstrap: str, **conf: Any) -> Any:
    return confluent_kafka.Producer({"bootstrap.servers": bootstrap, "log_level": 0, **conf})


def consumer(bootstrap: str, group: str | None = None, **conf: Any) -> Any:
    return confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group or unique("g"), "log_level": 0,
        "enable.auto.commit": False, **GROUP_SETTINGS, **conf,
    })  # fmt: skip


def assigned_consumer(bootstrap: str, topic: str, partition: int = 0, **conf: Any) -> Any:
    """A consumer reading one partition from the start, without a group join (fast)."""
    c = consumer(bootstrap, **conf)
    c.assign([confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)])
    return c


def poll_messages(c: Any, n: int, timeout: float = 30.0, submit: Any = None) -> list[Any]:
    """Poll until n messages (not errors) arrived; leaves the last one's span open.

    ``submit(msg)``, when given, is called with each message as it arrives,
    before the next poll (a hand-off to workers).
    """
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append(m)
            if submit is not None:
                submit(m)
    assert len(out) == n, f"got {len(out)} of {n} messages"
    return out


def produce_and_flush(p: Any, topic: str, n: int = 1, **kwargs: Any) -> list[Any]:
    """Produce n messages to partition 0 and return their delivery reports."""
    reports: list[Any] = []
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda e, m: reports.append((e, m)), **kwargs)  # fmt: skip
    assert p.flush(30) == 0
    return reports
