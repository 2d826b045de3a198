"""Cost of the statistics bridge with 1,000 partitions.

The payload copies the shape librdkafka 2.x emits (every field of a partition,
window statistics with all their keys, a logical GroupCoordinator, a bootstrap
entry and the "-1" partition of each topic), so json.loads sees realistic sizes.

Two costs matter and are reported separately:

* ``record()``: what the application's poll()/flush() pays per stats_cb call;
* decode + build: what the metric reader's thread pays once per collection for a
  client whose payload changed (json.loads plus turning it into observations);
* a full SDK collection (``InMemoryMetricReader.get_metrics_data()``) for context.

Run: ``PYTHONPATH=src python benchmarks/stats_parse.py [--partitions 1000] [--runs 50]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from opentelemetry_instrumentation_kafkaplus.core.statistics import StatisticsBridge


def _window(scale: int) -> dict[str, int]:
    return {
        "min": scale,
        "max": 9 * scale,
        "avg": 3 * scale,
        "sum": 300 * scale,
        "stddev": scale,
        "p50": 2 * scale,
        "p75": 4 * scale,
        "p90": 6 * scale,
        "p95": 7 * scale,
        "p99": 8 * scale,
        "p99_99": 9 * scale,
        "outofrange": 0,
        "hdrsize": 11376,
        "cnt": 100,
    }


def _partition(pid: int, kind: str) -> dict[str, Any]:
    consumer = kind == "consumer"
    return {
        "partition": pid,
        "broker": 1 + pid % 3,
        "leader": 1 + pid % 3,
        "desired": consumer and pid >= 0,
        "unknown": False,
        "msgq_cnt": 0 if consumer else pid % 7,
        "msgq_bytes": 0 if consumer else 100 * (pid % 7),
        "xmit_msgq_cnt": 0 if consumer else pid % 5,
        "xmit_msgq_bytes": 0 if consumer else 100 * (pid % 5),
        "fetchq_cnt": pid % 11 if consumer else 0,
        "fetchq_size": 100 * (pid % 11) if consumer else 0,
        "fetch_state": "active" if consumer and pid >= 0 else "none",
        "query_offset": -1001,
        "next_offset": 5000 + pid,
        "app_offset": 5000 + pid if consumer else -1001,
        "stored_offset": 5000 + pid if consumer else -1001,
        "stored_leader_epoch": 0,
        "commited_offset": 4990 + pid if consumer else -1001,
        "committed_offset": 4990 + pid if consumer else -1001,
        "committed_leader_epoch": 0,
        "eof_offset": -1001,
        "lo_offset": 0 if consumer else -1001,
        "hi_offset": 5010 + pid if consumer else -1001,
        "ls_offset": 5010 + pid if consumer else -1001,
        "consumer_lag": 20 if consumer else -1,
        "consumer_lag_stored": 10 if consumer else -1,
        "leader_epoch": 0,
        "txmsgs": 0 if consumer else 10_000 + pid,
        "txbytes": 0 if consumer else 1_000_000 + pid,
        "rxmsgs": 10_000 + pid if consumer else 0,
        "rxbytes": 1_000_000 + pid if consumer else 0,
        "msgs": 10_000 + pid,
        "rx_ver_drops": 0,
        "msgs_inflight": 0,
        "next_ack_seq": 0,
        "next_err_seq": 0,
        "acked_msgid": 0,
    }


def _broker(name: str, nodeid: int, source: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodeid": nodeid,
        "nodename": name.split("/")[0] if nodeid >= 0 else "kafka-0.example:9092",
        "source": source,
        "state": "UP",
        "stateage": 948925,
        "outbuf_cnt": 0,
        "outbuf_msg_cnt": 0,
        "waitresp_cnt": 1,
        "waitresp_msg_cnt": 0,
        "tx": 583,
        "txbytes": 1206890,
        "txerrs": 0,
        "txretries": 0,
        "txidle": 1000,
        "req_timeouts": 0,
        "rx": 583,
        "rxbytes": 40000,
        "rxerrs": 0,
        "rxcorriderrs": 0,
        "rxpartial": 0,
        "rxidle": 1000,
        "zbuf_grow": 0,
        "buf_grow": 0,
        "wakeups": 11,
        "connects": 1,
        "disconnects": 0,
        "int_latency": _window(1000),
        "outbuf_latency": _window(10),
        "rtt": _window(100),
        "throttle": _window(0),
        "req": {"Produce": 500, "Fetch": 0, "Metadata": 3, "ApiVersion": 1},
        "toppars": {},
    }


def synthesize(partitions: int, kind: str, topics: int = 10) -> str:
    """One stats_cb payload with ``partitions`` real partitions spread over ``topics``."""
    per_topic = partitions // topics
    brokers = {
        f"kafka-{i}.example:9092/{i + 1}": _broker(
            f"kafka-{i}.example:9092/{i + 1}", i + 1, "learned"
        )
        for i in range(3)
    }
    brokers["kafka-0.example:9092/bootstrap"] = _broker(
        "kafka-0.example:9092/bootstrap", -1, "configured"
    )
    if kind == "consumer":
        brokers["GroupCoordinator"] = _broker("GroupCoordinator", -1, "logical")
    topic_objs = {}
    for t in range(topics):
        parts = {str(p): _partition(p, kind) for p in range(per_topic)}
        parts["-1"] = _partition(-1, kind)
        topic_objs[f"topic-{t}"] = {
            "topic": f"topic-{t}",
            "age": 100000,
            "metadata_age": 5000,
            "batchsize": _window(2000),
            "batchcnt": _window(20),
            "partitions": parts,
        }
    doc: dict[str, Any] = {
        "name": f"bench#{kind}-1",
        "client_id": "bench",
        "type": kind,
        "ts": 215567966,
        "time": 1795741837,
        "age": 1004163,
        "replyq": 0,
        "msg_cnt": 50,
        "msg_size": 5000,
        "msg_max": 100000,
        "msg_size_max": 1073741824,
        "simple_cnt": 0,
        "metadata_cache_cnt": topics,
        "brokers": brokers,
        "topics": topic_objs,
        "tx": 1749,
        "tx_bytes": 3620670,
        "rx": 1749,
        "rx_bytes": 120000,
        "txmsgs": 100000,
        "txmsg_bytes": 10000000,
        "rxmsgs": 0,
        "rxmsg_bytes": 0,
    }
    if kind == "consumer":
        doc["cgrp"] = {
            "state": "up",
            "stateage": 6953,
            "join_state": "steady",
            "rebalance_age": 3950,
            "rebalance_cnt": 1,
            "rebalance_reason": "",
            "assignment_size": partitions,
        }
    return json.dumps(doc)


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def bench(partitions: int, kind: str, runs: int) -> None:
    reader = InMemoryMetricReader()
    bridge = StatisticsBridge(MeterProvider(metric_readers=[reader]).get_meter("bench"))
    payload = synthesize(partitions, kind)
    # Fresh string objects per run, as librdkafka hands a new one on every call.
    payloads = [payload[:-1] + "}" for _ in range(runs)]

    record_s: list[float] = []
    build_s: list[float] = []
    collect_s: list[float] = []
    # What stats_cb costs the application: payloads arriving between two collections.
    for text in payloads:
        t0 = time.perf_counter()
        bridge.record(text)
        record_s.append(time.perf_counter() - t0)
    # What the reader's thread pays per collection for a client with a new payload
    # (json.loads plus building the observations, as the first instrument callback does).
    for text in payloads:
        bridge.record(text)
        t0 = time.perf_counter()
        bridge._refresh()
        build_s.append(time.perf_counter() - t0)
    # For context: a whole SDK collection, dominated by the SDK's per-point work.
    for text in payloads:
        bridge.record(text)
        t0 = time.perf_counter()
        reader.get_metrics_data()
        collect_s.append(time.perf_counter() - t0)

    points = sum(len(v) for c in bridge._clients.values() for v in c.points.values())
    print(
        f"{kind:8s} partitions={partitions} payload={len(payload) / 1e6:.2f} MB points={points}: "
        f"record() median {_median_us(record_s):.1f} us | "
        f"decode+build median {_median_us(build_s) / 1000:.2f} ms | "
        f"full SDK collect median {_median_us(collect_s) / 1000:.2f} ms  (N={runs})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    for kind in ("producer", "consumer"):
        bench(args.partitions, kind, args.runs)


if __name__ == "__main__":
    main()
