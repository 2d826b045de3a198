"""``kafkaplus audit`` shows its progress on a terminal, and only there."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path


def _export(path: Path, spans: int) -> None:
    """An OTLP JSON-lines export of Kafka send spans, 1,000 per line."""
    with path.open("w") as out:
        for line in range(spans // 1000):
            batch = [{
                "traceId": f"{line:016x}{i:016x}", "spanId": f"{i:016x}", "name": "send t",
                "kind": 3, "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
                "endTimeUnixNano": str(1_700_000_000_000_000_000 + i + 1000),
                "attributes": [
                    {"key": "messaging.system", "value": {"stringValue": "kafka"}},
                    {"key": "messaging.operation.type", "value": {"stringValue": "send"}},
                    {"key": "messaging.destination.name", "value": {"stringValue": "t"}},
                    {"key": "messaging.destination.partition.id", "value": {"stringValue": "0"}},
                    {"key": "messaging.kafka.offset", "value": {"intValue": str(line * 1000 + i)}},
                ],
                "status": {},
            } for i in range(1000)]  # fmt: skip
            doc = {
                "resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": batch}]}]
            }
            out.write(json.dumps(doc) + "\n")


def _audit(path: Path, on_terminal: bool) -> str:
    command = [sys.executable, "-m", "kafkaplus_tools.cli", "audit", str(path)]
    if not on_terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(300) == 0
    os.close(leader)
    return seen.decode()


def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    export = tmp_path / "spans.jsonl"
    _export(export, 60_000)
    shown = _audit(export, on_terminal=True)
    assert f"reading {export}:" in shown and "Kafka spans" in shown
    assert _audit(export, on_terminal=False) == ""
