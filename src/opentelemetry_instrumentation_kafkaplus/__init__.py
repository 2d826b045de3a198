"""OpenTelemetry instrumentation for confluent-kafka.

``KafkaPlusInstrumentor().instrument()`` (or ``opentelemetry-instrument``)
makes each message's journey one trace: a ``send {topic}`` span that ends on
the broker's acknowledgement, and a ``process {topic}`` span on the consumer
that continues the producer's trace. See the README for options, the span
model and the metrics.
"""

from .instrumentor import KafkaPlusInstrumentor
from .proxy import instrument_consumer, instrument_producer
from .version import __version__

__all__ = ["KafkaPlusInstrumentor", "__version__", "instrument_consumer", "instrument_producer"]
