"""The one way a client carries kafkaplus's per-client state, and the shape of traced classes.

Every traced client, whatever hooks it (a traced subclass, a proxy, a wrapt
wrapper, the aio glue), carries its state in the attribute ``_kafkaplus``:
the instance ``__dict__`` on the traced subclasses and Python classes, a
property on proxies. ``state_of`` returns it only when it is really ours, so
a test double or a subclass that skipped ``__init__`` is simply not traced.

The traced classes replace ``confluent_kafka.Producer``/``Consumer`` under
their names; ``TracedClass`` makes ``isinstance``/``issubclass`` against them
answer as against the original classes (the serializing clients derive from
the originals), and ``document`` keeps the originals' documentation.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Any, TypeVar

from ..core.errors import report
from ..core.semconv import MESSAGING_KAFKA_CLUSTER_ID

ATTR = "_kafkaplus"

T = TypeVar("T")

#: While an aio client's ``__init__`` runs: the states of the traced clients it
#: creates, so the aio glue can adopt its inner client without reading its
#: private attributes (and adopts nothing when the inner client is a double).
_CREATED: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "kafkaplus_created", default=None
)


def attach(client: Any, state: Any) -> None:
    """Give ``client`` its state."""
    setattr(client, ATTR, state)
    created = _CREATED.get()
    if created is not None:
        created.append(state)


def state_of(client: Any, kind: type[T]) -> T | None:
    """The client's state when it is one of ours of this kind, else None."""
    try:
        state = getattr(client, ATTR, None)
    except Exception:  # a proxy or double whose attribute access itself fails
        return None
    return state if type(state) is kind else None


def adopting(wrapped: Any, args: Any, kwargs: Any, kind: type[T]) -> tuple[Any, T | None]:
    """Run a constructor; (its result, the one traced client state of ``kind`` it made).

    For glue around clients that create a traced client inside their own
    ``__init__`` (aio clients, frameworks): nothing is read from their private
    attributes, and a test double inside yields no state.
    """
    with Adoption() as adoption:
        result = wrapped(*args, **kwargs)
    return result, adoption.only(kind)


class Adoption:
    """Collects the states of traced clients created within a ``with`` block."""

    __slots__ = ("_token", "states")

    def __enter__(self) -> Adoption:
        self.states: list[Any] = []
        self._token = _CREATED.set(self.states)
        return self

    def __exit__(self, *exc: object) -> None:
        _CREATED.reset(self._token)

    def only(self, kind: type[T]) -> T | None:
        """The one state of this kind created in the block (None if not exactly one)."""
        found = [s for s in self.states if type(s) is kind]
        return found[0] if len(found) == 1 else None


class TracedClass(type):
    """Metaclass of the traced client classes.

    ``isinstance(x, confluent_kafka.Producer)`` must stay True for a
    SerializingProducer (which derives from the original C class) and for a
    subclass the app defined before ``instrument()``, as it is without
    kafkaplus: a traced class answers for its original. Subclasses the app
    derives from a traced class keep the ordinary checks.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        original = cls.__dict__.get("_kafkaplus_original")
        if original is not None:
            return isinstance(instance, original)
        return type.__instancecheck__(cls, instance)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        original = cls.__dict__.get("_kafkaplus_original")
        if original is not None:
            return issubclass(subclass, original)
        return type.__subclasscheck__(cls, subclass)


def document(traced: type, original: type) -> None:
    """The original class's and methods' documentation on the traced class."""
    traced.__doc__ = original.__doc__
    for name, value in list(vars(traced).items()):
        if callable(value) and not name.startswith("_"):
            doc = getattr(getattr(original, name, None), "__doc__", None)
            if doc:
                with contextlib.suppress(AttributeError, TypeError):
                    value.__doc__ = doc


#: How often a client looks again for its cluster id while librdkafka has none.
CLUSTER_ID_RETRY_S = 1.0
#: ``cluster_retry`` once the cluster id is known, or never will be: callers on a
#: hot path compare with it before calling ``learn_cluster_id``.
CLUSTER_KNOWN = float("inf")
_monotonic = time.monotonic


def learn_cluster_id(client: Any, state: Any, cluster_id: Any) -> None:
    """Put ``messaging.kafka.cluster.id`` on the client's spans once librdkafka knows it.

    ``cluster_id(client, 0)`` reads librdkafka's cached metadata and never sends
    a request (a metadata call from inside an instrumentation is what others
    found can deadlock librdkafka); it raises while nothing is known yet, which
    costs enough that it is tried at most once a second per client. Once the id
    is known (or never will be) ``cluster_retry`` is infinite and this returns
    after one comparison.
    """
    retry = state.cluster_retry
    if retry == CLUSTER_KNOWN or _monotonic() < retry:
        return
    if cluster_id is None:  # this confluent-kafka cannot tell
        state.cluster_retry = CLUSTER_KNOWN
        return
    state.cluster_retry = _monotonic() + CLUSTER_ID_RETRY_S
    try:
        found = cluster_id(client, 0)
    except Exception:  # not known yet (KafkaException _TIMED_OUT), or a double
        return
    if isinstance(found, str) and found:
        state.base_attrs[MESSAGING_KAFKA_CLUSTER_ID] = found
        state.topics = {}  # templates rebuilt with it
        state.cluster_retry = CLUSTER_KNOWN


def traced_method(fn: Any, orig: Any) -> Any:
    """A traced class's method: ``fn(self, state, args, kwargs)``, or ``orig`` without state.

    A subclass whose ``__init__`` never ran has no state: the client's own
    method then raises the client's own error for an uninitialised client.
    """

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            state = self._kafkaplus
        except AttributeError:
            return orig(self, *args, **kwargs)
        return fn(self, state, args, kwargs)

    method.__name__ = method.__qualname__ = orig.__name__
    method.__doc__ = orig.__doc__
    return method


class AppCallback:
    """A callback kafkaplus installs: its own bookkeeping first (failures reported), then the
    app's callback, with the same arguments, its result and its exceptions."""

    __slots__ = ("ours", "user_cb", "what")

    def __init__(self, ours: Any, user_cb: Any, what: str) -> None:
        self.ours = ours
        self.user_cb = user_cb
        self.what = what

    def __call__(self, *args: Any) -> Any:
        try:
            self.ours(*args)
        except Exception as exc:
            report(self.what, exc)
        if self.user_cb is not None:
            return self.user_cb(*args)
        return None
