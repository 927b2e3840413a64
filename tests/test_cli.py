"""Smoke tests of the `matry` command as a user runs it: in a subprocess, through the installed
console script when there is one.

They need nothing beyond pytest and matry's core dependencies, so CI runs this file a second
time on an install without extras (`pip install .`), where `matry demo` must explain which extra
it needs instead of failing with a traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import matry
import numpy as np

ENCODER_INSTALLED = all(
    importlib.util.find_spec(module) is not None for module in ("onnxruntime", "tokenizers")
)
MATPLOTLIB_INSTALLED = importlib.util.find_spec("matplotlib") is not None
HNSWLIB_INSTALLED = importlib.util.find_spec("hnswlib") is not None
TIMEOUT_SECONDS = 300


def _matry_command() -> list[str]:
    """The `matry` console script of this environment, or (in a source checkout used through
    PYTHONPATH, where none is installed) the same entry point run by this interpreter."""
    script = Path(sys.executable).with_name("matry.exe" if os.name == "nt" else "matry")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from matry.cli import main; sys.exit(main())"]


def _run(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_matry_command(), *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
        cwd=cwd,
    )


def _small_vectors(path: Path, n: int = 1200, dim: int = 8) -> Path:
    """Gaussian clusters, easy enough that every small configuration reaches the target."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(12, dim))
    rows = centres[rng.integers(0, len(centres), size=n)] + 0.3 * rng.normal(size=(n, dim))
    np.save(path, rows.astype(np.float32))
    return path


def _tune_arguments(data: Path, *extra: str) -> list[str]:
    return [
        "tune",
        "--data",
        str(data),
        "--target",
        "0.9",
        "--k",
        "5",
        "--Ms",
        "8",
        "--ef-constructions",
        "40",
        "--sample",
        "60",
        "--threads",
        "1",
        "--qps-min-seconds",
        "0",
        *extra,
    ]


def test_help_lists_the_commands_that_exist() -> None:
    completed = _run("--help")
    assert completed.returncode == 0, completed.stderr
    for command in ("demo", "tune", "bench"):
        assert command in completed.stdout


def test_version_is_the_package_version() -> None:
    completed = _run("--version")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"matry {matry.__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    completed = _run("benchmark", "run")
    assert completed.returncode == 2
    assert "invalid choice: 'benchmark'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_tune_without_progress_bar_writes_report_and_index(tmp_path: Path) -> None:
    data = _small_vectors(tmp_path / "vectors.npy")
    report_file, index_file = tmp_path / "report.json", tmp_path / "tuned.matry"
    completed = _run(
        *_tune_arguments(
            data, "--no-progress", "--json", str(report_file), "--save-index", str(index_file)
        )
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "**Recommended:**" in completed.stdout
    assert completed.stderr == ""  # no bar, no warning
    report = json.loads(report_file.read_text())
    assert report["n_vectors"] == 1200
    tuned = matry.Index.load(index_file)
    assert len(tuned) == 1200
    assert tuned.ef == report["recommended"]["ef"]


def test_tune_shows_a_progress_bar_by_default(tmp_path: Path) -> None:
    data = _small_vectors(tmp_path / "vectors.npy", n=400)
    completed = _run(*_tune_arguments(data))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "matry tune" in completed.stderr and "config" in completed.stderr
    assert "**Recommended:**" in completed.stdout


def test_tune_plot_needs_matplotlib_or_writes_a_png(tmp_path: Path) -> None:
    data = _small_vectors(tmp_path / "vectors.npy", n=400)
    plot = tmp_path / "tune.png"
    completed = _run(*_tune_arguments(data, "--no-progress", "--plot", str(plot)))
    if MATPLOTLIB_INSTALLED:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    else:
        # refused before any index is built, with the extra to install
        assert completed.returncode == 2
        assert "matry[plot]" in completed.stderr
        assert completed.stdout == "" and not plot.exists()
    assert "Traceback" not in completed.stderr


def test_tune_bad_input_names_the_problem(tmp_path: Path) -> None:
    completed = _run("tune", "--data", str(tmp_path / "missing.npy"), "--no-progress")
    assert completed.returncode == 2
    assert "no such file" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_bench_runs_on_the_core_install(tmp_path: Path) -> None:
    """matry alone needs no extra; a peer library that is missing is listed with its pip line,
    and without matplotlib the plot is skipped with a message."""
    _small_vectors(tmp_path / "vectors.npy", n=800)
    completed = _run(
        "bench", "--data", "vectors.npy", "--libs", "matry,hnswlib", "--out", "out",
        "--ef-values", "10,40", "--single-query-count", "20", "--no-resident", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = tmp_path / "out"
    lines = (out / "results.jsonl").read_text().splitlines()
    libraries = {json.loads(line)["library"] for line in lines}
    assert libraries == ({"matry", "hnswlib"} if HNSWLIB_INSTALLED else {"matry"})
    if not HNSWLIB_INSTALLED:
        assert "- hnswlib: not installed (pip install hnswlib)" in completed.stdout
    assert "| matry |" in (out / "table.md").read_text()
    if MATPLOTLIB_INSTALLED:
        assert (out / "plot.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    else:
        assert "matplotlib is not installed (pip install 'matry[plot]')" in completed.stdout
        assert not (out / "plot.png").exists()
    assert "Traceback" not in completed.stderr


def test_demo_runs_or_names_the_encoder_extra() -> None:
    completed = _run("demo", "--count", "30", "-k", "1", "--query", "parse JSON text")
    if ENCODER_INSTALLED:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "30 docstrings" in completed.stdout
        assert "query: 'parse JSON text'" in completed.stdout
        assert "encoding (all-MiniLM-L6-v2)" in completed.stderr  # the progress bar
    else:
        assert completed.returncode == 1
        assert "pip install 'matry[encoder]'" in completed.stderr
        assert "Traceback" not in completed.stderr


def test_demo_without_progress_bar() -> None:
    completed = _run("demo", "--count", "20", "-k", "1", "--query", "gzip", "--no-progress")
    if ENCODER_INSTALLED:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "encoding (" not in completed.stderr
        assert "query: 'gzip'" in completed.stdout
    else:
        assert completed.returncode == 1
        assert "pip install 'matry[encoder]'" in completed.stderr


def test_demo_corpus_always_holds_an_answer_of_every_query() -> None:
    from matry.cli import DEMO_QUERIES, demo_corpus

    for count in (1, 30, 2000):
        pairs, answers = demo_corpus(count)
        assert len(pairs) == max(count, len(DEMO_QUERIES))
        names = {name for name, _ in pairs}  # a property's getter and setter share one
        assert len({text for _, text in pairs}) == len(pairs)
        assert list(answers) == [query.text for query in DEMO_QUERIES]
        for query in DEMO_QUERIES:
            assert answers[query.text], query.text
            assert set(answers[query.text]) <= names & set(query.answers)


def test_demo_finds_a_right_answer_for_every_built_in_query() -> None:
    from matry.cli import DEMO_QUERIES

    completed = _run("demo", "--count", "60", "--no-progress")
    if not ENCODER_INSTALLED:
        assert completed.returncode == 1
        assert "pip install 'matry[encoder]'" in completed.stderr
        return
    assert completed.returncode == 0, completed.stdout + completed.stderr
    blocks = completed.stdout.split("\nquery: ")[1:]
    assert [block.split("  (encode", 1)[0] for block in blocks] == [
        repr(query.text) for query in DEMO_QUERIES
    ]
    for block, query in zip(blocks, DEMO_QUERIES):
        verdict = next(line for line in block.splitlines() if "right answer" in line)
        name, rank = verdict.split("right answer: ", 1)[1].split(", rank ")
        assert name in query.answers and int(rank.split()[0]) <= 3, verdict
    assert f"{len(DEMO_QUERIES)} of {len(DEMO_QUERIES)} queries have a right answer" in (
        completed.stdout
    )
