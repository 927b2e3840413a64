"""`matry bench` on a user's vector files: the packaged runner (matry.bench) end to end.

The command runs in a subprocess from a temporary folder outside the repository (the way a
user runs it after `pip install "matry[bench]"`), on tiny random data with matry and hnswlib
(hnswlib is in the `test` extra). In-process tests cover what needs no subprocess: the split,
the exact neighbours, tie-aware recall, library names, the skip list of libraries that are not
installed (made missing with ``sys.modules[name] = None``, a real ImportError) and bad input.
No timing is asserted.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matry import bench
from matry.bench import _runner

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--ef-values", "10,40,160", "--single-query-count", "50", "--no-progress"]
TIMEOUT_SECONDS = 300


def _matry_command() -> list[str]:
    """The `matry` console script of this environment, or the same entry point run by this
    interpreter (a checkout used through PYTHONPATH has no script)."""
    script = Path(sys.executable).with_name("matry")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from matry.cli import main; sys.exit(main())"]


def _run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert REPO_ROOT not in cwd.resolve().parents, "must run outside the checkout"
    return subprocess.run(
        [*_matry_command(), "bench", *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
        cwd=cwd,
    )


def _vectors(n: int, dim: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _points(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _png_size(path: Path) -> tuple[int, int]:
    png = path.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def test_bench_on_npy_from_outside_the_repo_then_reuses_ground_truth(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _vectors(2000, 16))
    first = _run("--data", "x.npy", "--libs", "matry,hnswlib", *FAST, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    # default --out: a new matry-bench-<timestamp> folder under the current directory
    made = sorted(tmp_path.glob("matry-bench-*"))
    assert len(made) == 1 and made[0].is_dir()
    out = made[0]
    assert f"results in {out}" in first.stdout
    for name in ("table.md", "results.jsonl", "plot.png", "skipped.json"):
        assert (out / name).is_file(), name
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []  # scratch removed
    width, height = _png_size(out / "plot.png")
    assert width > 400 and height > 300

    # held out: 2000 // 10 queries, the rest is the base; every library and ef measured
    points = _points(out)
    assert sorted((p["library"], p["search_param"]) for p in points) == sorted(
        (library, ef) for library in ("matry", "hnswlib") for ef in (10, 40, 160)
    )
    for point in points:
        assert (point["n_base"], point["n_queries"], point["dim"]) == (1800, 200, 16)
        assert point["dataset"] == "x" and point["metric"] == "cosine"
        assert 0.0 <= point["recall_at_1"] <= 1.0 and 0.0 <= point["recall_at_10"] <= 1.0
        assert point["qps_batch"] > 0 and point["build_seconds"] > 0
        assert point["resident_bytes_per_vector"] > 0
    for library in ("matry", "hnswlib"):
        assert max(p["recall_at_10"] for p in points if p["library"] == library) >= 0.95

    # the printed summary and table.md: QPS at 0.90 / 0.95 / 0.99, ratio, build s, bytes
    assert "| library | QPS @ recall@10 0.90 | QPS @ recall@10 0.95 | QPS @ recall@10 0.99 |" in (
        first.stdout
    )
    hnswlib_row = next(line for line in first.stdout.splitlines() if line.startswith("| hnswlib"))
    assert "| 1.00x |" in hnswlib_row
    table = (out / "table.md").read_text()
    assert "## Summary" in table and "## Build and memory" in table
    assert "ground truth: exact top-10 of 200 queries over 1,800 vectors" in first.stdout

    cache = sorted((out / "ground-truth").glob("*-ids.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    truth = np.load(cache[0])
    second = _run(
        "--data",
        "x.npy",
        "--libs",
        "matry",
        "--out",
        str(out),
        "--no-resident",
        *FAST,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ground truth: cached" in second.stdout
    assert "ground truth: exact" not in second.stdout
    assert cache[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.load(cache[0]), truth)
    assert {p["library"] for p in _points(out)} == {"matry"}


def test_bench_reads_fvecs_with_parquet_queries_under_l2(tmp_path: Path) -> None:
    pyarrow = pytest.importorskip("pyarrow")  # in the test extra: pyarrow>=12
    import pyarrow.parquet as parquet

    base = _vectors(1500, 12, seed=2) * 3.0
    with open(tmp_path / "base.fvecs", "wb") as handle:
        for row in base:
            handle.write(np.int32(len(row)).tobytes() + row.astype("<f4").tobytes())
    queries = _vectors(70, 12, seed=3) * 3.0
    table = pyarrow.table({"embedding": [row.tolist() for row in queries]})
    parquet.write_table(table, tmp_path / "queries.parquet")
    out = tmp_path / "out"
    completed = _run(
        "--data", "base.fvecs", "--queries", "queries.parquet", "--metric", "l2",
        "--libs", "matry", "--k", "5", "--out", "out", "--no-resident", *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    points = _points(out)
    assert {p["library"] for p in points} == {"matry"}
    for point in points:
        assert (point["n_base"], point["n_queries"], point["dim"]) == (1500, 70, 12)
        assert point["metric"] == "l2" and point["index_metric"] == "l2" and point["k"] == 5
        assert "recall_at_5" in point
    assert max(p["recall_at_5"] for p in points) >= 0.95
    assert "| matry |" in (out / "table.md").read_text()


def test_missing_libraries_are_listed_with_their_pip_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # The default set with every peer library made missing: what a core install runs.
    peers = ("hnswlib", "faiss", "usearch", "annoy", "voyager")
    for module in peers:
        monkeypatch.setitem(sys.modules, module, None)
    np.save(tmp_path / "x.npy", _vectors(1200, 8))
    out = tmp_path / "out"
    status = bench.main(
        ["--data", str(tmp_path / "x.npy"), "--out", str(out), "--no-resident", *FAST]
    )
    captured = capfd.readouterr()
    assert status == 0, captured.out + captured.err
    assert {p["library"] for p in _points(out)} == {"matry", "matry-int8"}
    skipped = json.loads((out / "skipped.json").read_text())
    pip_names = {"hnswlib": "hnswlib", "faiss": "faiss-cpu", "usearch": "usearch"}
    pip_names.update(annoy="annoy", voyager="voyager")
    assert skipped == {name: f"not installed (pip install {pip_names[name]})" for name in peers}
    for name in peers:
        line = f"- {name}: not installed (pip install {pip_names[name]})"
        assert line in captured.out and line in (out / "table.md").read_text()
    assert "pip install 'matry[bench]'" in captured.out


def test_only_uninstalled_libraries_is_an_error_that_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "voyager", None)
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", _vectors(300, 8))
    assert bench.main(["--data", "x.npy", "--libs", "voyager", "--no-progress"]) == 1
    assert "voyager: not installed (pip install voyager)" in capsys.readouterr().err
    assert list(tmp_path.glob("matry-bench-*")) == []


def _bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    status = bench.main([*arguments, "--no-progress"])
    error = capsys.readouterr().err
    assert status == 2, error
    assert error.startswith("matry bench: error: "), error
    assert list(tmp_path.glob("matry-bench-*")) == []  # a failed call makes no folder
    return error


def test_bad_input_names_the_problem_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", _vectors(300, 8))
    np.save(tmp_path / "q9.npy", _vectors(20, 9))
    with_nan = _vectors(300, 8)
    with_nan[17, 3] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    np.save(tmp_path / "norms.npy", _vectors(300, 8) * 2)

    assert "--data: missing.npy: no such file" in _bad(tmp_path, capsys, "--data", "missing.npy")
    error = _bad(tmp_path, capsys, "--data", "x.npy", "--queries", "q9.npy")
    assert "--queries: q9.npy has dimension 9, but --data x.npy has dimension 8" in error
    error = _bad(tmp_path, capsys, "--data", "x.npy", "--libs", "matry,nope")
    assert "--libs: unknown library 'nope'" in error and "hnswlib" in error
    assert "--data: row 17 has a NaN or infinite value" in _bad(
        tmp_path, capsys, "--data", "nan.npy"
    )
    error = _bad(tmp_path, capsys, "--data", "norms.npy", "--metric", "ip")
    assert "--data: row 0 has norm" in error and "--metric cosine" in error
    error = _bad(tmp_path, capsys, "--data", "x.npy", "--queries-count", "300")
    assert "--queries-count: 300 queries cannot be held out of the 300 rows" in error
    assert "--k: 500 neighbours need at least 500" in _bad(
        tmp_path, capsys, "--data", "x.npy", "--k", "500"
    )
    (tmp_path / "plain.txt").write_text("1 2 3\n")
    assert "unknown vector file type '.txt'" in _bad(tmp_path, capsys, "--data", "plain.txt")
    # argparse's own errors: usage on stderr, status 2
    assert bench.main(["--data", "x.npy", "--metric", "hamming"]) == 2
    assert "invalid choice: 'hamming'" in capsys.readouterr().err
    assert bench.main(["--data", "x.npy", "--ef-values", "10,0"]) == 2
    assert "--ef-values" in capsys.readouterr().err


def test_unknown_library_from_the_shell_exits_2_without_traceback(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _vectors(100, 4))
    completed = _run("--data", "x.npy", "--libs", "hnswlibx", cwd=tmp_path)
    assert completed.returncode == 2
    assert "unknown library 'hnswlibx'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_held_out_split(tmp_path: Path) -> None:
    rows = _vectors(5000, 6, seed=5)
    np.save(tmp_path / "x.npy", rows)
    inputs = bench.load_inputs(tmp_path / "x.npy", metric="l2", seed=3)
    assert (len(inputs.queries), len(inputs.base)) == (500, 4500)  # a tenth, up to 1,000
    as_set = {row.tobytes() for row in rows}
    base_set = {row.tobytes() for row in inputs.base}
    query_set = {row.tobytes() for row in inputs.queries}
    assert base_set.isdisjoint(query_set) and base_set | query_set == as_set
    # the base keeps the file order
    positions = [int(np.flatnonzero((rows == row).all(axis=1))[0]) for row in inputs.base[:50]]
    assert positions == sorted(positions)
    again = bench.load_inputs(tmp_path / "x.npy", metric="l2", seed=3)
    np.testing.assert_array_equal(again.queries, inputs.queries)
    other = bench.load_inputs(tmp_path / "x.npy", metric="l2", seed=4)
    assert not np.array_equal(other.queries, inputs.queries)
    capped = bench.load_inputs(tmp_path / "x.npy", query_count=100, max_base=1000)
    assert (len(capped.queries), len(capped.base)) == (100, 1000)
    np.testing.assert_allclose(np.linalg.norm(capped.base, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_neighbours_match_float64_brute_force(metric: str) -> None:
    base = _vectors(3000, 24, seed=6)
    base[100] = base[7]  # a duplicate row: the tie goes to the smaller id
    queries = np.vstack([_vectors(40, 24, seed=7), base[7:8] + 1e-3])
    if metric == "ip":
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids, scores = bench.exact_neighbours(base, queries, 10, metric, threads=2, progress=False)
    wide_base, wide_queries = base.astype(np.float64), queries.astype(np.float64)
    if metric == "ip":
        exact = wide_queries @ wide_base.T
    else:
        exact = -((wide_queries[:, None, :] - wide_base[None, :, :]) ** 2).sum(axis=2)
    expected = np.lexsort((np.broadcast_to(np.arange(3000), exact.shape), -exact), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, expected, axis=1), rtol=1e-12)
    assert list(ids[-1, :2]) == [7, 100]


def test_recall_counts_a_duplicate_of_a_true_neighbour() -> None:
    base = _vectors(50, 4, seed=8)
    base[49] = base[3]
    queries = base[3:4] + 0.01
    ids, scores = bench.exact_neighbours(base, queries, 2, "l2", progress=False)
    arrays = _runner._Arrays(base, queries, ids, scores, "l2")
    assert list(ids[0]) == [3, 49]
    swapped = np.array([[49, 3]])
    assert _runner.recall_at(swapped, arrays, 1) == 1.0  # 49 ties 3, the exact first
    far = int(np.argsort(((base - queries) ** 2).sum(axis=1))[-1])
    assert _runner.recall_at(np.array([[3, far]]), arrays, 2) == 0.5
    assert _runner.recall_at(np.array([[-1, 3]]), arrays, 2) == 0.5


def test_library_names_aliases_and_all() -> None:
    assert bench.resolve_libraries(None) == list(bench.DEFAULT_NAMES)
    assert bench.resolve_libraries("matry, glass,svs,vsag") == [
        "matry",
        "glass-sq4u",
        "svs-lvq",
        "vsag-sq8",
    ]
    everything = bench.resolve_libraries("all")
    assert len(everything) == len(bench.USER_NAMES)
    assert bench.resolve_libraries("hnswlib,all")[0] == "hnswlib"
    assert bench.resolve_libraries("usearch-i8,faiss-hnsw-sq8") == ["usearch-i8", "faiss-hnsw-sq8"]
    with pytest.raises(ValueError, match="unknown library 'x'"):
        bench.resolve_libraries("matry,x")


def test_import_matry_bench_imports_no_peer_library() -> None:
    script = (
        "import sys, matry, matry.bench, matry.cli\n"
        "peers = ['hnswlib', 'faiss', 'usearch', 'annoy', 'voyager', 'glass', 'svs', 'pyvsag',"
        " 'scann', 'matplotlib', 'pyarrow']\n"
        "print([name for name in peers if name in sys.modules])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"
