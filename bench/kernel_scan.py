"""Amortized kernel cost: nanoseconds per inner product inside matry's brute-force scan.

``_core.dot`` is one Python call per product, so at these dimensions the call itself (about a
microsecond) hides most of the kernel. This measures the kernels where the call cost is spread
over many products: ``Index.exact_search(queries, k=1, num_threads=1)`` over a base small
enough to stay in cache computes one inner product per (query, base row) plus a comparison.
Each ISA level runs in its own subprocess with ``MATRY_SIMD`` set (the dispatch level is read
once, at import). numpy's figure is ``base @ query`` (BLAS sgemv) per query. Times are CPU
time of the process (best of five), so other work on a shared machine does not inflate them.

The int8 code kernel has no scan yet, so its rate is measured beside the float32 one at 384-d
with one kernel call per row over a 1 MiB block (``_core.dot_rows`` for float32 rows,
``_core.dot_u8s8_rows`` for uint8 code rows and an int8 query), every supported level forced
through the ``level`` argument, in dots per second (CPU time, best of five).

``python -m bench.kernel_scan LEVEL`` prints ``{"level": ..., "ns_per_dot": {dim: ns}}``;
``python -m bench.kernel_scan rates`` prints ``{level: {"float32": dots/s, "int8": dots/s}}``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

SCAN_DIMS = (50, 128, 384, 768, 1536)
BASE_FLOATS = 64 * 1024  # 256 KiB of base vectors: stays in L2
WORK_FLOATS = 40_000_000  # products x dim per timed run
REPEATS = 5
RATE_DIM = 384
RATE_BLOCK_BYTES = 1024 * 1024  # rows per kernel-call loop: 1 MiB stays in L2
RATE_DOTS = 2_000_000  # products per timed run of one kernel
REPO_ROOT = Path(__file__).resolve().parent.parent


def _unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def _shapes(dim: int) -> tuple[int, int]:
    base_count = max(64, BASE_FLOATS // dim)
    query_count = max(10, WORK_FLOATS // (base_count * dim))
    return base_count, query_count


def measure_matry() -> dict[str, object]:
    """ns per inner product of the dispatch level this process uses."""
    import matry

    results: dict[str, float] = {}
    for dim in SCAN_DIMS:
        base_count, query_count = _shapes(dim)
        index = matry.Index(dim, metric="ip")
        index.add(_unit_rows(base_count, dim, 1), num_threads=1)
        queries = _unit_rows(query_count, dim, 2)
        index.exact_search(queries[:2], k=1, num_threads=1)
        best = float("inf")
        for _ in range(REPEATS):
            started = time.process_time()
            index.exact_search(queries, k=1, num_threads=1)
            best = min(best, time.process_time() - started)
        results[str(dim)] = best * 1e9 / (base_count * query_count)
    return {"level": matry.simd_level(), "ns_per_dot": results}


def measure_numpy() -> dict[str, float]:
    """ns per inner product of ``base @ query`` (BLAS sgemv), one query per call."""
    results: dict[str, float] = {}
    for dim in SCAN_DIMS:
        base_count, query_count = _shapes(dim)
        base = _unit_rows(base_count, dim, 1)
        queries = list(_unit_rows(query_count, dim, 2))
        best = float("inf")
        for _ in range(REPEATS):
            started = time.process_time()
            for query in queries:
                _ = base @ query
            best = min(best, time.process_time() - started)
        results[str(dim)] = best * 1e9 / (base_count * query_count)
    return results


def _dots_per_second(run: Callable[[], object], dots_per_call: int) -> float:
    calls = max(1, RATE_DOTS // dots_per_call)
    run()
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        for _ in range(calls):
            run()
        best = min(best, time.process_time() - started)
    return calls * dots_per_call / max(best, 1e-9)


def measure_rates(levels: list[str]) -> dict[str, dict[str, float]]:
    """Dots per second at RATE_DIM of the float32 and the int8 kernel of each level."""
    from matry import _core

    rng = np.random.default_rng(RATE_DIM)
    rows = rng.standard_normal((RATE_BLOCK_BYTES // (4 * RATE_DIM), RATE_DIM)).astype(np.float32)
    query = rng.standard_normal(RATE_DIM).astype(np.float32)
    code_rows = rng.integers(0, 256, (RATE_BLOCK_BYTES // RATE_DIM, RATE_DIM), dtype=np.uint8)
    code_query = rng.integers(-127, 128, RATE_DIM, dtype=np.int8)
    exact = code_rows.astype(np.int64) @ code_query.astype(np.int64)
    rates: dict[str, dict[str, float]] = {}
    for level in levels:
        if not np.array_equal(_core.dot_u8s8_rows(code_query, code_rows, level=level), exact):
            raise RuntimeError(f"int8 kernel at {level} is not exact; not timing it")
        rates[level] = {
            "float32": _dots_per_second(
                functools.partial(_core.dot_rows, query, rows, level=level), len(rows)
            ),
            "int8": _dots_per_second(
                functools.partial(_core.dot_u8s8_rows, code_query, code_rows, level=level),
                len(code_rows),
            ),
        }
    return rates


def rate_table(levels: list[str]) -> str:
    """Markdown table: rows are the levels, columns float32 and int8 dots per second."""
    rates = measure_rates(levels)
    lines = ["| level | float32 (M dots/s) | int8 (M dots/s) |", "|---|---|---|"]
    for level, rate in rates.items():
        lines.append(f"| {level} | {rate['float32'] / 1e6:.1f} | {rate['int8'] / 1e6:.1f} |")
    return (
        f"Dots per second at {RATE_DIM}-d, one kernel call per row over a "
        f"{RATE_BLOCK_BYTES // 2**20} MiB block "
        "(float32: `_core.dot_rows`; int8: `_core.dot_u8s8_rows`, uint8 codes x int8 query, "
        "exact), CPU time, best of five.\n\n" + "\n".join(lines) + "\n"
    )


def scan_table(levels: list[str]) -> str:
    """Markdown tables: ns per dot in the scan (rows are dimensions, columns the levels and
    numpy), then the float32 and int8 rates of each level at RATE_DIM."""
    columns: dict[str, dict[str, float]] = {}
    for level in levels:
        environment = dict(os.environ, MATRY_SIMD=level, OMP_NUM_THREADS="1")
        environment["OPENBLAS_NUM_THREADS"] = "1"
        completed = subprocess.run(
            [sys.executable, "-m", "bench.kernel_scan", level],
            env=environment,
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        if measured["level"] != level:
            print(f"MATRY_SIMD={level} ran {measured['level']}; column skipped", file=sys.stderr)
            continue
        columns[level] = measured["ns_per_dot"]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.kernel_scan", "numpy"],
        env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    columns["numpy sgemv"] = json.loads(completed.stdout.strip().splitlines()[-1])["ns_per_dot"]
    names = list(columns)
    lines = ["| dim | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for dim in SCAN_DIMS:
        cells = [f"{columns[name][str(dim)]:.1f}" for name in names]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return (
        "Nanoseconds per inner product inside a brute-force scan (matry: "
        "`exact_search(k=1, num_threads=1)` over a 256 KiB base, the call cost spread over "
        f"{WORK_FLOATS:,} multiply-adds; numpy: `base @ query` per query, one BLAS thread).\n\n"
        + "\n".join(lines)
        + "\n\n"
        + rate_table(levels)
    )


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["numpy"]:
        print(json.dumps({"level": "numpy", "ns_per_dot": measure_numpy()}))
        return 0
    if arguments == ["rates"]:
        from matry import _core

        print(json.dumps(measure_rates(list(_core.supported_simd_levels()))))
        return 0
    print(json.dumps(measure_matry()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
