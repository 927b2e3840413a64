"""Kernel micro-benchmarks: nanoseconds per float32 dot product, per ISA, against numpy.

Run from the repository root::

    python -m pytest bench/test_kernels.py --benchmark-only
    python -m bench kernels            # the same, plus a markdown table in bench/results/

Each case times one Python call of ``matry._core.dot(a, b, level=...)`` (or ``numpy.dot``), so
the figures include the cost of the call itself; the dimension-1 case shows that cost alone.
Levels are those compiled into the build and supported by this CPU; each result is checked
against a float64 reference before it is timed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from pytest_benchmark.fixture import BenchmarkFixture

_core = pytest.importorskip("matry._core")

DIMS = (1, 50, 128, 384, 768, 1536)
LEVELS = tuple(_core.supported_simd_levels())
KERNELS = (*LEVELS, "numpy")


def _vectors(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(dim)
    return (
        rng.standard_normal(dim).astype(np.float32),
        rng.standard_normal(dim).astype(np.float32),
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dim", DIMS)
def test_dot(benchmark: BenchmarkFixture, dim: int, kernel: str) -> None:
    a, b = _vectors(dim)
    expected = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
    benchmark.group = f"dot dim={dim}"
    benchmark.extra_info["dim"] = dim
    benchmark.extra_info["kernel"] = kernel
    if kernel == "numpy":
        result = benchmark(np.dot, a, b)
    else:
        result = benchmark(_core.dot, a, b, level=kernel)
    assert abs(float(result) - expected) <= 1e-4 * (1.0 + float(np.abs(a) @ np.abs(b)))
