"""Kernel micro-benchmarks: nanoseconds per float32 dot product, per ISA, against numpy.

Run from the repository root::

    python -m pytest bench/test_kernels.py --benchmark-only
    python -m bench kernels            # the same, plus a markdown table in bench/results/

Each timed call computes ``rows @ query`` for a 1 MiB block of rows (it stays in L2), with
``matry._core.dot_rows(query, rows, level=...)`` (one kernel call per row, looped in C++) or
numpy (BLAS sgemv), so the Python call is spread over thousands of products; the table divides
by the row count. Levels are those compiled into the build and supported by this CPU; each
result is checked against a float64 reference before it is timed. numpy runs with the BLAS
threads it finds (``python -m bench kernels`` sets one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

_core = pytest.importorskip("matry._core")

DIMS = (50, 128, 384, 768, 1536)
BLOCK_FLOATS = 256 * 1024  # 1 MiB of rows
LEVELS = tuple(_core.supported_simd_levels())
KERNELS = (*LEVELS, "numpy")


def _block(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(dim)
    rows = rng.standard_normal((BLOCK_FLOATS // dim, dim)).astype(np.float32)
    return rng.standard_normal(dim).astype(np.float32), rows


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dim", DIMS)
def test_dot(benchmark: BenchmarkFixture, dim: int, kernel: str) -> None:
    query, rows = _block(dim)
    expected = rows.astype(np.float64) @ query.astype(np.float64)
    benchmark.group = f"dot dim={dim}"
    benchmark.extra_info["dim"] = dim
    benchmark.extra_info["kernel"] = kernel
    benchmark.extra_info["rows"] = len(rows)
    if kernel == "numpy":
        result = benchmark(np.dot, rows, query)
    else:
        result = benchmark(_core.dot_rows, query, rows, level=kernel)
    scale = 1.0 + np.abs(rows).astype(np.float64) @ np.abs(query).astype(np.float64)
    assert np.all(np.abs(np.asarray(result, dtype=np.float64) - expected) <= 1e-4 * scale)
