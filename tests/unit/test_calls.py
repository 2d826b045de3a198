"""Call arguments bound by the names confluent-kafka's C code declares."""

from __future__ import annotations

from opentelemetry_instrumentation_kafkaplus.core.calls import PRODUCE, bind, pop_callback


def cb(err: object, msg: object) -> None:
    pass


def test_positional_and_keyword_arguments_get_their_c_names() -> None:
    assert bind(PRODUCE, ("t", b"v", b"k"), {"on_delivery": cb, "headers": None}) == {
        "topic": "t", "value": b"v", "key": b"k", "on_delivery": cb, "headers": None,
    }  # fmt: skip
    assert bind(PRODUCE, (), {"topic": "t"}) == {"topic": "t"}
    assert bind(PRODUCE, ("t", b"v", None, 3, cb), {}) == {
        "topic": "t", "value": b"v", "key": None, "partition": 3, "callback": cb,
    }  # fmt: skip


def test_forms_confluent_kafka_rejects_are_not_bound() -> None:
    assert bind(PRODUCE, ("t",), {"topic": "u"}) is None  # a name given twice
    assert bind(PRODUCE, ("t",), {"valeu": b"v"}) is None  # an unknown keyword
    assert bind(PRODUCE, tuple(range(9)), {}) is None  # more than the C code takes


def test_bind_leaves_the_callers_dict_alone() -> None:
    kwargs = {"on_delivery": cb}
    named = bind(PRODUCE, ("t",), kwargs)
    assert named is not None and named is not kwargs
    assert pop_callback(named) is cb and kwargs == {"on_delivery": cb}


def test_callback_wins_over_on_delivery_even_as_none() -> None:
    named = {"topic": "t", "callback": None, "on_delivery": cb}
    assert pop_callback(named) is None and named == {"topic": "t"}


def _reference(
    names: tuple[str, ...], args: tuple[object, ...], kwargs: dict[str, object]
) -> dict[str, object] | None:
    """What Python's own binding of a function with these parameters gives."""
    if len(args) > len(names):
        return None
    given = dict(zip(names, args, strict=False))
    if any(k not in names or k in given for k in kwargs):
        return None
    return {**kwargs, **given}


def test_bind_matches_python_binding_for_every_count_of_positional_arguments() -> None:
    names = ("a", "b", "c", "d", "e")  # a tuple bind has not seen yet
    assert bind(names, tuple(range(6)), {}) is None  # too many, before anything is cached
    for n in range(len(names) + 2):
        args = tuple(range(n))
        for kwargs in ({}, {"e": "x"}, {"a": "x"}, {"d": 1, "e": 2}, {"zz": 1}):
            assert bind(names, args, kwargs) == _reference(names, args, kwargs), (n, kwargs)
