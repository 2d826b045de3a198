"""The header writer and readers (core/propagation.py): no broker."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context, set_value
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from opentelemetry_instrumentation_kafkaplus.core import sdkaccess
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


def test_span_context_fields_read_in_one_call_match_its_properties() -> None:
    state = TraceState([("vendor", "1")])
    sc = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1), trace_state=state)
    want = (sc.trace_id, sc.span_id, sc.trace_flags, sc.trace_state, sc.is_valid)
    assert sdkaccess.span_fields(sc) == want == (0xABC, 0xDEF, 1, state, True)
    assert sdkaccess._fields_public(sc) == want  # the path for another SpanContext layout
    assert sdkaccess._LAYOUT  # this API's layout: the one-call path is the one tested above


def test_remote_span_contexts_equal_what_the_api_builds() -> None:
    want = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    for make in (sdkaccess.remote_span_context, sdkaccess._remote_public):
        got = make(0xABC, 0xDEF, TraceFlags(1))
        assert type(got) is SpanContext and got == want
        assert (got.is_remote, got.is_valid, got.trace_state) == (True, True, want.trace_state)
    _, producer, _ = read_headers([("traceparent", TP.encode())])
    assert producer == SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))


def test_a_trace_state_goes_out_with_the_traceparent() -> None:
    sc = SpanContext(0xABC, 0xDEF, False, TraceFlags(1), TraceState([("vendor", "1")]))
    ctx = trace.set_span_in_context(NonRecordingSpan(sc), Context())
    assert dict(Injector().inject(None, ctx, sc, None)) == {"traceparent": TP, "tracestate": "vendor=1"}
