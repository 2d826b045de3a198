"""The README's and docs' tables say what the code does: options, metrics, statistics."""

from __future__ import annotations

import re
from pathlib import Path

from opentelemetry_instrumentation_kafkaplus.core import instruments, options
from opentelemetry_instrumentation_kafkaplus.core.statistics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]


def _table(text: str, header: str) -> list[list[str]]:
    """Rows (cells) of the markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _code(cell: str) -> str:
    match = re.search(r"`([^`]+)`", cell)
    return match.group(1) if match else ""


def test_readme_options_are_the_options() -> None:
    rows = _table((ROOT / "README.md").read_text(), "| keyword | environment variable |")
    documented = {_code(r[0]): (_code(r[1]), r[2]) for r in rows if _code(r[0])}
    assert set(documented) == set(options.NAMES)
    defaults = options.Options()
    for name, (variable, default) in documented.items():
        assert variable == options.ENV_PREFIX + name.upper(), name
        value = getattr(defaults, name)
        shown = {True: "`true`", False: "`false`", None: "none", (): "none"}.get(value)
        if isinstance(value, str):
            shown = f"`{value}`"
        elif isinstance(value, int) and not isinstance(value, bool):
            shown = f"`{value}` (off)" if value == 0 else f"`{value}`"
        assert default == shown, (name, default, value)


def test_readme_metrics_are_the_instruments() -> None:
    rows = _table((ROOT / "README.md").read_text(), "| name | instrument | unit | set |")
    documented = {_code(r[0]): r[3] for r in rows}
    names = {
        "semconv": {instruments.CLIENT_OPERATION_DURATION, instruments.PROCESS_DURATION,
                    instruments.SENT_MESSAGES, instruments.CONSUMED_MESSAGES},
        "all": {instruments.MESSAGE_AGE, instruments.MESSAGE_ORIGIN_AGE},
        "always": {instruments.SKIPPED_MESSAGES, instruments.UNDELIVERED_MESSAGES,
                   instruments.OFFSET_RESETS},
    }  # fmt: skip
    assert documented == {n: metric_set for metric_set, ns in names.items() for n in ns}


def test_statistics_doc_lists_every_bridged_metric() -> None:
    rows = _table((ROOT / "docs" / "statistics.md").read_text(), "| Metric | Instrument |")
    assert {_code(r[0]) for r in rows} == set(METRIC_NAMES)
