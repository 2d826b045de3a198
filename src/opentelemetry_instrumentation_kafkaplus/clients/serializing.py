"""SerializingProducer and DeserializingConsumer: Python subclasses of the C clients.

Their base class is the original C type, fixed when confluent-kafka defined
them, so substituting the traced subclasses does not reach them. Their methods
are Python and can be wrapped: wrapt wraps ``__init__`` (the same
configuration rewrite and state as the traced classes),
``produce``/``poll``/``close``/``commit``, and ``uninstrument()`` unwraps them.
The inner ``super().produce()`` goes straight to the C method, so there is
exactly one span per message; the key attribute is the key the app passed
(when a str), never a second run of the serializer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import wrapt

from ..operations.process import ConsumerState
from ..operations.send import ProducerState
from . import config
from . import consumer as _consumer
from . import producer as _producer
from .state import attach, state_of

_ABSENT = object()

Patched = list[tuple[Any, str, Any]]


def _state(instance: Any, kind: type[Any]) -> Any:
    state = state_of(instance, kind)
    if state is None:  # created before instrument(): nothing known of its config
        state = config.new_state(None, producer=kind is ProducerState)
        attach(instance, state)
    return state


def _calling(wrapped: Any) -> Callable[..., Any]:
    """``orig`` for a traced-call function: the wrapped (bound) method."""
    return lambda _client, *args, **kwargs: wrapped(*args, **kwargs)


def _init(producer: bool) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        config.init_client(instance, wrapped, args, kwargs, producer=producer)

    return wrapper


def _produce(signature: inspect.Signature) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = signature.bind(instance, *args, **kwargs)
        except TypeError:
            return wrapped(*args, **kwargs)  # let it raise its own error
        call = dict(bound.arguments)
        call.pop("self", None)
        state = _state(instance, ProducerState)
        return _producer.produce(instance, state, (), call, _calling(wrapped))

    return wrapper


def _consumer_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(instance, _state(instance, ConsumerState), args, kwargs, _calling(wrapped))

    return wrapper


def patch(done: Patched, owner: Any, name: str, wrapper: Any) -> None:
    """wrapt-wrap ``owner.name``, remembering exactly what ``owner`` itself held."""
    done.append((owner, name, owner.__dict__.get(name, _ABSENT)))
    wrapt.wrap_function_wrapper(owner, name, wrapper)


def unwrap(done: Patched) -> None:
    """Undo ``wrap()`` (also the aio wrappers): restore what each class held."""
    for owner, name, original in reversed(done):
        if original is _ABSENT:
            if name in owner.__dict__:
                delattr(owner, name)
        else:
            setattr(owner, name, original)


def wrap() -> Patched:
    """Wrap the Python client classes; returns what to unwrap."""
    import confluent_kafka

    done: Patched = []
    sp = getattr(confluent_kafka, "SerializingProducer", None)
    dc = getattr(confluent_kafka, "DeserializingConsumer", None)
    if sp is not None:
        signature = inspect.signature(sp.produce)
        for name, wrapper in (("__init__", _init(True)), ("produce", _produce(signature))):
            patch(done, sp, name, wrapper)
    if dc is not None:
        for name, wrapper in (
            ("__init__", _init(False)),
            ("poll", _consumer_method(_consumer.poll)),
            ("commit", _consumer_method(_consumer.commit)),
            ("close", _consumer_method(_consumer.close)),
        ):
            patch(done, dc, name, wrapper)
    return done
