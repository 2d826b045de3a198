"""pytest plugin for run_ck_suite.py: instruments (or not), then records each test's outcome.

Loaded with ``-p ck_suite_plugin`` in a pytest subprocess that runs
confluent-kafka-python's own unit tests; it is never collected by this
project's pytest (no ``test_`` prefix). The mode comes from the environment:

* ``KAFKAPLUS_CK_MODE=uninstrumented``: nothing is instrumented (the reference run);
* ``KAFKAPLUS_CK_MODE=sdk``: an SDK TracerProvider sampling 100 % (ALWAYS_ON)
  with an in-memory exporter and a MeterProvider with an in-memory reader,
  set as the global providers and passed to ``instrument()``;
* ``KAFKAPLUS_CK_MODE=nosdk``: ``instrument()`` with no SDK at all.

Instrumentation happens when pytest imports this plugin, which is before it
collects (so imports) any test module: the tests' ``from confluent_kafka
import Producer`` and their subclasses of it see the traced classes, as an
application started by ``opentelemetry-instrument`` would.

Outcomes are appended to ``KAFKAPLUS_CK_RESULTS`` as JSON lines: a ``start``
record when a test begins (so the runner knows which test a stuck or crashed
process was in) and an ``outcome`` record when it ends. Node ids listed in
``KAFKAPLUS_CK_SKIP_IDS`` (one a line) are deselected: the runner uses it to
resume a run after a test that could not be interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import pytest

MODE = os.environ.get("KAFKAPLUS_CK_MODE", "uninstrumented")
_RESULTS = os.environ.get("KAFKAPLUS_CK_RESULTS")
# pytest-timeout's failure text: "Timeout (>60.0s) from pytest-timeout".
_TIMEOUT_MARK = "Timeout (>"
_MESSAGE_LINES = 12
_GUARD_MARK = "ck-suite guard:"
#: How much a single test may grow the process (MiB) before the guard stops it.
_MEMORY_MB = float(os.environ.get("KAFKAPLUS_CK_MEMORY_MB", "1024"))
#: pytest-timeout's per-test timeout (the runner passes it): the guard fires again after it.
_TIMEOUT = float(os.environ.get("KAFKAPLUS_CK_TIMEOUT", "0"))
_REFIRE_S = 10.0


def _instrument() -> str:
    if MODE == "uninstrumented":
        return "not instrumented"
    from opentelemetry_instrumentation_kafkaplus import KafkaPlusInstrumentor

    if MODE == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        tracer_provider = TracerProvider(sampler=ALWAYS_ON)
        tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        KafkaPlusInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        what = "instrumented, SDK TracerProvider (ALWAYS_ON) + MeterProvider"
    elif MODE == "nosdk":
        KafkaPlusInstrumentor().instrument()
        what = "instrumented, no SDK"
    else:
        raise pytest.UsageError(f"KAFKAPLUS_CK_MODE={MODE!r}: uninstrumented, sdk or nosdk")
    import confluent_kafka

    if confluent_kafka.Producer.__module__ == "cimpl":
        raise pytest.UsageError("KafkaPlusInstrumentor().instrument() left Producer untraced")
    return what


_WHAT = _instrument()

# Several of the client's tests interrupt poll()/flush()/consume() with SIGINT and expect
# KeyboardInterrupt. A process started in the background (nohup, `cmd &` in a script, some CI
# runners) inherits SIGINT ignored, and Python then installs no handler for it: give it the
# handler an interactive start would, so that every run sees the same signals.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _write(record: dict[str, Any]) -> None:
    if _RESULTS:
        with open(_RESULTS, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()


def _message(report: Any) -> str:
    text = getattr(report, "longreprtext", "") or ""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    lines = [line for line in text.splitlines() if line.strip()]
    # The exception lines ("E   ...") say most; fall back to the last lines.
    errors = [line for line in lines if line.startswith("E ")]
    return "\n".join((errors or lines[-_MESSAGE_LINES:])[:_MESSAGE_LINES])


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Guard:
    """Stops a runaway test that pytest-timeout alone cannot.

    A loop that never ends over a ``unittest.mock`` object allocates as it
    goes (every call is recorded): at several hundred MiB a second, waiting
    for the per-test timeout could exhaust the machine's memory. pytest-timeout
    also fires only once per test, so a test whose timeout failure is swallowed
    (``asyncio.gather(..., return_exceptions=True)``) would go on. The guard
    thread checks every half second; when the running test has grown the
    process by more than ``KAFKAPLUS_CK_MEMORY_MB``, or is still running
    ``_REFIRE_S`` past the timeout, it makes the main thread fail the test
    (SIGUSR2, whose handler calls ``pytest.fail`` as pytest-timeout does). Past
    twice the memory limit, with the main thread not answering, it kills the
    process; the runner then records the test as hung, with the guard's note.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodeid: str | None = None
        self.started = 0.0
        self.base_mb = 0.0
        self.fired = 0.0
        self.reason: str | None = None
        signal.signal(signal.SIGUSR2, self._handler)
        threading.Thread(target=self._watch, name="ck-suite-guard", daemon=True).start()

    def begin(self, nodeid: str) -> None:
        with self.lock:
            self.nodeid, self.started, self.fired, self.reason = nodeid, time.monotonic(), 0.0, None
            self.base_mb = _rss_mb() or 0.0

    def end(self) -> None:
        with self.lock:
            self.nodeid = None

    def _handler(self, signum: int, frame: Any) -> None:
        reason = self.reason
        if self.nodeid is not None and reason is not None:
            pytest.fail(f"{_GUARD_MARK} {reason}", pytrace=False)

    def _watch(self) -> None:
        main = threading.main_thread().ident
        while True:
            time.sleep(0.5)
            with self.lock:
                nodeid = self.nodeid
                now = time.monotonic()
                if nodeid is None or now - self.fired < 5.0:
                    continue
                rss = _rss_mb()
                grown = rss - self.base_mb if rss is not None else 0.0
                elapsed = now - self.started
                if grown > _MEMORY_MB:
                    reason = (
                        f"this test grew the process by {grown:.0f} MiB in {elapsed:.0f} s "
                        f"(limit {_MEMORY_MB:.0f} MiB): a runaway loop, stopped"
                    )
                elif _TIMEOUT and elapsed > _TIMEOUT + _REFIRE_S:
                    reason = (
                        f"still running {elapsed:.0f} s after it started, past pytest-timeout's "
                        f"{_TIMEOUT:g} s: stopped again"
                    )
                else:
                    continue
                if self.reason is None or reason.split()[0] != self.reason.split()[0]:
                    # Once per test and kind: a test stuck in C code is re-signalled in
                    # vain, and the runner must see no progress in the results file.
                    _write({"event": "guard", "nodeid": nodeid, "message": reason})
                self.reason, self.fired = reason, now
            if grown > 2 * _MEMORY_MB:
                _write({"event": "guard", "nodeid": nodeid, "message": f"{reason}; killed"})
                os.kill(os.getpid(), signal.SIGKILL)
            if main is not None:
                signal.pthread_kill(main, signal.SIGUSR2)


class _Recorder:
    def __init__(self) -> None:
        self.phases: dict[str, dict[str, Any]] = {}
        self.guard = _Guard()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
        _write({"event": "collected", "nodeids": [item.nodeid for item in items]})
        path = os.environ.get("KAFKAPLUS_CK_SKIP_IDS")
        if not path or not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}
        kept = [item for item in items if item.nodeid not in skip]
        dropped = [item for item in items if item.nodeid in skip]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            _write(
                {
                    "event": "outcome",
                    "nodeid": report.nodeid,
                    "outcome": "collect-error",
                    "message": _message(report),
                }
            )

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.phases[nodeid] = {}
        _write({"event": "start", "nodeid": nodeid})
        self.guard.begin(nodeid)

    def pytest_runtest_logreport(self, report: Any) -> None:
        self.phases.setdefault(report.nodeid, {})[report.when] = report

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.guard.end()
        phases = self.phases.pop(nodeid, {})
        outcome, message = "passed", ""
        for when in ("setup", "call", "teardown"):
            report = phases.get(when)
            if report is None:
                continue
            if report.failed:
                text = getattr(report, "longreprtext", "") or ""
                if _GUARD_MARK in text or (_TIMEOUT_MARK in text and "pytest-timeout" in text):
                    outcome = "hung"
                elif when == "call":
                    outcome = "failed"
                else:
                    outcome = "error"
                message = _message(report)
                break
            if report.skipped:
                outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
                message = _message(report)
                break
            if when == "call" and hasattr(report, "wasxfail"):
                outcome = "xpassed"
        _write({"event": "outcome", "nodeid": nodeid, "outcome": outcome, "message": message})

    def pytest_report_header(self, config: Any) -> str:
        import confluent_kafka

        return (
            f"kafkaplus ck-suite: mode={MODE} ({_WHAT}); confluent-kafka "
            f"{confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
        )


def pytest_configure(config: Any) -> None:
    config.pluginmanager.register(_Recorder(), "kafkaplus-ck-recorder")
