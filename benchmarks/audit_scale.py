#!/usr/bin/env python3
"""How the two audits scale: the file audit vs the ClickHouse query, on the same spans.

For each size (default 10^4, 10^5 and 10^6 messages) this generates one
synthetic fleet's spans, writes them twice, as the Collector's file exporter
would (OTLP JSON lines) and as its clickhouseexporter would (rows of the
``otel_traces`` table, converted by the tests' ``otel_traces_rows``), loads the
rows into an on-disk chDB database with the exporter's DDL, and then, each in
a fresh subprocess:

* ``kafkaplus audit FILE`` (``audit([file])``): wall time and peak RSS;
* ``kafkaplus audit --clickhouse`` (the packaged query through
  clickhouse-connect on chDB): wall time and peak RSS.

The two reports must be equal (all but the line naming the source), or the
run stops: the benchmark doubles as the equality check at sizes the tests do
not reach.

The workload per message: a send span with an HTTP server span above it
(filler that the query must skip), a process span of group ``billing``
(0.1 % skipped), batch ``poll`` spans of group ``shipping`` with one link per
message (10 per batch, about 0.1 % skipped), 0.1 % failed and 0.02 %
unacknowledged sends, and one topic in four that nobody consumes: about 1.8
Kafka spans per message, 2.8 spans with the filler.

Needs kafkaplus-tools with the ``clickhouse`` extra and chDB
(``pip install -e tools[clickhouse] chdb``). Usage::

    python benchmarks/audit_scale.py                      # 10^4, 10^5, 10^6
    python benchmarks/audit_scale.py --messages 10000 --json results/audit.json

The 10^6 size writes about 4 GB of files (2 GB of OTLP JSON) under ``--dir`` (removed afterwards
unless ``--keep``). See docs/benchmark.md, "The audit at scale".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # the exporter's row conversion and DDL

S = 1_000_000_000
MS = 1_000_000
T0 = 1_714_564_800 * S  # 2024-05-01T12:00:00Z
TOPICS = ("orders", "payments", "shipments", "audit-log")  # audit-log: no consumer
PARTITIONS = 12
SPANS_PER_LINE = 500
BATCH = 10


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [_kv(k, v) for k, v in d.items()]


class Writer:
    """OTLP JSON lines (one request per service and SPANS_PER_LINE spans) and the
    same spans as otel_traces rows (JSON lines, timestamps in ns)."""

    def __init__(self, otlp: Any, rows: Any) -> None:
        from trace_files import otel_traces_rows

        self.convert = otel_traces_rows
        self.otlp, self.rows = otlp, rows
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.spans = 0

    def add(self, service: str, span: dict[str, Any]) -> None:
        batch = self.pending.setdefault(service, [])
        batch.append(span)
        self.spans += 1
        if len(batch) >= SPANS_PER_LINE:
            self.flush(service)

    def flush(self, service: str | None = None) -> None:
        for name in [service] if service else list(self.pending):
            spans = self.pending.pop(name, [])
            if not spans:
                continue
            request = {
                "resourceSpans": [
                    {
                        "resource": {"attributes": _attrs({"service.name": name})},
                        "scopeSpans": [
                            {
                                "scope": {
                                    "name": "opentelemetry.instrumentation.kafkaplus",
                                    "version": "0.1.0",
                                },
                                "spans": spans,
                            }
                        ],
                    }
                ]
            }
            self.otlp.write(json.dumps(request, separators=(",", ":")) + "\n")
            for row in self.convert(request):
                self.rows.write(json.dumps(dict(zip(ROW_KEYS, row, strict=True)), separators=(",", ":")))
                self.rows.write("\n")


# The otel_traces_rows columns under the names LOAD reads them by.
ROW_KEYS = (
    "ts", "trace", "span", "parent", "state", "name", "kind", "service", "res", "scope",
    "version", "attrs", "duration", "status", "message", "ev_ts", "ev_name", "ev_attrs",
    "ln_trace", "ln_span", "ln_state", "ln_attrs",
)  # fmt: skip


def generate(messages: int, otlp_path: Path, rows_path: Path) -> int:
    """Write the workload; returns the number of spans."""
    offsets: dict[tuple[str, int], int] = {}
    polls: dict[str, list[tuple[int, int, str, str, int]]] = {}
    span_id = 0

    def next_id() -> str:
        nonlocal span_id
        span_id += 1
        return f"{span_id:016x}"

    with open(otlp_path, "w") as otlp, open(rows_path, "w") as rows:
        w = Writer(otlp, rows)

        def poll(topic: str, end: int) -> None:
            batch = polls.pop(topic, [])
            if not batch:
                return
            links = [
                {
                    "traceId": trace_id,
                    "spanId": sid,
                    "attributes": _attrs(
                        {"messaging.destination.partition.id": str(p), "messaging.kafka.offset": o}
                    ),
                }
                for p, o, trace_id, sid, _ in batch
            ]
            start = max(t for *_, t in batch) + 5 * MS
            w.add(
                "shipping",
                {
                    "traceId": f"{0xB000_0000 + span_id:032x}",
                    "spanId": next_id(),
                    "name": f"poll {topic}",
                    "kind": 3,
                    "startTimeUnixNano": str(start),
                    "endTimeUnixNano": str(max(end, start + MS)),
                    "attributes": _attrs(
                        {
                            "messaging.system": "kafka",
                            "messaging.operation.type": "receive",
                            "messaging.operation.name": "poll",
                            "messaging.destination.name": topic,
                            "messaging.consumer.group.name": "shipping",
                            "messaging.batch.message_count": len(batch),
                        }
                    ),
                    "links": links,
                    "status": {},
                },
            )

        for i in range(messages):
            topic = TOPICS[i % len(TOPICS)]
            partition = (i // len(TOPICS)) % PARTITIONS
            start = T0 + i * MS
            trace_id = f"{i + 1:032x}"
            http_id, send_id = next_id(), next_id()
            w.add(
                "web",
                {
                    "traceId": trace_id,
                    "spanId": http_id,
                    "name": "POST /orders",
                    "kind": 2,
                    "startTimeUnixNano": str(start - MS),
                    "endTimeUnixNano": str(start + 3 * MS),
                    "attributes": _attrs(
                        {
                            "http.request.method": "POST",
                            "url.path": "/orders",
                            "http.response.status_code": 201,
                            "server.address": "api.example.internal",
                        }
                    ),
                    "status": {},
                },
            )
            attrs: dict[str, Any] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
                "messaging.client.id": "orders-api",
                "server.address": "kafka-0",
            }
            status: dict[str, Any] = {}
            offset = None
            if i % 1000 == 999:
                attrs["error.type"] = "_MSG_TIMED_OUT" if i // 1000 % 2 else "_TRANSPORT"
                status = {"code": 2, "message": attrs["error.type"]}
            elif i % 5000 != 4998:  # else: never acknowledged
                offset = offsets.get((topic, partition), 0)
                offsets[topic, partition] = offset + 1
                attrs["messaging.destination.partition.id"] = str(partition)
                attrs["messaging.kafka.offset"] = offset
            w.add(
                "orders-api",
                {
                    "traceId": trace_id,
                    "spanId": send_id,
                    "parentSpanId": http_id,
                    "name": f"send {topic}",
                    "kind": 4,
                    "startTimeUnixNano": str(start),
                    "endTimeUnixNano": str(start + 2 * MS),
                    "attributes": _attrs(attrs),
                    "status": status,
                },
            )
            if offset is None or topic == "audit-log":
                continue
            handed = start + (2 + i * 7919 % 48) * MS
            if i % 997:
                w.add(
                    "billing",
                    {
                        "traceId": trace_id,
                        "spanId": next_id(),
                        "parentSpanId": send_id,
                        "name": f"process {topic}",
                        "kind": 5,
                        "startTimeUnixNano": str(handed),
                        "endTimeUnixNano": str(handed + MS),
                        "attributes": _attrs(
                            {
                                "messaging.system": "kafka",
                                "messaging.operation.type": "process",
                                "messaging.operation.name": "process",
                                "messaging.destination.name": topic,
                                "messaging.destination.partition.id": str(partition),
                                "messaging.kafka.offset": offset,
                                "messaging.consumer.group.name": "billing",
                            }
                        ),
                        "status": {},
                    },
                )
            if i % 1009:
                batch = polls.setdefault(topic, [])
                batch.append((partition, offset, trace_id, send_id, start))
                if len(batch) >= BATCH:
                    poll(topic, handed + 20 * MS)
        for topic in list(polls):
            poll(topic, T0 + messages * MS + 50 * MS)
        w.flush()
        return w.spans


DDL_TABLE = "otel.otel_traces"
LOAD = """
INSERT INTO otel.otel_traces
    (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
     ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode,
     StatusMessage, `Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`,
     `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)
SELECT
    fromUnixTimestamp64Nano(ts), trace, span, parent, state, name, kind, service, res, scope,
    version, attrs, duration, status, message, arrayMap(x -> fromUnixTimestamp64Nano(x), ev_ts),
    ev_name, ev_attrs, ln_trace, ln_span, ln_state, ln_attrs
FROM file({path:String}, 'JSONEachRow',
    'ts Int64, trace String, span String, parent String, state String, name String,
     kind String, service String, res Map(String, String), scope String, version String,
     attrs Map(String, String), duration UInt64, status String, message String,
     ev_ts Array(Int64), ev_name Array(String), ev_attrs Array(Map(String, String)),
     ln_trace Array(String), ln_span Array(String), ln_state Array(String),
     ln_attrs Array(Map(String, String))')
"""

# Each measurement runs here, in a fresh interpreter: argv = kind, path, db dir.
CHILD = r"""
import json, sys, time
kind, path, db = sys.argv[1:4]

def status_mb(field):
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the parent's peak)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)

def rss_mb():
    return status_mb("VmRSS")

from kafkaplus_tools.audit import audit
if kind == "file":
    before = rss_mb()
    t = time.perf_counter()
    report = audit([path])
    seconds = time.perf_counter() - t
else:
    import clickhouse_connect
    from kafkaplus_tools.audit_clickhouse import audit_clickhouse
    client = clickhouse_connect.get_client(dsn="chdb://" + db)
    client.query("SELECT 1")
    before = rss_mb()
    t = time.perf_counter()
    report = audit_clickhouse(client, table="otel.otel_traces")
    seconds = time.perf_counter() - t
doc = report.to_dict()
files = doc.pop("files")
peak = status_mb("VmHWM")
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "before_rss_mb": before,
                  "files": files, "report": doc}))
"""


def measure(kind: str, path: Path, db: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), str(db)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} audit failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


def load(db: Path, rows: Path) -> float:
    import clickhouse_connect

    from test_audit_clickhouse import OTEL_TRACES_DDL

    client = clickhouse_connect.get_client(dsn=f"chdb://{db}")
    client.command("CREATE DATABASE IF NOT EXISTS otel")
    client.command(OTEL_TRACES_DDL.format(table=DDL_TABLE))
    t = time.perf_counter()
    client.command(LOAD, parameters={"path": str(rows)})
    client.command(f"OPTIMIZE TABLE {DDL_TABLE} FINAL")
    seconds = time.perf_counter() - t
    client.close()
    return seconds


def run_size(messages: int, workdir: Path, keep: bool) -> dict[str, Any]:
    d = workdir / f"m{messages}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    otlp, rows, db = d / "spans.jsonl", d / "rows.jsonl", d / "chdb"
    t = time.perf_counter()
    spans = generate(messages, otlp, rows)
    generated = time.perf_counter() - t
    loaded = load(db, rows)
    size = otlp.stat().st_size
    rows.unlink()
    file_run = measure("file", otlp, db)
    query_run = measure("query", otlp, db)
    if file_run["report"] != query_run["report"]:
        raise SystemExit(f"{messages} messages: the two reports differ")
    totals = file_run["report"]["totals"]
    result = {
        "messages": messages,
        "spans": spans,
        "otlp_json_bytes": size,
        "generate_s": round(generated, 1),
        "load_s": round(loaded, 1),
        "totals": totals,
        "file": {k: file_run[k] for k in ("seconds", "peak_rss_mb", "before_rss_mb")},
        "query": {k: query_run[k] for k in ("seconds", "peak_rss_mb", "before_rss_mb")},
        "kafka_spans_read_by_query": query_run["files"][0]["spans"],
        "reports_equal": True,
    }
    if not keep:
        shutil.rmtree(d, ignore_errors=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dir", type=Path, help="where to write the spans (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="kafkaplus-audit-bench-"))
    results = []
    print(
        f"{'messages':>9} {'spans':>9} {'MB':>6}  {'file s':>7} {'file MB':>8}"
        f"  {'query s':>7} {'query MB':>8}  equal"
    )
    for n in args.messages:
        r = run_size(n, workdir, args.keep)
        results.append(r)
        f, q = r["file"], r["query"]
        print(
            f"{r['messages']:>9} {r['spans']:>9} {r['otlp_json_bytes'] / 2**20:>6.0f}"
            f"  {f['seconds']:>7.2f} {f['peak_rss_mb']:>8.0f}"
            f"  {q['seconds']:>7.2f} {q['peak_rss_mb']:>8.0f}  yes",
            flush=True,
        )
    if not args.dir and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        import chdb

        doc = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "chdb": chdb.__version__,
            "engine": chdb.engine_version,
            "results": results,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
