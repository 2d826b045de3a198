"""One place that swallows instrumentation failures.

An instrumentation runs inside every service of its users: an exception that
escapes it breaks their app, and a log line per message floods their logs. So
every failure is caught, logged once per kind at WARNING, and again (with the
traceback) at DEBUG each time.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("opentelemetry_instrumentation_kafkaplus")

_seen: set[str] = set()
_lock = threading.Lock()


def report(kind: str, exc: BaseException) -> None:
    """Log an instrumentation failure without ever raising."""
    try:
        first = False
        with _lock:
            if kind not in _seen:
                _seen.add(kind)
                first = True
        if first:
            logger.warning(
                "kafkaplus: %s failed (%s: %s); the application is unaffected. "
                "Further failures of this kind are logged at DEBUG.",
                kind,
                type(exc).__name__,
                exc,
            )
        logger.debug("kafkaplus: %s failed", kind, exc_info=exc)
    except Exception:  # pragma: no cover - logging itself broken
        pass


def warn_once(kind: str, message: str, *args: object) -> None:
    """Log a configuration or environment warning once per process."""
    with _lock:
        if kind in _seen:
            return
        _seen.add(kind)
    logger.warning(message, *args)


class KafkaFailure(Exception):
    """A librdkafka ``KafkaError`` (or any error object) carried as an exception.

    Delivery reports, commit results and ``produce_batch`` hand errors over as
    values; spans record exceptions. ``args[0]`` is the original error, so
    ``error.type`` is its name (``_MSG_TIMED_OUT``...).
    """

    def __init__(self, err: object) -> None:
        super().__init__(str(err))
        self.args = (err,)
