"""Service shapes with threads and asyncio executors: every journey one trace, on both brokers.

request -> send A -> process A -> (worker) send B -> process B, for each message.
Each test asserts N/N journeys in one trace, the parent of every span, no span
twice, and that ``process A`` covers the worker's handling of the message.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ParentBased

from conftest import PatternSampler, assigned_consumer, consumer, poll_messages, producer, unique
from opentelemetry_instrumentation_kafkaplus import processing
from opentelemetry_instrumentation_kafkaplus.operations import process
from shapes import journeys, no_doubles, queue_workers

N = 12
WORK_S = 0.02


def seed(bootstrap: str, otel: Any, topic: str, n: int = N) -> list[str]:
    """n messages to ``topic``, each produced inside a request span of its own."""
    tracer = otel.tracer_provider.get_tracer("app")
    p = producer(bootstrap)
    keys = [f"k{i}" for i in range(n)]
    for key in keys:
        with tracer.start_as_current_span("request", attributes={"key": key}):
            p.produce(topic, value=key.encode(), key=key.encode(), partition=0)
    assert p.flush(30) == 0
    return keys


def drain(bootstrap: str, topic: str, n: int = N) -> None:
    """The downstream service: poll n messages in one thread, close."""
    c = assigned_consumer(bootstrap, topic)
    poll_messages(c, n)
    c.close()


def check(otel: Any, a: str, b: str, keys: list[str], handled: dict[str, tuple[int, int]],
          covered: list[str] | None = None) -> None:  # fmt: skip
    """Journeys, no doubles, and ``process A`` covering the handling of ``covered`` (all)."""
    spans = otel.spans()
    no_doubles(spans, [f"send {a}", f"process {a}", f"send {b}", f"process {b}"], len(keys))
    for j in journeys(spans, a, b, keys):
        if covered is not None and j.key not in covered:
            continue
        start, end = handled[j.key]
        assert j.process_a.start_time <= start and j.process_a.end_time >= end, j.key
        assert (j.process_a.end_time - j.process_a.start_time) / 1e9 >= WORK_S


def _transform(p: Any, b: str, msg: Any, handled: dict[str, tuple[int, int]],
               forward: bool) -> None:  # fmt: skip
    start = time.time_ns()
    time.sleep(WORK_S)
    p.produce(b, value=msg.value().upper(), key=msg.key(), partition=0,
              headers=msg.headers() if forward else None)  # fmt: skip
    handled[msg.key().decode()] = (start, time.time_ns())


@pytest.fixture(params=[False, True], ids=["threads", "threading-instrumentation"])
def threading_instrumentation(request: Any) -> Any:
    """With and without opentelemetry-instrumentation-threading (opentelemetry-bootstrap's pick),
    which also carries the submitter's context into ThreadPoolExecutor tasks."""
    if not request.param:
        yield False
        return
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    instrumentor = ThreadingInstrumentor()
    instrumentor.instrument()
    try:
        yield True
    finally:
        instrumentor.uninstrument()


@pytest.mark.parametrize("forward", [False, True], ids=["plain", "forwarded-headers"])
def test_worker_pool_zero_code(bootstrap: str, otel: Any, forward: bool,
                               threading_instrumentation: bool) -> None:  # fmt: skip
    """One thread polls, a ThreadPoolExecutor of 4 transforms and produces."""
    a, b = unique("a"), unique("b")
    keys = seed(bootstrap, otel, a)
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    handled: dict[str, tuple[int, int]] = {}
    with ThreadPoolExecutor(4) as pool:
        poll_messages(c, N, submit=lambda m: pool.submit(_transform, p, b, m, handled, forward))
    c.close()
    assert p.flush(30) == 0
    drain(bootstrap, b)
    check(otel, a, b, keys, handled)


def _every_partition(bootstrap: str, topic: str) -> Any:
    """A consumer reading every partition of ``topic`` from the start (keys pick partitions)."""
    c = consumer(bootstrap)
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([confluent_kafka.TopicPartition(topic, n, confluent_kafka.OFFSET_BEGINNING)
              for n in partitions])  # fmt: skip
    return c


def test_worker_pool_plain_calls_at_low_sampling(bootstrap: str, otel_factory: Any) -> None:
    """produce(topic, value, key) with no headers or partition at both hops (the plain form,
    whose arguments kafkaplus never binds), a root sampler that samples some requests, and a
    ThreadPoolExecutor of 4 producing the second hop: every sampled journey is whole, and
    every message, sampled or not, stays in its request's trace."""
    pattern = "100101100010"
    otel = otel_factory(sampler=ParentBased(PatternSampler(pattern)))
    tracer = otel.tracer_provider.get_tracer("app")
    a, b = unique("a"), unique("b")
    p = producer(bootstrap)
    keys = [f"k{i}" for i in range(len(pattern))]
    sampled = [key for key, decision in zip(keys, pattern, strict=True) if decision == "1"]
    requests: dict[str, Any] = {}
    for key in keys:
        with tracer.start_as_current_span("request", attributes={"key": key}) as span:
            requests[key] = span.get_span_context()
            p.produce(a, key.encode(), key.encode())
    assert p.flush(30) == 0
    reports: list[tuple[Any, str, bool]] = []

    def report(err: Any, msg: Any) -> None:
        reports.append((err, msg.key().decode(), trace.get_current_span().is_recording()))

    def transform(msg: Any) -> None:
        p.produce(b, value=msg.value().upper(), key=msg.key(), on_delivery=report)

    c = _every_partition(bootstrap, a)
    with ThreadPoolExecutor(4) as pool:
        poll_messages(c, len(keys), submit=lambda m: pool.submit(transform, m))
    c.close()
    assert p.flush(30) == 0
    # Every callback ran once, inside its send span when that span records.
    assert sorted(reports) == [(None, key, key in sampled) for key in sorted(keys)]
    d = _every_partition(bootstrap, b)
    out = poll_messages(d, len(keys))
    d.close()
    spans = otel.spans()
    no_doubles(spans, [f"send {a}", f"process {a}", f"send {b}", f"process {b}"], len(sampled))
    journeys(spans, a, b, sampled)  # one trace each, every span a child of the one before
    for m in out:
        key = m.key().decode()
        _, trace_id, _, flags = dict(m.headers())["traceparent"].decode().split("-")
        assert int(trace_id, 16) == requests[key].trace_id, key
        assert bool(int(flags, 16) & 1) == (key in sampled), key


def test_queue_workers_with_processing(bootstrap: str, otel: Any) -> None:
    """One thread polls into a queue; long-lived workers claim each message.

    As in a running service, the first message is claimed before the rest
    arrive. (Messages a consumer polled before the app's first claim, and whose
    poll let go before it came, keep the poll-to-next-poll span: documented.)
    """
    a, b = unique("a"), unique("b")
    keys = seed(bootstrap, otel, a, 1)
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    handled: dict[str, tuple[int, int]] = {}
    blocks: dict[str, tuple[int, int]] = {}
    work: queue.Queue[Any] = queue.Queue()

    def worker() -> None:
        while (msg := work.get()) is not None:
            before = time.time_ns()
            with processing(msg):
                blocks[msg.key().decode()] = (before, time.time_ns())
                _transform(p, b, msg, handled, forward=False)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    polled: dict[str, int] = {}

    def hand_over(msg: Any) -> None:
        polled[msg.key().decode()] = time.time_ns()
        work.put(msg)

    poll_messages(c, 1, submit=hand_over)
    deadline = time.monotonic() + 10
    while not blocks and time.monotonic() < deadline:
        time.sleep(0.01)
    tracer = otel.tracer_provider.get_tracer("app")
    seeder = producer(bootstrap)
    for i in range(1, N):
        keys.append(key := f"k{i}")
        with tracer.start_as_current_span("request", attributes={"key": key}):
            seeder.produce(a, value=key.encode(), key=key.encode(), partition=0)
    assert seeder.flush(30) == 0
    poll_messages(c, N - 1, submit=hand_over)
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    c.close()
    assert p.flush(30) == 0
    drain(bootstrap, b)
    # Each message's process span is its block exactly: claimed before the
    # consumer's next poll (the first), or waiting for its claim once the app
    # claims this consumer's messages (the rest, polled after the first claim).
    check(otel, a, b, keys, handled)
    spans = {s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"process {a}")}
    first_claim = min(inside for _, inside in blocks.values())
    assert all(polled[k] > first_claim for k in keys[1:])
    for key in keys:
        before, inside = blocks[key]
        assert before <= spans[key].start_time <= inside, key


def test_queue_workers_forwarding_headers_zero_code(bootstrap: str, otel: Any) -> None:
    """Nothing carries the context to queue workers; the headers they forward do: each
    send continues under the consumed message's process span."""
    a, b = unique("a"), unique("b")
    keys = seed(bootstrap, otel, a)
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    handled: dict[str, tuple[int, int]] = {}
    contexts: list[bool] = []

    def handle(msg: Any) -> None:
        contexts.append(trace.get_current_span().get_span_context().is_valid)
        _transform(p, b, msg, handled, forward=True)

    queue_workers(c, N, handle, threads=3)
    assert contexts == [False] * N  # nothing carried the context to the workers
    c.close()
    assert p.flush(30) == 0
    drain(bootstrap, b)
    spans = otel.spans()
    no_doubles(spans, [f"send {a}", f"process {a}", f"send {b}", f"process {b}"], N)
    journeys(spans, a, b, keys)  # one trace each, send B a child of process A


@pytest.mark.parametrize("how", ["to_thread", "run_in_executor"])
def test_asyncio_polls_in_an_executor(bootstrap: str, otel: Any, how: str) -> None:
    """An asyncio task polls through a thread and handles the message itself."""
    a, b = unique("a"), unique("b")
    keys = seed(bootstrap, otel, a)
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    handled: dict[str, tuple[int, int]] = {}

    async def service() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        got = 0
        deadline = time.monotonic() + 30
        while got < N and time.monotonic() < deadline:
            if how == "to_thread":
                msg = await asyncio.to_thread(c.poll, 0.5)
            else:
                msg = await loop.run_in_executor(None, c.poll, 0.5)
            if msg is None or msg.error() is not None:
                continue
            start = time.time_ns()
            await asyncio.sleep(WORK_S)  # the handling, in this task
            p.produce(b, value=msg.value().upper(), key=msg.key(), partition=0)
            handled[msg.key().decode()] = (start, time.time_ns())
            got += 1

        # Nothing of the last message leaks into unrelated executor jobs.
        def current_valid() -> bool:
            return trace.get_current_span().get_span_context().is_valid

        await loop.run_in_executor(None, c.close)  # the consumer's last call ends the last span
        return (await asyncio.to_thread(current_valid),
                await loop.run_in_executor(None, current_valid))  # fmt: skip

    leaked = asyncio.run(service())
    assert leaked == (False, False)
    assert p.flush(30) == 0
    drain(bootstrap, b)
    check(otel, a, b, keys, handled)


@pytest.mark.parametrize("how", ["claimed", "discarded"])
def test_consume_batch_claimed_with_processing(bootstrap: str, otel: Any, how: str) -> None:
    """``processing(batch)`` with the list consume() returned: the batch's span is the block.

    Its context is current there, so what the block sends belongs to it (a
    batch links to its producers, never a parent). ``discard(batch)`` first:
    no process span of ours, claimed or not (a framework's telemetry makes it).
    """
    a, b = unique("a"), unique("b")
    keys = seed(bootstrap, otel, a)
    c = assigned_consumer(bootstrap, a)
    p = producer(bootstrap)
    batches: list[tuple[list[Any], int, int]] = []
    got = 0
    deadline = time.monotonic() + 30
    while got < N and time.monotonic() < deadline:
        msgs = [m for m in c.consume(N, 0.5) if m.error() is None]
        if not msgs:
            continue
        got += len(msgs)
        if how == "discarded":
            process.discard(tuple(msgs))
        with processing(msgs):
            start = time.time_ns()
            time.sleep(WORK_S)
            for m in msgs:
                p.produce(b, value=m.value(), key=m.key(), partition=0)
            batches.append((msgs, start, time.time_ns()))
    c.close()
    assert got == N
    assert p.flush(30) == 0
    sends = {s.attributes["messaging.kafka.message.key"]: s for s in otel.spans(f"send {a}")}
    assert sorted(sends) == sorted(keys)
    assert len(otel.spans(f"poll {a}")) == len(batches)
    if how == "discarded":
        assert otel.spans(f"process {a}") == []
        return
    processed = otel.spans(f"process {a}")
    assert len(processed) == len(batches)
    by_trace = {s.context.trace_id: s for s in processed}
    out = otel.spans(f"send {b}")
    assert len(out) == N
    for span in out:  # each send of the block is a child of its batch's process span
        parent = by_trace[span.context.trace_id]
        assert span.parent.span_id == parent.context.span_id
    for (msgs, start, end), span in zip(batches, sorted(processed, key=lambda s: s.start_time),
                                        strict=True):  # fmt: skip
        assert span.start_time <= start and span.end_time >= end
        linked = {link.context.span_id for link in span.links}
        assert {sends[m.key().decode()].context.span_id for m in msgs} <= linked


def test_claimed_records_leave_the_waiting_queue(bootstrap: str, otel: Any) -> None:
    """Records claimed after their poll let go do not pile up among those still waiting.

    (A framework that handles each message in a task of its own polls on
    before the task claims it: without this, every such record, its ended
    span with it, stayed queued until MAX_WAITING others came.)
    """
    a = unique("a")
    seed(bootstrap, otel, a, N + 1)
    c = assigned_consumer(bootstrap, a)
    [first] = poll_messages(c, 1)
    with processing(first):  # the app claims this consumer's messages
        pass
    later = poll_messages(c, N - 1)  # each poll lets the previous one wait for its claim
    for msg in later:
        with processing(msg):
            pass
    [last] = poll_messages(c, 1)
    c.poll(0.1)  # ``last`` lets go unclaimed: it waits, alone
    assert [record.msg for record in c._kafkaplus.waiting] == [last]
    c.close()
    assert len(otel.spans(f"process {a}")) == N + 1
