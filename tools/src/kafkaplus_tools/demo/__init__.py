"""``kafkaplus demo``: an embedded broker and a three-service pipeline, drawn as one trace.

ingest --orders.raw--> enricher --orders.enriched--> sink. Each service is its
own process with no OpenTelemetry code, started with ``opentelemetry-instrument``;
they export OTLP to a receiver in this process, which draws the waterfall of
one message's trace and a metrics summary.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ..brokers import BrokerUnavailable, mock_cluster, tansu_broker
from .receiver import Receiver
from .waterfall import render

SERVICES = ("sink", "enricher", "ingest")  # consumers first, so they are ready
_MODULE = "kafkaplus_tools.demo.services"


class DemoError(Exception):
    """A failure the demo explains in one line and exits non-zero for."""


@contextlib.contextmanager
def broker(kind: str, bootstrap: str | None) -> Iterator[str]:
    """The bootstrap address of a running broker, for the duration of the block."""
    if bootstrap:
        yield bootstrap
        return
    try:
        with mock_cluster() if kind == "mock" else tansu_broker() as address:
            yield address
    except BrokerUnavailable as exc:
        raise DemoError(str(exc)) from None


def ensure_topics(bootstrap: str, topics: list[str]) -> None:
    """Create the topics (AdminClient; the mock cluster auto-creates on metadata)."""
    from confluent_kafka import cimpl
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined,unused-ignore]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        md = admin.list_topics(timeout=10)
    except Exception as exc:
        raise DemoError(f"broker {bootstrap} is not reachable: {exc}") from None
    missing = [t for t in topics if t not in md.topics]
    if missing:
        futures = admin.create_topics([NewTopic(t, 3, 1) for t in missing], request_timeout=5)
        for f in futures.values():
            with contextlib.suppress(Exception):
                f.result(6)
    probe = cimpl.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for t in topics:
        tmd = probe.list_topics(t, timeout=10).topics.get(t)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise DemoError(f"could not create topic {t} on {bootstrap}")


def _instrument_cmd() -> list[str]:
    here = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    exe = here if os.path.exists(here) else shutil.which("opentelemetry-instrument")
    if not exe:
        raise DemoError("opentelemetry-instrument not found: pip install opentelemetry-distro")
    return [exe, sys.executable, "-m", _MODULE]


def run_pipeline(bootstrap: str, receiver: Receiver, messages: int, timeout: float,
                 extra_env: dict[str, str] | None = None,
                 unique_topics: bool = False) -> dict[str, str]:  # fmt: skip
    """Run the three services to completion; returns the topic names used."""
    # A fresh embedded broker each run; on the user's cluster, fresh topic names.
    suffix = f".{uuid.uuid4().hex[:6]}" if unique_topics else ""
    topics = {
        "DEMO_TOPIC_RAW": f"orders.raw{suffix}",
        "DEMO_TOPIC_ENRICHED": f"orders.enriched{suffix}",
    }
    ensure_topics(bootstrap, list(topics.values()))
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    base.update(topics)
    base.update({
        "DEMO_BOOTSTRAP": bootstrap, "DEMO_MESSAGES": str(messages), "DEMO_TIMEOUT": str(timeout),
        "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.endpoint + "/v1/metrics",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "confluent_kafka",
        "OTEL_PYTHON_KAFKAPLUS_STATISTICS_INTERVAL_MS": "1000",
        # The demo shows message ages too: the per-message histograms of metrics=all.
        "OTEL_PYTHON_KAFKAPLUS_METRICS": "all",
        "DEMO_CONSUMER_DRAIN_MS": "1500",
    })  # fmt: skip
    base.update(extra_env or {})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        deadline = time.monotonic() + timeout + 15
        for name in SERVICES:
            env = dict(base, OTEL_SERVICE_NAME=name)
            procs[name] = subprocess.Popen(
                [*_instrument_cmd(), "enrich" if name == "enricher" else name],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            if name != "ingest":
                _wait_ready(name, procs[name], deadline)
        for name, proc in procs.items():
            try:
                rc = proc.wait(max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                raise DemoError(f"service {name} did not finish in time") from None
            if rc != 0:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                tail = "\n".join(err.strip().splitlines()[-5:])
                raise DemoError(f"service {name} exited with code {rc}:\n{tail}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    return topics


def _wait_ready(name: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Block until a consumer service says its partitions are assigned."""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == b"ready":
                return
            if not line:  # exited
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                tail = "\n".join(err.strip().splitlines()[-5:])
                raise DemoError(f"service {name} exited before joining its group:\n{tail}")
    raise DemoError(f"service {name} did not join its consumer group in time")


def wait_for_spans(receiver: Receiver, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.spans) < expected and time.monotonic() < deadline:
        time.sleep(0.1)


def pick_trace(receiver: Receiver) -> list[Any]:
    """The latest trace that spans the whole pipeline.

    The first message also waits for the consumer groups to join; a later one
    shows the pipeline in its steady state.
    """
    by_trace: dict[str, list[Any]] = {}
    for s in receiver.spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    if not by_trace:
        return []
    best = max(
        by_trace.values(),
        key=lambda ss: (len({s.service for s in ss}), len(ss), min(s.start_ns for s in ss)),
    )
    return sorted(best, key=lambda s: s.start_ns)


def _latest(receiver: Receiver, name: str, service: str | None = None) -> list[Any]:
    """Latest point per series (exports are cumulative)."""
    series: dict[Any, Any] = {}
    for p in receiver.points:
        if p.name == name and (service is None or p.service == service):
            series[(p.service, tuple(sorted(p.attributes.items())))] = p
    return list(series.values())


def metrics_summary(receiver: Receiver) -> str:
    def total(name: str, service: str | None = None) -> float:
        return float(sum(p.value for p in _latest(receiver, name, service)))

    def mean(name: str, service: str | None = None) -> str:
        pts = _latest(receiver, name, service)
        n = sum(p.count for p in pts)
        return f"{sum(p.value for p in pts) / n * 1000:.1f} ms" if n else "n/a"

    # Lag is a gauge: its largest value over the run, not only the last one (0 once drained).
    lag = [p.value for p in receiver.points if p.name == "kafkaplus.consumer.lag"]
    lag_s = f"{int(max(lag))} messages" if lag else "n/a (statistics not reported)"
    rows = [
        ("messages sent (ingest, enricher)",
         f"{int(total('messaging.client.sent.messages', 'ingest'))}, "
         f"{int(total('messaging.client.sent.messages', 'enricher'))}"),
        ("messages consumed (enricher, sink)",
         f"{int(total('messaging.client.consumed.messages', 'enricher'))}, "
         f"{int(total('messaging.client.consumed.messages', 'sink'))}"),
        ("mean send duration (produce -> ack)",
         mean("messaging.client.operation.duration", "ingest")),
        ("mean message age at sink", mean("kafkaplus.message.age", "sink")),
        ("mean age since origin at sink", mean("kafkaplus.message.origin_age", "sink")),
        ("max consumer lag", lag_s),
        ("delivery failures", f"{int(total('kafkaplus.producer.undelivered.messages'))}"),
        ("skipped offsets", f"{int(total('kafkaplus.consumer.skipped.messages'))}"),
    ]  # fmt: skip
    return "\n".join(f"  {k:<38} {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kafkaplus demo", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--broker",
        choices=("mock", "tansu"),
        default="mock",
        help="embedded broker: librdkafka's mock cluster (default) or tansu",
    )
    ap.add_argument("--bootstrap-servers", help="use your own cluster instead (HOST:PORT)")
    ap.add_argument(
        "--messages",
        type=int,
        default=None,
        help="orders to push through (default 5; 500 with --tune)",
    )
    ap.add_argument("--timeout", type=float, default=40.0, help="seconds before giving up")
    ap.add_argument(
        "--tune",
        action="store_true",
        help="run twice, without and with batching, and compare what the telemetry shows",
    )
    args = ap.parse_args(argv)
    if args.tune:
        from . import tune

        return tune.main(args)
    if args.messages is None:
        args.messages = 5
    forward = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    receiver = Receiver(forward, os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
    try:
        with broker(args.broker, args.bootstrap_servers) as bootstrap:
            print(f"broker: {(args.bootstrap_servers and 'yours') or args.broker} at {bootstrap}")
            print(f"pipeline: ingest -> orders.raw -> enricher -> orders.enriched -> sink "
                  f"({args.messages} orders)")  # fmt: skip
            run_pipeline(
                bootstrap,
                receiver,
                args.messages,
                args.timeout,
                unique_topics=bool(args.bootstrap_servers),
            )
            wait_for_spans(receiver, 4 * args.messages)
        spans = pick_trace(receiver)
        if len({s.service for s in spans}) < 3:
            raise DemoError(
                f"no trace reached all three services ({len(receiver.spans)} spans received)"
            )
        print()
        print(render(spans))
        print()
        print("metrics")
        print(metrics_summary(receiver))
        if forward:
            status = f"{len(receiver.forward_errors)} errors" if receiver.forward_errors else "ok"
            print(f"\nalso sent to {forward}: {status}")
        return 0
    except DemoError as exc:
        print(f"kafkaplus demo: {exc}", file=sys.stderr)
        return 1
    finally:
        receiver.close()
