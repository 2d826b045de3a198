"""The header writer and readers (core/propagation.py): no broker."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context, set_value
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from opentelemetry_instrumentation_kafkaplus.core.propagation import (
    ORIGIN_HEADER,
    ORIGIN_KEY,
    Injector,
    forwarded,
    read_headers,
)

SC = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
TP = f"00-{0xABC:032x}-{0xDEF:016x}-01"
CTX = trace.set_span_in_context(NonRecordingSpan(SC), Context())


def test_no_headers_of_the_callers_gives_one_traceparent() -> None:
    assert Injector().inject(None, CTX, SC, None) == [("traceparent", TP)]


@pytest.mark.parametrize(
    "given",
    [[("app", b"1"), ("traceparent", "00-stale"), ("TraceParent", b"x")],
     {"app": b"1", "traceparent": "00-stale"}],
)  # fmt: skip
def test_the_callers_headers_are_kept_and_never_mutated(given: Any) -> None:
    before = given.copy()
    out = Injector().inject(given, CTX, SC, None)
    assert given == before  # the caller's list or dict is untouched
    items = list(out.items()) if isinstance(out, dict) else out
    assert items == [("app", b"1"), ("traceparent", TP)]  # ours replaced theirs, once


@pytest.mark.parametrize("bad", [("a", b"1"), "traceparent", [["a", b"1"]], [("a",)], {("a", 1)}])
def test_malformed_headers_go_to_confluent_kafka_unchanged(bad: Any) -> None:
    assert Injector().inject(bad, CTX, SC, None) is bad


def test_baggage_and_origin_travel_on() -> None:
    ctx = set_value(ORIGIN_KEY, 1_700_000_000_123, baggage.set_baggage("tenant", "acme", CTX))
    out = dict(Injector().inject(None, ctx, SC, None))
    assert out == {"traceparent": TP, "baggage": "tenant=acme", ORIGIN_HEADER: "1700000000123"}


def test_read_headers_the_last_traceparent_wins_and_origin_is_read() -> None:
    other = f"00-{0x123:032x}-{0x456:016x}-00"
    ctx, producer, origin = read_headers(
        [("traceparent", other.encode()), ("traceparent", TP.encode()), (ORIGIN_HEADER, b"42")]
    )
    assert producer is not None and (producer.trace_id, producer.span_id) == (0xABC, 0xDEF)
    assert producer.is_remote and producer.trace_flags.sampled
    assert origin == 42
    assert trace.get_current_span(ctx).get_span_context() == producer


@pytest.mark.parametrize(
    "headers",
    [None, [], [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],
     [("traceparent", b"\xff\xfe")], [("traceparent", None)], [("app", b"1")]],
)  # fmt: skip
def test_read_headers_without_a_valid_context(headers: Any) -> None:
    _, producer, _ = read_headers(headers)
    assert producer is None


def test_forwarded_headers_in_any_form_the_producer_accepts() -> None:
    for given in ([("traceparent", TP)], {"traceparent": TP.encode()}):
        _, producer, _ = forwarded(given)
        assert producer is not None and producer.span_id == 0xDEF
    assert forwarded(("traceparent", TP)) == (None, None, None)  # not a list or dict
