"""Data loss made visible: offsets a consumer never received, messages never delivered.

Consumer side: per partition, the next offset this consumer expects is the
last one it received + 1. A message further ahead means the offsets between
were skipped: deleted by retention before they were read, jumped over by an
offset reset, or (not loss) compacted away or used by transaction markers.
The count is ``kafka.consumer.skipped_messages`` and an event on the process
span. Tracking restarts for a partition whenever its position is changed on
purpose (assign, seek, rebalance) or goes backwards.

Producer side: every failed delivery is counted in
``kafka.producer.undelivered_messages`` with its ``error.type``.
"""

from __future__ import annotations

import threading
from typing import Any

#: Span event added to the process span of the first message after a gap.
GAP_EVENT = "kafka.offset_gap"


class GapTracker:
    """Next expected offset per (topic, partition) for one consumer."""

    __slots__ = ("_lock", "_next")

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def observe(self, topic: str, partition: int, offset: int) -> int:
        """Offsets skipped before this message (0 when none or unknown)."""
        key = (topic, partition)
        expected = self._next.get(key)
        self._next[key] = offset + 1
        if expected is None or offset <= expected:
            return 0
        return offset - expected

    def forget(self, partitions: Any = None) -> None:
        """Stop tracking these TopicPartitions (all when None)."""
        with self._lock:
            if partitions is None:
                self._next.clear()
                return
            for tp in partitions:
                try:
                    self._next.pop((tp.topic, tp.partition), None)
                except AttributeError:
                    continue
