#!/usr/bin/env python3
"""Runs hnswlib's own Python tests (``tests/python/bindings_test*.py``) through
``matry.compat.hnswlib`` and prints which pass and which fail.

Nothing of hnswlib is kept in this repository: the tests are fetched into a temporary
directory (or read from a path you give), a one-line ``hnswlib.py`` that re-exports the shim
is written next to them and put first on ``PYTHONPATH``, and ``unittest`` runs them in a child
process from inside that directory (the tests write index files into the working directory).

    python scripts/run_hnswlib_suite.py                      # download tag v0.8.0 from GitHub
    python scripts/run_hnswlib_suite.py --tests ~/hnswlib/tests/python
    python scripts/run_hnswlib_suite.py --git-dir /path/to/hnswlib.git --ref v0.8.0
    python scripts/run_hnswlib_suite.py --real               # the installed hnswlib, to compare

matry must be importable (installed, or on PYTHONPATH). Exit status 0 when every test passes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path, PurePosixPath

TEST_PATTERN = "bindings_test*.py"
DEFAULT_REF = "v0.8.0"  # the hnswlib release the shim follows
ARCHIVE_URL = "https://codeload.github.com/nmslib/hnswlib/tar.gz/refs/tags/{ref}"
SHIM_MODULE = "from matry.compat.hnswlib import *  # noqa: F403 - hnswlib's names, from matry\n"
DOWNLOAD_TIMEOUT_SECONDS = 120


# ----------------------------------------------------------------------------------------------
# getting the tests


def _copy_tests(source: Path, target: Path) -> None:
    if (source / "tests" / "python").is_dir():  # a checkout of the whole repository
        source = source / "tests" / "python"
    if not any(source.glob(TEST_PATTERN)):
        raise SystemExit(f"--tests: no {TEST_PATTERN} in {source}")
    shutil.copytree(source, target)


def _extract_tests(archive: tarfile.TarFile, target: Path) -> None:
    """Writes the regular files under <any top directory>/tests/python/ into target."""
    found = False
    for member in archive.getmembers():
        parts = PurePosixPath(member.name).parts
        inside = parts[1:] if parts and parts[0] != "tests" else parts  # GitHub adds a top dir
        if len(inside) != 3 or inside[:2] != ("tests", "python") or not member.isfile():
            continue
        name = inside[2]
        if name in (".", "..") or "/" in name or "\\" in name:
            continue
        handle = archive.extractfile(member)
        if handle is None:
            continue
        target.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(handle.read())
        found = found or PurePosixPath(name).match(TEST_PATTERN)
    if not found:
        raise SystemExit(f"no tests/python/{TEST_PATTERN} in the hnswlib archive")


def _tests_from_git(git_dir: Path, ref: str, target: Path) -> None:
    command = ["git", f"--git-dir={git_dir}", "archive", "--format=tar", ref, "tests/python"]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"--git-dir: {' '.join(command)} failed: {result.stderr.decode()}")
    with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:") as archive:
        _extract_tests(archive, target)


def _tests_from_github(ref: str, target: Path) -> None:
    url = ARCHIVE_URL.format(ref=ref)
    print(f"downloading {url}", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            payload = response.read()
    except OSError as error:
        raise SystemExit(
            f"cannot download {url} ({error}); pass --tests DIR (hnswlib's tests/python) or "
            "--git-dir DIR (a clone of github.com/nmslib/hnswlib) instead"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        _extract_tests(archive, target)


# ----------------------------------------------------------------------------------------------
# running them (in a child process whose `import hnswlib` is the shim)


def _run_inside(tests: Path) -> int:
    """Child process: runs the tests from the current directory and prints one line each."""
    hnswlib = importlib.import_module("hnswlib")  # the shim (or, with --real, hnswlib itself)
    print(f"hnswlib resolves to {hnswlib.__file__}")
    try:
        matry = importlib.import_module("matry")
        print(f"matry {matry.__version__} from {os.path.dirname(str(matry.__file__))}")
    except ImportError:
        pass
    result = unittest.TestResult()
    lines: list[str] = []
    passed = 0
    started = time.perf_counter()
    for test in _flatten(unittest.defaultTestLoader.discover(str(tests), pattern=TEST_PATTERN)):
        problems_before = len(result.failures) + len(result.errors) + len(result.skipped)
        test_started = time.perf_counter()
        chatter = io.StringIO()  # the tests print a lot; keep it out of the summary
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            test.run(result)
        seconds = f"({time.perf_counter() - test_started:.1f} s)"
        if len(result.failures) + len(result.errors) + len(result.skipped) == problems_before:
            passed += 1
            lines.append(f"PASS  {test.id()} {seconds}")
        elif result.failures and result.failures[-1][0] is test:
            lines.append(f"FAIL  {test.id()} {seconds}: {_reason(result.failures[-1][1])}")
        elif result.errors and result.errors[-1][0] is test:
            lines.append(f"ERROR {test.id()} {seconds}: {_reason(result.errors[-1][1])}")
        else:
            lines.append(f"SKIP  {test.id()} {seconds}: {result.skipped[-1][1]}")
    print("\n".join(lines))
    total = len(lines)
    print(
        f"{total} tests: {passed} passed, {len(result.failures)} failed, {len(result.errors)} "
        f"errors, {len(result.skipped)} skipped in {time.perf_counter() - started:.0f} s"
    )
    return 0 if total and passed == total else 1


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    tests: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            tests.extend(_flatten(item))
        else:
            tests.append(item)
    return tests


def _reason(traceback_text: str) -> str:
    """The last line of a traceback: the exception and its message."""
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tests", type=Path, help="hnswlib's tests/python (or its checkout)")
    source.add_argument("--git-dir", type=Path, help="a git clone of nmslib/hnswlib")
    parser.add_argument("--ref", default=DEFAULT_REF, help=f"tag to fetch (default {DEFAULT_REF})")
    parser.add_argument("--real", action="store_true", help="run on the installed hnswlib")
    parser.add_argument("--run-inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_inside is not None:
        return _run_inside(args.run_inside)

    with tempfile.TemporaryDirectory(prefix="hnswlib-suite-") as temporary:
        work = Path(temporary)
        tests = work / "tests" / "python"
        if args.tests is not None:
            _copy_tests(args.tests.expanduser().resolve(), tests)
        elif args.git_dir is not None:
            _tests_from_git(args.git_dir.expanduser().resolve(), args.ref, tests)
        else:
            _tests_from_github(args.ref, tests)
        environment = dict(os.environ)
        search_path = [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        if not args.real:
            shim_dir = work / "shim"
            shim_dir.mkdir()
            (shim_dir / "hnswlib.py").write_text(SHIM_MODULE)
            search_path.insert(0, str(shim_dir))
        environment["PYTHONPATH"] = os.pathsep.join(search_path)
        label = "the installed hnswlib" if args.real else "matry.compat.hnswlib"
        print(f"hnswlib's {TEST_PATTERN} ({args.tests or args.ref}) through {label}", flush=True)
        run_dir = work / "run"
        run_dir.mkdir()
        command = [sys.executable, os.path.abspath(__file__), "--run-inside", str(tests)]
        return subprocess.run(command, cwd=run_dir, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
