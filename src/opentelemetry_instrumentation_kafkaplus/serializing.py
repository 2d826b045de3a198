"""SerializingProducer and DeserializingConsumer: Python subclasses of the C clients.

Their base class is the original C type, fixed when confluent-kafka defined
them, so substituting our subclasses does not reach them. Their methods are
Python and can be wrapped: wrapt wraps ``__init__`` (to keep the config fields
we need), ``produce``/``poll``/``close``/``commit``, and unwraps them on
``uninstrument()``. The inner ``super().produce()`` goes straight to the C
method, so there is exactly one span per message; the key attribute is the
key the app passed (when a str), never a second run of the serializer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import wrapt

from . import clientconfig
from ._errors import report
from .consumer import ConsumerState, close, commit, poll
from .producer import ProducerState, produce

_STATE = "_kafkaplus"


def _state(instance: Any, factory: Callable[[Any], Any]) -> Any:
    state = instance.__dict__.get(_STATE)
    if state is None:  # created before instrument(): nothing known of its config
        state = instance.__dict__[_STATE] = factory(None)
    return state


def _calling(wrapped: Any) -> Callable[..., Any]:
    return lambda _client, *args, **kwargs: wrapped(*args, **kwargs)


def _init(producer: bool) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        args, kwargs, conf, _stats = clientconfig.prepare(args, kwargs, producer=producer)
        result = wrapped(*args, **kwargs)
        try:
            instance.__dict__[_STATE] = (ProducerState if producer else ConsumerState)(conf)
        except Exception as exc:
            report("client setup", exc)
        return result

    return wrapper


def _make_produce(signature: inspect.Signature) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = signature.bind(instance, *args, **kwargs)
        except TypeError:
            return wrapped(*args, **kwargs)  # let it raise its own error
        call = dict(bound.arguments)
        call.pop("self", None)
        return produce(instance, _state(instance, ProducerState), (), call, _calling(wrapped))

    return wrapper


def _consumer_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(instance, _state(instance, ConsumerState), args, kwargs, _calling(wrapped))

    return wrapper


_ABSENT = object()


def patch(done: list[tuple[Any, str, Any]], owner: Any, name: str, wrapper: Any) -> None:
    """wrapt-wrap ``owner.name``, remembering exactly what ``owner`` itself held."""
    done.append((owner, name, owner.__dict__.get(name, _ABSENT)))
    wrapt.wrap_function_wrapper(owner, name, wrapper)


def wrap() -> list[tuple[Any, str, Any]]:
    """Wrap the Python client classes; returns what to unwrap."""
    import confluent_kafka

    done: list[tuple[Any, str, Any]] = []
    sp = getattr(confluent_kafka, "SerializingProducer", None)
    dc = getattr(confluent_kafka, "DeserializingConsumer", None)
    if sp is not None:
        sig = inspect.signature(sp.produce)
        for name, wrapper in (("__init__", _init(True)), ("produce", _make_produce(sig))):
            patch(done, sp, name, wrapper)
    if dc is not None:
        for name, wrapper in (
            ("__init__", _init(False)),
            ("poll", _consumer_method(poll)),
            ("commit", _consumer_method(commit)),
            ("close", _consumer_method(close)),
        ):
            patch(done, dc, name, wrapper)
    return done


def unwrap(done: list[tuple[Any, str, Any]]) -> None:
    """Undo ``wrap()`` (also used for the aio wrappers): restore what each class held."""
    for owner, name, original in reversed(done):
        if original is _ABSENT:
            if name in owner.__dict__:
                delattr(owner, name)
        else:
            setattr(owner, name, original)
