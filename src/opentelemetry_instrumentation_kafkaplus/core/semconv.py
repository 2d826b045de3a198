"""Attribute names and the builders that turn Kafka facts into attributes.

Names come from opentelemetry-semantic-conventions (messaging conventions
v1.44); anything of our own is defined here, once, and documented in the README.
Builders run on hot paths, so they work on plain dicts and cache what is fixed
per client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.semconv._incubating.attributes import messaging_attributes as _m
from opentelemetry.semconv.attributes import error_attributes as _e
from opentelemetry.semconv.attributes import server_attributes as _s

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

MESSAGING_SYSTEM = _m.MESSAGING_SYSTEM
MESSAGING_OPERATION_NAME = _m.MESSAGING_OPERATION_NAME
MESSAGING_OPERATION_TYPE = _m.MESSAGING_OPERATION_TYPE
MESSAGING_DESTINATION_NAME = _m.MESSAGING_DESTINATION_NAME
MESSAGING_DESTINATION_PARTITION_ID = _m.MESSAGING_DESTINATION_PARTITION_ID
MESSAGING_CONSUMER_GROUP_NAME = _m.MESSAGING_CONSUMER_GROUP_NAME
MESSAGING_CLIENT_ID = _m.MESSAGING_CLIENT_ID
MESSAGING_KAFKA_OFFSET = _m.MESSAGING_KAFKA_OFFSET
MESSAGING_KAFKA_MESSAGE_KEY = _m.MESSAGING_KAFKA_MESSAGE_KEY
MESSAGING_KAFKA_MESSAGE_TOMBSTONE = _m.MESSAGING_KAFKA_MESSAGE_TOMBSTONE
MESSAGING_MESSAGE_BODY_SIZE = _m.MESSAGING_MESSAGE_BODY_SIZE
MESSAGING_BATCH_MESSAGE_COUNT = _m.MESSAGING_BATCH_MESSAGE_COUNT
#: New in the conventions 1.44; older opentelemetry-semantic-conventions lack the constant.
MESSAGING_KAFKA_CLUSTER_ID = getattr(_m, "MESSAGING_KAFKA_CLUSTER_ID", "messaging.kafka.cluster.id")
SERVER_ADDRESS = _s.SERVER_ADDRESS
SERVER_PORT = _s.SERVER_PORT
ERROR_TYPE = _e.ERROR_TYPE
ERROR_TYPE_OTHER = _e.ErrorTypeValues.OTHER.value

KAFKA = _m.MessagingSystemValues.KAFKA.value
OP_SEND = _m.MessagingOperationTypeValues.SEND.value
OP_RECEIVE = _m.MessagingOperationTypeValues.RECEIVE.value
OP_PROCESS = _m.MessagingOperationTypeValues.PROCESS.value
OP_SETTLE = _m.MessagingOperationTypeValues.SETTLE.value

# Our own attributes (not in the conventions); documented in the README.
#: Age of the message when handed to the app: now - message timestamp, in seconds.
KAFKAPLUS_MESSAGE_AGE = "kafkaplus.message.age"
#: Age since the first producer of a multi-hop pipeline, in seconds.
KAFKAPLUS_MESSAGE_ORIGIN_AGE = "kafkaplus.message.origin_age"

#: On a commit of several partitions: each as "topic/partition@offset".
KAFKAPLUS_COMMIT_OFFSETS = "kafkaplus.commit.offsets"
#: Whether the commit was asynchronous (its result then arrives via on_commit).
KAFKAPLUS_COMMIT_ASYNC = "kafkaplus.commit.async"
#: Set on the settle span of a commit librdkafka made by itself (enable.auto.commit).
KAFKAPLUS_COMMIT_AUTO = "kafkaplus.commit.auto"

#: On the ``kafkaplus.offset_gap`` span event: offsets skipped before this message.
KAFKAPLUS_SKIPPED_MESSAGES = "kafkaplus.skipped_messages"
#: On the ``kafkaplus.offset_gap`` span event: the offset the consumer expected.
KAFKAPLUS_EXPECTED_OFFSET = "kafkaplus.expected_offset"

#: On the gap event: the consumer's ``isolation.level`` (what a gap may hide).
KAFKAPLUS_ISOLATION_LEVEL = "kafkaplus.isolation_level"

#: The names kafkaplus's own attributes had before they moved to its own
#: namespace (the naming guide reserves ``messaging.*`` for the conventions);
#: emitted too with the ``compat_names`` option, for a transition period.
PREVIOUS_NAMES = {
    KAFKAPLUS_MESSAGE_AGE: "messaging.kafka.message.age",
    KAFKAPLUS_MESSAGE_ORIGIN_AGE: "messaging.kafka.message.origin_age",
    KAFKAPLUS_COMMIT_OFFSETS: "messaging.kafka.commit.offsets",
    KAFKAPLUS_COMMIT_ASYNC: "messaging.kafka.commit.async",
    KAFKAPLUS_COMMIT_AUTO: "messaging.kafka.commit.auto",
    KAFKAPLUS_SKIPPED_MESSAGES: "messaging.kafka.skipped_messages",
    KAFKAPLUS_EXPECTED_OFFSET: "messaging.kafka.expected_offset",
    KAFKAPLUS_ISOLATION_LEVEL: "messaging.kafka.isolation_level",
}


def with_previous_names(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with each of kafkaplus's own attributes also under its previous name."""
    for new, old in PREVIOUS_NAMES.items():
        if new in attrs:
            attrs[old] = attrs[new]
    return attrs


# Names the legacy opentelemetry-instrumentation-confluent-kafka emits, for the
# OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup migration mode.
LEGACY_DESTINATION = "messaging.destination"
LEGACY_DESTINATION_KIND = "messaging.destination_kind"
LEGACY_PARTITION = "messaging.kafka.partition"
LEGACY_OPERATION = "messaging.operation"
LEGACY_MESSAGE_ID = "messaging.message.id"

DEFAULT_PORT = 9092


def parse_bootstrap(servers: Any) -> tuple[str, int] | None:
    """First entry of ``bootstrap.servers`` as (host, port).

    Accepts ``host``, ``host:port``, ``[v6]:port`` and ``PROTO://host:port``.
    """
    if not isinstance(servers, str):
        return None
    first = servers.split(",", 1)[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    if not first:
        return None
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif first.count(":") == 1:
        host, _, port_s = first.partition(":")
    else:
        host, port_s = first, ""
    try:
        port = int(port_s) if port_s else DEFAULT_PORT
    except ValueError:
        port = DEFAULT_PORT
    return (host, port) if host else None


def client_attributes(conf: Mapping[str, Any], *, consumer: bool) -> dict[str, Any]:
    """Attributes fixed for the life of a client; never anything secret."""
    attrs: dict[str, Any] = {MESSAGING_SYSTEM: KAFKA}
    client_id = conf.get("client.id")
    if isinstance(client_id, str) and client_id:
        attrs[MESSAGING_CLIENT_ID] = client_id
    if consumer:
        group = conf.get("group.id")
        if isinstance(group, str) and group:
            attrs[MESSAGING_CONSUMER_GROUP_NAME] = group
    server = parse_bootstrap(conf.get("bootstrap.servers", conf.get("metadata.broker.list")))
    if server is not None:
        attrs[SERVER_ADDRESS] = server[0]
        attrs[SERVER_PORT] = server[1]
    return attrs


def key_string(key: object) -> str | None:
    """The key as the conventions want it: its UTF-8 text, or nothing."""
    if type(key) is not bytes:  # bytes first: what almost every app passes
        if key is None or isinstance(key, str):
            return key
        if not isinstance(key, (bytearray, memoryview)):
            return None
        key = bytes(key)
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def error_type(err: Any) -> str:
    """``error.type`` for a KafkaError or an exception."""
    try:
        name = err.name()
        if isinstance(name, str) and name:
            return name
    except Exception:
        pass
    if isinstance(err, BaseException):
        args = getattr(err, "args", ())
        if args and hasattr(args[0], "name"):
            return error_type(args[0])
        return type(err).__qualname__
    return ERROR_TYPE_OTHER


#: Attributes of a span template that also go on metrics (low cardinality). The
#: operation type is not among them: the conventions list it for
#: ``messaging.client.operation.duration`` only (``duration_attributes``).
METRIC_KEYS = (
    MESSAGING_SYSTEM,
    MESSAGING_OPERATION_NAME,
    MESSAGING_DESTINATION_NAME,
    MESSAGING_CONSUMER_GROUP_NAME,
    SERVER_ADDRESS,
    SERVER_PORT,
)


def header_attributes(attrs: dict[str, Any], headers: Any, wanted: Mapping[str, str]) -> None:
    """Add ``messaging.header.<name>`` for allow-listed headers (values as str lists).

    Headers are a list of (name, value) pairs or a dict; values that are not
    UTF-8 are skipped. Nothing outside the allow-list is ever read.
    """
    if not headers:
        return
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[str]] = {}
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if not isinstance(name, str):
            continue
        attr = wanted.get(name.lower())
        if attr is None:
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                continue
        if isinstance(value, str):
            found.setdefault(attr, []).append(value)
    attrs.update(found)


# --- builders: one per span kind, keyword-only; templates are built once per client and topic


def operation_attributes(
    base: Mapping[str, Any],
    *,
    operation_name: str,
    operation_type: str,
    topic: str | None,
    legacy_operation: str | None,
    dup: bool,
) -> dict[str, Any]:
    """A span template: the client's attributes plus the operation and its destination.

    ``legacy_operation`` is the ``messaging.operation`` value the contrib plugin
    used, emitted with ``messaging/dup`` (with the old destination names).
    """
    attrs = dict(base)
    attrs[MESSAGING_OPERATION_NAME] = operation_name
    attrs[MESSAGING_OPERATION_TYPE] = operation_type
    if topic is not None:
        attrs[MESSAGING_DESTINATION_NAME] = topic
        if dup:
            attrs[LEGACY_DESTINATION] = topic
            attrs[LEGACY_DESTINATION_KIND] = "queue"
    if dup and legacy_operation is not None:
        attrs[LEGACY_OPERATION] = legacy_operation
    return attrs


def metric_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The low-cardinality part of a span template, for metrics."""
    return {k: attrs[k] for k in METRIC_KEYS if k in attrs}


def duration_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A span template's attributes for ``messaging.client.operation.duration``.

    The metric attributes plus the operation type, which the conventions give
    this metric alone: on the message counters and ``messaging.process.duration``
    it would only repeat what the metric's name says, and every attribute of a
    histogram costs its ``record`` a clean and a hash per message.
    """
    timed = metric_attributes(attrs)
    if MESSAGING_OPERATION_TYPE in attrs:
        timed[MESSAGING_OPERATION_TYPE] = attrs[MESSAGING_OPERATION_TYPE]
    return timed


def with_partition(attrs: dict[str, Any], partition: Any) -> dict[str, Any]:
    """``attrs`` plus the partition id (a new dict; ``attrs`` itself when it has one)."""
    if MESSAGING_DESTINATION_PARTITION_ID in attrs or partition is None or partition < 0:
        return attrs
    return {**attrs, MESSAGING_DESTINATION_PARTITION_ID: str(partition)}


def body_size(value: Any) -> int | None:
    """``messaging.message.body.size``: bytes, with a str body counted as its UTF-8 bytes.

    confluent-kafka sends a str as UTF-8, so producer and consumer agree on
    the size of the same message. Deserialized objects have no size.
    """
    if type(value) is bytes:
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return None


def message_attributes(
    attrs: dict[str, Any], value: Any, key: Any, capture_key: bool, capture_body: bool
) -> None:
    """What one message adds to its send or process span: tombstone, key, body size.

    Called once per traced message, by position: a call with keywords costs
    the hot paths a few hundred instructions more.
    """
    if value is None:
        attrs[MESSAGING_KAFKA_MESSAGE_TOMBSTONE] = True
    elif capture_body:
        size = len(value) if type(value) is bytes else body_size(value)
        if size is not None:
            attrs[MESSAGING_MESSAGE_BODY_SIZE] = size
    if capture_key and key is not None:
        text = key_string(key)
        if text is not None:
            attrs[MESSAGING_KAFKA_MESSAGE_KEY] = text


def position_attributes(
    attrs: dict[str, Any], topic: Any, partition: Any, offset: Any, dup: bool
) -> None:
    """Partition and offset, when known (a delivered or consumed message).

    Called once per traced message, by position (see ``message_attributes``).
    """
    if partition is not None and partition >= 0:
        attrs[MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
        if dup:
            attrs[LEGACY_PARTITION] = partition
    if offset is not None and offset >= 0:
        attrs[MESSAGING_KAFKA_OFFSET] = offset
        if dup:
            attrs[LEGACY_MESSAGE_ID] = f"{topic}.{partition}.{offset}"


def link_attributes(*, topic: str | None, partition: Any, offset: Any) -> dict[str, Any]:
    """On a batch span's link to one message: where that message was."""
    attrs: dict[str, Any] = {}
    if partition is not None and partition >= 0:
        attrs[MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
    if offset is not None and offset >= 0:
        attrs[MESSAGING_KAFKA_OFFSET] = offset
    if topic is not None:
        attrs[MESSAGING_DESTINATION_NAME] = topic
    return attrs


def settle_attributes(
    base: Mapping[str, Any],
    *,
    operation: str,
    entries: list[tuple[str, int, int]],
    asynchronous: bool | None,
) -> tuple[str, dict[str, Any]]:
    """(span name, attributes) of a settle span over (topic, partition, offset) entries.

    The name is ``{operation} {topic}``, the conventions' ``{operation.name}
    {destination}``; the topic is left out when the entries span several. One
    partition: its id and offset. Several: each as ``topic/partition@offset``.
    """
    topics = {e[0] for e in entries}
    topic = topics.pop() if len(topics) == 1 else None
    attrs = dict(base)
    attrs[MESSAGING_OPERATION_NAME] = operation
    attrs[MESSAGING_OPERATION_TYPE] = OP_SETTLE
    if topic is not None:
        attrs[MESSAGING_DESTINATION_NAME] = topic
    if len(entries) == 1:
        attrs[MESSAGING_DESTINATION_PARTITION_ID] = str(entries[0][1])
        attrs[MESSAGING_KAFKA_OFFSET] = entries[0][2]
    elif entries:
        # Not messaging.batch.message_count: that counts messages, these are positions.
        attrs[KAFKAPLUS_COMMIT_OFFSETS] = [f"{t}/{p}@{o}" for t, p, o in entries]
    if asynchronous is not None:
        attrs[KAFKAPLUS_COMMIT_ASYNC] = asynchronous
    return (f"{operation} {topic}" if topic else operation), attrs
