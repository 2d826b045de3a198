"""The direct W3C trace-context reader and writer agree with the SDK's propagator.

kafkaplus writes and reads ``traceparent`` itself when the global propagator
is the default one (it is several times cheaper); these property tests hold
it to exactly what the propagator writes and reads, for any input.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context, set_value
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from opentelemetry_instrumentation_kafkaplus.core.propagation import (
    GETTER,
    ORIGIN_HEADER,
    ORIGIN_KEY,
    Injector,
    extract,
    headers_carrier,
    origin_ms,
    read_headers,
)

HEX = "0123456789abcdef"
ids = st.integers(min_value=1, max_value=(1 << 128) - 1)
span_ids = st.integers(min_value=1, max_value=(1 << 64) - 1)
flags = st.integers(min_value=0, max_value=255)


def _propagator_headers(ctx: Context) -> list[tuple[str, str]]:
    carrier: dict[str, str] = {}
    propagate.get_global_textmap().inject(carrier, ctx)
    return list(carrier.items())


@given(trace_id=ids, span_id=span_ids, trace_flags=flags, state=st.booleans(), bag=st.booleans())
def test_injected_headers_are_the_propagators(trace_id, span_id, trace_flags, state, bag):
    sc = SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=TraceFlags(trace_flags),
        trace_state=TraceState([("vendor", "v1")]) if state else None,
    )  # fmt: skip
    ctx = trace.set_span_in_context(NonRecordingSpan(sc), Context())
    if bag:
        ctx = baggage.set_baggage("tenant", "acme corp", ctx)
    assert Injector().inject(None, ctx, sc, None) == _propagator_headers(ctx)


def test_injection_keeps_the_callers_headers_and_adds_the_origin():
    sc = SpanContext(0x1F, 0x2E, is_remote=False, trace_flags=TraceFlags(1))
    ctx = set_value(ORIGIN_KEY, 1700000000123, trace.set_span_in_context(NonRecordingSpan(sc), Context()))
    mine = [("traceparent", b"old"), ("app", b"1")]
    out = Injector().inject(mine, ctx, sc, None)
    assert mine == [("traceparent", b"old"), ("app", b"1")]  # not mutated
    assert out == [("app", b"1"), *_propagator_headers(ctx), (ORIGIN_HEADER, "1700000000123")]
    assert ctx.get(ORIGIN_KEY) == 1700000000123


def _valid(trace_id: int, span_id: int, trace_flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{trace_flags:02x}"


def _edits() -> Any:
    """Valid headers, and the small edits the fast reader must hand to the propagator."""
    base = st.builds(_valid, st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 64) - 1), flags)
    return st.one_of(
        base,
        base.map(str.upper),
        base.map(lambda s: " " + s),
        base.map(lambda s: s + "\n"),
        base.map(lambda s: s + "-extra"),
        base.map(lambda s: "01" + s[2:]),
        base.map(lambda s: "ff" + s[2:]),
        base.map(lambda s: s[:3] + "0" * 32 + s[35:]),
        base.map(lambda s: s[:36] + "0" * 16 + s[52:]),
        st.tuples(base, st.integers(0, 54), st.sampled_from("-_xZ +0g")).map(
            lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
        ),
        st.text(max_size=60),
    )


def _reference(carrier: dict[str, Any]) -> Context:
    """What the configured (composite) propagator extracts, through our getter."""
    return propagate.extract(carrier, getter=GETTER)


def _same(ours: Context, reference: Context) -> None:
    assert trace.get_current_span(ours).get_span_context() == (
        trace.get_current_span(reference).get_span_context()
    )
    assert baggage.get_all(ours) == baggage.get_all(reference)


@given(header=_edits(), as_bytes=st.booleans())
def test_extracted_context_is_the_propagators(header, as_bytes):
    raw: Any = header.encode("utf-8") if as_bytes else header
    carrier = {"traceparent": raw}
    _same(extract(carrier), _reference(carrier))


@given(raw=st.binary(max_size=60))
def test_extracting_arbitrary_bytes_matches_the_propagator(raw):
    carrier = {"traceparent": raw}
    _same(extract(carrier), _reference(carrier))


def test_extraction_with_tracestate_and_baggage_matches_the_propagator():
    carrier = {
        "traceparent": _valid(0xABC, 0xDEF, 1).encode(),
        "tracestate": b"vendor=v1,other=x",
        "baggage": b"tenant=acme",
    }
    ours = extract(carrier)
    _same(ours, _reference(carrier))
    sc = trace.get_current_span(ours).get_span_context()
    assert sc.is_remote and sc.trace_flags.sampled and sc.trace_state.get("vendor") == "v1"
    assert baggage.get_baggage("tenant", ours) == "acme"


def _header_lists() -> Any:
    """Consumed header lists: ours in every spelling, others, and malformed items."""
    names = st.sampled_from([
        "traceparent", "TraceParent", "tracestate", "baggage", ORIGIN_HEADER,
        ORIGIN_HEADER.upper(), "app", "x-id",
    ])  # fmt: skip
    values = st.one_of(
        _edits().map(str.encode),
        st.sampled_from([b"1700000000123", b"0", b"-5", b"12345678901234567", "1700000000123"]),
        st.sampled_from([b"vendor=v1", b"tenant=acme", b"\xff\xfe"]),
        st.none(),
    )
    item = st.one_of(
        st.tuples(names, values),
        st.sampled_from([("traceparent",), ("a", b"1", b"2"), "garbage", None]),
    )
    return st.lists(item, max_size=5)


@settings(max_examples=400)
@given(headers=_header_lists())
def test_one_pass_header_reading_matches_the_general_path(headers):
    ctx, producer_sc, origin = read_headers(headers)
    carrier = headers_carrier(headers)
    if not carrier:
        assert (ctx, producer_sc, origin) == (None, None, None)
        return
    reference = extract(carrier)
    _same(ctx, _reference(carrier))
    _same(ctx, reference)
    expected = trace.get_current_span(reference).get_span_context()
    assert producer_sc == (expected if expected.is_valid else None)
    assert origin == origin_ms(carrier)


def test_one_pass_header_reading_of_the_common_headers():
    tp = _valid(0xABC, 0xDEF, 0)
    ctx, producer_sc, origin = read_headers(
        [("app", b"1"), ("traceparent", tp.encode()), (ORIGIN_HEADER, b"1700000000123")]
    )
    assert producer_sc == SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    assert trace.get_current_span(ctx).get_span_context() == producer_sc
    assert origin == 1700000000123
    second = _valid(0x123, 0x456, 1)
    last = read_headers([("traceparent", tp.encode()), ("traceparent", second.encode())])[1]
    assert last is not None and last.trace_id == 0x123  # the newest context wins
    assert read_headers([]) == (None, None, None)
    assert read_headers([("app", b"1")])[1:] == (None, None)
