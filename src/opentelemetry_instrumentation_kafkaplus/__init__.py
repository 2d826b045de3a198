"""OpenTelemetry instrumentation for confluent-kafka.

``KafkaPlusInstrumentor().instrument()`` (or ``opentelemetry-instrument``)
makes each message's journey one trace: a ``send {topic}`` span that ends on
the broker's acknowledgement, and a ``process {topic}`` span on the consumer
that continues the producer's trace. See the README for options, the span
model and the metrics.

confluent-kafka is an optional dependency: importing this package does not
import it; the names that need it load on first use.
"""

from __future__ import annotations

from typing import Any

from .api import message_context, processing
from .instrumentor import KafkaPlusInstrumentor
from .version import __version__

__all__ = [
    "KafkaPlusInstrumentor",
    "__version__",
    "instrument_consumer",
    "instrument_producer",
    "message_context",
    "processing",
]

_LAZY = {"instrument_consumer", "instrument_producer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .clients import proxy  # imports confluent-kafka

        return getattr(proxy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
