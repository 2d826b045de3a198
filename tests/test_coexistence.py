"""With opentelemetry-instrumentation-confluent-kafka installed too, exactly one plugin traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.instrumentation.confluent_kafka")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    bootstrap, topic = sys.argv[1], sys.argv[2]
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, b"x", partition=0)
    p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "coexist"})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    msg = None
    for _ in range(40):
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    c.close()
    print("HEADERS " + json.dumps([k for k, _ in msg.headers()]))
    """
)


def _run(bootstrap: str, topic: str, **env: str) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    # opentelemetry-instrumentation-logging, when installed, puts the SDK's handler on the
    # root logger, and warnings then go to the logs pipeline (off here) instead of stderr.
    disabled = ",".join(filter(None, [env.pop("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", ""),
                                      "logging"]))  # fmt: skip
    return subprocess.run(
        [exe, sys.executable, "-c", SCRIPT, bootstrap, topic],
        env={**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none",
             "OTEL_LOGS_EXPORTER": "none", "OTEL_SERVICE_NAME": "coexist", **env,
             "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _span_names(stdout: str) -> list[str]:
    names = []
    decoder = json.JSONDecoder()
    text = stdout[: stdout.find("HEADERS")] + stdout[stdout.find("\n", stdout.find("HEADERS")) :]
    i = 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return names
        obj, end = decoder.raw_decode(text, i)
        names.append(obj["name"])
        i = end


def test_both_installed_only_kafkaplus_traces(mock_cluster):
    from conftest import unique

    topic = unique()
    out = _run(mock_cluster, topic)
    assert out.returncode == 0, out.stderr
    headers = json.loads(out.stdout.split("HEADERS ", 1)[1].splitlines()[0])
    assert headers.count("traceparent") == 1
    names = [n for n in _span_names(out.stdout) if not n.startswith("commit")]  # auto-commit
    assert sorted(names) == [f"process {topic}", f"send {topic}"]
    assert out.stderr.count("opentelemetry-instrumentation-confluent-kafka is installed too") == 1
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=kafkaplus" in out.stderr
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=confluent_kafka" in out.stderr


def test_disabling_kafkaplus_leaves_the_other_plugin(mock_cluster):
    from conftest import unique

    topic = unique()
    out = _run(mock_cluster, topic, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="kafkaplus")
    assert out.returncode == 0, out.stderr
    names = _span_names(out.stdout)
    assert f"{topic} send" in names  # the other plugin's span name
    assert f"send {topic}" not in names
