"""Call arguments, normalised once: the request objects clients build and operations read.

Every traced method binds its arguments with the parameter names the C code
declares, so an operation reads ``call.named["topic"]`` whatever form the app
used. A call that does not bind (too many positional arguments, a name given
twice, an unknown keyword) is not traced: the client calls the original with
the app's own arguments, so confluent-kafka raises exactly the error it raises
without instrumentation. A ``Call`` keeps that original form too, for the
same fallback when the instrumentation itself fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ``Producer.produce`` (Producer.c kwlist); a 5th positional argument is ``callback``.
PRODUCE = ("topic", "value", "key", "partition", "callback", "on_delivery", "timestamp", "headers")
#: ``Producer.produce_batch``.
PRODUCE_BATCH = ("topic", "messages", "partition", "callback", "on_delivery")
#: ``Consumer.commit`` and ``Consumer.store_offsets`` (store_offsets has no ``asynchronous``).
COMMIT = ("message", "offsets", "asynchronous")
#: ``Consumer.subscribe``.
SUBSCRIBE = ("topics", "on_assign", "on_revoke", "on_lost")
#: ``Producer.send_offsets_to_transaction``.
SEND_OFFSETS = ("positions", "group_metadata", "timeout")
#: ``AIOProducer.produce``: what its positional form means.
AIO_PRODUCE = ("topic", "value", "key")


class Call:
    """One traced call: its arguments by name (delivery callbacks taken out) and as given."""

    __slots__ = ("args", "callback", "ctx", "kwargs", "named")

    def __init__(self, named: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 callback: Any = None, ctx: Any = None) -> None:  # fmt: skip
        self.named = named
        self.args = args
        self.kwargs = kwargs
        #: The delivery callback the app chose for this call (None: the client's default).
        self.callback = callback
        #: The OpenTelemetry context current when the app made the call.
        self.ctx = ctx

    def original(self, client: Any, orig: Any) -> Any:
        """Call the original method exactly as the app called ours."""
        return orig(client, *self.args, **self.kwargs)


def bind(
    names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """The call's arguments by name, or None when confluent-kafka would reject the form."""
    # Written for speed (it runs for every produced message): the keywords are
    # checked in C, as a set against the names left after the positional ones;
    # dict(zip()) costs more than the loop below.
    n = len(args)
    try:
        allowed = _KEYWORDS[names][n]
    except KeyError:
        if n > len(names):
            return None
        allowed = _keywords(names)[n]
    except IndexError:  # more than the C code takes
        return None
    if kwargs:
        if not kwargs.keys() <= allowed:
            return None  # a name given twice, or one the C code does not know
        call = kwargs.copy()
    else:
        call = {}
    i = 0
    for value in args:
        call[names[i]] = value
        i += 1  # noqa: SIM113 (enumerate() costs 40 % more here)
    return call


#: names -> for each count of positional arguments, the names a keyword may still take.
_KEYWORDS: dict[tuple[str, ...], tuple[frozenset[str], ...]] = {}


def _keywords(names: tuple[str, ...]) -> tuple[frozenset[str], ...]:
    keywords = _KEYWORDS[names] = tuple(frozenset(names[i:]) for i in range(len(names) + 1))
    return keywords


def chosen_callback(call: Mapping[str, Any]) -> Any:
    """The per-call delivery callback that applies; ``call`` is left as it is.

    As in confluent-kafka's C code, ``callback`` (even given as None) wins over
    ``on_delivery``; None means the client's default ``on_delivery``.
    """
    return call["callback"] if "callback" in call else call.get("on_delivery")


def pop_callback(call: dict[str, Any]) -> Any:
    """Remove the per-call delivery callbacks from ``call``; return the one that applies."""
    callback = chosen_callback(call)
    call.pop("callback", None)
    call.pop("on_delivery", None)
    return callback
