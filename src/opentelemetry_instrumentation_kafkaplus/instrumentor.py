"""KafkaPlusInstrumentor: substitutes traced client classes, and undoes it.

confluent_kafka.Producer and Consumer are C types whose methods cannot be
replaced, so the module attributes of ``confluent_kafka`` and
``confluent_kafka.cimpl`` are pointed at traced subclasses. Modules that had
already done ``from confluent_kafka import Producer`` before ``instrument()``
hold the original class: their module-level names are re-pointed too (and
restored by ``uninstrument()``), and one warning names any that could not be.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from . import config
from ._errors import logger
from .package import _instruments
from .semconv import SCHEMA_URL
from .telemetry import ACTIVE, Telemetry
from .version import __version__

_NAME = "opentelemetry_instrumentation_kafkaplus"


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
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        options = config.resolve(kwargs)
        import confluent_kafka
        from confluent_kafka import cimpl

        from .consumer import Consumer
        from .producer import Producer

        tracer = trace.get_tracer(
            _NAME, __version__, kwargs.get("tracer_provider"), schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(
            _NAME, __version__, kwargs.get("meter_provider"), schema_url=SCHEMA_URL
        )
        from .statistics import StatisticsBridge

        bridge = self._bridges.get(id(meter))
        if bridge is None:
            # One bridge per meter: its observable instruments register once.
            bridge = self._bridges[id(meter)] = StatisticsBridge(meter)
        ACTIVE.telemetry = Telemetry(tracer, meter, options, statistics=bridge)
        _disable_legacy_plugin(self._patched)
        originals = {cimpl.Producer: Producer, cimpl.Consumer: Consumer}
        for module in (confluent_kafka, cimpl):
            self._set(module, "Producer", Producer)
            self._set(module, "Consumer", Consumer)
        self._rebind_imported(originals)
        from . import aio, serializing

        type(self)._wrapped = serializing.wrap() + aio.wrap()
        _share_consumer_notice(self._set)

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
        from . import serializing

        serializing.unwrap(type(self)._wrapped)
        type(self)._wrapped = []
        while self._patched:
            owner, name, old = self._patched.pop()
            if old is _MISSING:
                vars(owner).pop(name, None)
            else:
                setattr(owner, name, old)


def _share_consumer_notice(setter: Any) -> None:
    """ShareConsumer (share groups) is not traced yet: say so once, when one is created."""
    import confluent_kafka

    original = getattr(confluent_kafka, "ShareConsumer", None)
    if original is None or not isinstance(original, type):
        return

    class ShareConsumer(original):  # type: ignore[misc,valid-type]
        __doc__ = original.__doc__

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            from ._errors import warn_once

            warn_once(
                "share consumer",
                "kafkaplus: confluent_kafka.ShareConsumer (share groups) is not traced; "
                "its messages get no process spans.",
            )

    ShareConsumer.__qualname__ = ShareConsumer.__name__ = "ShareConsumer"
    setter(confluent_kafka, "ShareConsumer", ShareConsumer)


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
    import os
    from importlib import metadata

    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    if "confluent_kafka" in {d.strip() for d in disabled.split(",")}:
        return
    try:
        metadata.distribution(_LEGACY_DIST)
    except metadata.PackageNotFoundError:
        return
    try:
        import importlib

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
        "kafkaplus: %s is installed too; kafkaplus is active and has disabled it so that spans "
        "and trace headers are not doubled. To use it instead of kafkaplus, set "
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=kafkaplus.",
        _LEGACY_DIST,
    )


_MISSING = object()


def _noop(**kwargs: Any) -> None:
    return None
