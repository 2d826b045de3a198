"""What the service-shape tests check of every journey: one trace, the right parents, no doubles.

A journey: a request span -> ``send A`` -> ``process A`` -> ``send B`` -> ``process B``,
one per message key.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

KEY = "messaging.kafka.message.key"


@dataclass
class Journey:
    key: str
    request: Any
    send_a: Any
    process_a: Any
    send_b: Any
    process_b: Any


def by_key(spans: list[Any], name: str) -> dict[str, Any]:
    """The spans of that name, one per message key (a second one for a key fails)."""
    out: dict[str, Any] = {}
    for s in spans:
        if s.name == name:
            key = s.attributes[KEY]
            assert key not in out, f"two {name!r} spans for message {key}"
            out[key] = s
    return out


def journeys(spans: list[Any], a: str, b: str, keys: list[str]) -> list[Journey]:
    """Every message's journey, each asserted to be one trace with the right parents."""
    requests = {s.attributes["key"]: s for s in spans if s.name == "request"}
    send_a, process_a = by_key(spans, f"send {a}"), by_key(spans, f"process {a}")
    send_b, process_b = by_key(spans, f"send {b}"), by_key(spans, f"process {b}")
    out = []
    for key in keys:
        j = Journey(key, requests[key], send_a[key], process_a[key], send_b[key], process_b[key])
        chain = [j.request, j.send_a, j.process_a, j.send_b, j.process_b]
        assert {s.context.trace_id for s in chain} == {j.request.context.trace_id}, key
        for parent, child in itertools.pairwise(chain):
            assert child.parent is not None and child.parent.span_id == parent.context.span_id, (
                f"{key}: {child.name} is not a child of {parent.name}"
            )
        out.append(j)
    return out


def no_doubles(spans: list[Any], names: list[str], n: int) -> None:
    """Exactly ``n`` spans of each name: nothing emitted twice, nothing missing."""
    counts = Counter(s.name for s in spans)
    assert {name: counts[name] for name in names} == dict.fromkeys(names, n)


class CountingSampler(Sampler):
    """ALWAYS_ON, counting the spans the SDK was asked to make (0: kafkaplus asked for none)."""

    def __init__(self) -> None:
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        self.asked += 1
        return ALWAYS_ON.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "counting"
