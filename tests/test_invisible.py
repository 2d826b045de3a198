"""Invisible to the app: what confluent-kafka does without kafkaplus, it does with it.

Each test here failed before the fix it guards: found by running
confluent-kafka-python's own unit tests under instrumentation (tests/compat).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from typing import Any
from unittest import mock

import confluent_kafka
import pytest
from confluent_kafka import cimpl

from conftest import GROUP_SETTINGS, ORIGINALS, assigned_consumer, poll_messages, producer, unique

LOGGER = "opentelemetry_instrumentation_kafkaplus"


def kafkaplus_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith(LOGGER) and r.levelno >= logging.WARNING]  # fmt: skip


def _raised(make: Any) -> tuple[type, str]:
    try:
        make()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("did not raise")


def _outcome(make: Any) -> tuple[str, Any]:
    try:
        return "returned", make()
    except Exception as exc:
        return "raised", (type(exc), str(exc))


@pytest.mark.parametrize("name", ["Producer", "Consumer"])
def test_a_client_without_configuration_raises_as_without_kafkaplus(otel: Any, name: str) -> None:
    original = ORIGINALS[name]
    traced = getattr(confluent_kafka, name)
    assert traced is not original
    assert _raised(traced) == _raised(original) == (TypeError, "expected configuration dict")


def test_a_share_consumer_without_configuration_raises_as_without_kafkaplus(otel: Any) -> None:
    original = getattr(cimpl, "ShareConsumer", None)
    if original is None:
        pytest.skip("this confluent-kafka has no ShareConsumer")
    traced = confluent_kafka.ShareConsumer
    assert traced is not original
    assert _raised(traced) == _raised(original)


def _uninitialised_client_crashes() -> bool:
    """Older confluent-kafka releases crash (SIGSEGV) on a client whose __init__ never ran."""
    probe = ("from confluent_kafka import cimpl\n"
             "class P(cimpl.Producer):\n    def __init__(self): pass\n"
             "try:\n    P().produce('t', b'v')\nexcept Exception:\n    pass\n")  # fmt: skip
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


@pytest.mark.parametrize("name", ["Producer", "Consumer"])
def test_a_subclass_that_skips_init_gets_the_clients_own_error(otel: Any, name: str) -> None:
    if _uninitialised_client_crashes():
        pytest.skip("this confluent-kafka crashes on an uninitialised client by itself")

    class Lazy(getattr(confluent_kafka, name)):  # type: ignore[misc]
        def __init__(self) -> None:  # never calls the client's __init__
            pass

    class LazyOriginal(ORIGINALS[name]):  # type: ignore[misc]
        def __init__(self) -> None:
            pass

    calls = {
        "Producer": [lambda c: c.produce("t", b"v"), lambda c: c.produce_batch("t", []),
                     lambda c: c.init_transactions(0)],
        "Consumer": [lambda c: c.poll(0), lambda c: c.consume(1, 0), lambda c: c.commit(),
                     lambda c: c.store_offsets(offsets=[]), lambda c: c.subscribe(["t"]),
                     lambda c: c.close()],
    }[name]  # fmt: skip
    outcomes = []
    for call in calls:
        expected = _outcome(lambda: call(LazyOriginal()))
        outcomes.append(expected)
        assert _outcome(lambda: call(Lazy())) == expected
    # The client's own error for an uninitialised client, not an AttributeError of ours.
    assert ("raised", RuntimeError) in [(kind, v[0]) for kind, v in outcomes if kind == "raised"]
    assert all(kind != "raised" or v[0] is not AttributeError for kind, v in outcomes)


def test_type_checks_answer_as_without_kafkaplus(mock_cluster: str, otel: Any) -> None:
    conf = {"bootstrap.servers": mock_cluster, "log_level": 0}
    serializing = confluent_kafka.SerializingProducer(conf)
    deserializing = confluent_kafka.DeserializingConsumer({**conf, "group.id": unique("g")})
    assert isinstance(serializing, confluent_kafka.Producer)
    assert isinstance(deserializing, confluent_kafka.Consumer)
    assert issubclass(confluent_kafka.SerializingProducer, confluent_kafka.Producer)
    assert issubclass(confluent_kafka.DeserializingConsumer, confluent_kafka.Consumer)
    plain = ORIGINALS["Producer"](conf)
    traced = confluent_kafka.Producer(conf)
    assert isinstance(plain, confluent_kafka.Producer)  # made before instrument(), say
    assert isinstance(traced, ORIGINALS["Producer"])
    assert type(traced) is confluent_kafka.Producer
    assert not isinstance(traced, confluent_kafka.Consumer)

    class Mine(confluent_kafka.Producer):  # a subclass of the traced class keeps plain checks
        pass

    assert not isinstance(plain, Mine)
    assert isinstance(Mine(conf), confluent_kafka.Producer)
    share = getattr(confluent_kafka, "ShareConsumer", None)
    deserializing_share = getattr(confluent_kafka, "DeserializingShareConsumer", None)
    if share is not None and deserializing_share is not None:
        assert issubclass(deserializing_share, share)
    deserializing.close()


def test_documentation_is_the_clients_own(otel: Any) -> None:
    for name, methods in {
        "Producer": ["produce", "produce_batch", "init_transactions", "commit_transaction"],
        "Consumer": ["poll", "consume", "commit", "subscribe", "store_offsets", "close", "assign"],
    }.items():
        traced, original = getattr(confluent_kafka, name), ORIGINALS[name]
        assert traced.__doc__ == original.__doc__ and original.__doc__
        for method in methods:
            if not hasattr(original, method):  # not in this confluent-kafka version
                assert not hasattr(traced, method), f"{name}.{method}"
                continue
            doc = getattr(original, method).__doc__
            assert doc and getattr(traced, method).__doc__ == doc, f"{name}.{method}"


def test_an_aio_consumer_around_a_double_is_left_alone(otel: Any) -> None:
    """Apps mock the inner client in their tests: nothing of ours may loop on it."""
    aio = pytest.importorskip("confluent_kafka.aio")
    double = mock.MagicMock()
    double.poll.return_value = None
    double.consume.return_value = []

    async def run() -> Any:
        with mock.patch.object(confluent_kafka, "Consumer", return_value=double):
            consumer = aio.AIOConsumer({"group.id": "g"})
        got = await asyncio.wait_for(consumer.poll(0.1), 5)
        batch = await asyncio.wait_for(consumer.consume(2, 0.1), 5)
        await asyncio.wait_for(consumer.close(), 5)
        return got, batch

    assert asyncio.run(run()) == (None, [])
    assert double.poll.called and double.consume.called


def test_store_offsets_of_a_message_without_offset_is_not_our_failure(
    mock_cluster: str, otel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        msg = confluent_kafka.Message(topic="t", partition=0)  # offset() is None
    except TypeError:
        pytest.skip("this confluent-kafka cannot build Message objects")
    c = confluent_kafka.Consumer({"bootstrap.servers": mock_cluster, "group.id": unique("g"),
                                  "enable.auto.offset.store": False, "log_level": 0})  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        expected = _raised(lambda: ORIGINALS["Consumer"].store_offsets(c, msg))
        assert _raised(lambda: c.store_offsets(msg)) == expected
    c.close()
    assert kafkaplus_warnings(caplog) == []
    (span,) = otel.spans("store_offsets")
    assert span.status.is_ok is False  # the app's error is on the span, not a failure of ours


def test_produce_batch_with_a_non_list_raises_the_clients_error_only(
    mock_cluster: str, otel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if not hasattr(ORIGINALS["Producer"], "produce_batch"):
        pytest.skip("this confluent-kafka has no produce_batch")
    p = producer(mock_cluster)
    plain = ORIGINALS["Producer"]({"bootstrap.servers": mock_cluster, "log_level": 0})
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for bad in ((("t", "not a list")), ("t", ({"value": b"v"},))):
            assert _raised(lambda: p.produce_batch(*bad)) == _raised(
                lambda: plain.produce_batch(*bad)
            )
    assert kafkaplus_warnings(caplog) == []
    assert otel.spans() == []


def _rebalance_events(make: Any, bootstrap: str, topic: str) -> list[str]:
    """Subscribe, get assigned, stall past max.poll.interval.ms, poll again."""
    events: list[str] = []
    c = make({"bootstrap.servers": bootstrap, "group.id": unique("lost"), "log_level": 0,
              **GROUP_SETTINGS, "session.timeout.ms": 6000, "max.poll.interval.ms": 6000,
              "enable.auto.commit": False})  # fmt: skip
    c.subscribe([topic], on_assign=lambda cons, parts: events.append("assign"),
                on_revoke=lambda cons, parts: events.append("revoke"))  # fmt: skip
    deadline = time.monotonic() + 30
    while "assign" not in events and time.monotonic() < deadline:
        c.poll(0.2)
    assert "assign" in events
    time.sleep(7)  # longer than max.poll.interval.ms: the member leaves the group
    deadline = time.monotonic() + 20
    while len(events) < 3 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is not None:
            events.append(m.error().name())
    c.close()
    return events[:3]


def test_lost_partitions_reach_on_revoke_as_without_kafkaplus(mock_cluster: str, otel: Any) -> None:
    """confluent-kafka: without an on_lost, lost partitions go to on_revoke."""
    topic = unique("lost")
    p = producer(mock_cluster)
    p.produce(topic, b"x", partition=0)
    assert p.flush(30) == 0
    plain = _rebalance_events(ORIGINALS["Consumer"], mock_cluster, topic)
    traced = _rebalance_events(confluent_kafka.Consumer, mock_cluster, topic)
    assert plain[:3] == ["assign", "_MAX_POLL_EXCEEDED", "revoke"]
    assert traced == plain


def test_consumers_made_with_defaults_keep_working(mock_cluster: str, otel: Any) -> None:
    """The traced class with the kwargs-only construction form confluent-kafka accepts."""
    topic = unique()
    p = producer(mock_cluster)
    p.produce(topic, b"v", partition=0)
    assert p.flush(30) == 0
    c = assigned_consumer(mock_cluster, topic)
    (msg,) = poll_messages(c, 1)
    c.close()
    assert msg.value() == b"v"
    kw = confluent_kafka.Producer(**{"bootstrap.servers": mock_cluster, "log_level": 0})
    assert isinstance(kw, ORIGINALS["Producer"])
