#!/usr/bin/env python3
"""Run confluent-kafka-python's own unit tests with and without kafkaplus; compare outcomes.

A tracing plugin must not change a single behaviour of the client. This runs
the client's own unit tests three times, each in its own pytest process, one
after the other:

1. ``uninstrumented``: the reference;
2. ``sdk``: after ``KafkaPlusInstrumentor().instrument()`` with an SDK
   TracerProvider sampling 100 % and a MeterProvider (in-memory);
3. ``nosdk``: after ``KafkaPlusInstrumentor().instrument()`` with no SDK at all;

and lists every test whose outcome in 2 or 3 differs from 1. Zero differences
is the bar: the exit status is 1 when there is any.

Where the tests come from (confluent-kafka's sdists on PyPI ship none, and this
project commits none of their code):

* ``--tests DIR`` or ``KAFKAPLUS_CK_TESTS=DIR``: a confluent-kafka-python
  checkout (its root, or its ``tests/`` directory), ideally at the tag that
  ``--ref`` names;
* otherwise the tagged source archive from GitHub, when it answers within
  ``--download-timeout`` seconds, cached under ``--cache-dir``;
* otherwise the run is skipped: one line says so and how to run it, and the
  exit status is 0.

Which tests: the ones confluent-kafka-python's tests/README.md calls unit tests
that bring up no external process (``--paths``, 480 tests at v2.15.0):

* ``tests/test_*.py``: the clients, aio, serialization, errors, docs, threads;
* ``tests/_util``: librdkafka config-string parsing;
* ``tests/avro``: the legacy Avro API (AvroProducer/AvroConsumer are Producer
  and Consumer subclasses; its schema-registry double is an in-process HTTP
  server on 127.0.0.1).

Left out: ``tests/integration`` (needs a Kafka cluster and Schema Registry,
brought up with docker or trivup), ``tests/schema_registry`` (serdes and the
registry's HTTP client only, never a Producer or Consumer, and it needs the
cloud-KMS rule executors' SDKs: azure, boto3, google-cloud-kms, hvac, tink,
cel, jsonata, protobuf, respx), ``tests/oauthbearer`` (AWS STS token
provider: boto3, and real AWS credentials for part of it), ``tests/ducktape``,
``tests/soak`` and ``tests/system`` (clusters again). Test modules that cannot
be imported here even uninstrumented (a missing package) are ignored in all
three runs alike, and listed.

A test that hangs fails through pytest-timeout (``--timeout``, per test) and
counts as ``hung``; one that cannot be interrupted (stuck in C code) or that
kills its process is found by the runner, which ends that process and resumes
the run after that test (``hung`` or ``crashed``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLUGIN = "ck_suite_plugin"
REPO = "confluentinc/confluent-kafka-python"
DEFAULT_REF = "v2.15.0"
ARCHIVE_URL = "https://github.com/{repo}/archive/refs/tags/{ref}.tar.gz"
DEFAULT_PATHS = ("tests/test_*.py", "tests/_util", "tests/avro")
MODES = ("uninstrumented", "sdk", "nosdk")
MODE_TITLES = {
    "uninstrumented": "uninstrumented (reference)",
    "sdk": "instrumented, SDK at 100 % sampling + MeterProvider",
    "nosdk": "instrumented, no SDK",
}
OUTCOMES = (
    "passed", "failed", "error", "skipped", "xfailed", "xpassed", "hung", "crashed",
    "collect-error",
)  # fmt: skip
#: The packages the runner itself needs in the interpreter that runs the tests.
RUNNER_NEEDS = ("pytest", "pytest_timeout", "pytest_asyncio", "confluent_kafka")
MAX_RESTARTS = 25
SKIP_HINT = (
    "to run it, point KAFKAPLUS_CK_TESTS at a confluent-kafka-python checkout "
    "(e.g. `git clone --branch {ref} https://github.com/{repo}`), "
    "then `KAFKAPLUS_CK_TESTS=/path/to/confluent-kafka-python tox -e ck-suite`"
)


def say(text: str = "") -> None:
    print(text, flush=True)


# --- where the tests come from ------------------------------------------------------------


def _is_tests_dir(path: Path) -> bool:
    return (path / "test_Producer.py").is_file() and (path / "common").is_dir()


def from_directory(given: Path, stage: Path) -> Path:
    """The root to run from: a directory whose ``tests/`` is the given tests.

    The tests import ``tests.common`` (and ``tools.unasync``), so they must sit
    in a directory named ``tests`` under the root pytest runs from.
    """
    given = given.expanduser().resolve()
    if _is_tests_dir(given / "tests"):
        return given
    if not _is_tests_dir(given):
        raise SystemExit(
            f"ck-suite: {given} holds no confluent-kafka-python tests "
            "(expected tests/test_Producer.py under it, or test_Producer.py in it)"
        )
    if given.name == "tests":
        return given.parent
    # A tests directory under another name: stage a copy named tests/.
    root = stage / "staged"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(given, root / "tests", symlinks=True)
    unasync = given.parent / "tools" / "unasync.py"
    if unasync.is_file():
        (root / "tools").mkdir()
        shutil.copy2(unasync, root / "tools" / "unasync.py")
    return root


def _safe_members(archive: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """The archive's tests/ tree and tools/unasync.py, as paths under the root; nothing else."""
    chosen = []
    for member in archive.getmembers():
        parts = Path(member.name).parts
        if len(parts) < 2 or member.name.startswith("/") or ".." in parts:
            continue
        inner = "/".join(parts[1:])
        if not (member.isfile() or member.isdir()):
            continue
        if inner == "tests" or inner.startswith("tests/") or inner == "tools/unasync.py":
            chosen.append((member, inner))
    return chosen


def download(ref: str, cache: Path, timeout: float, url: str) -> tuple[Path | None, str]:
    """The tagged source archive's tests, extracted under ``cache``; (root, why not)."""
    root = cache / f"confluent-kafka-python-{ref}"
    if (root / ".complete").is_file():
        return root, ""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=cache))
    try:
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                open(tmp / "src.tar.gz", "wb") as out,
            ):
                shutil.copyfileobj(response, out)
        except Exception as exc:
            return None, f"{url} could not be fetched ({type(exc).__name__}: {exc})"
        try:
            with tarfile.open(tmp / "src.tar.gz") as archive:
                members = _safe_members(archive)
                staged = tmp / "root"
                for member, inner in members:
                    target = staged / inner
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    if source is None:
                        continue
                    with source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, OSError) as exc:
            return None, f"{url} is not a readable archive ({exc})"
        if not _is_tests_dir(staged / "tests"):
            return None, f"{url} holds no tests/test_Producer.py"
        shutil.rmtree(root, ignore_errors=True)
        staged.rename(root)
        (root / ".complete").write_text(url + "\n")
        return root, ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- running one pytest process ---------------------------------------------------------


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a killed process
                continue
    return events


def _child_env(
    mode: str, results: Path, skip_ids: Path, timeout: float, memory_mb: float
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "KAFKAPLUS_")) and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(HERE)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["KAFKAPLUS_CK_MODE"] = mode
    env["KAFKAPLUS_CK_RESULTS"] = str(results)
    env["KAFKAPLUS_CK_SKIP_IDS"] = str(skip_ids)
    env["KAFKAPLUS_CK_TIMEOUT"] = f"{timeout:g}"
    env["KAFKAPLUS_CK_MEMORY_MB"] = f"{memory_mb:g}"
    return env


def _ini(work: Path) -> Path:
    """The pytest settings of confluent-kafka-python's pyproject.toml that its unit tests need."""
    ini = work / "pytest.ini"
    ini.write_text(
        "[pytest]\n"
        "asyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "norecursedirs = ducktape integration soak system docker trivup\n"
    )
    return ini


class Run:
    """One mode's pytest run(s), resumed after a test that had to be killed."""

    def __init__(self, mode: str, args: argparse.Namespace, root: Path, work: Path) -> None:
        self.mode = mode
        self.args = args
        self.root = root
        self.work = work / mode
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.results = self.work / "results.jsonl"
        self.skip_ids = self.work / "skip-ids.txt"
        self.log = self.work / "pytest.log"
        self.outcomes: dict[str, dict[str, str]] = {}
        self.collected: set[str] = set()
        self.notes: list[str] = []
        self.seconds = 0.0

    def command(self, ini: Path, paths: list[str], ignores: list[str], collect: bool) -> list[str]:
        cmd = [
            self.args.python, "-m", "pytest",
            "-p", PLUGIN, "-p", "no:cacheprovider",
            "-c", str(ini), "--rootdir", str(self.root), "--confcutdir", str(self.root),
            "-o", "console_output_style=classic", "-q", "-rN",
            "--continue-on-collection-errors",
            f"--timeout={self.args.timeout:g}",
        ]  # fmt: skip
        if collect:
            cmd.append("--collect-only")
        for ignore in ignores:
            cmd += ["--ignore", ignore]
        for nodeid in self.args.deselect:
            cmd += ["--deselect", nodeid]
        # pytest collects a file named on its command line even when --ignore names it.
        return cmd + [path for path in paths if path not in ignores]

    def execute(
        self, ini: Path, paths: list[str], ignores: list[str], collect: bool = False
    ) -> int:
        """Run to the end, resuming after any test the runner had to end; pytest's exit code."""
        started = time.monotonic()
        stall = self.args.timeout + self.args.stall_grace
        returncode = 0
        for attempt in range(MAX_RESTARTS + 1):
            self._write_skip_ids()
            env = _child_env(
                self.mode, self.results, self.skip_ids, self.args.timeout, self.args.memory_mb
            )
            with open(self.log, "a", encoding="utf-8") as log:
                log.write(f"\n=== attempt {attempt + 1}\n")
                log.flush()
                proc = subprocess.Popen(
                    self.command(ini, paths, ignores, collect),
                    cwd=self.root,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
                killed = self._watch(proc, stall)
            returncode = proc.returncode
            self._absorb()
            in_flight = self._in_flight()
            if in_flight is None:
                if killed:
                    self.notes.append(
                        f"pytest did not exit {stall:g} s after its last test: ended by the runner"
                    )
                break
            guard = self._guard_note(in_flight)
            if guard is not None:
                outcome = "hung"
                message = f"{guard} (by the runner's guard in the test process)"
            elif killed:
                outcome = "hung"
                message = (
                    f"no progress for {stall:g} s (pytest-timeout could not interrupt it): "
                    "process ended by the runner, run resumed after this test"
                )
            else:
                outcome = "crashed"
                why = (
                    " (interrupted: a KeyboardInterrupt escaped the test)"
                    if returncode == 2
                    else ""
                )
                message = (
                    f"pytest exited with status {_status(returncode)}{why} inside this test; "
                    "run resumed after it"
                )
            self.outcomes[in_flight] = {"outcome": outcome, "message": message}
            self.notes.append(f"{in_flight}: {message}")
        else:
            self.notes.append(f"gave up after {MAX_RESTARTS} restarts")
        self.seconds = time.monotonic() - started
        return returncode

    def _watch(self, proc: subprocess.Popen[bytes], stall: float) -> bool:
        """Wait for the process; end it when no test starts or ends for ``stall`` s. True if so."""
        last_count = -1
        last_change = time.monotonic()
        while True:
            try:
                proc.wait(timeout=1.0)
                return False
            except subprocess.TimeoutExpired:
                pass
            # Progress is a test starting or ending (the guard's notes are not).
            count = sum(
                e.get("event") in ("start", "outcome", "collected")
                for e in _read_events(self.results)
            )
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > stall:
                _end(proc)
                return True

    def _absorb(self) -> None:
        for event in _read_events(self.results):
            kind = event.get("event")
            if kind == "outcome":
                self.outcomes[event["nodeid"]] = {
                    "outcome": event["outcome"],
                    "message": event.get("message", ""),
                }
            elif kind == "collected":
                self.collected.update(event["nodeids"])

    def _in_flight(self) -> str | None:
        """The last test that started and has no outcome: where the process stopped."""
        last = None
        for event in _read_events(self.results):
            if event.get("event") == "start" and event["nodeid"] not in self.outcomes:
                last = event["nodeid"]
        return last

    def _guard_note(self, nodeid: str) -> str | None:
        notes = [
            e["message"]
            for e in _read_events(self.results)
            if e.get("event") == "guard" and e.get("nodeid") == nodeid
        ]
        return notes[-1] if notes else None

    def _write_skip_ids(self) -> None:
        done = set(self.outcomes)
        done.update(e["nodeid"] for e in _read_events(self.results) if e.get("event") == "start")
        self.skip_ids.write_text("".join(f"{nodeid}\n" for nodeid in sorted(done)))


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End the pytest process and anything it started (its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _status(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)


# --- comparison and report ----------------------------------------------------------------


def counts(outcomes: dict[str, dict[str, str]]) -> dict[str, int]:
    result = dict.fromkeys(OUTCOMES, 0)
    for entry in outcomes.values():
        result[entry["outcome"]] = result.get(entry["outcome"], 0) + 1
    return result


def differences(
    reference: dict[str, dict[str, str]], other: dict[str, dict[str, str]]
) -> list[tuple[str, str, str, str]]:
    """(nodeid, reference outcome, this run's outcome, this run's message) where they differ."""
    found = []
    for nodeid in sorted(set(reference) | set(other)):
        ref = reference.get(nodeid, {}).get("outcome", "absent")
        got = other.get(nodeid, {"outcome": "absent", "message": "not run"})
        if got["outcome"] != ref:
            message = got.get("message") or reference.get(nodeid, {}).get("message", "")
            found.append((nodeid, ref, got["outcome"], message))
    return found


def _indent(text: str, lines: int) -> str:
    chosen = [line for line in text.splitlines() if line.strip()][:lines]
    return "\n".join("        " + line[:200] for line in chosen)


def report(runs: dict[str, Run], ignored: list[tuple[str, str]], message_lines: int) -> int:
    say()
    say("=" * 78)
    say("confluent-kafka-python unit tests: outcomes per run")
    header = (
        f"  {'run':<52}" + "".join(f"{o[:8]:>9}" for o in OUTCOMES) + f"{'total':>7}{'time':>8}"
    )
    say(header)
    for mode, run in runs.items():
        c = counts(run.outcomes)
        row = f"  {MODE_TITLES[mode]:<52}" + "".join(f"{c[o]:>9}" for o in OUTCOMES)
        say(row + f"{len(run.outcomes):>7}{run.seconds:>7.0f}s")
    if ignored:
        say()
        say(f"Ignored in all runs alike ({len(ignored)}: cannot be imported here uninstrumented):")
        for path, why in ignored:
            say(f"  {path}: {why}")
    for mode, run in runs.items():
        for note in run.notes:
            say(f"  note ({mode}): {note}")
    reference = runs["uninstrumented"].outcomes if "uninstrumented" in runs else None
    total = 0
    if reference is not None:
        for mode, run in runs.items():
            if mode == "uninstrumented":
                continue
            diff = differences(reference, run.outcomes)
            total += len(diff)
            say()
            say(f"Differences, {MODE_TITLES[mode]} vs uninstrumented: {len(diff)}")
            for nodeid, ref, got, message in diff:
                say(f"  {nodeid}: {ref} -> {got}")
                if message:
                    say(_indent(message, message_lines))
    say()
    if reference is None:
        say("ck-suite: no uninstrumented run to compare with")
        return 0
    if total:
        say(f"ck-suite: FAILED, {total} outcome(s) differ from the uninstrumented run")
        return 1
    say("ck-suite: OK, every outcome is the same as in the uninstrumented run")
    return 0


# --- main ---------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tests",
        default=os.environ.get("KAFKAPLUS_CK_TESTS") or None,
        help="a confluent-kafka-python checkout or its tests/ directory "
        "(default: $KAFKAPLUS_CK_TESTS)",
    )
    p.add_argument(
        "--ref",
        default=os.environ.get("KAFKAPLUS_CK_REF", DEFAULT_REF),
        help=f"the tag whose tests to download when --tests is not given (default: {DEFAULT_REF})",
    )
    p.add_argument(
        "--cache-dir",
        default=os.environ.get("KAFKAPLUS_CK_CACHE")
        or os.path.join(tempfile.gettempdir(), "kafkaplus-ck-suite"),
        help="where a downloaded archive's tests are kept (default: $KAFKAPLUS_CK_CACHE or a "
        "directory in the system's temp dir)",
    )
    p.add_argument("--no-download", action="store_true", help="never try to download the tests")
    p.add_argument(
        "--archive-url",
        default=os.environ.get("KAFKAPLUS_CK_ARCHIVE_URL") or None,
        help="a .tar.gz of the source tree at --ref (default: GitHub's archive of the tag)",
    )
    p.add_argument("--download-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--work-dir", help="logs and per-run results (default: a new temp dir)")
    p.add_argument(
        "--paths",
        nargs="+",
        default=list(DEFAULT_PATHS),
        help="test files, directories or node ids, relative to the checkout's root; globs allowed "
        f"(default: {' '.join(DEFAULT_PATHS)})",
    )
    p.add_argument(
        "--deselect",
        action="append",
        default=[],
        metavar="NODEID",
        help="deselect a test in every run (repeatable)",
    )
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--timeout", type=float, default=60.0, help="per test, seconds (default 60)")
    p.add_argument(
        "--stall-grace",
        type=float,
        default=30.0,
        help="seconds past --timeout without progress before the runner ends a pytest process",
    )
    p.add_argument(
        "--memory-mb",
        type=float,
        default=1024.0,
        help="a test that grows its process by more than this (MiB) is stopped as hung "
        "(default 1024)",
    )
    p.add_argument("--message-lines", type=int, default=4, help="lines of each failure shown")
    p.add_argument("--python", default=sys.executable, help="the interpreter to run pytest with")
    return p.parse_args(argv)


def _expand(root: Path, patterns: list[str]) -> list[str]:
    """Files and directories (globs expanded) or node ids (``file::test``) under the root."""
    paths: list[str] = []
    for pattern in patterns:
        if "::" in pattern:
            matches = [pattern] if (root / pattern.split("::")[0]).is_file() else []
        else:
            matches = sorted(str(p.relative_to(root)) for p in root.glob(pattern))
        if not matches:
            say(f"ck-suite: {pattern} matches nothing under the checkout; left out")
        paths += matches
    return paths


def _missing_packages(python: str) -> list[str]:
    probe = (
        "import importlib.util, sys; "
        f"print(' '.join(m for m in {RUNNER_NEEDS!r} if importlib.util.find_spec(m) is None))"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cache = Path(args.cache_dir)
    if args.tests:
        cache.mkdir(parents=True, exist_ok=True)
        root = from_directory(Path(args.tests), cache)
        source = f"{args.tests} (KAFKAPLUS_CK_TESTS / --tests)"
    else:
        why = "--no-download was given"
        root = None
        if not args.no_download:
            url = args.archive_url or ARCHIVE_URL.format(repo=REPO, ref=args.ref)
            root, why = download(args.ref, cache, args.download_timeout, url)
        if root is None:
            say(
                "ck-suite: SKIPPED - confluent-kafka-python's tests are not available "
                "(KAFKAPLUS_CK_TESTS is not set and "
                f"{why}); " + SKIP_HINT.format(ref=args.ref, repo=REPO)
            )
            return 0
        source = f"{REPO} {args.ref} source archive, cached in {root}"

    missing = _missing_packages(args.python)
    if missing:
        say(f"ck-suite: ERROR - {args.python} lacks {', '.join(missing)}; tox -e ck-suite has them")
        return 2

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ck-suite-"))
    work.mkdir(parents=True, exist_ok=True)
    ini = _ini(work)
    paths = _expand(root, args.paths)
    if not paths:
        say("ck-suite: ERROR - no test path left to run (see --paths)")
        return 2
    say(f"ck-suite: tests from {source}")
    say(f"ck-suite: root {root}; paths {' '.join(paths)}")
    version = subprocess.run(
        [
            args.python,
            "-c",
            "import confluent_kafka as c; print(c.__version__, c.libversion()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    say(f"ck-suite: confluent-kafka {version[0]}, librdkafka {version[1]}; logs in {work}")

    # Which test modules cannot be imported here at all: ignored in every run alike.
    probe = Run("uninstrumented", args, root, work / "collect")
    probe.execute(ini, paths, [], collect=True)
    ignored = sorted(
        (nodeid, entry["message"].splitlines()[-1] if entry["message"] else "collection error")
        for nodeid, entry in probe.outcomes.items()
        if entry["outcome"] == "collect-error"
    )
    ignores = [nodeid for nodeid, _ in ignored]
    if not probe.collected:
        say(f"ck-suite: ERROR - no test collected; see {probe.log}")
        return 2
    say(f"ck-suite: {len(probe.collected)} tests collected, {len(ignores)} module(s) ignored")

    runs: dict[str, Run] = {}
    for mode in args.modes:
        say(f"ck-suite: running {MODE_TITLES[mode]} ...")
        run = Run(mode, args, root, work)
        code = run.execute(ini, paths, ignores)
        runs[mode] = run
        c = counts(run.outcomes)
        summary = ", ".join(f"{n} {o}" for o, n in c.items() if n)
        say(f"ck-suite:   {summary or 'nothing'} in {run.seconds:.0f} s (pytest exit {code})")
        if code in (3, 4) or not run.outcomes:
            say(f"ck-suite: ERROR - pytest could not run ({mode}, exit {code}); see {run.log}")
            return 2
    return report(runs, ignored, args.message_lines)


if __name__ == "__main__":
    sys.exit(main())
