"""SIMD kernels against a float64 numpy reference, each ISA forced, unaligned pointers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matry
import numpy as np
import pytest
from matry import _core

DIMENSIONS = [*range(1, 131), 384, 768, 1536]
MISALIGNMENTS_IN_FLOATS = (1, 2, 3)
KNOWN_LEVELS = ("scalar", "avx2", "avx512", "neon")
LEVEL_ORDER = {"scalar": 0, "neon": 1, "avx2": 1, "avx512": 2}

COMPILED_LEVELS = list(_core.compiled_simd_levels())
SUPPORTED_LEVELS = list(_core.supported_simd_levels())


def require_supported(level: str) -> None:
    """The one allowed skip: a level compiled into this build that this CPU/OS lacks."""
    if level not in SUPPORTED_LEVELS:
        pytest.skip(f"SIMD level {level!r} is compiled in but this CPU (or OS) lacks {level}")


def misaligned_copy(values: np.ndarray, offset_floats: int) -> np.ndarray:
    """A C-contiguous float32 view of `values` whose data pointer is 64-byte aligned + offset."""
    n = values.shape[0]
    buffer = np.zeros(n + offset_floats + 32, dtype=np.float32)
    start = (-buffer.ctypes.data // 4) % 16  # first float index on a 64-byte boundary
    view = buffer[start + offset_floats : start + offset_floats + n]
    view[:] = values
    assert view.flags.c_contiguous
    assert view.ctypes.data % 32 != 0
    return view


def kernel_failures(kernel: str, level: str) -> list[str]:
    """Every (dimension, offset) where the kernel at `level` misses the float64 reference."""
    rng = np.random.default_rng(1234)
    failures: list[str] = []
    for dim in DIMENSIONS:
        a_values = rng.standard_normal(dim).astype(np.float32)
        b_values = rng.standard_normal(dim).astype(np.float32)
        a64 = a_values.astype(np.float64)
        b64 = b_values.astype(np.float64)
        if kernel == "dot":
            reference = float(a64 @ b64)
            magnitude = float(np.abs(a64 * b64).sum())
        else:
            reference = float(((a64 - b64) ** 2).sum())
            magnitude = reference
        tolerance = 1e-5 * magnitude + 1e-6
        for offset_a in MISALIGNMENTS_IN_FLOATS:
            offset_b = MISALIGNMENTS_IN_FLOATS[(offset_a) % len(MISALIGNMENTS_IN_FLOATS)]
            a = misaligned_copy(a_values, offset_a)
            b = misaligned_copy(b_values, offset_b)
            function = _core.dot if kernel == "dot" else _core.l2sq
            got = function(a, b, level=level)
            if not abs(got - reference) <= tolerance:
                failures.append(
                    f"dim={dim} offsets=({offset_a},{offset_b}): got {got!r}, "
                    f"reference {reference!r}, tolerance {tolerance:.3g}"
                )
    return failures


def test_level_lists_are_consistent() -> None:
    assert "scalar" in COMPILED_LEVELS
    assert "scalar" in SUPPORTED_LEVELS
    assert set(SUPPORTED_LEVELS) <= set(COMPILED_LEVELS)
    assert set(COMPILED_LEVELS) <= set(KNOWN_LEVELS)
    assert _core.simd_level() in SUPPORTED_LEVELS
    assert matry.simd_level() == _core.simd_level()


@pytest.mark.parametrize("level", COMPILED_LEVELS)
@pytest.mark.parametrize("kernel", ["dot", "l2sq"])
def test_kernel_matches_float64_reference(kernel: str, level: str) -> None:
    require_supported(level)
    failures = kernel_failures(kernel, level)
    assert not failures, f"{kernel} at {level}: {len(failures)} failures:\n" + "\n".join(
        failures[:20]
    )


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_kernels_agree_on_exact_small_integers(level: str) -> None:
    """Small integer inputs are exact in float32, so every level must give the exact answer."""
    require_supported(level)
    for dim in (1, 7, 8, 15, 16, 17, 31, 33, 63, 65, 100, 129):
        a = misaligned_copy(np.arange(dim, dtype=np.float32) % 5 - 2, 1)
        b = misaligned_copy(np.arange(dim, dtype=np.float32)[::-1] % 3 - 1, 3)
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
        assert _core.dot(a, b, level=level) == float(a64 @ b64), f"dot dim={dim}"
        assert _core.l2sq(a, b, level=level) == float(((a64 - b64) ** 2).sum()), f"l2 dim={dim}"


def test_default_level_is_the_level_in_use() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(77).astype(np.float32)
    b = rng.standard_normal(77).astype(np.float32)
    in_use = _core.simd_level()
    assert _core.dot(a, b) == _core.dot(a, b, level=in_use)
    assert _core.l2sq(a, b) == _core.l2sq(a, b, level=in_use)


def test_level_not_compiled_or_unknown_is_rejected() -> None:
    a = np.ones(8, dtype=np.float32)
    rejected = [level for level in KNOWN_LEVELS if level not in COMPILED_LEVELS] + ["bogus"]
    for level in rejected:
        with pytest.raises(ValueError, match=level):
            _core.dot(a, a, level=level)
        with pytest.raises(ValueError, match=level):
            _core.l2sq(a, a, level=level)


def run_python(code: str, env_overrides: dict[str, str | None], cwd: str) -> str:
    env = os.environ.copy()
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, (
        f"subprocess failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


FORCED_LEVEL_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import matry
    from matry import _core

    rng = np.random.default_rng(7)
    dim = 24
    centers = rng.standard_normal((30, dim))
    data = (centers[rng.integers(0, 30, 3000)] + 0.4 * rng.standard_normal((3000, dim)))
    data = data.astype(np.float32)
    queries = (centers[rng.integers(0, 30, 100)] + 0.4 * rng.standard_normal((100, dim)))
    queries = queries.astype(np.float32)
    report = {"level": matry.simd_level(), "core_level": _core.simd_level()}
    for metric in ("cosine", "l2"):
        ix = matry.Index(dim=dim, metric=metric, seed=0)
        ix.add(data, num_threads=1)
        found, dist = ix.search(queries, k=10, ef=100)
        q = queries.astype(np.float64)
        x = data.astype(np.float64)
        if metric == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
            full = 1.0 - q @ x.T
        else:
            full = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        truth = np.argsort(full, axis=1)[:, :10]
        hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
        returned = np.take_along_axis(full, found, axis=1)
        report[metric] = {
            "recall": hits / truth.size,
            "max_distance_error": float(np.abs(returned - dist).max()),
        }
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_forced_level_through_environment(level: str, tmp_path: Path) -> None:
    require_supported(level)
    output = run_python(FORCED_LEVEL_SCRIPT, {"MATRY_SIMD": level}, str(tmp_path))
    report = json.loads(output.strip().splitlines()[-1])
    assert report["level"] == level
    assert report["core_level"] == level
    for metric in ("cosine", "l2"):
        assert report[metric]["recall"] >= 0.95, (level, metric, report)
        assert report[metric]["max_distance_error"] <= 1e-3, (level, metric, report)


def test_default_dispatch_picks_the_best_supported_level(tmp_path: Path) -> None:
    output = run_python(
        "import matry; print(matry.simd_level())", {"MATRY_SIMD": None}, str(tmp_path)
    )
    best = max(SUPPORTED_LEVELS, key=lambda level: LEVEL_ORDER[level])
    assert output.strip().splitlines()[-1] == best


def test_forcing_an_unavailable_level_falls_back_to_the_best_supported(tmp_path: Path) -> None:
    unavailable = [level for level in KNOWN_LEVELS if level not in SUPPORTED_LEVELS]
    assert unavailable, "every known level is supported here; nothing to fall back from"
    best = max(SUPPORTED_LEVELS, key=lambda level: LEVEL_ORDER[level])
    for level in unavailable:
        output = run_python(
            "import matry; print(matry.simd_level())", {"MATRY_SIMD": level}, str(tmp_path)
        )
        assert output.strip().splitlines()[-1] == best, level


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_rows_matches_the_reference_and_checks_shapes(level: str) -> None:
    # The kernel micro-benchmark (bench/test_kernels.py) times dot_rows: it must be the kernel.
    require_supported(level)
    rng = np.random.default_rng(11)
    rows = rng.standard_normal((37, 77)).astype(np.float32)
    query = rng.standard_normal(77).astype(np.float32)
    products = _core.dot_rows(query, rows, level=level)
    expected = rows.astype(np.float64) @ query.astype(np.float64)
    scale = 1.0 + np.abs(rows).astype(np.float64) @ np.abs(query).astype(np.float64)
    assert products.dtype == np.float32 and products.shape == (37,)
    assert np.all(np.abs(products - expected) <= 1e-5 * scale)
    with pytest.raises(ValueError, match="query, rows"):
        _core.dot_rows(query[:-1], rows, level=level)
    with pytest.raises(ValueError, match="query, rows"):
        _core.dot_rows(rows, rows, level=level)
