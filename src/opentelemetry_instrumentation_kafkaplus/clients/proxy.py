"""Tracing for client instances created before ``instrument()`` (or never substituted).

``instrument_producer(p)`` / ``instrument_consumer(c)`` return a wrapt
ObjectProxy: the traced methods are overridden, every other attribute is the
real client's, so the whole confluent-kafka API works through it. The state
lives on the proxy (``_kafkaplus``, as on every traced client).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import wrapt

from ..operations.process import ConsumerState
from ..operations.send import ProducerState
from . import consumer as _consumer
from . import producer as _producer
from .config import new_state
from .producer import TRANSACTION_CALLS


def instrument_producer(producer: Any, config: Mapping[str, Any] | None = None) -> Any:
    """Wrap an existing Producer so that its calls are traced.

    Pass the ``config`` the producer was created with when you can: kafkaplus
    keeps only the fields it needs (client id, bootstrap server, the default
    ``on_delivery``). Without it, a message produced without a per-call
    callback ends its span when produce() returns, because the client's
    default callback is unknown and must not be bypassed.
    """
    if isinstance(producer, (_producer.Producer, ProducerProxy)) and _traced(producer):
        return producer
    conf = dict(config) if config is not None else None
    return ProducerProxy(producer, new_state(conf, producer=True))


def instrument_consumer(consumer: Any, config: Mapping[str, Any] | None = None) -> Any:
    """Wrap an existing Consumer so that poll()/consume()/commit() are traced.

    ``config`` (optional) supplies the consumer group and client id attributes.
    """
    if isinstance(consumer, (_consumer.Consumer, ConsumerProxy)) and _traced(consumer):
        return consumer
    conf = dict(config) if config is not None else None
    return ConsumerProxy(consumer, new_state(conf, producer=False))


def _traced(client: Any) -> bool:
    return type(getattr(client, "_kafkaplus", None)) in (ProducerState, ConsumerState)


class _Proxy(wrapt.ObjectProxy):  # type: ignore[misc,type-arg,unused-ignore]
    def __init__(self, wrapped: Any, state: Any) -> None:
        super().__init__(wrapped)
        self._self_kafkaplus = state

    @property
    def _kafkaplus(self) -> Any:
        return self._self_kafkaplus

    def _call(self, fn: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        client = self.__wrapped__
        return fn(client, self._self_kafkaplus, args, kwargs, getattr(type(client), name))


class ProducerProxy(_Proxy):
    def produce(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_producer.produce, "produce", args, kwargs)

    def produce_batch(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_producer.produce_batch, "produce_batch", args, kwargs)


def _transaction_method(operation: str) -> Any:
    def method(self: ProducerProxy, *args: Any, **kwargs: Any) -> Any:
        client = self.__wrapped__
        orig = getattr(type(client), operation)
        return _producer.transaction_call(
            client, self._self_kafkaplus, operation, args, kwargs, orig
        )

    method.__name__ = method.__qualname__ = operation
    return method


for _operation in TRANSACTION_CALLS:
    setattr(ProducerProxy, _operation, _transaction_method(_operation))


class ConsumerProxy(_Proxy):
    def poll(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_consumer.poll, "poll", args, kwargs)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_consumer.consume, "consume", args, kwargs)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_consumer.commit, "commit", args, kwargs)

    def store_offsets(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_consumer.store_offsets, "store_offsets", args, kwargs)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(_consumer.close, "close", args, kwargs)
