"""Instructions per call of kafkaplus's own work on the hot paths, counted, not timed.

``parts.py`` times the produce and poll paths, and on a busy machine its rows
swing by a third between runs: too much to tell whether a change to a hot path
made it slower. This script counts the CPU instructions instead, with
valgrind's cachegrind (``--cache-sim=no``), whose counts agree run after run
within about 3 % (the clients' librdkafka threads add a little that depends
on the run's length), so two builds compare on any machine:

* the cases are ``parts.py``'s kafkaplus produce path (``produce()`` plus its
  delivery callback) and poll path (the process span made current, ended at
  the next poll), with librdkafka's call replaced by one returning a real
  message, as there;
* the SDK's tracer is stubbed: it hands out one span, recording at 100 % and
  an unsampled ``NonRecordingSpan`` at 1 %, so what is counted is kafkaplus's
  own work (plus the API calls it makes), not the SDK's sampling or span
  creation;
* each case runs in a fresh process twice, with ``--calls`` and with twice as
  many calls; the difference over the extra calls is one call's count, so the
  setup (imports, the mock cluster) cancels out. ``PYTHONHASHSEED=0``.

``--tree DIR`` (repeatable) measures another checkout, with its own
``benchmarks/parts.py`` and ``src`` (``git worktree add DIR REV``): a commit
before a change against the change. Needs ``valgrind`` (Debian: ``apt-get
install valgrind``) and the benchmark environment of ``requirements.txt``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CASES = {
    "produce 100 %": ("produce: kafkaplus (produce() + delivery callback)", 1.0),
    "poll 100 %": ("poll: kafkaplus (process span, current, ended)", 1.0),
    "produce 1 %": ("produce: kafkaplus (produce() + delivery callback)", 0.01),
    "poll 1 %": ("poll: kafkaplus (process span, current, ended)", 0.01),
}
WARMUP = 300


def _child(case: str, ratio: float, calls: int) -> None:
    """Run one case ``calls`` times after a warm-up, in the tree of the current directory."""
    sys.path.insert(0, str(Path.cwd() / "benchmarks"))
    import parts  # the tree's own
    from opentelemetry.sdk import trace as sdktrace
    from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

    sampled = ratio >= 1
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False,
                          TraceFlags(1 if sampled else 0))  # fmt: skip

    class Recording(Span):
        """A span that records and does nothing: what kafkaplus does with it is what counts."""

        def get_span_context(self) -> SpanContext:
            return context

        def is_recording(self) -> bool:
            return True

        def end(self, end_time: int | None = None) -> None:
            pass

        def set_attribute(self, key: str, value: Any) -> None:
            pass

        def set_attributes(self, attributes: Any) -> None:
            pass

        def add_event(self, *args: Any, **kwargs: Any) -> None:
            pass

        def add_link(self, *args: Any, **kwargs: Any) -> None:
            pass

        def update_name(self, name: str) -> None:
            pass

        def set_status(self, *args: Any, **kwargs: Any) -> None:
            pass

        def record_exception(self, *args: Any, **kwargs: Any) -> None:
            pass

    span = Recording() if sampled else NonRecordingSpan(context)

    def start_span(self: Any, *args: Any, **kwargs: Any) -> Any:
        return span

    sdktrace.Tracer.start_span = start_span  # type: ignore[method-assign]
    delivered, msgs = parts._messages()
    fn = parts._cases(ratio, delivered, msgs)[case]
    for _ in range(WARMUP + calls):
        fn()
    os._exit(0)  # no teardown counted: the clients' threads are left as they are


def _count(tree: Path, case: str, ratio: float, calls: int) -> int:
    """Instructions of one process running ``case`` ``calls`` times in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONHASHSEED": "0"}
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, str(Path(__file__).resolve()), "--child", case, str(ratio), str(calls),
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no count for {case!r} in {tree}:\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(tree: Path, case: str, ratio: float, calls: int) -> int:
    """One call's instructions: (count at 2 x calls - count at calls) / calls."""
    return (_count(tree, case, ratio, 2 * calls) - _count(tree, case, ratio, calls)) // calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", type=Path,
                    help="a checkout to measure (repeatable; default: this one)")  # fmt: skip
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated, of: {', '.join(CASES)}")  # fmt: skip
    ap.add_argument("--calls", type=int, default=1000, help="calls per count (default 1000)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, ratio, calls = args.child
        _child(case, float(ratio), int(calls))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parent.parent]]
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(
        f"instructions per call (cachegrind), {args.calls} and {2 * args.calls} calls differenced"
    )
    print(f"{'case':<14}" + "".join(f"{t.name:>16}" for t in trees))
    for name in names:
        case, ratio = CASES[name]
        counts = [per_call(tree, case, ratio, args.calls) for tree in trees]
        print(f"{name:<14}" + "".join(f"{n:>16,}" for n in counts), flush=True)


if __name__ == "__main__":
    main()
