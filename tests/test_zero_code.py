"""The zero-code path: services with no OpenTelemetry code, run under opentelemetry-instrument.

The demo's three services (ingest -> enricher -> sink) run as separate processes
against tansu and export OTLP/HTTP to a receiver started by the test.
"""

from __future__ import annotations

import re

from kafkaplus_tools.demo import (
    main as demo_main,
)
from kafkaplus_tools.demo import (
    run_pipeline,
    wait_for_spans,
)
from kafkaplus_tools.demo.receiver import Receiver


def _by_trace(spans):
    out = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out


def test_pipeline_under_opentelemetry_instrument_is_one_trace_per_message(tansu):
    receiver = Receiver()
    try:
        topics = run_pipeline(tansu, receiver, messages=3, timeout=40, unique_topics=True)
        wait_for_spans(receiver, 12)
    finally:
        receiver.close()
    raw, enriched = topics["DEMO_TOPIC_RAW"], topics["DEMO_TOPIC_ENRICHED"]
    # Commits (the services' own and librdkafka's automatic ones) are settle
    # spans of their own; the messages' traces are the rest.
    traces = _by_trace([s for s in receiver.spans if s.name.split(" ")[0] != "commit"])
    assert len(traces) == 3
    commits = [s for s in receiver.spans if s.name.split(" ")[0] == "commit"]
    assert {s.service for s in commits} == {"enricher", "sink"}  # the services' commits
    for spans in traces.values():
        by_name = {(s.service, s.name): s for s in spans if s.name.split(" ")[0] != "commit"}
        assert set(by_name) == {
            ("ingest", f"send {raw}"),
            ("enricher", f"process {raw}"),
            ("enricher", f"send {enriched}"),
            ("sink", f"process {enriched}"),
        }
        send_raw = by_name["ingest", f"send {raw}"]
        proc_raw = by_name["enricher", f"process {raw}"]
        send_enr = by_name["enricher", f"send {enriched}"]
        proc_enr = by_name["sink", f"process {enriched}"]
        assert proc_raw.parent_id == send_raw.span_id
        assert send_enr.parent_id == proc_raw.span_id
        assert proc_enr.parent_id == send_enr.span_id
        for producer_span, consumer_span in ((send_raw, proc_raw), (send_enr, proc_enr)):
            for key in ("messaging.destination.partition.id", "messaging.kafka.offset"):
                assert producer_span.attributes[key] == consumer_span.attributes[key]
        assert proc_enr.attributes["messaging.consumer.group.name"] == "sink"
        assert send_raw.attributes["messaging.client.id"] == "ingest"


def test_demo_relays_to_the_users_otlp_endpoint(mock_cluster, monkeypatch, capsys):
    backend = Receiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", backend.endpoint)
        rc = demo_main(["--bootstrap-servers", mock_cluster, "--messages", "2"])
        out = capsys.readouterr().out
    finally:
        backend.close()
    assert rc == 0, out
    assert "3 services" in out and f"also sent to {backend.endpoint}: ok" in out
    services = {s.service for s in backend.spans}
    assert services == {"ingest", "enricher", "sink"}
    assert len([s for s in backend.spans if s.name.split(" ")[0] != "commit"]) == 8
    assert [line for line in out.splitlines() if len(line) > 80] == [], out


def test_demo_fails_clearly_when_the_broker_is_unreachable(capsys):
    from kafkaplus_tools.brokers import free_port

    rc = demo_main(["--bootstrap-servers", f"127.0.0.1:{free_port()}", "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "not reachable" in err or "could not create topic" in err


def test_demo_prints_a_waterfall(capsys):
    assert demo_main(["--messages", "2"]) == 0
    out = capsys.readouterr().out
    assert "ingest    send orders.raw" in out
    assert "sink" in out and "process orders.enriched" in out
    assert "\x1b[" not in out  # no colour when not a TTY
    # Consumer lag, from librdkafka's statistics, is reported (a number, not n/a).
    (lag,) = [line for line in out.splitlines() if "max consumer lag" in line]
    assert re.search(r"max consumer lag\s+\d+ messages", lag), lag
    (age,) = [line for line in out.splitlines() if "mean message age at sink" in line]
    assert "n/a" not in age, age


def test_waterfall_rows_fit_80_columns_with_a_failed_span_at_the_end():
    from kafkaplus_tools.demo.receiver import Span
    from kafkaplus_tools.demo.waterfall import render

    attrs = {"messaging.destination.partition.id": "3", "messaging.kafka.offset": 12345}
    spans = [
        Span("ingest", "t", "a", "", "send orders.raw.0123456789", 4, 0, 10**9, attrs),
        Span("enricher", "t", "b", "a", "process orders.raw.0123456789", 5, 10**8, 2 * 10**9, attrs),
        # A failed span whose bar reaches the right edge: its marker must not widen the row.
        Span("enricher", "t", "c", "", "commit", 1, 10**9, 2 * 10**9, {}, status_code=2),
    ]
    rows = render(spans, colour=False).splitlines()
    assert [r for r in rows if len(r) > 80] == []
    failed = next(r for r in rows if "commit" in r)
    assert "!" in failed and failed.count("\u2588") >= 1
