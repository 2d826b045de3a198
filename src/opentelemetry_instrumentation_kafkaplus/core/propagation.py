"""Trace context in Kafka message headers: the getter, the setter, the fast path.

The producer writes the current context into the headers of each message with
the globally configured propagator; the consumer reads it back. Three rules
shape this module:

* the caller's header list or dict is never mutated (they may reuse it);
* a header the propagator owns (``traceparent``, ``tracestate``, ``baggage``,
  or whatever the configured propagator writes) that is already present is
  replaced, never duplicated: a consume-transform-produce app that forwards
  ``msg.headers()`` must emit exactly one, new context;
* a malformed header argument is passed through untouched, so confluent-kafka
  raises exactly the error it raises without instrumentation.

When the propagator is the SDK default (W3C trace context + baggage), the
headers are written directly, which is byte-identical to the propagator's
output (a test proves it) and several times cheaper.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from .sdkaccess import BAGGAGE_KEY as _BAGGAGE_KEY
from .sdkaccess import SPAN_KEY as _SPAN_KEY
from .sdkaccess import composite_members, remote_span_context, span_fields

_get_global_textmap = propagate.get_global_textmap

#: Header that carries the time (ms since the epoch) the FIRST producer of a
#: multi-hop pipeline created the message, so the last hop can report the age
#: since origin even when traces are not sampled. Written from the second hop
#: on: the first message's own timestamp is the origin.
ORIGIN_HEADER = "kafkaplus-origin-ms"

#: Context key under which the consumer keeps the origin time of the message
#: being processed, so a producer called while it is current forwards it.
ORIGIN_KEY = create_key("kafkaplus-origin-ms")

#: Context key of the message being processed where a context is current: its
#: value is that message's process record. A producer reads it to tell a span
#: that belongs to a message from any other current span.
MESSAGE_KEY = create_key("kafkaplus-message")

Headers = Any  # list[tuple[str, bytes | str | None]] | dict[str, ...] | None


class _HeaderGetter(Getter[Mapping[str, bytes]]):
    """Reads a dict built from consumed headers (see ``headers_carrier``)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            try:
                return [value.decode("utf-8")]
            except UnicodeDecodeError:
                return None
        if isinstance(value, str):
            return [value]
        return None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


GETTER = _HeaderGetter()


def headers_carrier(headers: Iterable[Any] | None) -> dict[str, Any]:
    """Consumed headers as a dict keyed by lower-cased name; the LAST one wins.

    Producers that append rather than replace leave the newest context last.
    Anything malformed is skipped.
    """
    carrier: dict[str, Any] = {}
    if not headers:
        return carrier
    for item in headers:
        try:
            k, v = item
        except (TypeError, ValueError):
            continue
        if isinstance(k, bytes):
            try:
                k = k.decode("utf-8")
            except UnicodeDecodeError:
                continue
        if isinstance(k, str):
            carrier[k.lower()] = v
    return carrier


def _is_default_w3c(prop: TextMapPropagator) -> bool:
    if not isinstance(prop, CompositePropagator):
        return False
    inner = composite_members(prop)
    if not isinstance(inner, list) or len(inner) != 2:
        return False
    return (
        type(inner[0]) is TraceContextTextMapPropagator and type(inner[1]) is W3CBaggagePropagator
    )


def _traceparent_header(span_context: trace.SpanContext) -> str:
    """What the W3C propagator writes for a valid span context (version 00)."""
    return "00-%032x-%016x-%02x" % (  # noqa: UP031 (the fastest formatting here)
        span_context.trace_id,
        span_context.span_id,
        span_context.trace_flags,
    )


class Injector:
    """Writes context into headers; re-checks the global propagator cheaply.

    ``set_global_textmap`` may be called after ``instrument()``, so the global
    propagator is looked up on each call and its properties are cached by
    identity.
    """

    __slots__ = ("_fast", "_fields", "_prop")

    def __init__(self) -> None:
        self._prop: TextMapPropagator | None = None
        self._fast = False
        self._fields: frozenset[str] = frozenset()

    def _refresh(self, prop: TextMapPropagator) -> None:
        self._fast = _is_default_w3c(prop)
        try:
            fields = {f.lower() for f in prop.fields}
        except Exception:
            fields = set()
        fields.add(ORIGIN_HEADER)
        self._fields = frozenset(fields)
        self._prop = prop

    def inject(
        self,
        headers: Headers,
        ctx: Context,
        span_context: trace.SpanContext,
        span: trace.Span | None,
    ) -> Headers:
        """The headers to send: the caller's (copied) plus our trace context.

        The common case (default propagator, no headers of the caller's, no
        baggage, no origin to carry on) builds the one-element list directly.
        """
        prop = _get_global_textmap()  # _current(), inlined: this runs per message
        if prop is not self._prop:
            self._refresh(prop)
        trace_id, span_id, flags, state, _ = span_fields(span_context)
        if (
            self._fast
            and headers is None
            and (state is _NO_STATE or not state)
            and not ctx.get(_BAGGAGE_KEY)
            and not ctx.get(ORIGIN_KEY)
        ):
            return [
                (
                    "traceparent",
                    "00-%032x-%016x-%02x"  # noqa: UP031 (_traceparent_header, inlined)
                    % (trace_id, span_id, flags),
                )
            ]
        return self.merge(headers, self._headers(prop, ctx, span_context, span))

    def _current(self) -> TextMapPropagator:
        """The global propagator, its properties re-read only when it changed."""
        prop = propagate.get_global_textmap()
        if prop is not self._prop:
            self._refresh(prop)
        return prop

    def _headers(
        self,
        prop: TextMapPropagator,
        ctx: Context,
        span_context: trace.SpanContext,
        span: trace.Span | None,
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        if self._fast:
            if span_context.is_valid:
                out["traceparent"] = _traceparent_header(span_context)
                if span_context.trace_state:
                    out["tracestate"] = span_context.trace_state.to_header()
            if ctx.get(_BAGGAGE_KEY):
                _BAGGAGE.inject(out, ctx)
        else:
            prop.inject(out, trace.set_span_in_context(span, ctx) if span is not None else ctx)
        # A message created while another is processed carries that one's
        # origin on; a first-hop message needs no header: its own timestamp is
        # its origin.
        origin = ctx.get(ORIGIN_KEY)
        if origin:
            out[ORIGIN_HEADER] = str(origin)
        return out

    def merge(self, headers: Headers, added: Mapping[str, str]) -> Headers:
        """Caller's headers (copied) with ours replacing any of the same name.

        Returns the caller's object unchanged when it is not a list or dict, or
        when an element is malformed: confluent-kafka then raises its own error.
        """
        fields = self._fields
        if headers is None:
            return list(added.items())
        if isinstance(headers, list):
            kept = []
            for item in headers:
                if type(item) is not tuple or len(item) != 2:
                    return headers
                k = item[0]
                if isinstance(k, str) and k.lower() in fields:
                    continue
                kept.append(item)
            kept.extend(added.items())
            return kept
        if isinstance(headers, dict):
            merged = {
                k: v for k, v in headers.items() if not (isinstance(k, str) and k.lower() in fields)
            }
            merged.update(added)
            return merged
        return headers


_BAGGAGE = W3CBaggagePropagator()


_TRACECONTEXT = TraceContextTextMapPropagator()
_ROOT = Context()
_extract_fast: list[Any] = [None, False]  # [propagator seen, is the default W3C one]


def _default_w3c_set() -> bool:
    """Whether the global propagator is the default W3C one; re-checked only when it changes."""
    prop = propagate.get_global_textmap()
    if prop is not _extract_fast[0]:
        _extract_fast[0], _extract_fast[1] = prop, _is_default_w3c(prop)
    return bool(_extract_fast[1])


def extract(carrier: Mapping[str, Any]) -> Context:
    """Context (span context and baggage) from a consumed message's headers.

    With the default propagator, W3C trace context is read by its own
    propagator directly and baggage only when a ``baggage`` header exists:
    the same result as the composite propagator, without its per-call work.
    """
    if not _default_w3c_set():
        return propagate.extract(carrier, getter=GETTER)
    ctx = _ROOT
    raw = carrier.get("traceparent")
    if raw is not None:
        span_context = _traceparent(raw) if "tracestate" not in carrier else None
        if span_context is not None:
            ctx = Context({_SPAN_KEY: NonRecordingSpan(span_context)})
        elif span_context is not _INVALID:
            ctx = _TRACECONTEXT.extract(carrier, ctx, GETTER)
    if "baggage" in carrier:
        ctx = _BAGGAGE.extract(carrier, ctx, GETTER)
    return ctx


# The one form every current producer writes: version 00, lower-case hex.
_TRACEPARENT_00 = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_INVALID = trace.INVALID_SPAN_CONTEXT
_FLAGS = tuple(TraceFlags(i) for i in range(256))
_NO_STATE = DEFAULT_TRACE_STATE


def _traceparent(raw: Any) -> SpanContext | None:
    """The span context of a ``traceparent`` in its common form, read directly.

    Returns None for anything else (other versions, spaces, upper case, bad
    bytes): the W3C propagator then reads it, so the result is always the
    propagator's (a property test compares them), and ``_INVALID`` for the
    all-zero ids the propagator rejects.
    """
    if type(raw) is not bytes:
        if type(raw) is not str or len(raw) != 55 or not raw.isascii():
            return None
        raw = raw.encode("ascii")
    elif len(raw) != 55:
        return None
    if _TRACEPARENT_00.fullmatch(raw) is None:
        return None
    trace_id = int(raw[3:35], 16)
    span_id = int(raw[36:52], 16)
    if not trace_id or not span_id:
        return _INVALID
    # 32 and 16 hex digits, not zero: valid ids, as the propagator checks them
    return remote_span_context(trace_id, span_id, _FLAGS[int(raw[53:55], 16)])


def origin_ms(carrier: Mapping[str, Any]) -> int | None:
    """The origin timestamp header of a consumed message, if well formed."""
    return _origin_value(carrier.get(ORIGIN_HEADER))


_OWN_HEADERS = frozenset(("traceparent", "tracestate", "baggage", ORIGIN_HEADER))
_NOTHING: tuple[None, None, None] = (None, None, None)


def read_headers(headers: Any) -> tuple[Context | None, SpanContext | None, int | None]:
    """A consumed message's extracted context, its producer's span context, its origin.

    The consumer's hot path reads each message's headers once. With the
    default propagator and the headers every producer of ours writes (a
    version-00 ``traceparent``, perhaps the origin), the list is scanned once
    and the values read directly. Anything else (``tracestate``, baggage,
    names in other cases, another propagator) takes the general path:
    ``headers_carrier``, ``extract``, ``origin_ms``. A property test holds
    both to the same answers. The span context is None unless valid.
    """
    if not headers:
        return _NOTHING
    if type(headers) is list and _default_w3c_set():
        parent = origin = None
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                break
            k = item[0]
            if k == "traceparent":
                parent = item[1]
            elif k == ORIGIN_HEADER:
                origin = item[1]
            elif type(k) is not str or k.lower() in _OWN_HEADERS:
                break
        else:
            span_context = _traceparent(parent) if parent is not None else _INVALID
            if origin is not None:
                origin = _origin_value(origin)
            if span_context is _INVALID:
                return _ROOT, None, origin
            if span_context is not None:
                ctx = Context({_SPAN_KEY: NonRecordingSpan(span_context)})
                return ctx, span_context, origin
    carrier = headers_carrier(headers)
    if not carrier:
        return _NOTHING
    ctx = extract(carrier)
    span_context = trace.get_current_span(ctx).get_span_context()
    return ctx, span_context if span_context.is_valid else None, origin_ms(carrier)


def _origin_value(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(raw, str) and 0 < len(raw) <= 16 and raw.isdigit():
        return int(raw)
    return None


def forwarded(headers: Any) -> tuple[Context | None, SpanContext | None, int | None]:
    """The trace context in the headers a caller passes to ``produce()`` (a list or dict).

    An app that forwards ``msg.headers()`` hands over the consumed message's
    context; the producer continues it rather than starting a new trace.
    """
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    elif type(headers) is not list:
        return _NOTHING
    return read_headers(headers)
