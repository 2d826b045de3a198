"""KafkaPlusInstrumentor: substitutes traced client classes, and undoes it.

confluent_kafka.Producer and Consumer are C types whose methods cannot be
replaced, so the module attributes of ``confluent_kafka`` and
``confluent_kafka.cimpl`` are pointed at traced subclasses. Modules that had
already done ``from confluent_kafka import Producer`` before ``instrument()``
hold the original class: their module-level names are re-pointed too (and
restored by ``uninstrument()``).

confluent-kafka is imported only inside ``_instrument``: the entry point must
load (and report a missing dependency cleanly) where it is not installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Collection
from importlib import metadata
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from .core import options as options_module
from .core.errors import logger
from .core.statistics import StatisticsBridge
from .core.telemetry import ACTIVE, SCOPE, Telemetry
from .package import INSTRUMENTS

_NAME = SCOPE
_MISSING = object()


class KafkaPlusInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces confluent-kafka clients: one trace from produce() to poll().

    ``instrument(tracer_provider=None, meter_provider=None, **options)``; the
    options and their environment variables are listed in the README.
    """

    # BaseInstrumentor is a singleton whose __init__ runs on every
    # KafkaPlusInstrumentor(): state lives on the class, not set in __init__.
    _patched: list[tuple[Any, str, Any]] = []
    _bridges: dict[int, Any] = {}
    _wrapped: list[tuple[Any, str, Any]] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        options = options_module.resolve(kwargs)
        import confluent_kafka  # the optional dependency this instruments
        from confluent_kafka import cimpl

        from .clients import aio, executors, faststream, serializing, share
        from .clients.consumer import Consumer
        from .clients.producer import Producer

        tel = Telemetry.build(kwargs.get("tracer_provider"), kwargs.get("meter_provider"), options)
        bridge = self._bridges.get(id(tel.meter))
        if bridge is None:
            # One bridge per meter: its observable instruments register once.
            bridge = self._bridges[id(tel.meter)] = StatisticsBridge(tel.meter)
        tel.statistics = bridge
        ACTIVE.telemetry = tel
        _disable_legacy_plugin(self._patched)
        originals = {cimpl.Producer: Producer, cimpl.Consumer: Consumer}
        for module in (confluent_kafka, cimpl):
            self._set(module, "Producer", Producer)
            self._set(module, "Consumer", Consumer)
        self._rebind_imported(originals)
        type(self)._wrapped = serializing.wrap() + aio.wrap()
        executors.install()
        faststream.install()
        original_share = getattr(confluent_kafka, "ShareConsumer", None)
        if isinstance(original_share, type):
            self._set(confluent_kafka, "ShareConsumer", share.notice_class(original_share))

    def _set(self, owner: Any, name: str, value: Any) -> None:
        old = getattr(owner, name)
        if old is value:
            return
        self._patched.append((owner, name, old))
        setattr(owner, name, value)

    def _rebind_imported(self, originals: dict[Any, Any]) -> None:
        """Point names bound to the original classes in app modules at ours."""
        for modname, module in list(sys.modules.items()):
            if module is None or modname.startswith(("confluent_kafka", _NAME)):
                continue
            try:
                namespace = vars(module)
            except TypeError:
                continue
            for attr, value in list(namespace.items()):
                try:
                    traced = originals.get(value)
                except TypeError:  # unhashable
                    continue
                if traced is not None:
                    logger.debug("kafkaplus: re-pointing %s.%s at the traced class", modname, attr)
                    self._set(module, attr, traced)

    def _uninstrument(self, **kwargs: Any) -> None:
        ACTIVE.telemetry = None
        from .clients import serializing

        serializing.unwrap(type(self)._wrapped)
        type(self)._wrapped = []
        while self._patched:
            owner, name, old = self._patched.pop()
            if old is _MISSING:
                vars(owner).pop(name, None)
            else:
                setattr(owner, name, old)


_LEGACY_MODULE = "opentelemetry.instrumentation.confluent_kafka"
_LEGACY_DIST = "opentelemetry-instrumentation-confluent-kafka"


def _disable_legacy_plugin(patched: list[tuple[Any, str, Any]]) -> None:
    """Keep exactly one Kafka instrumentation active when the contrib one is installed.

    Both register an ``opentelemetry_instrumentor`` entry point, so
    ``opentelemetry-instrument`` would load both and every message would get two
    producer spans and two ``traceparent`` headers. kafkaplus wins: the other is
    uninstrumented if it already ran, and its instrument() becomes a no-op if it
    runs later. Users who prefer it disable kafkaplus instead.
    """
    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    if "confluent_kafka" in {d.strip() for d in disabled.split(",")}:
        return
    try:
        metadata.distribution(_LEGACY_DIST)
    except metadata.PackageNotFoundError:
        return
    try:
        legacy = importlib.import_module(_LEGACY_MODULE).ConfluentKafkaInstrumentor()
        if legacy.is_instrumented_by_opentelemetry:
            legacy.uninstrument()
        for name in ("_instrument", "_uninstrument"):
            patched.append((legacy, name, _MISSING))
            setattr(legacy, name, _noop)
    except Exception as exc:
        logger.warning("kafkaplus: could not disable %s: %s", _LEGACY_DIST, exc)
        return
    logger.warning(
        "kafkaplus: %s is installed too (opentelemetry-bootstrap installs it); kafkaplus is "
        "active and has disabled it so that spans and trace headers are not doubled. To "
        "silence this, set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=confluent_kafka (or uninstall "
        "it); to use it instead of kafkaplus, set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=kafkaplus.",
        _LEGACY_DIST,
    )


def _noop(**kwargs: Any) -> None:
    return None
