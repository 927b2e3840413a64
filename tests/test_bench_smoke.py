"""Smoke test of the repository's benchmark command (bench/) on a tiny random data set.

Runs ``python -m bench run`` end to end with matry (and hnswlib when it is installed; the test
needs nothing from the ``bench`` extra): bench/ prepares and caches the data set, the packaged
runner (matry.bench) builds and sweeps in its worker subprocesses. Checks that the data set
cache, results.jsonl, table.md and plot.png are written and well-formed. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET = "random-3000-16"
EF_VALUES = (10, 40, 160)
SINGLE_QUERIES = 50
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _libraries() -> list[str]:
    libraries = ["matry"]
    if importlib.util.find_spec("hnswlib") is not None:
        libraries.append("hnswlib")
    return libraries


def test_bench_run_writes_results_table_and_plot(tmp_path: Path) -> None:
    libraries = _libraries()
    cache_dir = tmp_path / "cache"
    out_dir = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--dataset",
            DATASET,
            "--libs",
            ",".join(libraries),
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out_dir),
            "--ef-values",
            ",".join(str(ef) for ef in EF_VALUES),
            "--single-query-count",
            str(SINGLE_QUERIES),
            "--stop-recall",
            "1.1",
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    # The data set cache: unit rows, and ground truth that matches brute force.
    data_dir = cache_dir / DATASET
    base = np.load(data_dir / "base.npy")
    queries = np.load(data_dir / "queries.npy")
    gt_ids = np.load(data_dir / "gt_ids.npy")
    assert base.shape == (3000, 16) and base.dtype == np.float32
    assert queries.shape == (300, 16)
    assert gt_ids.shape == (300, 100)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-5)
    exact = np.argsort(-(queries[:20] @ base.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(np.sort(exact, axis=1), np.sort(gt_ids[:20, :10], axis=1))

    # results.jsonl: one point per library and ef, all fields sane.
    results_dir = out_dir / DATASET
    lines = (results_dir / "results.jsonl").read_text().splitlines()
    points = [json.loads(line) for line in lines]
    assert sorted((p["library"], p["search_param"]) for p in points) == sorted(
        (library, ef) for library in libraries for ef in EF_VALUES
    )
    for point in points:
        assert point["dataset"] == DATASET
        assert (point["n_base"], point["n_queries"], point["dim"]) == (3000, 300, 16)
        for depth in (1, 10, 100):
            assert 0.0 <= point[f"recall_at_{depth}"] <= 1.0
        assert point["qps_batch"] > 0 and point["qps_single"] > 0
        assert 0 < point["latency_p50_us"] <= point["latency_p99_us"]
        assert point["single_query_count"] == SINGLE_QUERIES
        assert point["build_seconds"] > 0
        assert point["index_bytes_per_vector"] >= 16 * 4
    for library in libraries:
        best = max(p["recall_at_10"] for p in points if p["library"] == library)
        assert best >= 0.9, f"{library}: recall@10 at ef={EF_VALUES[-1]} is {best}"

    # table.md: the summary, four QPS tables (batched and single, wall clock and CPU time) and
    # the build table, each naming every library.
    table = (results_dir / "table.md").read_text()
    assert "## Summary" in table
    assert "## QPS at recall@10, one batched call" in table
    assert "## QPS at recall@10, one query per call" in table
    assert "### QPS at recall@10, one query per call (1 thread, CPU time" in table
    assert "## Build and memory" in table
    for library in libraries:
        assert table.count(f"| {library} |") == 6
    if "hnswlib" in libraries:
        assert "(1.00x)" in table

    # plot.png: a real PNG of a sensible size.
    png = (results_dir / "plot.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300
