"""What this instrumentation instruments, in the form BaseInstrumentor checks at load time."""

_instruments = ("confluent-kafka >= 2.6.0, < 3",)

_supports_metrics = True
