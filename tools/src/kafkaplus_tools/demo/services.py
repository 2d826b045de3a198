"""The demo pipeline's three services, written as an app team writes them: no OpenTelemetry.

    python -m kafkaplus_tools.demo.services ingest|enrich|sink

Run under ``opentelemetry-instrument`` they are traced by kafkaplus with zero
code changes. Settings come from environment variables set by ``kafkaplus demo``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

BOOTSTRAP = os.environ.get("DEMO_BOOTSTRAP", "127.0.0.1:9092")
RAW = os.environ.get("DEMO_TOPIC_RAW", "orders.raw")
ENRICHED = os.environ.get("DEMO_TOPIC_ENRICHED", "orders.enriched")
COUNT = int(os.environ.get("DEMO_MESSAGES", "5"))
DEADLINE = time.monotonic() + float(os.environ.get("DEMO_TIMEOUT", "40"))
LINGER_MS = os.environ.get("DEMO_LINGER_MS", "5")
BATCH_SIZE = os.environ.get("DEMO_BATCH_SIZE", "16384")
CONSUME_BATCH = int(os.environ.get("DEMO_CONSUME_BATCH", "0"))
INGEST_INTERVAL_S = float(os.environ.get("DEMO_INGEST_INTERVAL_MS", "20")) / 1000
# Keep polling this long after flush(), so that librdkafka's statistics (served
# from poll()) report the last batches before the process exits.
INGEST_DRAIN_S = float(os.environ.get("DEMO_INGEST_DRAIN_MS", "0")) / 1000
# Connect before the first order, so a burst measures the steady state, not the
# producer's first connection to the broker.
INGEST_WARMUP = os.environ.get("DEMO_INGEST_WARMUP", "0") == "1"

GROUP = {
    "session.timeout.ms": 6000,
    "max.poll.interval.ms": 7000,
    "heartbeat.interval.ms": 500,
    "auto.offset.reset": "earliest",
    # Committed offsets often enough that librdkafka's statistics report a lag.
    "auto.commit.interval.ms": 500,
}
# Keep polling this long after the last message, so that the statistics (consumer
# lag) of the run are served before the process exits.
CONSUMER_DRAIN_S = float(os.environ.get("DEMO_CONSUMER_DRAIN_MS", "0")) / 1000
# The metric reader's period, plus a margin: a report is exported within it.
EXPORT_INTERVAL_S = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000 + 0.3


def _producer(name: str) -> Producer:
    return Producer({
        "bootstrap.servers": BOOTSTRAP, "client.id": name,
        "linger.ms": LINGER_MS, "batch.size": BATCH_SIZE,
    })  # fmt: skip


class _LagSeen:
    """Whether librdkafka's statistics have reported a consumer lag (the drain waits for one).

    Passed as the app's own ``stats_cb``: kafkaplus's statistics bridge calls it
    after reading the same report.
    """

    def __init__(self) -> None:
        self.seen: float | None = None  # when a report with a lag arrived (monotonic)
        self.reports = 0  # none: statistics are off, nothing to wait for

    def __call__(self, stats_json: str) -> None:
        self.reports += 1
        try:
            topics = json.loads(stats_json).get("topics", {})
        except ValueError:
            return
        for topic in topics.values():
            for part, fields in topic.get("partitions", {}).items():
                if part != "-1" and fields.get("consumer_lag", -1) >= 0 and self.seen is None:
                    self.seen = time.monotonic()


LAG_SEEN = _LagSeen()


def _consumer(group: str, topic: str) -> Consumer:
    c = Consumer({
        "bootstrap.servers": BOOTSTRAP, "group.id": group, "client.id": group,
        "fetch.wait.max.ms": 50, "stats_cb": LAG_SEEN, **GROUP,
    })  # fmt: skip
    # Tell the demo when the group has assigned us partitions, so the ingest
    # starts into a pipeline that is ready.
    c.subscribe([topic], on_assign=lambda consumer, parts: print("ready", flush=True))
    return c


def _messages(c: Consumer) -> Iterator[Message]:
    """Yield messages until COUNT arrived; exit non-zero at the deadline."""
    seen = 0
    while seen < COUNT:
        if time.monotonic() > DEADLINE:
            print(f"timed out after {seen} of {COUNT} messages", file=sys.stderr)
            sys.exit(3)
        batch = c.consume(CONSUME_BATCH, 0.5) if CONSUME_BATCH else [c.poll(0.5)]
        for msg in batch:
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue
            seen += 1
            yield msg


def _drain(c: Consumer) -> None:
    """Poll on for CONSUMER_DRAIN_S, and until the metric reader has exported a report
    with a lag, for at most four times as long.

    Statistics are served from poll(), and close() drops the client's series, so
    a lag reported just before close() would never be exported. On a loaded
    machine the first report after the commit can take longer than the drain.
    """
    start = time.monotonic()
    until, latest = start + CONSUMER_DRAIN_S, start + 4 * CONSUMER_DRAIN_S
    wait_for_lag = LAG_SEEN.reports > 0
    LAG_SEEN.seen = None  # a report after the commit
    while True:
        now = time.monotonic()
        seen = LAG_SEEN.seen
        exported = seen is not None and now >= seen + EXPORT_INTERVAL_S
        if now >= latest or (now >= until and (exported or not wait_for_lag)):
            return
        c.poll(0.1)


def _commit(c: Consumer) -> None:
    """Commit what was consumed; auto-commit may already have done it."""
    try:
        c.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def ingest() -> None:
    p = _producer("ingest")
    if INGEST_WARMUP:
        p.list_topics(RAW, timeout=10)
    failed = []
    for i in range(COUNT):
        order_id = f"o-{i:04d}"
        order = {"order_id": order_id, "amount": 10 + i, "currency": "EUR"}
        p.produce(
            RAW,
            json.dumps(order).encode(),
            key=order_id,
            on_delivery=lambda err, msg: failed.append(err) if err else None,
        )
        p.poll(0)
        if INGEST_INTERVAL_S:
            time.sleep(INGEST_INTERVAL_S)
    if p.flush(15) or failed:
        sys.exit(f"ingest: {len(failed)} deliveries failed")
    drain_until = time.monotonic() + INGEST_DRAIN_S
    while time.monotonic() < drain_until:
        p.poll(0.05)


def enrich() -> None:
    c = _consumer("enricher", RAW)
    p = _producer("enricher")
    for msg in _messages(c):
        order = json.loads(msg.value() or b"{}")
        order["amount_usd"] = round(order["amount"] * 1.08, 2)
        time.sleep(0.01)  # a lookup in a reference table
        raw_key = msg.key()
        key = raw_key if isinstance(raw_key, (str, bytes)) else None
        p.produce(ENRICHED, json.dumps(order).encode(), key=key, headers=msg.headers())
        p.poll(0)
    p.flush(15)
    _commit(c)
    _drain(c)
    c.close()


def sink() -> None:
    c = _consumer("sink", ENRICHED)
    for _msg in _messages(c):
        time.sleep(0.015)  # write to the warehouse
    _commit(c)
    _drain(c)
    c.close()


if __name__ == "__main__":
    {"ingest": ingest, "enrich": enrich, "sink": sink}[sys.argv[1]]()
