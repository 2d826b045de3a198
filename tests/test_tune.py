"""``kafkaplus demo --tune``: two runs of the pipeline, compared from their telemetry.

Real services under opentelemetry-instrument against librdkafka's mock cluster.
Nothing here asserts a time: durations depend on the machine, ratios do not.
"""

from __future__ import annotations

import re

from kafkaplus_tools.demo import main as demo_main
from kafkaplus_tools.demo import tune
from kafkaplus_tools.demo.receiver import Point, Receiver, Span

NUMBER = r"\d+(?:\.\d+)?"


def _row(out: str, label: str) -> list[str]:
    """The cells of the table row whose label is ``label``."""
    for line in out.splitlines():
        if line.strip().startswith(label):
            cells = re.split(r"\s{2,}", line[len(label) + 2 :].strip())
            assert len(cells) == 2, line
            return cells
    raise AssertionError(f"no row {label!r} in:\n{out}")


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(NUMBER, cell)]


def test_tune_compares_both_settings_from_their_telemetry(mock_cluster, capsys):
    rc = demo_main(["--tune", "--bootstrap-servers", mock_cluster, "--messages", "400"])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err + out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "\x1b[" not in out  # no colour when not a TTY
    a, b = tune.SETTINGS
    assert _row(out, "linger.ms / batch.size") == [a.producer, b.producer]
    assert _row(out, "consumers call") == ["poll()", "consume(100)"]
    for label, count in (
        ("send span p50 / p99", 2),
        ("messages per batch avg / max", 2),
        ("queue time avg / p99", 2),
        ("requests to the broker", 1),
        ("throughput, first send to last ack", 1),
        ("enricher process spans", 1),
        ("messages per process span", 1),
        ("process span p50 / p99", 2),
        ("enricher consumer lag, max", 1),  # librdkafka's statistics, not n/a
    ):
        for cell in _row(out, label):
            assert len(_numbers(cell)) == count, (label, cell)
    (avg_a, max_a), (avg_b, max_b) = (
        _numbers(c) for c in _row(out, "messages per batch avg / max")
    )
    assert avg_a >= 1
    requests = [_numbers(c)[0] for c in _row(out, "requests to the broker")]
    # linger.ms fills batches. A loaded machine batches more even without it,
    # so only the direction is asserted, and strictly only when run A left
    # room: if every batch of both runs already held a partition's whole
    # burst, the two runs cannot differ.
    assert avg_b >= avg_a, out
    assert requests[1] <= requests[0], out
    saturated = avg_a == max_a == avg_b == max_b
    if not saturated:
        assert avg_b > avg_a, out
        assert requests[1] < requests[0], out
    # poll(): a process span per message; consume(100): one per batch.
    assert _numbers(_row(out, "messages per process span")[0]) == [1.0]
    assert _numbers(_row(out, "messages per process span")[1])[0] > 1


def _span(service: str, name: str, start_ms: float, end_ms: float, **attrs: object) -> Span:
    return Span(service, "t", "s", "", name, 0, int(start_ms * 1e6), int(end_ms * 1e6), attrs)


def test_measure_reads_spans_and_statistics():
    receiver = Receiver()
    receiver.close()
    topics = {"DEMO_TOPIC_RAW": "raw", "DEMO_TOPIC_ENRICHED": "enr"}
    receiver.spans.extend(_span("ingest", "send raw", i, i + 2 + i) for i in range(10))
    receiver.spans.append(_span("enricher", "process raw", 0, 40, **{
        "messaging.batch.message_count": 4}))  # fmt: skip
    receiver.spans.append(_span("sink", "process enr", 50, 60))
    stat = {"messaging.destination.name": "raw"}
    receiver.points.extend([
        Point("ingest", "kafkaplus.producer.batch.message.count", {**stat, "kafkaplus.stat": "avg"}, 3),
        Point("ingest", "kafkaplus.producer.batch.message.count", {**stat, "kafkaplus.stat": "avg"}, 5),
        Point("ingest", "kafkaplus.producer.batch.message.count", {**stat, "kafkaplus.stat": "max"}, 9),
        Point("ingest", "kafkaplus.producer.queue.time", {"kafkaplus.stat": "p99"}, 0.004),
        Point("ingest", "kafkaplus.broker.requests", {"server.port": 1}, 12),
        Point("sink", "kafkaplus.message.age", {}, 0.5, 2),
    ])  # fmt: skip
    m = tune.measure(tune.SETTINGS[1], receiver, topics, wall_s=1.0)
    assert m.sends == 10
    assert m.send_p50_s is not None and abs(m.send_p50_s - 0.006) < 1e-9
    assert m.batch_messages_avg == 5  # the latest snapshot wins
    assert m.batch_messages_max == 9
    assert m.queue_p99_s == 0.004 and m.queue_avg_s is None
    assert m.requests == 12
    assert m.messages_per_process == 4
    assert m.sink_age_mean_s == 0.25
    assert m.pipeline_s is not None and abs(m.pipeline_s - 0.060) < 1e-9
    table = tune.render([m, m])
    assert "n/a" in table  # the missing queue average
    assert all(len(line) <= 80 for line in table.splitlines())


def test_percentile_is_nearest_rank():
    assert tune.percentile([], 0.5) is None
    assert tune.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert tune.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_tune_fails_clearly_when_the_broker_is_unreachable(capsys):
    from kafkaplus_tools.brokers import free_port

    rc = demo_main(["--tune", "--bootstrap-servers", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("kafkaplus demo --tune: ") and "not reachable" in err
