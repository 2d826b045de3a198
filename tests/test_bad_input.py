"""Bad input never breaks the app: malformed messages, odd produce() calls, failing hooks.

Every message here goes through a real broker (tansu or librdkafka's mock
cluster). Malformed messages are written with an uninstrumented producer and
read with the instrumented consumer; produce() calls are replayed on an
uninstrumented and an instrumented client and must behave identically.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import StatusCode

from conftest import (
    ORIGINALS,
    Otel,
    assigned_consumer,
    original_producer,
    poll_messages,
    producer,
    unique,
)
from opentelemetry_instrumentation_kafkaplus import instrument_producer
from opentelemetry_instrumentation_kafkaplus.core import errors as _errors

LOGGER = "opentelemetry_instrumentation_kafkaplus"
OURS = {"traceparent", "tracestate", "baggage", "kafkaplus-origin-ms"}




def tp(n: int) -> str:
    """A valid W3C traceparent whose trace and span ids derive from n."""
    return f"00-{0xABC000 + n:032x}-{0xDEF000 + n:016x}-01"


def tp_span(n: int) -> int:
    return 0xDEF000 + n


def tp_trace(n: int) -> int:
    return 0xABC000 + n


@pytest.fixture
def fresh_reports() -> Iterator[None]:
    """Forget which failure kinds were already logged, so 'once' is observable."""
    saved = set(_errors._seen)
    _errors._seen.clear()
    try:
        yield
    finally:
        _errors._seen.update(saved)


def process_spans(otel: Otel, topic: str) -> dict[int, Any]:
    """Finished process spans by offset; asserts there is one per offset."""
    by_offset: dict[int, Any] = {}
    for s in otel.spans(f"process {topic}"):
        off = s.attributes["messaging.kafka.offset"]
        assert off not in by_offset, f"two process spans for offset {off}"
        by_offset[off] = s
    return by_offset


def kafkaplus_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(LOGGER) and r.levelno == level]


# ---------------------------------------------------------------------------
# Malformed consumed messages
# ---------------------------------------------------------------------------

BIG = 100_000
#: The mock cluster answers an empty fetch after fetch.wait.max.ms: keep it short.
FAST = {"fetch.wait.max.ms": 10}

#: (case, headers as produced, key, value, expected parent: tp index or None for a new root)
MALFORMED: list[tuple[str, Any, Any, Any, int | None]] = [
    ("non-utf8 header values", [("traceparent", b"\xff\xfe\xfd"), ("x-bin", b"\x80\x81")],
     None, b"v", None),
    ("non-utf8 neighbour, valid context", [("x-bin", b"\xc3\x28"), ("traceparent", tp(1).encode())],
     None, b"v", 1),
    ("None header values", [("traceparent", None), ("tracestate", None), ("baggage", None),
                            ("kafkaplus-origin-ms", None), ("n", None)], None, b"v", None),
    ("str header values", [("traceparent", tp(2)), ("s", "text")], "k", "text value", 2),
    ("garbage", [("traceparent", b"\x00garbage\x00"), ("tracestate", b"=,=,,"),
                 ("baggage", b"%%%;;=\xff")], None, b"v", None),
    ("truncated traceparent", [("traceparent", tp(3)[:-5].encode())], None, b"v", None),
    ("oversized traceparent", [("traceparent", (tp(3) + "-" + "f" * BIG).encode())],
     None, b"v", None),
    ("oversized tracestate and baggage", [("traceparent", tp(4).encode()),
                                          ("tracestate", b"a=" + b"b" * BIG),
                                          ("baggage", b"k=" + b"v" * BIG)], None, b"v", 4),
    ("several traceparents, last wins", [("traceparent", tp(5).encode()),
                                         ("traceparent", tp(6).encode())], None, b"v", 6),
    ("valid then garbage traceparent", [("traceparent", tp(7).encode()),
                                        ("traceparent", b"junk")], None, b"v", None),
    ("1000 headers", [(f"h{i}", b"x" * 8) for i in range(500)] + [("traceparent", tp(8).encode())]
     + [(f"g{i}", None) for i in range(499)], None, b"v", 8),
    ("non-utf8 key", [("traceparent", tp(9).encode())], b"\xff\xfe\x80", b"v", 9),
    ("tombstone", [("traceparent", tp(10).encode())], "k", None, 10),
    ("tombstone without headers", None, None, None, None),
    ("empty name and value", [("", b""), ("traceparent", b"")], b"", b"", None),
    ("all-zero trace id", [("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")],
     None, b"v", None),
    ("version ff", [("traceparent", ("ff" + tp(11)[2:]).encode())], None, b"v", None),
    ("bad origin header", [("kafkaplus-origin-ms", b"99999999999999999999999999"),
                           ("kafkaplus-origin-ms", b"-5"), ("kafkaplus-origin-ms", b"\xff")],
     None, b"v", None),
]  # fmt: skip


def expected_headers(headers: Any) -> Any:
    """What a consumer sees for headers produced as given (str values become bytes)."""
    if not headers:
        return None
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in headers]


def test_malformed_messages_never_break_the_consumer(bootstrap, otel, caplog):
    caplog.set_level(logging.WARNING)
    topic = unique("bad")
    raw = original_producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for _, headers, key, value, _ in MALFORMED:
        raw.produce(topic, value=value, key=key, partition=0, headers=headers)
    assert raw.flush(30) == 0
    assert otel.spans() == []  # the uninstrumented producer made no span

    c = assigned_consumer(bootstrap, topic, **{"enable.partition.eof": True})
    msgs = []
    eof_events = 0
    for _ in range(400):
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            assert m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF
            eof_events += 1
            if len(msgs) == len(MALFORMED):
                break
            continue
        msgs.append(m)
    c.close()
    assert len(msgs) == len(MALFORMED)
    assert eof_events >= 1

    spans = process_spans(otel, topic)
    assert len(otel.spans()) == len(MALFORMED)  # no span for the EOF events
    for (case, headers, key, value, parent), msg in zip(MALFORMED, msgs, strict=True):
        # The app sees the message exactly as produced.
        assert msg.headers() == expected_headers(headers), case
        span = spans[msg.offset()]
        attrs = span.attributes
        if parent is None:
            assert span.parent is None, case
            assert list(span.links) == [], case
            assert span.context.trace_id not in {tp_trace(i) for i in range(20)}, case
        else:
            assert span.parent.span_id == tp_span(parent), case
            assert span.context.trace_id == tp_trace(parent), case
            assert list(span.links) == [], case  # no link that repeats the parent
        if value is None:
            assert attrs["messaging.kafka.message.tombstone"] is True, case
        if key == b"\xff\xfe\x80":
            assert "messaging.kafka.message.key" not in attrs, case
        assert span.status.status_code is not StatusCode.ERROR, case
    assert kafkaplus_records(caplog, logging.WARNING) == []


def test_error_events_only_make_no_span(mock_cluster, otel):
    topic = unique("eof")
    raw = original_producer({"bootstrap.servers": mock_cluster, "log_level": 0})
    raw.produce(topic, b"v", partition=0)
    assert raw.flush(30) == 0
    c = assigned_consumer(mock_cluster, topic, **{"enable.partition.eof": True}, **FAST)
    poll_messages(c, 1)
    errors = []
    for _ in range(40):
        m = c.poll(0.2)
        if m is not None and m.error() is not None:
            errors.append(m)
            break
    assert errors
    # The process span of the message ended at the first error poll; nothing else.
    assert [s.name for s in otel.spans()] == [f"process {topic}"]
    assert trace.get_current_span() is trace.INVALID_SPAN
    c.close()


# ---------------------------------------------------------------------------
# Property-based: arbitrary header lists and keys
# ---------------------------------------------------------------------------

NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
NAMES = st.text(NAME_CHARS, max_size=12).filter(lambda n: n.lower() not in OURS)
HEADER_LISTS = st.lists(st.tuples(NAMES, st.one_of(st.none(), st.binary(max_size=40))),
                        max_size=12)  # fmt: skip
KEYS = st.one_of(st.none(), st.binary(min_size=1, max_size=24),
                 st.text(NAME_CHARS, min_size=1, max_size=12))  # fmt: skip


def test_any_header_list_round_trips_with_one_context(mock_cluster, otel):
    topic = unique("prop")
    p = producer(mock_cluster)
    c = assigned_consumer(mock_cluster, topic, **FAST)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(headers=HEADER_LISTS, key=KEYS)
    def check(headers: list[tuple[str, bytes | None]], key: Any) -> None:
        before = list(headers)
        reports: list[Any] = []
        p.produce(topic, value=b"v", key=key, partition=0, headers=headers,
                  on_delivery=lambda e, m: reports.append((e, m.offset())))  # fmt: skip
        assert p.flush(30) == 0
        assert headers == before  # the caller's list is never mutated
        ((err, offset),) = reports
        assert err is None
        (msg,) = poll_messages(c, 1)
        assert msg.offset() == offset
        seen = msg.headers()
        assert seen[: len(headers)] == headers
        # From the second example on, the previous message's process span is
        # current: this produce() forwards its origin, as a pipeline hop does.
        ours = [k for k, _ in seen[len(headers):]]
        assert ours in (["traceparent"], ["traceparent", "kafkaplus-origin-ms"])
        assert [k for k, _ in seen].count("traceparent") == 1
        want_key = key.encode() if isinstance(key, str) else key
        assert msg.key() == want_key
        send = [s for s in otel.spans(f"send {topic}")
                if s.attributes.get("messaging.kafka.offset") == offset]  # fmt: skip
        assert len(send) == 1
        process = trace.get_current_span()  # current until the next poll
        assert process.name == f"process {topic}"
        assert process.parent.span_id == send[0].context.span_id
        ctx = send[0].context
        assert seen[len(headers)][1] == (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()
        )
        text = want_key.decode("utf-8", "strict") if _utf8(want_key) else None
        assert process.attributes.get("messaging.kafka.message.key") == text
        assert send[0].attributes.get("messaging.kafka.message.key") == text

    check()
    c.close()


def _utf8(b: bytes | None) -> bool:
    if b is None:
        return False
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


VALID = [tp(i).encode() for i in range(30, 34)]
TRACE_NAMES = st.sampled_from(["traceparent", "tracestate", "baggage", "kafkaplus-origin-ms",
                               "TraceParent", "TRACEPARENT"])  # fmt: skip
RAW_VALUES = st.one_of(st.none(), st.binary(max_size=80), st.sampled_from(VALID))
RAW_HEADERS = st.lists(st.tuples(st.one_of(TRACE_NAMES, NAMES), RAW_VALUES), max_size=15)


def test_any_consumed_headers_give_a_span_and_a_sane_parent(mock_cluster, otel):
    topic = unique("raw")
    raw = original_producer({"bootstrap.servers": mock_cluster, "log_level": 0})
    c = assigned_consumer(mock_cluster, topic, **FAST)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(headers=RAW_HEADERS, key=st.one_of(st.none(), st.binary(max_size=16)))
    def check(headers: list[tuple[str, bytes | None]], key: bytes | None) -> None:
        raw.produce(topic, value=b"v", key=key, partition=0, headers=headers)
        assert raw.flush(30) == 0
        (msg,) = poll_messages(c, 1)
        assert msg.headers() == (headers or None)
        span = trace.get_current_span()
        assert span.name == f"process {topic}"
        assert span.is_recording()
        tps = [v for k, v in headers if k.lower() == "traceparent"]
        if tps and tps[-1] in VALID:
            want = VALID.index(tps[-1]) + 30
            assert span.parent.span_id == tp_span(want)
        else:
            assert span.parent is None

    check()
    c.close()


# ---------------------------------------------------------------------------
# produce(): parity with the uninstrumented client
# ---------------------------------------------------------------------------

Call = Callable[[Any, str, Callable[..., Any], Callable[..., Any]], Any]

#: name -> call(producer, topic, cb, other_cb); cb/other_cb record as "cb"/"other".
ACCEPTED: dict[str, Call] = {
    "topic only (config default callback)": lambda p, t, cb, o: p.produce(t),
    "positional value": lambda p, t, cb, o: p.produce(t, b"v"),
    "positional str value and key": lambda p, t, cb, o: p.produce(t, "vé", "ключ"),
    "positional partition": lambda p, t, cb, o: p.produce(t, b"v", b"k", 1),
    "positional callback (5th)": lambda p, t, cb, o: p.produce(t, b"v", b"k", 0, cb),
    "positional on_delivery (6th)": lambda p, t, cb, o: p.produce(t, b"v", b"k", 0, None, cb),
    "positional timestamp": lambda p, t, cb, o: p.produce(t, b"v", None, 0, None, cb,
                                                          1_700_000_000_000),
    "all eight positional": lambda p, t, cb, o: p.produce(t, b"v", b"k", 2, None, cb, 0,
                                                          [("h", b"1"), ("h", None)]),
    "keywords": lambda p, t, cb, o: p.produce(topic=t, value=b"v", key=b"k", partition=0,
                                              on_delivery=cb, timestamp=1_700_000_000_000),
    "callback alias": lambda p, t, cb, o: p.produce(t, value=b"v", callback=cb),
    "callback wins over on_delivery": lambda p, t, cb, o: p.produce(t, b"v", callback=cb,
                                                                    on_delivery=o),
    "callback=None, on_delivery": lambda p, t, cb, o: p.produce(t, b"v", callback=None,
                                                                on_delivery=cb),
    "dict headers": lambda p, t, cb, o: p.produce(t, b"v", headers={"a": b"1", "b": "s",
                                                                    "c": None}, on_delivery=cb),
    "list headers with duplicates": lambda p, t, cb, o: p.produce(
        t, b"v", headers=[("a", b"1"), ("a", "2"), ("b", None)], on_delivery=cb),
    "headers carrying a traceparent": lambda p, t, cb, o: p.produce(
        t, b"v", headers={"traceparent": tp(1), "TraceState": "x=y"}, on_delivery=cb),
    "empty list headers": lambda p, t, cb, o: p.produce(t, b"v", headers=[], on_delivery=cb),
    "empty dict headers": lambda p, t, cb, o: p.produce(t, b"v", headers={}, on_delivery=cb),
    "None headers": lambda p, t, cb, o: p.produce(t, b"v", headers=None, on_delivery=cb),
    "int header name": lambda p, t, cb, o: p.produce(t, b"v", headers=[(1, b"x")],
                                                     on_delivery=cb),
    "tombstone": lambda p, t, cb, o: p.produce(t, None, b"k", on_delivery=cb),
    "None key, str value": lambda p, t, cb, o: p.produce(t, "v", None, on_delivery=cb),
    "partition -1": lambda p, t, cb, o: p.produce(t, b"v", partition=-1, on_delivery=cb),
    "empty value and key": lambda p, t, cb, o: p.produce(t, b"", b"", on_delivery=cb),
}  # fmt: skip

REJECTED: dict[str, Call] = {
    "int header value (list)": lambda p, t, cb, o: p.produce(t, b"v", headers=[("a", 1)]),
    "int header value (dict)": lambda p, t, cb, o: p.produce(t, b"v", headers={"a": 1}),
    "1-tuple header": lambda p, t, cb, o: p.produce(t, b"v", headers=[("a",)]),
    "3-tuple header": lambda p, t, cb, o: p.produce(t, b"v", headers=[("a", b"1", 2)]),
    "list header item": lambda p, t, cb, o: p.produce(t, b"v", headers=[["a", b"1"]]),
    "bare tuple headers": lambda p, t, cb, o: p.produce(t, b"v", headers=("a", b"1")),
    "set headers": lambda p, t, cb, o: p.produce(t, b"v", headers={("a", b"1")}),
    "str headers": lambda p, t, cb, o: p.produce(t, b"v", headers="traceparent"),
    "bogus keyword": lambda p, t, cb, o: p.produce(t, b"v", bogus=1),
    "no topic": lambda p, t, cb, o: p.produce(),
    "topic None": lambda p, t, cb, o: p.produce(None, b"v"),
    "int topic": lambda p, t, cb, o: p.produce(5, b"v"),
    "topic twice": lambda p, t, cb, o: p.produce(t, topic=t),
    "value twice": lambda p, t, cb, o: p.produce(t, b"v", value=b"w"),
    "headers twice": lambda p, t, cb, o: p.produce(t, b"v", None, 0, None, None, 0, [],
                                                   headers=[]),
    "int value": lambda p, t, cb, o: p.produce(t, 5),
    "int key": lambda p, t, cb, o: p.produce(t, b"v", 5),
    "bytearray value": lambda p, t, cb, o: p.produce(t, bytearray(b"v")),
    "str partition": lambda p, t, cb, o: p.produce(t, b"v", partition="0"),
    "str timestamp": lambda p, t, cb, o: p.produce(t, b"v", timestamp="now"),
    "unknown partition": lambda p, t, cb, o: p.produce(t, b"v", partition=99, on_delivery=cb),
    "nine positional": lambda p, t, cb, o: p.produce(t, b"v", None, 0, None, None, 0, None, 1),
}  # fmt: skip


PINNED = {
    "positional partition", "positional callback (5th)", "positional on_delivery (6th)",
    "positional timestamp", "all eight positional", "keywords",
}


def run_side(p: Any, topic: str, table: dict[str, Call], box: list[Any]) -> dict[str, Any]:
    """Run every call; return name -> (outcome, delivery records)."""
    out: dict[str, Any] = {}
    # Known metadata: an unknown partition is then refused by produce() itself, every time.
    p.list_topics(topic, timeout=10)
    for name, call in table.items():
        records: list[Any] = []
        box[0] = records
        pinned = name in PINNED

        def rec(tag: str, pinned: bool = pinned, records: list[Any] = records) -> Any:
            def cb(err: Any, msg: Any) -> None:
                records.append((tag, err.name() if err else None, msg.topic(),
                                msg.partition() if pinned else "any", msg.value(), msg.key()))
            return cb  # fmt: skip

        try:
            outcome: Any = ("returned", call(p, topic, rec("cb"), rec("other")))
        except Exception as exc:
            outcome = ("raised", type(exc), str(exc))
        assert p.flush(30) == 0
        out[name] = (outcome, records)
    return out


@pytest.mark.parametrize("table", ["accepted", "rejected"])
def test_produce_parity_with_uninstrumented_client(mock_cluster, otel, table):
    calls = ACCEPTED if table == "accepted" else REJECTED
    topic = unique("parity")
    counting = Counting()
    otel.tracer_provider.add_span_processor(counting)
    results = []
    for make in (original_producer, confluent_kafka.Producer):
        box: list[Any] = [[]]

        def default_cb(err: Any, msg: Any, box: list[Any] = box) -> None:
            box[0].append(("default", err.name() if err else None, msg.topic(), "any",
                           msg.value(), msg.key()))  # fmt: skip

        p = make({"bootstrap.servers": mock_cluster, "log_level": 0, "on_delivery": default_cb})
        results.append(run_side(p, topic, calls, box))
    plain, traced = results
    assert confluent_kafka.Producer is not ORIGINALS["Producer"]
    differ = {name: (plain[name], traced[name]) for name in calls if traced[name] != plain[name]}
    assert differ == {}, "uninstrumented vs instrumented"
    for name in calls:
        outcome, records = plain[name]
        if table == "accepted":
            assert outcome == ("returned", None), name
            assert len(records) == 1, name  # exactly once, on both sides
        else:
            assert outcome[0] == "raised", name
            assert records == [], name
    # Every send span that was started has ended; a rejected call's span carries the error
    # (calls rejected before a span exists, e.g. a bad topic or keyword, make none).
    assert sorted(counting.started) == sorted(counting.ended)
    sends = otel.spans(f"send {topic}")
    failed = [s for s in sends if s.status.status_code is StatusCode.ERROR]
    if table == "accepted":
        assert len(sends) == len(calls)
        assert failed == []
    else:
        assert failed == sends
        assert {s.attributes["error.type"] for s in sends} == {"TypeError", "_UNKNOWN_PARTITION"}


# ---------------------------------------------------------------------------
# Failures inside the instrumentation are contained and logged once
# ---------------------------------------------------------------------------


class Counting(SpanProcessor):
    """Counts span starts and ends, to prove no started span is left open."""

    def __init__(self) -> None:
        self.started: dict[int, str] = {}
        self.ended: list[int] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started[span.context.span_id] = span.name

    def on_end(self, span: Any) -> None:
        self.ended.append(span.context.span_id)


def round_trip(bootstrap: str, topic: str, n: int = 5, **pconf: Any) -> tuple[list, list]:
    """Produce n (instrumented), flush, consume n (instrumented), close. Returns reports, msgs."""
    p = producer(bootstrap, **pconf)
    reports: list[Any] = []
    for i in range(n):
        p.produce(topic, f"v{i}".encode(), partition=0,
                  on_delivery=lambda e, m: reports.append((e, m.offset())))  # fmt: skip
    assert p.flush(30) == 0
    assert [e for e, _ in reports] == [None] * n
    c = assigned_consumer(bootstrap, topic)
    msgs = poll_messages(c, n)
    c.close()
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(n)]
    return reports, msgs


def assert_logged_once(caplog: pytest.LogCaptureFixture, kind: str, times: int) -> None:
    warnings = [r for r in kafkaplus_records(caplog, logging.WARNING) if kind in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    debug = [r for r in kafkaplus_records(caplog, logging.DEBUG)
             if kind in r.getMessage() and r.exc_info]  # fmt: skip
    assert len(debug) == times


def _boom(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("hook exploded")


def test_failing_produce_hook(mock_cluster, otel_factory, caplog, fresh_reports):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    o = otel_factory(produce_hook=_boom)
    topic = unique("hook")
    round_trip(mock_cluster, topic)
    assert_logged_once(caplog, "produce_hook", 5)
    assert len(o.spans(f"send {topic}")) == 5
    assert len(o.spans(f"process {topic}")) == 5


def test_failing_consume_hook(mock_cluster, otel_factory, caplog, fresh_reports):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    o = otel_factory(consume_hook=_boom)
    topic = unique("hook")
    round_trip(mock_cluster, topic)
    assert_logged_once(caplog, "consume_hook", 5)
    sends = {s.context.span_id for s in o.spans(f"send {topic}")}
    procs = o.spans(f"process {topic}")
    assert len(procs) == 5
    assert {s.parent.span_id for s in procs} == sends


class BrokenPropagator:
    """A propagator whose inject and extract raise."""

    fields = {"x-broken"}

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        raise RuntimeError("inject exploded")

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise RuntimeError("extract exploded")


@pytest.fixture
def broken_propagator() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(BrokenPropagator())  # type: ignore[arg-type]
    try:
        yield
    finally:
        propagate.set_global_textmap(saved)


def test_broken_propagator(mock_cluster, otel, caplog, fresh_reports, broken_propagator):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    counting = Counting()
    otel.tracer_provider.add_span_processor(counting)
    topic = unique("prop")
    round_trip(mock_cluster, topic)
    warnings = kafkaplus_records(caplog, logging.WARNING)
    assert warnings, "the failure is reported"
    kinds = [r.getMessage().split(" failed")[0] for r in warnings]
    assert len(kinds) == len(set(kinds)), kinds  # once per kind
    # Every span that was started has ended: none is left pending forever.
    assert sorted(counting.started) == sorted(counting.ended), {
        sid: name for sid, name in counting.started.items() if sid not in counting.ended
    }
    assert len(otel.spans(f"send {topic}")) == 5


class Raising(SpanProcessor):
    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "start":
            raise RuntimeError("on_start exploded")

    def on_end(self, span: Any) -> None:
        if self.where == "end":
            raise RuntimeError("on_end exploded")


@pytest.mark.parametrize("where", ["start", "end"])
def test_raising_span_processor(mock_cluster, otel, caplog, fresh_reports, where):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    otel.tracer_provider.add_span_processor(Raising(where))
    topic = unique("proc")
    round_trip(mock_cluster, topic)
    warnings = kafkaplus_records(caplog, logging.WARNING)
    assert warnings
    kinds = [r.getMessage().split(" failed")[0] for r in warnings]
    assert len(kinds) == len(set(kinds)), kinds
    if where == "end":  # the spans were exported before the raising processor ran
        assert len(otel.spans(f"send {topic}")) == 5
        assert len(otel.spans(f"process {topic}")) == 5


@pytest.mark.parametrize("where", ["start", "end"])
def test_raising_span_processor_wrapped_instance(mock_cluster, otel, fresh_reports, where):
    """instrument_producer() without a config ends spans in produce() itself."""
    otel.tracer_provider.add_span_processor(Raising(where))
    topic = unique("proc")
    p = instrument_producer(original_producer({"bootstrap.servers": mock_cluster,
                                               "log_level": 0}))  # fmt: skip
    for i in range(3):
        assert p.produce(topic, f"v{i}".encode(), partition=0) is None
    assert p.flush(30) == 0


class RaisingExporter(SpanExporter):
    def export(self, spans: Any) -> Any:
        raise RuntimeError("exporter exploded")

    def shutdown(self) -> None:
        pass


def test_raising_exporter(mock_cluster, otel, caplog):
    caplog.set_level(logging.ERROR)
    otel.tracer_provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
    topic = unique("exp")
    round_trip(mock_cluster, topic)
    assert len(otel.spans(f"send {topic}")) == 5
    assert len(otel.spans(f"process {topic}")) == 5


def test_app_exceptions_reach_the_app_unchanged(mock_cluster, otel):
    topic = unique("app")
    p = producer(mock_cluster)
    mine = ValueError("the app's own failure")
    calls = []

    def on_delivery(err: Any, msg: Any) -> None:
        calls.append(msg.offset())
        raise mine

    p.produce(topic, b"v", partition=0, on_delivery=on_delivery)
    with pytest.raises(ValueError) as info:
        p.flush(30)
    assert info.value is mine
    assert p.flush(30) == 0
    assert len(calls) == 1
    (send,) = otel.spans(f"send {topic}")
    assert send.attributes["messaging.kafka.offset"] == calls[0]
    with pytest.raises(TypeError, match="bogus"):
        p.produce(topic, b"v", bogus=1)
    c = assigned_consumer(mock_cluster, topic)
    poll_messages(c, 1)
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.poll(0)


# ---------------------------------------------------------------------------
# Security and privacy
# ---------------------------------------------------------------------------

SECRETS = {
    "sasl.password": "S3CRET-sasl-password",
    "ssl.key.password": "S3CRET-ssl-key-password",
    "sasl.oauthbearer.client.secret": "S3CRET-oauth-client-secret",
}
VALUE_MARK = "VALUE-MARK-never-recorded"
KEY_MARK = "KEY-MARK-only-with-capture-key"
DENIED_MARK = "DENIED-HEADER-MARK"


def walk_strings(root: Any, limit: int = 200_000) -> Iterator[str]:
    """Every str/bytes reachable from root through containers, slots, __dict__, closures.

    Objects of other packages are not entered: this inspects what kafkaplus keeps.
    """
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < limit:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, (str, bytes)):
            yield o if isinstance(o, str) else o.decode("latin-1")
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            stack.extend(o)
        elif isinstance(o, types.FunctionType):
            if o.__closure__:
                for cell in o.__closure__:
                    with contextlib.suppress(ValueError):  # an empty cell
                        stack.append(cell.cell_contents)
            stack.extend(o.__defaults__ or ())
        elif _ours(o):
            for klass in type(o).__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    if hasattr(o, slot):
                        stack.append(getattr(o, slot))
            stack.extend(getattr(o, "__dict__", {}).values())


def _ours(o: Any) -> bool:
    mod = getattr(type(o), "__module__", "")
    # wrapt's proxy types expose __module__ as a property.
    return isinstance(mod, str) and mod.startswith("opentelemetry_instrumentation_kafkaplus")


def span_strings(otel: Otel) -> list[str]:
    out: list[str] = []
    for s in otel.spans():
        sources = [s.attributes, s.resource.attributes]
        sources += [e.attributes for e in s.events] + [ln.attributes for ln in s.links]
        out.append(s.name)
        if s.status.description:
            out.append(s.status.description)
        for attrs in sources:
            for k, v in (attrs or {}).items():
                out.append(k)
                out.extend(map(str, v) if isinstance(v, (list, tuple)) else [str(v)])
    return out


@pytest.mark.parametrize("capture_key", [False, True])
def test_values_keys_headers_and_secrets_are_not_kept(mock_cluster, otel_factory, capture_key):
    o = otel_factory(capture_key=capture_key, capture_headers="allowed",
                     statistics_interval_ms=1000)  # fmt: skip
    topic = unique("priv")
    conf = {
        "bootstrap.servers": mock_cluster, "log_level": 0,
        "security.protocol": "PLAINTEXT", "sasl.username": "user",
        **SECRETS,
    }  # fmt: skip
    p = confluent_kafka.Producer(dict(conf))
    p.produce(topic, value=VALUE_MARK.encode(), key=KEY_MARK, partition=0,
              headers=[("allowed", b"ok-to-record"), ("denied", DENIED_MARK.encode())])  # fmt: skip
    p.produce(topic, value=VALUE_MARK, key=KEY_MARK.encode(), partition=0, on_delivery=_noop,
              headers={"Allowed": "ok-to-record", "denied": DENIED_MARK})  # fmt: skip
    assert p.flush(30) == 0
    c = confluent_kafka.Consumer({**conf, "group.id": "priv-group", "enable.auto.commit": False})
    c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    msgs = poll_messages(c, 2)
    c.commit(msgs[-1], asynchronous=False)
    c.consume(1, 0.5)
    assert msgs[0].value() == VALUE_MARK.encode()

    recorded = span_strings(o)
    assert any("ok-to-record" in s for s in recorded)
    for s in recorded:
        assert VALUE_MARK not in s
        assert DENIED_MARK not in s
        for secret in SECRETS.values():
            assert secret not in s
    assert any(KEY_MARK in s for s in recorded) is capture_key

    # Nothing kafkaplus holds (client state, closures, caches) contains a secret.
    gc.collect()
    roots = [p._kafkaplus, p._kafkaplus.stats, c._kafkaplus, c._kafkaplus.stats]
    roots += [obj for obj in gc.get_objects() if _ours(obj) or _our_function(obj)]
    kept = [s for root in roots for s in walk_strings(root)]
    assert any("priv-group" in s for s in kept)  # the walk does reach the client state
    for s in kept:
        for secret in SECRETS.values():
            assert secret not in s
    c.close()


def _our_function(o: Any) -> bool:
    return isinstance(o, types.FunctionType) and (o.__module__ or "").startswith(
        "opentelemetry_instrumentation_kafkaplus"
    )


def _noop(err: Any, msg: Any) -> None:
    pass
