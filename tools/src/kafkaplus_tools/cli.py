"""The tools behind the ``kafkaplus`` command: ``kafkaplus demo`` and ``kafkaplus audit``."""

from __future__ import annotations

import sys

USAGE = """usage: kafkaplus COMMAND [options]

commands:
  demo    run an embedded broker and an instrumented three-service pipeline,
          and draw one message's trace (kafkaplus demo --help)
  audit   find never-consumed messages and delivery failures in exported
          traces (kafkaplus audit --help)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command == "audit":
        from .audit import main as audit_main

        return int(audit_main(rest))
    print(f"kafkaplus: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
