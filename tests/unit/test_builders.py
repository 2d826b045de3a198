"""Attribute names and builders (core/semconv.py): no broker, no SDK."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from opentelemetry_instrumentation_kafkaplus.core import semconv as sc


def test_client_attributes_keep_nothing_secret() -> None:
    conf = {
        "bootstrap.servers": "SASL_SSL://broker-1.example:9094,broker-2:9094",
        "client.id": "orders", "group.id": "billing", "sasl.password": "secret",
        "ssl.key.password": "secret",
    }  # fmt: skip
    assert sc.client_attributes(conf, consumer=True) == {
        "messaging.system": "kafka", "messaging.client.id": "orders",
        "messaging.consumer.group.name": "billing", "server.address": "broker-1.example",
        "server.port": 9094,
    }  # fmt: skip
    assert "messaging.consumer.group.name" not in sc.client_attributes(conf, consumer=False)


@pytest.mark.parametrize(
    ("servers", "expected"),
    [("h", ("h", 9092)), ("h:1", ("h", 1)), ("[::1]:7", ("::1", 7)), ("PLAINTEXT://h:2", ("h", 2)),
     ("h:x", ("h", 9092)), ("", None), (None, None), (" a:3 , b:4", ("a", 3))],
)  # fmt: skip
def test_first_bootstrap_server(servers: object, expected: object) -> None:
    assert sc.parse_bootstrap(servers) == expected


def test_operation_template_and_its_metric_part() -> None:
    base = sc.client_attributes({"bootstrap.servers": "h:1", "client.id": "c"}, consumer=False)
    attrs = sc.operation_attributes(base, operation_name="send", operation_type="send",
                                    topic="t", legacy_operation="publish", dup=False)  # fmt: skip
    assert attrs == {**base, "messaging.operation.name": "send", "messaging.operation.type": "send",
                     "messaging.destination.name": "t"}  # fmt: skip
    # Metrics keep the low-cardinality part only: no client id. The operation type
    # only on messaging.client.operation.duration, the one metric the conventions
    # give it to.
    assert sc.metric_attributes(attrs) == {
        "messaging.system": "kafka", "messaging.operation.name": "send",
        "messaging.destination.name": "t", "server.address": "h", "server.port": 1,
    }  # fmt: skip
    assert sc.duration_attributes(attrs) == {
        **sc.metric_attributes(attrs), "messaging.operation.type": "send"
    }
    dup = sc.operation_attributes(base, operation_name="send", operation_type="send", topic="t",
                                  legacy_operation="publish", dup=True)  # fmt: skip
    assert dup["messaging.destination"] == "t" and dup["messaging.operation"] == "publish"
    assert dup["messaging.destination_kind"] == "queue"


def test_with_partition_adds_it_once() -> None:
    attrs = {"a": 1}
    assert sc.with_partition(attrs, 3) == {"a": 1, "messaging.destination.partition.id": "3"}
    assert sc.with_partition(attrs, -1) is attrs and sc.with_partition(attrs, None) is attrs
    has = {"messaging.destination.partition.id": "1"}
    assert sc.with_partition(has, 2) is has


@pytest.mark.parametrize(
    ("value", "size"),
    [(b"abc", 3), ("héllo", 6), ("", 0), (bytearray(b"ab"), 2), (memoryview(b"abcd"), 4),
     ({"a": 1}, None), ("\udcff", 3)],
)  # fmt: skip
def test_body_size_is_bytes_whatever_the_side(value: object, size: int | None) -> None:
    assert sc.body_size(value) == size


def test_message_attributes() -> None:
    attrs: dict[str, object] = {}
    sc.message_attributes(attrs, value=None, key=b"k", capture_key=True, capture_body=True)
    assert attrs == {"messaging.kafka.message.tombstone": True, "messaging.kafka.message.key": "k"}
    attrs = {}
    sc.message_attributes(attrs, value="é", key=b"\xff", capture_key=True, capture_body=True)
    assert attrs == {"messaging.message.body.size": 2}  # a key that is not UTF-8 is left out
    attrs = {}
    sc.message_attributes(attrs, value=b"v", key="k", capture_key=False, capture_body=False)
    assert attrs == {}


def test_position_and_link_attributes() -> None:
    attrs: dict[str, object] = {}
    sc.position_attributes(attrs, topic="t", partition=2, offset=7, dup=True)
    assert attrs == {"messaging.destination.partition.id": "2", "messaging.kafka.offset": 7,
                     "messaging.kafka.partition": 2, "messaging.message.id": "t.2.7"}  # fmt: skip
    attrs = {}
    sc.position_attributes(attrs, topic="t", partition=None, offset=-1001, dup=False)
    assert attrs == {}
    assert sc.link_attributes(topic=None, partition=0, offset=5) == {
        "messaging.destination.partition.id": "0", "messaging.kafka.offset": 5}  # fmt: skip


def test_settle_spans_are_named_for_their_operation() -> None:
    base = {"messaging.system": "kafka"}
    name, attrs = sc.settle_attributes(base, operation="store_offsets", entries=[("t", 1, 5)],
                                       asynchronous=None)  # fmt: skip
    assert name == "store_offsets t"
    assert attrs["messaging.destination.partition.id"] == "1"
    assert attrs["messaging.kafka.offset"] == 5
    name, attrs = sc.settle_attributes(base, operation="commit",
                                       entries=[("t", 0, 1), ("u", 1, 2)], asynchronous=True)  # fmt: skip
    assert name == "commit"
    assert attrs["kafkaplus.commit.offsets"] == ["t/0@1", "u/1@2"]
    assert "messaging.batch.message_count" not in attrs  # positions, not messages
    assert attrs["kafkaplus.commit.async"] is True


def test_previous_names_for_the_transition() -> None:
    attrs = {"kafkaplus.message.age": 1.5, "kafkaplus.commit.auto": True, "other": 1}
    assert sc.with_previous_names(attrs) == {
        "kafkaplus.message.age": 1.5, "messaging.kafka.message.age": 1.5,
        "kafkaplus.commit.auto": True, "messaging.kafka.commit.auto": True, "other": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("key", "text"),
    [(b"k", "k"), ("k", "k"), (None, None), (b"\xff", None), (bytearray(b"x"), "x"), (5, None)],
)
def test_key_string(key: object, text: str | None) -> None:
    assert sc.key_string(key) == text


def test_error_type() -> None:
    assert sc.error_type(KafkaError(KafkaError._MSG_TIMED_OUT)) == "_MSG_TIMED_OUT"
    assert sc.error_type(BufferError("full")) == "BufferError"
    assert sc.error_type(Exception(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))) == (
        "UNKNOWN_TOPIC_OR_PART"
    )
    assert sc.error_type(object()) == "_OTHER"


def test_captured_headers_read_only_the_allow_list() -> None:
    attrs: dict[str, object] = {}
    wanted = {"x-id": "messaging.header.x-id"}
    sc.header_attributes(attrs, [("X-Id", b"1"), ("x-id", "2"), ("secret", b"s"), ("x-id", b"\xff"),
                                 ("bad",), None], wanted)  # fmt: skip
    assert attrs == {"messaging.header.x-id": ["1", "2"]}
    attrs = {}
    sc.header_attributes(attrs, {"x-id": b"3"}, wanted)
    assert attrs == {"messaging.header.x-id": ["3"]}
