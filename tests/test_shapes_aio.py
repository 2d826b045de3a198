"""Service shapes with confluent_kafka.aio: AIOProducer's messages carry their trace, on both brokers.

request -> send A (AIOProducer) -> process A -> send B -> process B, for each message:

* aio: an AIOConsumer handles A and produces B with an AIOProducer; an
  AIOConsumer drains B;
* sync: a Consumer handles A and produces B with a Producer; a Consumer drains B.

Each shape asserts N/N journeys in one trace, the parent of every span, and no
span twice. The rest pins what routing messages through the per-message path
(clients/aio.py) must keep of AIOProducer's behaviour: order within a
partition, flush() and close() waiting for every message, a failed delivery
on the future as a KafkaException, reports served without a flush, the
app's headers refused, unsampled messages carrying their context, and the
fallback when AIOProducer's internals are not the expected ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import logging
import time
from typing import Any

import confluent_kafka
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from conftest import GROUP_SETTINGS, assigned_consumer, poll_messages, producer, unique
from shapes import by_key, journeys, no_doubles

try:
    aio = importlib.import_module("confluent_kafka.aio")
except ImportError:  # 2.12 has the same classes as an experimental API; before it, none
    aio = pytest.importorskip(
        "confluent_kafka.experimental.aio", reason="confluent_kafka.aio needs a newer client"
    )

N = 12
WORK_S = 0.02
TIMEOUT_S = 60
LINGER_MS = 1000


def producer_conf(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 0}


def consumer_conf(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap, "group.id": unique("g"), "log_level": 0,
        "enable.auto.commit": False, **GROUP_SETTINGS,
    }  # fmt: skip


def run(coro: Any) -> Any:
    """Run a test's service, failing (not hanging) when a future never resolves."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT_S)

    return asyncio.run(bounded())


async def seed(p: Any, tracer: Any, topic: str, keys: list[str]) -> list[Any]:
    """One message per key to partition 0 of ``topic``, each inside a request span of its own."""
    futures = []
    for key in keys:
        with tracer.start_as_current_span("request", attributes={"key": key}):
            futures.append(await p.produce(topic, value=key.encode(), key=key.encode(), partition=0))
    return list(await asyncio.gather(*futures))


async def aio_poll(c: Any, n: int, handle: Any = None) -> list[Any]:
    """Await n messages (not errors) from an AIOConsumer, handing each to ``handle``."""
    out: list[Any] = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        msg = await c.poll(0.5)
        if msg is None or msg.error() is not None:
            continue
        out.append(msg)
        if handle is not None:
            await handle(msg)
    assert len(out) == n, f"got {len(out)} of {n} messages"
    return out


async def aio_assigned(bootstrap: str, topic: str) -> Any:
    c = aio.AIOConsumer(consumer_conf(bootstrap))
    tp = confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)
    await c.assign([tp])
    return c


class with_producer:
    """``async with`` an AIOProducer on every version (``__aenter__`` came in 2.14)."""

    def __init__(self, bootstrap: str, **kwargs: Any) -> None:
        self.producer = aio.AIOProducer(producer_conf(bootstrap), **kwargs)

    async def __aenter__(self) -> Any:
        return self.producer

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.close()


def names(a: str, b: str) -> list[str]:
    return [f"send {a}", f"process {a}", f"send {b}", f"process {b}"]


def test_aio_producer_to_aio_consumer(bootstrap: str, otel: Any) -> None:
    """AIOProducer -> AIOConsumer, whose handler produces with an AIOProducer -> AIOConsumer."""
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]
    tracer = otel.tracer_provider.get_tracer("app")
    arrived: dict[str, int] = {}
    created: dict[str, int] = {}
    forwarded: dict[str, Any] = {}

    async def service() -> None:
        async with with_producer(bootstrap) as p:
            await seed(p, tracer, a, keys)
        c = await aio_assigned(bootstrap, a)
        # B's reports come a lingering second after each produce().
        out = aio.AIOProducer({**producer_conf(bootstrap), "linger.ms": LINGER_MS})

        async def transform(msg: Any) -> None:
            arrived[msg.key().decode()] = time.time_ns()
            created[msg.key().decode()] = msg.timestamp()[1]
            await asyncio.sleep(WORK_S)  # the handling, in this task
            await out.produce(b, value=msg.value().upper(), key=msg.key(), partition=0)
            await asyncio.sleep(WORK_S)  # more of it: the producer's pump runs meanwhile

        await aio_poll(c, N, transform)
        await c.close()
        await out.close()
        d = await aio_assigned(bootstrap, b)
        for m in await aio_poll(d, N):
            forwarded[m.key().decode()] = dict(m.headers() or [])
        await d.close()

    run(service())
    spans = otel.spans()
    no_doubles(spans, names(a, b), N)
    journeys(spans, a, b, keys)
    # The second hop carries the first message's creation time on.
    assert {k: h.get("kafkaplus-origin-ms") for k, h in forwarded.items()} == {
        k: str(ts).encode() for k, ts in created.items()
    }
    # The pump serving B's reports is no hand-off of the message being handled:
    # each process span ends at the consumer's next poll, before the next
    # message arrives, not when the pump's poll returns.
    processes = by_key(spans, f"process {a}")
    for key, following in itertools.pairwise(keys):
        assert processes[key].end_time <= arrived[following], key


def test_aio_producer_to_sync_consumer(bootstrap: str, otel: Any) -> None:
    """AIOProducer -> Consumer, whose handler produces with a Producer -> Consumer."""
    a, b = unique("a"), unique("b")
    keys = [f"k{i}" for i in range(N)]
    tracer = otel.tracer_provider.get_tracer("app")

    async def upstream() -> None:
        async with with_producer(bootstrap) as p:
            await seed(p, tracer, a, keys)

    run(upstream())
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    poll_messages(c, N, submit=lambda m: p.produce(b, m.value().upper(), m.key(), partition=0))
    c.close()
    assert p.flush(30) == 0
    d = assigned_consumer(bootstrap, b)
    poll_messages(d, N)
    d.close()
    spans = otel.spans()
    no_doubles(spans, names(a, b), N)
    journeys(spans, a, b, keys)


def test_order_within_a_partition_kept_between_buffered_and_routed(bootstrap: str,
                                                                   otel: Any) -> None:  # fmt: skip
    """Messages produced untraced wait in AIOProducer's buffer; a routed one goes after them."""
    topic = unique()
    plan = ["buffered", "buffered", "routed", "buffered", "routed", "routed", "buffered", "routed"]

    async def main() -> list[Any]:
        async with with_producer(bootstrap, buffer_timeout=60) as p:
            futures = []
            for i, how in enumerate(plan):
                if how == "buffered":
                    with suppress_instrumentation():
                        futures.append(await p.produce(topic, value=str(i).encode(), partition=0))
                else:
                    futures.append(await p.produce(topic, value=str(i).encode(), partition=0))
            return list(await asyncio.gather(*futures))

    delivered = run(main())
    offsets = [m.offset() for m in delivered]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(plan)
    c = assigned_consumer(bootstrap, topic)
    consumed = poll_messages(c, len(plan))
    c.close()
    assert [m.value() for m in consumed] == [str(i).encode() for i in range(len(plan))]
    for m, how in zip(consumed, plan, strict=True):
        carried = any(k == "traceparent" for k, _ in m.headers() or [])
        assert carried == (how == "routed"), (m.value(), how)
    assert len(otel.spans(f"send {topic}")) == plan.count("routed")


def test_flush_and_close_wait_for_routed_messages(bootstrap: str, otel: Any) -> None:
    topic = unique()

    async def main() -> tuple[list[Any], list[Any], Any]:
        p = aio.AIOProducer(producer_conf(bootstrap), buffer_timeout=60)
        first = [await p.produce(topic, value=b"f%d" % i, partition=0) for i in range(20)]
        await p.flush()
        assert all(f.done() for f in first)
        pending = len(p) if hasattr(type(p), "__len__") else 0  # __len__ came in 2.13
        then = [await p.produce(topic, value=b"c%d" % i, partition=0) for i in range(20)]
        await p.close()
        assert all(f.done() for f in then)
        return [f.result() for f in first], [f.result() for f in then], pending

    first, then, pending = run(main())
    assert pending == 0
    assert [m.offset() for m in first + then] == list(range(40))
    sends = otel.spans(f"send {topic}")
    assert len(sends) == 40
    assert sorted(s.attributes["messaging.kafka.offset"] for s in sends) == list(range(40))


def test_reports_served_without_a_flush(bootstrap: str, otel: Any) -> None:
    """``await (await produce())`` one at a time: AIOProducer would poll only after buffer_timeout."""
    topic = unique()

    async def main() -> tuple[list[int], float]:
        async with with_producer(bootstrap, buffer_timeout=60) as p:
            await (await p.produce(topic, value=b"warm-up", partition=0))
            start = time.monotonic()
            offsets = [(await (await p.produce(topic, value=b"v", partition=0))).offset()
                       for _ in range(5)]  # fmt: skip
            return offsets, time.monotonic() - start

    offsets, elapsed = run(main())
    assert offsets == [1, 2, 3, 4, 5]
    assert elapsed < 5, elapsed  # milliseconds each; without the pump, 60 s each


def test_failed_delivery_gives_the_future_a_kafka_exception(bootstrap: str, otel: Any) -> None:
    """An unknown partition: the future's KafkaException, as on AIOProducer's own path."""
    known, fresh = unique("known"), unique("fresh")

    async def main() -> list[tuple[Any, Any]]:
        async with with_producer(bootstrap, buffer_timeout=0.05) as p:
            await (await p.produce(known, value=b"v", partition=0))  # its metadata is known now
            outcomes = []
            for topic in (known, fresh):
                routed = await p.produce(topic, value=b"routed", partition=99)
                with suppress_instrumentation():
                    batched = await p.produce(topic, value=b"batched", partition=99)
                got = await asyncio.gather(routed, batched, return_exceptions=True)
                outcomes.append((got[0], got[1]))
            return outcomes

    for routed, batched in run(main()):
        assert type(routed) is confluent_kafka.KafkaException, routed
        assert type(batched) is confluent_kafka.KafkaException, batched
        assert routed.args[0].code() == batched.args[0].code()
        assert routed.args[0].code() == confluent_kafka.KafkaError._UNKNOWN_PARTITION
    for topic in (known, fresh):
        failed = [s for s in otel.spans(f"send {topic}") if s.status.status_code is StatusCode.ERROR]
        assert len(failed) == 1 and failed[0].attributes["error.type"] == "_UNKNOWN_PARTITION"


def test_async_serializing_producer(bootstrap: str, otel: Any) -> None:
    """AsyncSerializingProducer (2.16) ends in AIOProducer.produce(): its messages carry context."""
    cls = getattr(aio, "AsyncSerializingProducer", None)
    if cls is None:
        pytest.skip("this confluent-kafka has no AsyncSerializingProducer")
    from confluent_kafka.serialization import StringSerializer

    topic = unique()
    keys = [f"k{i}" for i in range(N)]
    tracer = otel.tracer_provider.get_tracer("app")

    async def main() -> None:
        p = await cls({**producer_conf(bootstrap), "key.serializer": StringSerializer(),
                       "value.serializer": StringSerializer()})  # fmt: skip
        futures = []
        for key in keys:
            with tracer.start_as_current_span("request", attributes={"key": key}):
                futures.append(await p.produce(topic, key=key, value=key.upper(), partition=0))
        with pytest.raises(NotImplementedError):  # as without kafkaplus
            await p.produce(topic, key="h", value="h", headers=[("h", b"v")])
        await asyncio.gather(*futures)
        await p.close()

    run(main())
    c = assigned_consumer(bootstrap, topic)
    poll_messages(c, N)
    c.close()
    spans = otel.spans()
    requests = {s.attributes["key"]: s for s in spans if s.name == "request"}
    sends = {s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"send {topic}")}
    refused = sends.pop("h")  # a produce() that raises records its failure, as Producer's does
    assert refused.attributes["error.type"] == "NotImplementedError"
    processes = otel.spans(f"process {topic}")
    assert len(sends) == len(processes) == N
    for s in processes:
        key = s.attributes["messaging.kafka.message.key"]
        assert s.parent.span_id == sends[key].context.span_id
        assert sends[key].parent.span_id == requests[key].context.span_id
        assert s.context.trace_id == requests[key].context.trace_id


def test_app_headers_and_timestamps_refused_as_without_kafkaplus(mock_cluster: str,
                                                                 otel: Any) -> None:  # fmt: skip
    """headers= raises and timestamp= fails the future, traced or not: AIOProducer's own answers."""
    topic = unique()

    async def main() -> list[Any]:
        p = aio.AIOProducer(producer_conf(mock_cluster), buffer_timeout=0)
        outcomes = []
        for traced in (True, False):
            with suppress_instrumentation() if not traced else contextlib.nullcontext():
                with pytest.raises(NotImplementedError):
                    await p.produce(topic, value=b"v", headers=[("h", b"v")])
                future = await p.produce(topic, value=b"v", timestamp=1)
                with pytest.raises(NotImplementedError):
                    await p.flush()
                outcomes.append(future.exception())
                await p.purge()  # AIOProducer puts a failed batch back in its buffer
        await p.close()
        return outcomes

    outcomes = run(main())
    assert [type(e) for e in outcomes] == [NotImplementedError, NotImplementedError]


def test_unsampled_messages_carry_their_context(mock_cluster: str, otel_factory: Any) -> None:
    """Not sampled here, perhaps sampled downstream: the traceparent travels all the same."""
    otel = otel_factory(sampler=ALWAYS_OFF)
    tracer = otel.tracer_provider.get_tracer("app")
    topic = unique()

    async def main() -> list[Any]:
        async with with_producer(mock_cluster) as p:
            contexts = []
            futures = []
            for i in range(3):
                with tracer.start_as_current_span("request") as request:
                    contexts.append(request.get_span_context())
                    futures.append(await p.produce(topic, value=b"%d" % i, partition=0))
            await asyncio.gather(*futures)
            return contexts

    contexts = run(main())
    c = assigned_consumer(mock_cluster, topic)
    consumed = poll_messages(c, 3)
    c.close()
    for ctx, msg in zip(contexts, consumed, strict=True):
        headers = dict(msg.headers() or [])
        version, trace_id, _, flags = headers["traceparent"].decode().split("-")
        assert (version, int(trace_id, 16), int(flags, 16)) == ("00", ctx.trace_id, ctx.trace_flags)
        assert not ctx.trace_flags.sampled
    assert otel.spans() == []


def test_without_the_expected_internals_spans_go_without_context(
    mock_cluster: str, otel: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An AIOProducer lacking ``_flush_buffer`` is not routed: spans as before, warned once."""
    monkeypatch.setattr(aio.AIOProducer, "_flush_buffer", None, raising=True)
    topic = unique()

    async def main() -> list[Any]:
        p = aio.AIOProducer(producer_conf(mock_cluster), buffer_timeout=0.05)
        futures = [await p.produce(topic, value=b"v", partition=0) for _ in range(2)]
        while not all(f.done() for f in futures):  # its timeout task hands them over
            await p.poll(0.1)
        await p.close()
        return [f.result() for f in futures]

    with caplog.at_level(logging.WARNING):
        delivered = run(main())
    assert "trace context cannot reach consumers" in caplog.text
    assert len(otel.spans(f"send {topic}")) == 2
    c = assigned_consumer(mock_cluster, topic)
    consumed = poll_messages(c, len(delivered))
    c.close()
    assert all(not m.headers() for m in consumed)


@pytest.mark.parametrize("shape", ["sync", "aio"])
def test_aio_consumer_records_what_the_sync_consumer_records(mock_cluster: str,
                                                             otel_factory: Any, shape: str) -> None:  # fmt: skip
    """receive spans, the cluster id and offset resets: the same for Consumer and AIOConsumer."""
    otel = otel_factory(receive_spans=True)
    topic, group = unique("rx"), unique("g")
    p = producer(mock_cluster)
    for i in range(2):
        p.produce(topic, b"v", key=f"k{i}", partition=0)
    assert p.flush(10) == 0
    cluster = p.cluster_id(10) if hasattr(p, "cluster_id") else None
    conf = {**consumer_conf(mock_cluster), "group.id": group, "auto.offset.reset": "error"}
    beyond = confluent_kafka.TopicPartition(topic, 0, 100)  # out of range: a reset event
    start = confluent_kafka.TopicPartition(topic, 0, 0)

    def reset_seen(msgs: list[Any]) -> bool:
        return any(m.error() is not None and m.error().code() == confluent_kafka.KafkaError._AUTO_OFFSET_RESET for m in msgs)  # fmt: skip

    if shape == "sync":
        c = confluent_kafka.Consumer(conf)
        c.assign([beyond])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not reset_seen([m for m in [c.poll(0.2)] if m]):
            pass
        c.assign([start])
        msgs = poll_messages(c, 2)
        c.close()
    else:

        async def service() -> list[Any]:
            c = aio.AIOConsumer(conf)
            await c.assign([beyond])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not reset_seen([m for m in [await c.poll(0.2)] if m]):  # fmt: skip
                pass
            await c.assign([start])
            got = await aio_poll(c, 2)
            await c.close()
            return got

        msgs = run(service())
    assert [m.offset() for m in msgs] == [0, 1]

    sends = {s.attributes["messaging.kafka.offset"]: s for s in otel.spans(f"send {topic}")}
    polls = otel.spans(f"poll {topic}")
    assert len(polls) == 2
    for span in polls:
        offset = span.attributes["messaging.kafka.offset"]
        assert span.attributes["messaging.operation.type"] == "receive"
        assert [link.context.span_id for link in span.links] == [sends[offset].context.span_id]
    processes = otel.spans(f"process {topic}")
    assert len(processes) == 2
    if cluster is not None:
        assert {s.attributes.get("messaging.kafka.cluster.id") for s in processes} == {cluster}
    resets = [x for x in otel.metric_points("kafkaplus.consumer.offset.resets")
              if x.attributes.get("messaging.consumer.group.name") == group]  # fmt: skip
    assert [(x.value, x.attributes["messaging.operation.name"]) for x in resets] == [(1, "poll")]


def test_aio_producer_spans_carry_the_cluster_id_once_known(mock_cluster: str, otel: Any) -> None:
    topic = unique("cid")
    probe = producer(mock_cluster)
    if not hasattr(probe, "cluster_id"):
        pytest.skip("this confluent-kafka cannot tell the cluster id")
    cluster = probe.cluster_id(10)

    async def service() -> None:
        async with with_producer(mock_cluster) as p:
            await (await p.produce(topic, value=b"first", partition=0))
            await asyncio.sleep(1.1)  # the cluster id is looked for at most once a second
            await (await p.produce(topic, value=b"second", partition=0))

    run(service())
    spans = sorted(otel.spans(f"send {topic}"), key=lambda s: s.attributes["messaging.kafka.offset"])
    assert len(spans) == 2
    assert spans[1].attributes.get("messaging.kafka.cluster.id") == cluster


@pytest.mark.parametrize("path", ["routed", "batched"])
def test_every_argument_form_gives_the_same_span(mock_cluster: str, otel: Any,
                                                 monkeypatch: pytest.MonkeyPatch, path: str) -> None:  # fmt: skip
    """Positional, keyword and mixed arguments (and ignored extra positionals) bind alike.

    AIOProducer.produce(topic, value=None, key=None, *args, **kwargs): both of
    kafkaplus's paths read the message from the same binding.
    """
    if path == "batched":
        monkeypatch.setattr(aio.AIOProducer, "_flush_buffer", None, raising=True)
    topic = unique()
    forms: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((topic, b"v0", b"k0"), {"partition": 0}),
        ((), {"topic": topic, "value": b"v1", "key": b"k1", "partition": 0}),
        ((topic,), {"key": b"k2", "value": b"v2", "partition": 0}),
        ((topic, b"v3", b"k3", "ignored"), {"partition": 0}),
    ]

    async def main() -> list[Any]:
        p = aio.AIOProducer(producer_conf(mock_cluster), buffer_timeout=0.05)
        futures = [await p.produce(*args, **kwargs) for args, kwargs in forms]
        while not all(f.done() for f in futures):
            await p.poll(0.1)
        await p.close()
        return [f.result() for f in futures]

    delivered = run(main())
    assert [m.key() for m in delivered] == [b"k0", b"k1", b"k2", b"k3"]
    spans = otel.spans(f"send {topic}")
    assert sorted(s.attributes["messaging.kafka.message.key"] for s in spans) == [
        "k0", "k1", "k2", "k3",
    ]  # fmt: skip
    for span in spans:
        assert span.attributes["messaging.destination.name"] == topic
        assert span.attributes["messaging.destination.partition.id"] == "0"
        assert span.status.status_code is StatusCode.UNSET
