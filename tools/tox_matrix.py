#!/usr/bin/env python3
"""Run the tox matrix with the interpreters this machine has; say what was skipped.

``make test`` calls this. It looks for python3.10 ... python3.13 on PATH and in
pyenv's versions (without changing which Python is active), puts the ones it
finds on PATH for tox, runs every tox environment they can run, and lists the
environments it skipped with how to get their interpreter. With
``KAFKAPLUS_REQUIRE_ALL=1`` (what CI sets) a missing interpreter is an error.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VERSIONS = ("3.10", "3.11", "3.12", "3.13")
ROOT = Path(__file__).resolve().parent.parent


def pyenv_dirs(version: str) -> list[Path]:
    """bin directories of pyenv's installs of ``version``, newest patch first."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            done = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
            root = done.stdout.strip() or root
    versions = Path(root) / "versions"
    if not versions.is_dir():
        return []
    found = [p for p in versions.iterdir() if re.fullmatch(re.escape(version) + r"\.\d+", p.name)]
    found.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    return [p / "bin" for p in found if (p / "bin" / f"python{version}").exists()]


def _runs(command: str) -> bool:
    """Whether ``command`` is on PATH and starts (a pyenv shim of an inactive version does not)."""
    if not shutil.which(command):
        return False
    try:
        done = subprocess.run([command, "-c", "pass"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def interpreters() -> tuple[dict[str, str], list[str]]:
    """(version -> a directory to put on PATH, or "" when already on PATH), missing versions."""
    found: dict[str, str] = {}
    missing = []
    for version in VERSIONS:
        if _runs(f"python{version}"):
            found[version] = ""
            continue
        dirs = pyenv_dirs(version)
        if dirs:
            found[version] = str(dirs[0])
        else:
            missing.append(version)
    return found, missing


def tox_environ() -> dict[str, str]:
    """The environment for tox, without a TOX_PARALLEL tox cannot read.

    tox reads ``TOX_<OPTION>`` variables as option defaults and prints a warning to
    stdout for one it cannot convert (``TOX_PARALLEL=auto``), which ``tox -l`` would
    then list as an environment name. The parallelism goes on the command line instead.
    """
    env = dict(os.environ)
    env.pop("TOX_PARALLEL", None)
    return env


def tox_envs(tox: list[str], env: dict[str, str]) -> list[str]:
    out = subprocess.run([*tox, "-l"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    names = (line.strip() for line in out.stdout.splitlines())
    return [name for name in names if re.fullmatch(r"[\w.-]+", name)]


def env_version(env: str, base_pythons: dict[str, str] | None = None) -> str | None:
    """The Python a tox environment needs (py311-... -> 3.11, or its ``base_python``).

    None: the Python tox itself runs on, which is always there.
    """
    match = re.match(r"py3(\d+)", env)
    if match:
        return f"3.{match.group(1)}"
    return (base_pythons or {}).get(env)


def base_pythons(ini: Path = ROOT / "tox.ini") -> dict[str, str]:
    """Environment name -> version, for the ``[testenv:NAME]`` sections that set ``base_python``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    found = {}
    for section in parser.sections():
        if not section.startswith("testenv:"):
            continue
        match = re.fullmatch(r"python(3\.\d+)", parser[section].get("base_python", "").strip())
        if match:
            found[section.split(":", 1)[1]] = match.group(1)
    return found


def say(line: str) -> None:
    print(f"kafkaplus: {line}", file=sys.stderr)


def main(argv: list[str]) -> int:
    tox = [sys.executable, "-m", "tox"]
    found, missing = interpreters()
    extra = [d for d in found.values() if d]
    env = tox_environ()
    if extra:
        env["PATH"] = os.pathsep.join([*extra, env.get("PATH", "")])
    envs = tox_envs(tox, env)
    versions = base_pythons()
    runnable = [e for e in envs if env_version(e, versions) not in missing]
    skipped = [e for e in envs if env_version(e, versions) in missing]
    if skipped:
        say("skipping tox environments whose Python is not installed:")
        for version in missing:
            names = ", ".join(e for e in skipped if env_version(e, versions) == version)
            print(f"  python{version}: {names}", file=sys.stderr)
        print(
            "  install it (for example `pyenv install " + " ".join(missing) + "`, or your "
            "system's python3.X package) and run `make test` again.",
            file=sys.stderr,
        )
        if os.environ.get("KAFKAPLUS_REQUIRE_ALL") == "1":
            say("KAFKAPLUS_REQUIRE_ALL=1: every environment must run.")
            return 1
    parallel = os.environ.get("KAFKAPLUS_PARALLEL") or os.environ.get("TOX_PARALLEL") or "auto"
    command = [*tox, "run-parallel", "--parallel", parallel, "--parallel-no-spinner", "--quiet",
               "-e", ",".join(runnable), *argv]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env)
    if skipped:
        print(f"kafkaplus: skipped {len(skipped)} environment(s): {', '.join(skipped)}",
              file=sys.stderr)  # fmt: skip
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
