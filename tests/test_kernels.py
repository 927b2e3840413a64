"""SIMD kernels, each ISA forced, unaligned pointers: f32 kernels against a float64 numpy
reference, the int8 code kernel bit for bit against the scalar one and an int64 numpy reference."""

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
from hypothesis import given, settings
from hypothesis import strategies as st
from matry import _core

DIMENSIONS = [*range(1, 131), 384, 768, 1536]
MISALIGNMENTS_IN_FLOATS = (1, 2, 3)
# Every level matry knows, best first (the dispatch order); neon and the x86 levels exclude
# each other in one build.
LEVELS_BEST_FIRST = ("avx512vnni", "avx512", "avxvnni", "avx2", "neon", "scalar")
KNOWN_LEVELS = LEVELS_BEST_FIRST
LEVEL_ORDER = {"scalar": 0, "neon": 1, "avx2": 1, "avxvnni": 2, "avx512": 3, "avx512vnni": 4}

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


def test_levels_are_listed_best_first() -> None:
    assert [level for level in LEVELS_BEST_FIRST if level in COMPILED_LEVELS] == COMPILED_LEVELS
    assert [level for level in COMPILED_LEVELS if level in SUPPORTED_LEVELS] == SUPPORTED_LEVELS


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
    codes = rng.integers(0, 256, 77, dtype=np.uint8)
    query = rng.integers(-127, 128, 77, dtype=np.int8)
    assert _core.dot_u8s8(codes, query) == _core.dot_u8s8(codes, query, level=in_use)


def test_level_not_compiled_or_unknown_is_rejected() -> None:
    a = np.ones(8, dtype=np.float32)
    rejected = [level for level in KNOWN_LEVELS if level not in COMPILED_LEVELS] + ["bogus"]
    for level in rejected:
        with pytest.raises(ValueError, match=level):
            _core.dot(a, a, level=level)
        with pytest.raises(ValueError, match=level):
            _core.l2sq(a, a, level=level)
        with pytest.raises(ValueError, match=level):
            _core.dot_u8s8(np.ones(8, np.uint8), np.ones(8, np.int8), level=level)
        with pytest.raises(ValueError, match=level):
            _core.dot_u8s8_rows(np.ones(8, np.int8), np.ones((2, 8), np.uint8), level=level)


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


# --- int8 code kernel: sum codes[i] * query[i], uint8 codes, int8 query, exact int32 ---------

MAX_CODE_LENGTH = 65536  # the kernels' documented limit: 65536 * 255 * 128 < 2**31
CODE_LENGTHS = (*range(81), 127, 383, 384, 385, 1000, 4095, MAX_CODE_LENGTH)
MISALIGNED_CODE_LENGTHS = (*range(1, 81), 127, 383, 384, 385)
CODE_OFFSETS = range(1, 64)


def int64_dot(codes: np.ndarray, query: np.ndarray) -> int:
    return int(codes.astype(np.int64) @ query.astype(np.int64))


def random_code_pair(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes over 0..255 and a query over the quantizer's range -127..127."""
    return rng.integers(0, 256, n, dtype=np.uint8), rng.integers(-127, 128, n, dtype=np.int8)


def code_failures(level: str, codes: np.ndarray, query: np.ndarray, label: str) -> list[str]:
    """Empty when `level` agrees bit for bit with the scalar kernel and the int64 reference."""
    got = _core.dot_u8s8(codes, query, level=level)
    scalar = _core.dot_u8s8(codes, query, level="scalar")
    expected = int64_dot(codes, query)
    if got == scalar == expected and type(got) is int:
        return []
    return [f"{label}: got {got!r}, scalar {scalar!r}, int64 reference {expected}"]


def assert_no_failures(failures: list[str], what: str) -> None:
    assert not failures, f"{what}: {len(failures)} failures:\n" + "\n".join(failures[:20])


def misaligned_view(buffer: np.ndarray, offset: int, n: int) -> np.ndarray:
    """`n` elements of `buffer` starting `offset` bytes past a 64-byte boundary (no copy)."""
    start = (-buffer.ctypes.data) % 64 + offset
    view = buffer[start : start + n]
    assert view.ctypes.data % 64 == offset
    return view


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_is_exact_at_every_length(level: str) -> None:
    require_supported(level)
    rng = np.random.default_rng(21)
    failures: list[str] = []
    for n in CODE_LENGTHS:
        codes, query = random_code_pair(rng, n)
        failures += code_failures(level, codes, query, f"n={n}")
    assert_no_failures(failures, f"dot_u8s8 at {level}")


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_is_exact_at_misaligned_offsets(level: str) -> None:
    require_supported(level)
    rng = np.random.default_rng(22)
    size = max(MISALIGNED_CODE_LENGTHS) + 128
    code_buffer, query_buffer = random_code_pair(rng, size)
    failures: list[str] = []
    for offset in CODE_OFFSETS:
        query_offset = 64 - offset  # the two pointers misaligned differently
        for n in MISALIGNED_CODE_LENGTHS:
            codes = misaligned_view(code_buffer, offset, n)
            query = misaligned_view(query_buffer, query_offset, n)
            failures += code_failures(
                level, codes, query, f"n={n} offsets=({offset},{query_offset})"
            )
    assert_no_failures(failures, f"dot_u8s8 at {level}")


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_is_exact_at_the_extremes(level: str) -> None:
    """The values that saturate a plain vpmaddubsw, at the longest length the kernels accept."""
    require_supported(level)
    n = MAX_CODE_LENGTH
    alternating = np.where(np.arange(n) % 2 == 0, 127, -128).astype(np.int8)
    cases = {
        "255 x 127": (np.full(n, 255, np.uint8), np.full(n, 127, np.int8)),
        "255 x -127": (np.full(n, 255, np.uint8), np.full(n, -127, np.int8)),
        # Not produced by the quantizer, but the kernels are exact over the whole int8 range.
        "255 x -128": (np.full(n, 255, np.uint8), np.full(n, -128, np.int8)),
        "128 x -128": (np.full(n, 128, np.uint8), np.full(n, -128, np.int8)),
        "127 x -128": (np.full(n, 127, np.uint8), np.full(n, -128, np.int8)),
        "255 x (127, -128, ...)": (np.full(n, 255, np.uint8), alternating),
        "0 x -128": (np.zeros(n, np.uint8), np.full(n, -128, np.int8)),
    }
    expected_products = {
        "255 x 127": n * 255 * 127,
        "255 x -127": -n * 255 * 127,
        "255 x -128": -n * 255 * 128,
        "128 x -128": -n * 128 * 128,
        "127 x -128": -n * 127 * 128,
        "255 x (127, -128, ...)": (n // 2) * 255 * (127 - 128),
        "0 x -128": 0,
    }
    failures: list[str] = []
    for label, (codes, query) in cases.items():
        assert int64_dot(codes, query) == expected_products[label], label
        failures += code_failures(level, codes, query, label)
        for n_short in (1, 31, 33, 63, 65, 383):  # the same values through every tail path
            failures += code_failures(
                level, codes[:n_short], query[:n_short], f"{label} n={n_short}"
            )
    assert_no_failures(failures, f"dot_u8s8 at {level}")


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_is_exact_on_boundary_values(level: str) -> None:
    """Random mixtures of the values next to each split and saturation boundary."""
    require_supported(level)
    rng = np.random.default_rng(23)
    code_values = np.array([0, 1, 126, 127, 128, 129, 254, 255], dtype=np.uint8)
    query_values = np.array([-128, -127, -126, -1, 0, 1, 126, 127], dtype=np.int8)
    failures: list[str] = []
    for n in (*range(1, 70), 383, 384, 385, 4096, 65535):
        codes = rng.choice(code_values, n)
        query = rng.choice(query_values, n)
        failures += code_failures(level, codes, query, f"n={n}")
    assert_no_failures(failures, f"dot_u8s8 at {level}")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_dot_u8s8_levels_agree_on_arbitrary_bytes(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 300), label="n")
    offset = data.draw(st.integers(0, 63), label="offset")
    code_bytes = data.draw(st.binary(min_size=n, max_size=n), label="codes")
    query_bytes = data.draw(st.binary(min_size=n, max_size=n), label="query")
    # Nonzero bytes on both sides, so a kernel reading outside the row gets a wrong sum.
    codes = np.frombuffer(b"\xff" * offset + code_bytes + b"\xff" * 64, dtype=np.uint8)
    query = np.frombuffer(b"\x7f" * 64 + query_bytes + b"\x7f" * 64, dtype=np.int8)
    codes = codes[offset : offset + n]
    query = query[64 : 64 + n]
    expected = int64_dot(codes, query)
    for level in SUPPORTED_LEVELS:
        assert _core.dot_u8s8(codes, query, level=level) == expected, level


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_rows_matches_the_reference_and_checks_shapes(level: str) -> None:
    require_supported(level)
    rng = np.random.default_rng(24)
    for count, dim in ((37, 77), (5, 384), (3, 1), (0, 16), (4, 0)):
        rows = rng.integers(0, 256, (count, dim), dtype=np.uint8)
        query = rng.integers(-127, 128, dim, dtype=np.int8)
        products = _core.dot_u8s8_rows(query, rows, level=level)
        assert products.dtype == np.int32 and products.shape == (count,)
        expected = rows.astype(np.int64) @ query.astype(np.int64)
        assert np.array_equal(products, expected), (count, dim)
    # A strided view is made contiguous, not misread.
    wide = rng.integers(0, 256, (9, 200), dtype=np.uint8)
    query = rng.integers(-127, 128, 100, dtype=np.int8)
    expected = wide[:, ::2].astype(np.int64) @ query.astype(np.int64)
    assert np.array_equal(_core.dot_u8s8_rows(query, wide[:, ::2], level=level), expected)
    with pytest.raises(ValueError, match="query, codes_rows"):
        _core.dot_u8s8_rows(query[:-1], wide[:, ::2], level=level)
    with pytest.raises(ValueError, match="query, codes_rows"):
        _core.dot_u8s8_rows(query, wide[0, :100], level=level)


def test_dot_u8s8_rejects_bad_input_naming_the_argument() -> None:
    codes = np.zeros(8, dtype=np.uint8)
    query = np.zeros(8, dtype=np.int8)
    wrong_codes = [codes.astype(np.int8), codes.astype(np.int16), codes.astype(np.float32)]
    for bad in [*wrong_codes, codes.astype(bool), codes.tolist(), b"\x00" * 8, np.uint8(3)]:
        with pytest.raises(ValueError, match="codes: expected a numpy uint8 array"):
            _core.dot_u8s8(bad, query)  # type: ignore[arg-type]
    for bad in [query.astype(np.uint8), query.astype(np.int64), query.tolist()]:
        with pytest.raises(ValueError, match="query: expected a numpy int8 array"):
            _core.dot_u8s8(codes, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codes_rows: expected a numpy uint8 array"):
        _core.dot_u8s8_rows(query, np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="query: expected a numpy int8 array"):
        _core.dot_u8s8_rows(codes, np.zeros((2, 8), dtype=np.uint8))  # type: ignore[arg-type]
    for bad_codes, bad_query in (
        (codes[:7], query),
        (codes.reshape(2, 4), query.reshape(2, 4)),
        (np.zeros((), np.uint8), np.zeros((), np.int8)),
    ):
        with pytest.raises(ValueError, match="codes, query: expected two 1-D arrays"):
            _core.dot_u8s8(bad_codes, bad_query)
    too_long = MAX_CODE_LENGTH + 1
    with pytest.raises(ValueError, match=f"codes, query: length {too_long} .* 65536"):
        _core.dot_u8s8(np.zeros(too_long, np.uint8), np.zeros(too_long, np.int8))
    with pytest.raises(ValueError, match=f"query, codes_rows: length {too_long} .* 65536"):
        _core.dot_u8s8_rows(np.zeros(too_long, np.int8), np.zeros((1, too_long), np.uint8))


# Rows packed against inaccessible pages: a kernel that reads one byte before the start or past
# the end of a row faults, and the subprocess dies instead of the test run. The test prepends
# `level = ...`.
GUARD_PAGE_SCRIPT = textwrap.dedent(
    """
    import ctypes
    import json
    import mmap

    import numpy as np
    from matry import _core

    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    PROT_NONE = 0

    def guarded_page(dtype):
        # One read-write page between two inaccessible ones.
        region = mmap.mmap(-1, 3 * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        for guard in (base, base + 2 * page):
            if libc.mprotect(guard, page, PROT_NONE) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        return region, np.frombuffer(region, dtype=dtype, count=page, offset=page)

    code_region, codes = guarded_page(np.uint8)
    query_region, query = guarded_page(np.int8)
    rng = np.random.default_rng(25)
    codes[:] = rng.integers(0, 256, page, dtype=np.uint8)
    query[:] = rng.integers(-127, 128, page, dtype=np.int8)

    def reference(c, q):
        return int(c.astype(np.int64) @ q.astype(np.int64))

    failures = []
    for n in (*range(1, 130), 255, 383, 384, 385, 1000, page):
        for where, c, q in (
            ("end", codes[page - n :], query[page - n :]),
            ("start", codes[:n], query[:n]),
        ):
            got = _core.dot_u8s8(c, q, level=level)
            if got != reference(c, q):
                failures.append(f"n={n} at page {where}: {got}")
    for dim in (1, 7, 31, 33, 63, 65, 383):
        count = page // dim
        rows = codes[page - count * dim :].reshape(count, dim)
        q = query[page - dim :]
        got = _core.dot_u8s8_rows(q, rows, level=level)
        if not np.array_equal(got, rows.astype(np.int64) @ q.astype(np.int64)):
            failures.append(f"rows dim={dim}")
    print(json.dumps({"failures": failures}))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="guard pages are set with POSIX mprotect")
@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_dot_u8s8_reads_nothing_outside_the_row(level: str, tmp_path: Path) -> None:
    require_supported(level)
    script = f"level = {level!r}\n" + GUARD_PAGE_SCRIPT
    output = run_python(script, {"MATRY_SIMD": None}, str(tmp_path))
    failures = json.loads(output.strip().splitlines()[-1])["failures"]
    assert_no_failures(failures, f"dot_u8s8 at {level} next to guard pages")


FORCED_LEVEL_INT8_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import matry
    from matry import _core

    rng = np.random.default_rng(26)
    mismatches = []
    for n in (*range(0, 70), 383, 384, 385, 4095, 65536):
        codes = rng.integers(0, 256, n, dtype=np.uint8)
        query = rng.integers(-127, 128, n, dtype=np.int8)
        expected = int(codes.astype(np.int64) @ query.astype(np.int64))
        got = _core.dot_u8s8(codes, query)
        if got != expected:
            mismatches.append([n, got, expected])
    rows = rng.integers(0, 256, (50, 385), dtype=np.uint8)
    query = rng.integers(-127, 128, 385, dtype=np.int8)
    products = _core.dot_u8s8_rows(query, rows)
    rows_exact = bool(np.array_equal(products, rows.astype(np.int64) @ query.astype(np.int64)))
    print(json.dumps({"level": matry.simd_level(), "mismatches": mismatches, "rows": rows_exact}))
    """
)


@pytest.mark.parametrize("level", COMPILED_LEVELS)
def test_forced_level_runs_an_exact_int8_kernel(level: str, tmp_path: Path) -> None:
    require_supported(level)
    output = run_python(FORCED_LEVEL_INT8_SCRIPT, {"MATRY_SIMD": level}, str(tmp_path))
    report = json.loads(output.strip().splitlines()[-1])
    assert report["level"] == level
    assert report["mismatches"] == []
    assert report["rows"] is True
