"""What the service-shape tests check of every journey: one trace, the right parents, no doubles.

A journey: a request span -> ``send A`` -> ``process A`` -> ``send B`` -> ``process B``,
one per message key.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import confluent_kafka
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

from conftest import make_otel, poll_messages, producer

KEY = "messaging.kafka.message.key"


@dataclass
class Journey:
    key: str
    request: Any
    send_a: Any
    process_a: Any
    send_b: Any
    process_b: Any


def by_key(spans: list[Any], name: str) -> dict[str, Any]:
    """The spans of that name, one per message key (a second one for a key fails)."""
    out: dict[str, Any] = {}
    for s in spans:
        if s.name == name:
            key = s.attributes[KEY]
            assert key not in out, f"two {name!r} spans for message {key}"
            out[key] = s
    return out


def journeys(spans: list[Any], a: str, b: str, keys: list[str]) -> list[Journey]:
    """Every message's journey, each asserted to be one trace with the right parents."""
    requests = {s.attributes["key"]: s for s in spans if s.name == "request"}
    send_a, process_a = by_key(spans, f"send {a}"), by_key(spans, f"process {a}")
    send_b, process_b = by_key(spans, f"send {b}"), by_key(spans, f"process {b}")
    out = []
    for key in keys:
        j = Journey(key, requests[key], send_a[key], process_a[key], send_b[key], process_b[key])
        chain = [j.request, j.send_a, j.process_a, j.send_b, j.process_b]
        assert {s.context.trace_id for s in chain} == {j.request.context.trace_id}, key
        for parent, child in itertools.pairwise(chain):
            assert child.parent is not None and child.parent.span_id == parent.context.span_id, (
                f"{key}: {child.name} is not a child of {parent.name}"
            )
        out.append(j)
    return out


def no_doubles(spans: list[Any], names: list[str], n: int) -> None:
    """Exactly ``n`` spans of each name: nothing emitted twice, nothing missing."""
    counts = Counter(s.name for s in spans)
    assert {name: counts[name] for name in names} == dict.fromkeys(names, n)


class CountingSampler(Sampler):
    """ALWAYS_ON, counting the spans the SDK was asked to make (0: kafkaplus asked for none)."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return ALWAYS_ON.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "counting"


def queue_workers(c: Any, n: int, handle: Callable[[Any], None], threads: int) -> None:
    """Poll n messages into a queue that ``threads`` plain threads drain with ``handle``."""
    work: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        while (msg := work.get()) is not None:
            handle(msg)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for t in started:
        t.start()
    poll_messages(c, n, submit=work.put)
    for _ in started:
        work.put(None)
    for t in started:
        t.join(30)


def first_service(bootstrap: str, topic: str, keys: list[str]) -> list[Any]:
    """A traced service: per key, a request span producing one message to ``topic``; its spans."""
    otel = make_otel()
    try:
        tracer = otel.tracer_provider.get_tracer("app")
        p = producer(bootstrap)
        for key in keys:
            with tracer.start_as_current_span("request", attributes={"key": key}):
                p.produce(topic, value=key.encode(), key=key.encode(), partition=0)
        assert p.flush(30) == 0
    finally:
        otel.instrumentor.uninstrument()
    return list(otel.spans())


def last_service(bootstrap: str, topic: str, n: int) -> list[Any]:
    """A traced service consuming n messages from every partition of ``topic``; its spans."""
    otel = make_otel()
    try:
        c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "last",
                                      "log_level": 0, "enable.auto.commit": False})  # fmt: skip
        partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([confluent_kafka.TopicPartition(topic, i, confluent_kafka.OFFSET_BEGINNING)
                  for i in partitions])  # fmt: skip
        poll_messages(c, n)
        c.close()
    finally:
        otel.instrumentor.uninstrument()
    return list(otel.spans())


def carried_whole(first: list[Any], last: list[Any], a: str, b: str, keys: list[str]) -> None:
    """Each ``process b`` span of the last service is a child of the first service's ``send a``."""
    sends = by_key(first, f"send {a}")
    processes = by_key(last, f"process {b}")
    assert sorted(processes) == sorted(keys)
    for key in keys:
        send, process = sends[key], processes[key]
        assert process.context.trace_id == send.context.trace_id, key
        assert process.parent is not None and process.parent.span_id == send.context.span_id, key
        assert process.parent.trace_flags.sampled, key
