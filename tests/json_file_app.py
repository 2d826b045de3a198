"""Child of test_audit_clickhouse: a service with no OpenTelemetry code, run under
``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=otlp_json_file``.

Usage: opentelemetry-instrument python json_file_app.py BOOTSTRAP TOPIC

That exporter writes OTLP JSON lines to standard output, so this program
writes nothing else there (its one line of news goes to standard error).
Three messages to partition 0 and three to partition 1, one more purged; the
group ``json-file-reader`` reads partition 0 only.
"""

from __future__ import annotations

import sys
import time

import confluent_kafka


def main() -> None:
    bootstrap, topic = sys.argv[1:3]
    base = {"bootstrap.servers": bootstrap, "log_level": 0}
    producer = confluent_kafka.Producer(base)
    for partition in (0, 1):
        for i in range(3):
            producer.produce(topic, f"p{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    stuck = confluent_kafka.Producer({**base, "linger.ms": 60000})
    stuck.produce(topic, b"purged", partition=1)
    stuck.purge()
    stuck.flush(10)

    consumer = confluent_kafka.Consumer(
        {**base, "group.id": "json-file-reader", "enable.auto.commit": False}
    )
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    got = 0
    deadline = time.monotonic() + 30
    while got < 3 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
    consumer.close()
    print(f"consumed {got}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
