"""What this instrumentation instruments, in the form BaseInstrumentor checks at load time."""

INSTRUMENTS = ("confluent-kafka >= 2.6.0, < 3",)
#: The name opentelemetry-python-contrib's tooling looks for.
_instruments = INSTRUMENTS

_supports_metrics = True
