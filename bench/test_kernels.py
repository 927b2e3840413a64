"""Kernel micro-benchmarks: nanoseconds per dot product, per ISA, against numpy.

Run from the repository root::

    python -m pytest bench/test_kernels.py --benchmark-only
    python -m bench kernels            # the same, plus a markdown table in bench/results/

Each timed call computes ``rows @ query`` for a 1 MiB block of rows (it stays in L2), with
``matry._core.dot_rows(query, rows, level=...)`` (one kernel call per row, looped in C++) or
numpy (BLAS sgemv), so the Python call is spread over thousands of products; the table divides
by the row count. The int8 code kernel is timed the same way, beside the float32 ones, as
``_core.dot_u8s8_rows`` over a 1 MiB block of uint8 code rows with an int8 query (kernels
``int8-<level>``). Levels are those compiled into the build and supported by this CPU; each
result is checked against a float64 (int8: exact int64) reference before it is timed. numpy
runs with the BLAS threads it finds (``python -m bench kernels`` sets one).
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
INT8_PREFIX = "int8-"
INT8_KERNELS = tuple(INT8_PREFIX + level for level in LEVELS)
CODE_BLOCK_BYTES = 1024 * 1024  # 1 MiB of uint8 code rows


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


def _code_block(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(dim)
    rows = rng.integers(0, 256, (CODE_BLOCK_BYTES // dim, dim), dtype=np.uint8)
    return rng.integers(-127, 128, dim, dtype=np.int8), rows


# The parameter is named "kernel" with distinct values, so report.kernel_table shows the int8
# kernels as their own columns beside the float32 ones.
@pytest.mark.parametrize("kernel", INT8_KERNELS)
@pytest.mark.parametrize("dim", DIMS)
def test_dot_u8s8(benchmark: BenchmarkFixture, dim: int, kernel: str) -> None:
    query, rows = _code_block(dim)
    expected = rows.astype(np.int64) @ query.astype(np.int64)
    benchmark.group = f"dot_u8s8 dim={dim}"
    benchmark.extra_info["dim"] = dim
    benchmark.extra_info["kernel"] = kernel
    benchmark.extra_info["rows"] = len(rows)
    level = kernel[len(INT8_PREFIX) :]
    result = benchmark(_core.dot_u8s8_rows, query, rows, level=level)
    assert np.array_equal(result, expected)
