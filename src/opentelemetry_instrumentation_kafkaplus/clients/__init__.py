"""Clients: how kafkaplus hooks into confluent-kafka.

Traced subclasses of the C clients, proxies for existing instances, wrapt
wrappers for the Python clients and ``confluent_kafka.aio``, framework glue,
and the configuration rewrite at construction. Call arguments are normalised
here, once; spans and metrics are left to the operations.
"""
