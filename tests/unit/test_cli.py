"""The runtime's ``kafkaplus`` command: its version, and where the tools went."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opentelemetry_instrumentation_kafkaplus import cli
from opentelemetry_instrumentation_kafkaplus.version import __version__


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "opentelemetry_instrumentation_kafkaplus.cli", flag],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"kafkaplus {__version__}\n")


def test_without_the_tools_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "TOOLS", "kafkaplus_tools_not_installed")
    assert cli.main(["demo", "--help"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "kafkaplus: the demo and the audit are in the kafkaplus-tools package: pip install kafkaplus-tools\n"
