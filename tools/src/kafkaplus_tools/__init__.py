"""kafkaplus tools: ``kafkaplus demo``, ``kafkaplus audit`` and loopback brokers for tests.

A separate distribution from the instrumentation, so that a production service
that installs opentelemetry-instrumentation-kafkaplus carries none of this: no
CLI, no demo pipeline, no OTLP receiver, no broker helpers. The runtime never
imports this package; its ``kafkaplus`` command only delegates here.
"""

from opentelemetry_instrumentation_kafkaplus.version import __version__

__all__ = ["__version__"]
