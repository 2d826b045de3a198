"""transaction: a CLIENT span per transactional producer call.

Span        the call's name: ``init_transactions``, ``begin_transaction``,
            ``commit_transaction``, ``abort_transaction``; kind CLIENT.
            (``send_offsets_to_transaction`` settles consumed offsets: settle.py.)
Starts      when the call starts; ends when it returns, or with ``error.type`` and
            ERROR status when it raises.
Parent      the current span. Delivery reports served inside ``commit_transaction``
            end their send spans there, as children of whatever produced them.
Attributes  messaging.system, messaging.operation.name (the call), client id, server.
Metrics     none.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from ..core import semconv as sc
from ..core.errors import report
from ..core.telemetry import Telemetry, end_span, fail_span

OPERATIONS = ("init_transactions", "begin_transaction", "commit_transaction", "abort_transaction")

_CLIENT = SpanKind.CLIENT


def transaction(tel: Telemetry, base_attrs: dict[str, Any], operation: str, client: Any,
                orig: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:  # fmt: skip
    """Run one transaction call inside its span."""
    try:
        attrs = dict(base_attrs)
        attrs[sc.MESSAGING_OPERATION_NAME] = operation
        span = tel.tracer.start_span(operation, kind=_CLIENT, attributes=attrs)
    except Exception as exc:
        report("transaction instrumentation", exc)
        return orig(client, *args, **kwargs)
    try:
        result = orig(client, *args, **kwargs)
    except BaseException as exc:
        fail_span(span, exc)
        raise
    end_span(span)
    return result
