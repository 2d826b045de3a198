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

from ..core.options import resolve
from ..core.telemetry import ACTIVE, Telemetry
from ..operations.process import ConsumerState
from ..operations.send import ProducerState
from . import consumer as _consumer
from . import producer as _producer
from .config import new_state
from .producer import TRANSACTION_CALLS


def instrument_producer(
    producer: Any,
    config: Mapping[str, Any] | Any = None,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Any:
    """Wrap an existing Producer so that its calls are traced.

    Pass the ``config`` the producer was created with when you can: kafkaplus
    keeps only the fields it needs (client id, bootstrap server, the default
    ``on_delivery``). Without it, a message produced without a per-call
    callback ends its span when produce() returns, because the client's
    default callback is unknown and must not be bypassed.

    ``tracer_provider``/``meter_provider`` give this client providers of its
    own (the contrib plugin's ``instrument_producer(producer, tracer_provider)``
    form, a provider as the second argument, is accepted too); without them
    it uses the active instrumentation's.
    """
    if isinstance(producer, (_producer.Producer, ProducerProxy)) and _traced(producer):
        return producer
    state = _state(config, tracer_provider, meter_provider, producer=True)
    return ProducerProxy(producer, state)


def instrument_consumer(
    consumer: Any,
    config: Mapping[str, Any] | Any = None,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Any:
    """Wrap an existing Consumer so that poll()/consume()/commit() are traced.

    ``config`` (optional) supplies the consumer group and client id attributes;
    the providers are as for ``instrument_producer``.
    """
    if isinstance(consumer, (_consumer.Consumer, ConsumerProxy)) and _traced(consumer):
        return consumer
    state = _state(config, tracer_provider, meter_provider, producer=False)
    return ConsumerProxy(consumer, state)


def _state(config: Any, tracer_provider: Any, meter_provider: Any, *, producer: bool) -> Any:
    if config is not None and not isinstance(config, Mapping) and hasattr(config, "get_tracer"):
        tracer_provider, config = config, None  # the contrib form: (client, tracer_provider)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(
            f"kafkaplus: expected the client's configuration dict, got {type(config).__name__}"
        )
    state = new_state(dict(config) if config is not None else None, producer=producer)
    if tracer_provider is not None or meter_provider is not None:
        active = ACTIVE.telemetry
        options = active.options if active is not None else resolve({})
        state.telemetry = Telemetry.build(tracer_provider, meter_provider, options)
    return state


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

    if _producer.has_produce_batch:

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
