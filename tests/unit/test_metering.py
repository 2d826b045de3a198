"""When per-message metrics are recorded: only while a metric reader can receive them."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from opentelemetry_instrumentation_kafkaplus.core.options import Options
from opentelemetry_instrumentation_kafkaplus.core.telemetry import Telemetry


def test_an_sdk_meter_provider_without_readers_is_not_metered() -> None:
    tel = Telemetry.build(TracerProvider(), MeterProvider(), Options())
    assert tel.tracing() and not tel.metering()
    assert not tel.metering()  # and stays so while no reader comes


def test_a_meter_provider_with_a_reader_is_metered() -> None:
    tel = Telemetry.build(TracerProvider(), MeterProvider([InMemoryMetricReader()]), Options())
    assert tel.metering() and tel.metering()


def test_metering_follows_readers_added_and_removed_later() -> None:
    mp = MeterProvider()
    if not hasattr(mp, "add_metric_reader"):
        pytest.skip("this SDK cannot add readers to a provider")
    tel = Telemetry.build(TracerProvider(), mp, Options())
    assert not tel.metering()
    reader = InMemoryMetricReader()
    mp.add_metric_reader(reader)
    assert tel.metering()
    mp.remove_metric_reader(reader)
    assert not tel.metering()
