"""``make test``'s matrix runner: which environments a missing Python skips."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tox_matrix", ROOT / "tools" / "tox_matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("tox_matrix", module)
    spec.loader.exec_module(module)
    return module


def test_every_environment_names_the_python_it_needs() -> None:
    matrix = _load()
    versions = matrix.base_pythons()
    assert matrix.env_version("py310-ckoldest", versions) == "3.10"
    assert matrix.env_version("py313-cklatest", versions) == "3.13"
    # Named environments that pin an interpreter are skipped with it, not run and failed.
    assert matrix.env_version("otel-newest", versions) == "3.12"
    assert matrix.env_version("otel-floor", versions) == "3.11"
    assert matrix.env_version("ck-suite", versions) == "3.11"
    # The rest run on tox's own Python.
    assert matrix.env_version("lint", versions) is None


def test_tools_version_is_the_instrumentations() -> None:
    """kafkaplus-tools pins the instrumentation's exact version: the two move together."""
    from opentelemetry_instrumentation_kafkaplus.version import __version__

    text = (ROOT / "tools" / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == __version__  # type: ignore[union-attr]
    assert f'"opentelemetry-instrumentation-kafkaplus == {__version__}"' in text
