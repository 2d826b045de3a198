"""The ``kafkaplus`` command: ``--version`` here, everything else in kafkaplus-tools.

The demo and the audit live in the separate ``kafkaplus-tools`` distribution so
that a service that installs the instrumentation carries none of them. This
module is the console script's entry point only; the instrumentation never
imports it.
"""

from __future__ import annotations

import importlib.util
import sys

from .version import __version__

TOOLS = "kafkaplus_tools"
MISSING_TOOLS = (
    "kafkaplus: the demo and the audit are in the kafkaplus-tools package: "
    "pip install kafkaplus-tools"
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-V"]):
        print(f"kafkaplus {__version__}")
        return 0
    if importlib.util.find_spec(TOOLS) is None:
        print(MISSING_TOOLS, file=sys.stderr)
        return 2
    from kafkaplus_tools.cli import main as tools_main  # optional distribution

    return tools_main(args)


if __name__ == "__main__":
    sys.exit(main())
