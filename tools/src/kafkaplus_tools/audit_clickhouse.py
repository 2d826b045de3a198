"""``kafkaplus audit --clickhouse``: the audit as one query, run where the spans live.

A fleet that sends its spans through a Collector into ClickHouse (the
``clickhouseexporter`` and its ``otel_traces`` table) cannot copy them to one
machine to audit them. This module runs the audit in ClickHouse instead: the
query in ``audit_clickhouse.sql`` joins producer and consumer spans on
``(topic, partition, offset)`` exactly as the file audit does, and its rows are
turned into the same :class:`~kafkaplus_tools.audit.Report`, printed by the
same renderer. Only aggregated rows (one per topic) come back over the wire.

The SQL lives in one packaged file and takes ClickHouse query parameters
(``{name:Type}``): table names, the time window and the group filter are
sent as parameters, never pasted into the query text.

The client is ``clickhouse-connect``, an optional dependency
(``pip install 'kafkaplus-tools[clickhouse]'``); the instrumentation never
imports this module.
"""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from .audit import (
    CLICKHOUSE_FORMAT,
    AuditInputError,
    FileSummary,
    GroupStats,
    Latency,
    Orphan,
    PartitionStats,
    Report,
    TopicStats,
    _to_nanos,
)

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_TABLE",
    "MAX_LISTED",
    "AuditQuery",
    "audit_clickhouse",
    "connect",
    "query_text",
    "report_from_rows",
    "sql_script",
]

SQL_FILE = "audit_clickhouse.sql"
#: The clickhouseexporter's defaults (``database``, ``traces_table_name``).
DEFAULT_DATABASE = "default"
DEFAULT_TABLE = "otel_traces"
#: The most never-consumed messages the query can list (groupArraySorted's limit).
MAX_LISTED = 16_777_215
INSTALL_HINT = "pip install 'kafkaplus-tools[clickhouse]'"


def query_text() -> str:
    """The audit query, with its ``{name:Type}`` parameters unfilled."""
    return (importlib.resources.files(__package__) / SQL_FILE).read_text(encoding="utf-8")


def _ch_time(ns: int | None) -> str | None:
    """Unix ns -> the text of a ``DateTime64(9, 'UTC')`` parameter, to the nanosecond."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{rest:09d}"


@dataclass(frozen=True)
class AuditQuery:
    """What the query is asked: where the spans are, the window, the group.

    Built by :func:`AuditQuery.make`, which validates the user's input the way
    the file audit does, so both report the same errors.
    """

    database: str
    table: str
    since_unix_nano: int | None
    until_unix_nano: int | None
    scan_from_unix_nano: int | None
    group: str | None
    max_orphans: int

    @classmethod
    def make(
        cls,
        table: str = DEFAULT_TABLE,
        database: str | None = None,
        since: datetime | float | int | str | None = None,
        until: datetime | float | int | str | None = None,
        *,
        group: str | None = None,
        max_orphans: int | None = None,
        lookback: float | None = None,
    ) -> AuditQuery:
        """``table`` may be ``db.table``; otherwise ``database`` (or ``default``) holds it.

        ``lookback`` (seconds, needs ``since``) stops the scan at
        ``since - lookback``: spans that started earlier are not read, which
        lets ClickHouse skip whole partitions of an ``otel_traces`` table.
        The only effect on the result: a message produced before that and
        consumed inside the window counts as consumed without a producer span
        instead of being left out.
        """
        db, _, name = table.rpartition(".")
        db = db or database or DEFAULT_DATABASE
        if not name or not db:
            raise AuditInputError(f"--table: {table!r} is not [DATABASE.]TABLE")
        lo = _to_nanos(since, "--since")
        hi = _to_nanos(until, "--until")
        if lo is not None and hi is not None and lo >= hi:
            raise AuditInputError("--since must be before --until")
        scan_from = None
        if lookback is not None:
            if lo is None:
                raise AuditInputError("--lookback needs --since")
            if lookback < 0 or lookback != lookback:  # NaN too
                raise AuditInputError("--lookback must be >= 0")
            scan_from = lo - round(lookback * 1_000_000_000)
        if max_orphans is not None and max_orphans < 0:
            raise AuditInputError("--max-orphans must be >= 0")
        listed = MAX_LISTED if max_orphans is None else min(max_orphans, MAX_LISTED)
        return cls(db, name, lo, hi, scan_from, group, listed)

    def parameters(self) -> dict[str, Any]:
        """The query parameters, as ClickHouse parses them from text."""
        return {
            "database": self.database,
            "table": self.table,
            "since": _ch_time(self.since_unix_nano),
            "until": _ch_time(self.until_unix_nano),
            "scan_from": _ch_time(self.scan_from_unix_nano),
            "group": self.group,
            "max_orphans": self.max_orphans,
        }


# --------------------------------------------------------------------------
# Rows -> Report
# --------------------------------------------------------------------------


def _topic(row: Mapping[str, Any]) -> TopicStats:
    partitions = [
        PartitionStats(
            partition=p[0],
            produced=p[1],
            delivered=p[2],
            failed=p[3],
            unacknowledged=p[4],
            never_consumed=p[5],
            consumed={g: n for g, n in p[6]},
        )
        for p in row["partitions"]
    ]
    groups = [
        GroupStats(
            group=g[0],
            consumed=g[1],
            missing=g[2],
            without_producer=g[3],
            latency=Latency(g[4], g[5], g[6], g[7], g[8]),
            missing_by_partition={p: n for p, n in g[9]},
        )
        for g in row["groups"]
    ]
    return TopicStats(
        topic=row["topic"],
        produced=row["produced"],
        delivered=row["delivered"],
        failed=row["failed"],
        unacknowledged=row["unacknowledged"],
        never_consumed=row["never_consumed"],
        failures={k: n for k, n in row["failures"]},
        partitions=partitions,
        groups=groups,
        has_consumers=bool(row["has_consumers"]),
    )


def _orphans(topic: str, listed: Iterable[Any]) -> list[Orphan]:
    return [Orphan(topic, p, offset, trace_id, ns) for p, offset, trace_id, ns in listed]


def report_from_rows(rows: Iterable[Mapping[str, Any]], query: AuditQuery, source: str) -> Report:
    """Place the query's rows in a :class:`Report`; every number comes from the query.

    ``source`` names where the spans were read (shown in the report's header).
    """
    topics: list[TopicStats] = []
    orphans: list[Orphan] = []
    group_orphans: list[Orphan] = []
    totals: Mapping[str, Any] = {}
    for row in rows:
        totals = row  # the total_* columns are the same on every row
        if row["topic"] is None:  # Kafka spans that fed no topic: counted only
            continue
        topics.append(_topic(row))
        orphans.extend(_orphans(row["topic"], row["orphans"]))
        group_orphans.extend(_orphans(row["topic"], row["group_orphans"]))
    summary = FileSummary(
        path=source,
        format=CLICKHOUSE_FORMAT,
        spans=int(totals.get("total_kafka_spans", 0)),
        messaging_spans=int(totals.get("total_messaging_spans", 0)),
    )
    return Report(
        files=[summary],
        since_unix_nano=query.since_unix_nano,
        until_unix_nano=query.until_unix_nano,
        group=query.group,
        topics=topics,
        orphan_count=int(totals.get("total_never_consumed", 0)),
        orphans=orphans,
        group_orphan_count=(
            int(totals.get("total_group_orphans", 0)) if query.group is not None else None
        ),
        group_orphans=group_orphans if query.group is not None else None,
        duplicate_producer_spans=int(totals.get("total_duplicates", 0)),
    )


# --------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------


def _client_module() -> Any:
    try:
        return importlib.import_module("clickhouse_connect")
    except ImportError:
        raise AuditInputError(
            f"the ClickHouse audit needs clickhouse-connect: {INSTALL_HINT}"
        ) from None


def _is_clickhouse_error(exc: BaseException) -> bool:
    exceptions = importlib.import_module("clickhouse_connect.driver.exceptions")
    return isinstance(exc, exceptions.ClickHouseError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 500 else text[:497] + "..."


def redact(url: str) -> str:
    """The URL without user, password and query string, fit to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    if not parts.scheme:
        return netloc + parts.path
    return f"{parts.scheme}://{netloc}{parts.path}"


def url_database(url: str) -> str | None:
    """The database named in the URL's path, as clickhouse-connect reads it."""
    path = urlsplit(url).path
    name = unquote(path[1:].split("/")[0]) if path.startswith("/") else ""
    return name or None


def connect(url: str) -> Any:
    """A clickhouse-connect client for ``url``: ``http(s)://[user[:password]@]host[:port][/db]``.

    Any DSN clickhouse-connect understands works, ``chdb://`` (chDB in
    process, when installed) included.
    """
    cc = _client_module()
    try:
        return cc.get_client(dsn=url)
    except Exception as exc:
        if _is_clickhouse_error(exc) or isinstance(exc, (OSError, ValueError)):
            raise AuditInputError(f"{redact(url)}: cannot connect: {_one_line(exc)}") from None
        raise


def run_query(client: Any, query: AuditQuery, source: str) -> Report:
    """Run the audit query through a clickhouse-connect client."""
    try:
        result = client.query(query_text(), parameters=query.parameters())
        rows = list(result.named_results())
    except Exception as exc:
        if _is_clickhouse_error(exc) or isinstance(exc, OSError):
            raise AuditInputError(f"{source}: query failed: {_one_line(exc)}") from None
        raise
    return report_from_rows(rows, query, source)


def audit_clickhouse(
    target: str | Any,
    *,
    table: str = DEFAULT_TABLE,
    since: datetime | float | int | str | None = None,
    until: datetime | float | int | str | None = None,
    group: str | None = None,
    max_orphans: int | None = None,
    lookback: float | None = None,
) -> Report:
    """Audit the spans in a ClickHouse table written by the Collector's clickhouseexporter.

    ``target`` is a URL (see :func:`connect`) or a clickhouse-connect client.
    The other arguments mean what they mean for :func:`kafkaplus_tools.audit.audit`;
    ``lookback`` is described at :meth:`AuditQuery.make`. Raises
    :class:`~kafkaplus_tools.audit.AuditInputError` for bad arguments, a
    ClickHouse that cannot be reached, and a query the server rejects (a
    missing table, for instance).
    """
    if isinstance(target, str):
        query = AuditQuery.make(
            table,
            url_database(target),
            since,
            until,
            group=group,
            max_orphans=max_orphans,
            lookback=lookback,
        )
        client = connect(target)
        source = f"{redact(target)} table {query.database}.{query.table}"
        try:
            return run_query(client, query, source)
        finally:
            client.close()
    query = AuditQuery.make(
        table, None, since, until, group=group, max_orphans=max_orphans, lookback=lookback
    )
    return run_query(target, query, f"table {query.database}.{query.table}")


# --------------------------------------------------------------------------
# --print-sql
# --------------------------------------------------------------------------


def _param_literal(value: Any) -> str:
    """A ``SET param_x = ...`` value: a SQL string holding the parameter's text.

    ClickHouse reads parameter text in its escaped (TSV) form, where NULL is
    ``\\N``; the SQL string literal around it escapes once more.
    """
    if value is None:
        text = "\\N"
    else:
        text = (
            str(value)
            .replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_script(query: AuditQuery) -> str:
    """The query as a script that runs as it is (``clickhouse-client --multiquery``).

    The parameters are set first with ``SET param_<name> = ...``, from the
    options given; a scheduler that sends the query over HTTP can drop those
    lines and pass ``param_<name>`` URL arguments instead.
    """
    lines = [
        "-- kafkaplus audit: run with `clickhouse-client --multiquery < this-file`; append",
        "-- FORMAT Vertical (or JSONEachRow, ...) to the SELECT to choose the output.",
    ]
    lines += [f"SET param_{k} = {_param_literal(v)};" for k, v in query.parameters().items()]
    return "\n".join(lines) + "\n\n" + query_text().rstrip().rstrip(";") + ";\n"
