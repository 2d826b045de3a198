"""The in-process message counter: exact sums, whatever dict carries the attributes."""

from __future__ import annotations

import threading

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from opentelemetry_instrumentation_kafkaplus.core.instruments import Tally


def _points(reader: InMemoryMetricReader) -> dict[tuple[tuple[str, object], ...], int]:
    data = reader.get_metrics_data()
    return {
        tuple(sorted(p.attributes.items())): p.value
        for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        for p in m.data.data_points
    }  # fmt: skip


def test_sums_by_attribute_set_across_collections_and_threads() -> None:
    reader = InMemoryMetricReader()
    tally = Tally(MeterProvider(metric_readers=[reader]).get_meter("t"), "n", "{message}", "")
    a = {"topic": "a"}
    b = {"topic": "b"}
    for _ in range(5):
        tally.add(1, a)
    tally.add(1, {"topic": "a"})  # equal items, another dict: the same series
    tally.add(3, b)
    assert _points(reader) == {(("topic", "a"),): 6, (("topic", "b"),): 3}
    assert _points(reader) == {(("topic", "a"),): 6, (("topic", "b"),): 3}  # a read adds nothing

    def work() -> None:
        for _ in range(10_000):
            tally.add(1, a)
            tally.add(1, {"topic": "b"})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _points(reader) == {(("topic", "a"),): 40_006, (("topic", "b"),): 40_003}


def test_dicts_made_per_call_do_not_grow_the_identity_cache_without_bound() -> None:
    reader = InMemoryMetricReader()
    tally = Tally(MeterProvider(metric_readers=[reader]).get_meter("t"), "n", "{message}", "")
    for i in range(1_000):
        tally.add(1, {"topic": "a", "partition": str(i % 3)})
    assert sum(_points(reader).values()) == 1_000
    assert len(tally._by_id) <= 256
