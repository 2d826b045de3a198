"""The core: what every operation and client shares. No confluent-kafka import here.

Options, telemetry handles and the error policy; attribute names and builders;
trace-context propagation in headers; metric instruments; the statistics bridge.
"""
