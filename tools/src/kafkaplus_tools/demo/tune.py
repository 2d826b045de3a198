"""``kafkaplus demo --tune``: the same pipeline twice, without and with batching.

Run A sends each message as soon as it can (``linger.ms=0``) and the consumers
call ``poll()`` for one message at a time. Run B lets the producers wait up to
10 ms to fill bigger batches and the consumers take up to 100 messages per
``consume()``. The ingest sends its orders back to back, so the producer has
something to batch. The table then shows what the telemetry of each run says:
send spans, librdkafka's batch and queue statistics, throughput and process
spans. docs/tuning.md explains how to read it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import DemoError, broker, run_pipeline
from .receiver import Point, Receiver, Span

DEFAULT_MESSAGES = 500
WIDTH = 80
STATISTICS_INTERVAL_MS = 1000
#: The ingest keeps polling this long after flush(), so that the statistics
#: interval that holds its batches is reported before it exits.
DRAIN_MS = STATISTICS_INTERVAL_MS + 250


@dataclass(frozen=True)
class Setting:
    """One run's client settings."""

    label: str
    linger_ms: int
    batch_size: int
    consume_batch: int  # 0: poll() one message at a time

    def env(self) -> dict[str, str]:
        return {
            "DEMO_LINGER_MS": str(self.linger_ms),
            "DEMO_BATCH_SIZE": str(self.batch_size),
            "DEMO_CONSUME_BATCH": str(self.consume_batch),
            "DEMO_INGEST_INTERVAL_MS": "0",
            "DEMO_INGEST_DRAIN_MS": str(DRAIN_MS),
            "DEMO_INGEST_WARMUP": "1",
            "OTEL_PYTHON_KAFKAPLUS_STATISTICS_INTERVAL_MS": str(STATISTICS_INTERVAL_MS),
        }

    @property
    def producer(self) -> str:
        return f"{self.linger_ms} ms / {_size(self.batch_size)}"

    @property
    def consumer(self) -> str:
        return f"consume({self.consume_batch})" if self.consume_batch else "poll()"


SETTINGS = (
    Setting("A", linger_ms=0, batch_size=16 * 1024, consume_batch=0),
    # The ingest sends 500 orders in a few tens of milliseconds: a linger
    # shorter than that burst closes batches on time, the way a busy service
    # sees it, instead of leaving the whole burst to the final flush().
    Setting("B", linger_ms=10, batch_size=64 * 1024, consume_batch=100),
)


@dataclass
class Measured:
    """What one run's telemetry says. None: the run did not report it."""

    setting: Setting
    wall_s: float
    sends: int
    send_p50_s: float | None
    send_p99_s: float | None
    batch_messages_avg: float | None
    batch_messages_max: float | None
    batch_bytes_avg: float | None
    queue_avg_s: float | None
    queue_p99_s: float | None
    requests: int | None
    throughput: float | None  # messages per second, first send to last ack
    process_spans: int  # the enricher's
    messages_per_process: float | None
    process_p50_s: float | None
    process_p99_s: float | None
    process_per_message_s: float | None
    sink_age_mean_s: float | None
    max_lag: float | None  # the enricher's largest consumer lag over the run (statistics)
    pipeline_s: float | None  # first send to the end of the sink's last process span


# -- measuring -------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def _latest(
    points: Iterable[Point], name: str, service: str, **match: Any
) -> dict[tuple[Any, ...], Point]:
    """The latest point of each series (exports repeat the latest snapshot)."""
    out: dict[tuple[Any, ...], Point] = {}
    for p in points:
        if p.name != name or p.service != service:
            continue
        if any(p.attributes.get(k) != v for k, v in match.items()):
            continue
        out[tuple(sorted(p.attributes.items()))] = p
    return out


def _stat(points: Iterable[Point], name: str, service: str, stat: str,
          combine: Callable[[list[float]], float], **match: Any) -> float | None:  # fmt: skip
    """A window statistic (``kafkaplus.stat``) over every broker or topic series."""
    found = _latest(points, name, service, **{"kafkaplus.stat": stat}, **match)
    values = [float(p.value) for p in found.values()]
    return combine(values) if values else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _durations(spans: Iterable[Span]) -> list[float]:
    return [(s.end_ns - s.start_ns) / 1e9 for s in spans]


def measure(setting: Setting, receiver: Receiver, topics: dict[str, str],
            wall_s: float) -> Measured:  # fmt: skip
    """Read one run's spans and metric points into the numbers of the table."""
    raw, enriched = topics["DEMO_TOPIC_RAW"], topics["DEMO_TOPIC_ENRICHED"]
    spans = list(receiver.spans)
    points = list(receiver.points)
    sends = [s for s in spans if s.service == "ingest" and s.name == f"send {raw}"]
    send_d = _durations(sends)
    processes = [s for s in spans if s.service == "enricher" and s.name == f"process {raw}"]
    process_d = _durations(processes)
    handled = sum(int(s.attributes.get("messaging.batch.message_count", 1)) for s in processes)
    sinks = [s for s in spans if s.service == "sink" and s.name == f"process {enriched}"]

    throughput = None
    if len(sends) > 1:
        first, last = min(s.start_ns for s in sends), max(s.end_ns for s in sends)
        throughput = len(sends) / max((last - first) / 1e9, 1e-9)
    pipeline_s = None
    if sends and sinks:
        pipeline_s = (max(s.end_ns for s in sinks) - min(s.start_ns for s in sends)) / 1e9

    requests = _latest(points, "kafkaplus.broker.requests", "ingest")
    ages = _latest(points, "kafkaplus.message.age", "sink")
    age_n = sum(p.count for p in ages.values())
    topic = {"messaging.destination.name": raw}
    # A gauge: its largest value over the run (0 once the consumer caught up).
    lags = [
        p.value
        for p in points
        if p.name == "kafkaplus.consumer.lag"
        and p.service == "enricher"
        and p.attributes.get("messaging.destination.name") == raw
    ]
    return Measured(
        setting=setting,
        wall_s=wall_s,
        sends=len(sends),
        send_p50_s=percentile(send_d, 0.5),
        send_p99_s=percentile(send_d, 0.99),
        batch_messages_avg=_stat(
            points, "kafkaplus.producer.batch.message.count", "ingest", "avg", _mean, **topic
        ),
        batch_messages_max=_stat(
            points, "kafkaplus.producer.batch.message.count", "ingest", "max", max, **topic
        ),
        batch_bytes_avg=_stat(
            points, "kafkaplus.producer.batch.size", "ingest", "avg", _mean, **topic
        ),
        queue_avg_s=_stat(points, "kafkaplus.producer.queue.time", "ingest", "avg", _mean),
        queue_p99_s=_stat(points, "kafkaplus.producer.queue.time", "ingest", "p99", max),
        requests=int(sum(p.value for p in requests.values())) if requests else None,
        throughput=throughput,
        process_spans=len(processes),
        messages_per_process=handled / len(processes) if processes else None,
        process_p50_s=percentile(process_d, 0.5),
        process_p99_s=percentile(process_d, 0.99),
        process_per_message_s=sum(process_d) / handled if handled else None,
        sink_age_mean_s=sum(p.value for p in ages.values()) / age_n if age_n else None,
        max_lag=max(lags) if lags else None,
        pipeline_s=pipeline_s,
    )


def _wait_for(receiver: Receiver, topics: dict[str, str], messages: int,
              timeout: float = 10.0) -> None:  # fmt: skip
    """Until every send span and the ingest's batch statistics arrived (or timeout).

    The services flush their telemetry when they exit, so this rarely waits.
    """
    raw = topics["DEMO_TOPIC_RAW"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sends = sum(1 for s in receiver.spans if s.service == "ingest" and s.name == f"send {raw}")
        stats = any(
            p.name == "kafkaplus.producer.batch.message.count" and p.service == "ingest"
            for p in receiver.points
        )
        if sends >= messages and stats:
            return
        time.sleep(0.1)


def run_setting(bootstrap: str, setting: Setting, messages: int, timeout: float,
                forward: str | None = None, forward_headers: str = "") -> Measured:  # fmt: skip
    """Run the pipeline once with ``setting`` and measure it; raises DemoError."""
    receiver = Receiver(forward, forward_headers)
    try:
        start = time.monotonic()
        topics = run_pipeline(
            bootstrap, receiver, messages, timeout, extra_env=setting.env(), unique_topics=True
        )
        wall_s = time.monotonic() - start
        _wait_for(receiver, topics, messages)
        result = measure(setting, receiver, topics, wall_s)
    finally:
        receiver.close()
    if result.sends < messages:
        raise DemoError(
            f"run {setting.label}: only {result.sends} of {messages} send spans arrived"
        )
    return result


# -- rendering -------------------------------------------------------------


def _size(n: float) -> str:
    if n >= 1024:
        kb = n / 1024
        return f"{kb:.0f} KB" if kb >= 10 or kb.is_integer() else f"{kb:.1f} KB"
    return f"{n:.0f} B"


def _num(x: float) -> str:
    if x >= 100 or x.is_integer():
        return f"{x:.0f}"
    return f"{x:.1f}"


def _times(*values: float | None) -> str:
    """One or more durations in one unit: ``1.6 / 3.6 ms``."""
    if any(v is None for v in values):
        return "n/a"
    secs = [float(v) for v in values if v is not None]
    if max(secs) >= 10:
        return " / ".join(f"{v:.1f}" for v in secs) + " s"
    if max(secs) >= 1:
        return " / ".join(f"{v:.2f}" for v in secs) + " s"
    ms = [v * 1000 for v in secs]
    digits = 1 if max(ms) < 100 else 0
    return " / ".join(f"{v:.{digits}f}" for v in ms) + " ms"


def _count(*values: float | None) -> str:
    if any(v is None for v in values):
        return "n/a"
    return " / ".join(_num(float(v)) for v in values if v is not None)


def _rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x / 1000:.1f}k msg/s" if x >= 1000 else f"{x:.0f} msg/s"


Row = tuple[str, Callable[[Measured], str]]

SECTIONS: tuple[tuple[str, tuple[Row, ...]], ...] = (
    ("settings", (
        ("linger.ms / batch.size", lambda m: m.setting.producer),
        ("consumers call", lambda m: m.setting.consumer),
    )),
    ("producer (ingest)", (
        ("send span p50 / p99", lambda m: _times(m.send_p50_s, m.send_p99_s)),
        ("messages per batch avg / max",
         lambda m: _count(m.batch_messages_avg, m.batch_messages_max)),
        ("bytes per batch avg",
         lambda m: "n/a" if m.batch_bytes_avg is None else _size(m.batch_bytes_avg)),
        ("queue time avg / p99", lambda m: _times(m.queue_avg_s, m.queue_p99_s)),
        ("requests to the broker", lambda m: _count(m.requests)),
        ("throughput, first send to last ack", lambda m: _rate(m.throughput)),
    )),
    ("consumers", (
        ("enricher process spans", lambda m: str(m.process_spans)),
        ("messages per process span", lambda m: _count(m.messages_per_process)),
        ("process span p50 / p99", lambda m: _times(m.process_p50_s, m.process_p99_s)),
        ("process time per message", lambda m: _times(m.process_per_message_s)),
        ("message age at sink, mean", lambda m: _times(m.sink_age_mean_s)),
        ("enricher consumer lag, max", lambda m: _count(m.max_lag)),
        ("first send to last process end", lambda m: _times(m.pipeline_s)),
    )),
)  # fmt: skip


def render(results: Sequence[Measured], colour: bool = False) -> str:
    """The side-by-side table, at most 80 columns."""
    label_w = 2 + max(len(label) for _, rows in SECTIONS for label, _ in rows)
    value_w = (WIDTH - label_w) // max(len(results), 1) - 2

    def bold(text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if colour else text

    def line(label: str, values: Iterable[str]) -> str:
        cells = "".join(f"  {v:<{value_w}}" for v in values)
        return f"{label:<{label_w}}{cells}".rstrip()

    lines = [bold(line("", (f"run {r.setting.label}" for r in results)))]
    for title, rows in SECTIONS:
        lines.append(bold(title))
        for label, value in rows:
            cells = (value(r)[:value_w] for r in results)
            lines.append(line(f"  {label}"[:label_w], cells))
    return "\n".join(lines)


def run_all(bootstrap: str, messages: int, timeout: float,
            settings: Sequence[Setting] = SETTINGS, out: Any = None,
            forward: str | None = None, forward_headers: str = "") -> list[Measured]:  # fmt: skip
    """Run every setting in turn, reporting progress on ``out``."""
    out = out or sys.stdout
    results = []
    for s in settings:
        print(f"run {s.label}: linger.ms={s.linger_ms}, batch.size={s.batch_size}, "
              f"consumers call {s.consumer} ...", end="", file=out, flush=True)  # fmt: skip
        try:
            result = run_setting(bootstrap, s, messages, timeout, forward, forward_headers)
        except BaseException:
            print(" failed", file=out, flush=True)
            raise
        print(f" {result.wall_s:.1f} s", file=out, flush=True)
        results.append(result)
    return results


def main(args: argparse.Namespace) -> int:
    """``kafkaplus demo --tune`` with the demo's parsed arguments."""
    messages = args.messages if args.messages is not None else DEFAULT_MESSAGES
    if messages < 2:
        print("kafkaplus demo --tune: --messages must be at least 2", file=sys.stderr)
        return 2
    forward = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    headers = os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    try:
        with broker(args.broker, args.bootstrap_servers) as bootstrap:
            where = (args.bootstrap_servers and "yours") or args.broker
            print(f"broker: {where} at {bootstrap}")
            print(f"pipeline: ingest -> enricher -> sink, {messages} orders sent back to back, "
                  f"{len(SETTINGS)} runs")  # fmt: skip
            results = run_all(bootstrap, messages, args.timeout,
                              forward=forward, forward_headers=headers)  # fmt: skip
    except DemoError as exc:
        print(f"kafkaplus demo --tune: {exc}", file=sys.stderr)
        return 1
    print()
    print(render(results, colour=colour))
    missing = [r.setting.label for r in results if r.batch_messages_avg is None]
    if missing:
        print(f"\nno producer batch statistics from run {', '.join(missing)}: "
              "librdkafka reports them from poll(), once per statistics interval")  # fmt: skip
    return 0
