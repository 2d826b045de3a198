"""Tracing for client instances created before ``instrument()`` (or never patched).

``instrument_producer(p)`` / ``instrument_consumer(c)`` return a wrapt
ObjectProxy: the traced methods are overridden, every other attribute is the
real client's, so the whole confluent-kafka API works through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import wrapt


def instrument_producer(producer: Any, config: Mapping[str, Any] | None = None) -> Any:
    """Wrap an existing Producer so that its produce() is traced.

    Pass the ``config`` the producer was created with when you can: kafkaplus
    keeps only the fields it needs (client id, bootstrap server, the default
    ``on_delivery``). Without it, a message produced without a per-call
    callback ends its span when produce() returns, because the client's
    default callback is unknown and must not be bypassed.
    """
    from .producer import Producer, ProducerState

    if isinstance(producer, (Producer, _ProducerProxy)):
        return producer
    _add_transaction_methods()
    return _ProducerProxy(producer, ProducerState(dict(config) if config is not None else None))


def instrument_consumer(consumer: Any, config: Mapping[str, Any] | None = None) -> Any:
    """Wrap an existing Consumer so that poll()/consume() are traced.

    ``config`` (optional) supplies the consumer group and client id attributes.
    """
    from .consumer import Consumer, ConsumerState

    if isinstance(consumer, (Consumer, _ConsumerProxy)):
        return consumer
    return _ConsumerProxy(consumer, ConsumerState(dict(config) if config is not None else None))


class _ProducerProxy(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    def __init__(self, wrapped: Any, state: Any) -> None:
        super().__init__(wrapped)
        self._self_kafkaplus = state

    def produce(self, *args: Any, **kwargs: Any) -> Any:
        from .producer import produce

        w = self.__wrapped__
        return produce(w, self._self_kafkaplus, args, kwargs, type(w).produce)

    def produce_batch(self, *args: Any, **kwargs: Any) -> Any:
        from .producer import produce_batch

        w = self.__wrapped__
        return produce_batch(w, self._self_kafkaplus, args, kwargs, type(w).produce_batch)


def _add_transaction_methods() -> None:
    """Traced transaction methods on the proxy (on first use: imports confluent-kafka)."""
    from .producer import TRANSACTION_OPS, transaction_method

    if "commit_transaction" not in vars(_ProducerProxy):
        for op in TRANSACTION_OPS:
            setattr(_ProducerProxy, op, transaction_method(op, proxy=True))


class _ConsumerProxy(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    def __init__(self, wrapped: Any, state: Any) -> None:
        super().__init__(wrapped)
        self._self_kafkaplus = state

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        from .consumer import poll

        w = self.__wrapped__
        return poll(w, self._self_kafkaplus, args, kwargs, type(w).poll)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        from .consumer import consume

        w = self.__wrapped__
        return consume(w, self._self_kafkaplus, args, kwargs, type(w).consume)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        from .consumer import commit

        w = self.__wrapped__
        return commit(w, self._self_kafkaplus, args, kwargs, type(w).commit)

    def store_offsets(self, *args: Any, **kwargs: Any) -> Any:
        from .consumer import store_offsets

        w = self.__wrapped__
        return store_offsets(w, self._self_kafkaplus, args, kwargs, type(w).store_offsets)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        from .consumer import close

        w = self.__wrapped__
        return close(w, self._self_kafkaplus, args, kwargs, type(w).close)
