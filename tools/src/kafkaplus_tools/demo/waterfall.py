"""Draw one trace as a terminal waterfall: a row per span, bars to scale.

Fits 80 columns; colour only on a TTY (and never with NO_COLOR).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

WIDTH = 80
_COLOURS = {"ingest": "36", "enricher": "35", "sink": "32"}


def _fmt_ms(ns: float) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _where(attrs: dict[str, Any]) -> str:
    p = attrs.get("messaging.destination.partition.id")
    o = attrs.get("messaging.kafka.offset")
    if p is None:
        return ""
    return f"p{p}" + (f"@{o}" if o is not None else "")


def _order(spans: Sequence[Any]) -> list[tuple[int, Any]]:
    """Depth-first by start time, so children sit under their parents."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Any]] = {}
    roots = []
    for s in spans:
        if s.parent_id and s.parent_id in ids:
            children.setdefault(s.parent_id, []).append(s)
        else:
            roots.append(s)
    out: list[tuple[int, Any]] = []

    def walk(span: Any, depth: int) -> None:
        out.append((depth, span))
        for child in sorted(children.get(span.span_id, []), key=lambda c: c.start_ns):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r.start_ns):
        walk(root, 0)
    return out


def render(spans: Sequence[Any], colour: bool | None = None) -> str:
    if not spans:
        return "(no spans)"
    if colour is None:
        colour = os.isatty(1) and not os.environ.get("NO_COLOR")
    t0 = min(s.start_ns for s in spans)
    t1 = max(s.end_ns for s in spans)
    total = max(t1 - t0, 1)
    svc_w, name_w, where_w, dur_w = 9, 27, 8, 9
    bar_w = WIDTH - svc_w - name_w - where_w - dur_w - 4
    services = {s.service for s in spans}
    lines = [
        f"trace {spans[0].trace_id}  {len(spans)} spans, {len(services)} services, "
        f"{_fmt_ms(total)}"[:WIDTH],
        "",
        f"{'service':<{svc_w}} {'span':<{name_w}} {'where':<{where_w}} "
        f"{'0':<{bar_w // 2}}{_fmt_ms(total):>{bar_w - bar_w // 2}} {'duration':>{dur_w}}",
    ]
    for depth, s in _order(spans):
        name = (" " * depth + s.name)[:name_w]
        where = _where(s.attributes)[:where_w]
        a = int((s.start_ns - t0) / total * bar_w)
        b = max(a + 1, round((s.end_ns - t0) / total * bar_w))
        bar = " " * a + "\u2588" * (min(b, bar_w) - a)
        bar = bar.ljust(bar_w)
        if s.status_code == 2:
            # The marker takes the last cell when the bar already fills the row.
            bar = (bar.rstrip()[: bar_w - 1] + "!").ljust(bar_w)
        if colour:
            code = _COLOURS.get(s.service, "34")
            bar = f"\x1b[{code}m{bar}\x1b[0m"
        lines.append(
            f"{s.service[:svc_w]:<{svc_w}} {name:<{name_w}} {where:<{where_w}} "
            f"{bar} {_fmt_ms(s.end_ns - s.start_ns):>{dur_w}}"
        )
    return "\n".join(lines)
