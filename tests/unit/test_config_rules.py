"""The configuration rules (core/options.py): keyword beats env, bad keyword raises,
bad variable warns, OpenTelemetry's boolean rule, contrib-style hooks."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from opentelemetry_instrumentation_kafkaplus.core import options

P = "OTEL_PYTHON_KAFKAPLUS_"


def test_defaults() -> None:
    o = options.resolve({}, {})
    assert (o.consumer_context_mode, o.capture_key, o.capture_body_size, o.metrics) == (
        "parent", True, False, "semconv"
    )  # fmt: skip
    assert (o.receive_spans, o.compat_names, o.metrics_partition, o.semconv_dup) == (
        False, False, False, False
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "value", "warned"),
    [("true", True, False), ("TRUE", True, False), (" True ", True, False), ("false", False, False),
     ("False", False, False), ("1", False, True), ("yes", False, True), ("on", False, True),
     ("maybe", False, True)],
)  # fmt: skip
def test_boolean_variables_follow_the_opentelemetry_rule(
    raw: str, value: bool, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        o = options.resolve({}, {P + "RECEIVE_SPANS": raw})
    assert o.receive_spans is value
    assert (P + "RECEIVE_SPANS" in caplog.text) is warned


def test_keyword_beats_variable_and_bad_variable_keeps_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {P + "METRICS": "none", P + "STATISTICS_INTERVAL_MS": "-5"}
    with caplog.at_level(logging.WARNING):
        o = options.resolve({"metrics": "all"}, env)
    assert o.metrics == "all"
    assert o.statistics_interval_ms == 0 and P + "STATISTICS_INTERVAL_MS" in caplog.text


@pytest.mark.parametrize(
    "kwargs",
    [{"capture_key": "yes"}, {"metrics": "some"}, {"consumer_context_mode": "child"},
     {"statistics_interval_ms": 86_400_001}, {"exclude_topics": ["("]}],
)  # fmt: skip
def test_bad_keywords_raise_at_instrument(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="kafkaplus option"):
        options.resolve(kwargs, {})


def test_unknown_keyword_names_the_known_ones() -> None:
    with pytest.raises(TypeError, match=r"known: .*capture_key"):
        options.resolve({"capture_keys": True}, {})


def test_contrib_style_hooks_are_adapted() -> None:
    seen: list[Any] = []

    def produce_hook(span: Any, args: Any, kwargs: Any) -> None:  # contrib's form
        seen.append(("produce", span, args, kwargs))

    def consume_hook(span: Any, record: Any, args: Any, kwargs: Any) -> None:
        seen.append(("consume", span, record))

    o = options.resolve({"produce_hook": produce_hook, "consume_hook": consume_hook}, {})
    assert o.produce_hook is not None and o.consume_hook is not None
    o.produce_hook("span", topic="t", key=b"k", value=b"v", headers=None)
    o.consume_hook("span", "message")
    assert seen == [
        ("produce", "span", ("t",), {"value": b"v", "key": b"k", "headers": None}),
        ("consume", "span", "message"),
    ]

    def native(span: Any, *, topic: str, key: Any, value: Any, headers: Any) -> None:
        pass

    assert options.resolve({"produce_hook": native}, {}).produce_hook is native


def test_hooks_by_name_from_the_environment() -> None:
    o = options.resolve({}, {P + "CONSUME_HOOK": "os.path:join"})
    assert o.consume_hook is not None
    with pytest.raises(ValueError, match="module:function"):
        options.resolve({"consume_hook": "no-colon"}, {})


def test_semconv_opt_in_is_parsed_here() -> None:
    assert options.resolve({}, {"OTEL_SEMCONV_STABILITY_OPT_IN": "http, messaging/dup"}).semconv_dup
    assert not options.resolve({}, {"OTEL_SEMCONV_STABILITY_OPT_IN": "messaging"}).semconv_dup


@pytest.mark.parametrize(
    ("metric_set", "instruments"),
    [("semconv", {"durations", "counters"}), ("all", {"durations", "counters", "ages"}),
     ("counts", {"counters"}), ("none", set())],
)  # fmt: skip
def test_each_metric_set_makes_only_its_instruments(metric_set: str, instruments: set[str]) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from opentelemetry_instrumentation_kafkaplus.core.instruments import Metrics

    o = options.resolve({}, {P + "METRICS": metric_set.upper()})
    assert o.metrics == metric_set
    m = Metrics(MeterProvider().get_meter("unit"), o.metrics)
    made = set()
    if m.operation_duration is not None and m.process_duration is not None:
        made.add("durations")
    if m.sent is not None and m.consumed is not None:
        made.add("counters")
    if m.message_age is not None and m.origin_age is not None:
        made.add("ages")
    assert made == instruments
    assert (m.durations, m.per_message) == ("durations" in made, "counters" in made)
    assert m.undelivered is not None and m.skipped is not None  # data loss: in every set
