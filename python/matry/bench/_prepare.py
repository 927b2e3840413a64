"""The data a benchmark runs on: base rows, queries and their exact neighbours.

:func:`prepare_files` turns the user's files into a :class:`PreparedData` folder: it reads them
(the formats of ``matry tune``), holds out a seeded sample of queries when none are given,
normalizes cosine data, and computes the exact top-k with matry's own SIMD dot kernel
(``_core.dot_rows``, the GIL released, one block of queries per thread), each query's
best candidates rescored in float64. The exact neighbours are cached in the output folder,
keyed by a hash of the base rows, the queries, k and the metric, so a second run on the same
data reuses them.

Scores are "higher is better" everywhere: the inner product for ``ip`` (cosine data is
normalized first, so it is the cosine), minus the squared distance for ``l2``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._data import read_vectors

METRICS = ("cosine", "ip", "l2")
# Rows a score block may hold (queries x base rows, float32): bounds the memory per thread.
SCORE_BLOCK_BYTES = 64 * 1024 * 1024
MAX_BLOCK_QUERIES = 256
GROUND_TRUTH_FORMAT = 1
UNIT_NORM_TOLERANCE = 1e-3
DEFAULT_QUERY_COUNT = 1000


@dataclass
class PreparedData:
    """Where a worker finds the arrays of a run, and what they are.

    ``metric`` is the user's metric (cosine, ip, l2); ``index_metric`` what the libraries index
    ("ip" on unit rows, or "l2"). The ground-truth arrays hold, per query, the ids of the
    exact nearest base rows (best first) and their scores (higher is better).
    """

    name: str
    base_path: str
    queries_path: str
    gt_ids_path: str
    gt_scores_path: str
    metric: str
    index_metric: str
    n_base: int
    n_queries: int
    dim: int
    quick: bool = False
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_metric_of(metric: str) -> str:
    """The metric the libraries index: cosine data is normalized and searched by inner product."""
    if metric not in METRICS:
        raise ValueError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    return "l2" if metric == "l2" else "ip"


def check_rows(vectors: np.ndarray, option: str, metric: str) -> np.ndarray:
    """float32 rows ready to index under ``metric`` (cosine: normalized); ValueError naming the
    option and the first bad row otherwise."""
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{option}: row {row} has a NaN or infinite value")
    if metric == "l2":
        return np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if metric == "cosine":
        zero = norms == 0
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise ValueError(f"{option}: row {row} is a zero vector, which has no cosine")
        return np.ascontiguousarray(vectors / norms[:, None], dtype=np.float32)
    off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{option}: row {row} has norm {norms[row]:.4g}; --metric ip needs unit-length "
            "vectors (--metric cosine normalizes them, --metric l2 takes any)"
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def exact_neighbours(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    threads: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` base ids (int64, best first; ties by the smaller id) and their float64
    scores for every query, under ``metric`` "ip" or "l2".

    Scores come from matry's dot kernel in float32 (for l2: 2 q.x - |x|^2, the same order as
    the distance); the best ``k + max(k, 16)`` candidates of each query are then rescored in
    float64, so rounding cannot reorder the answer.
    """
    from tqdm import tqdm

    from .. import _core

    if metric not in ("ip", "l2"):
        raise ValueError(f"metric: expected 'ip' or 'l2', got {metric!r}")
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_base, n_queries = len(base), len(queries)
    if not 1 <= k <= n_base:
        raise ValueError(f"k: must be between 1 and the {n_base} base vectors, got {k}")
    candidates = min(n_base, k + max(k, 16))
    half_norms = np.einsum("ij,ij->i", base, base) if metric == "l2" else None
    block = max(1, min(MAX_BLOCK_QUERIES, SCORE_BLOCK_BYTES // (4 * n_base)))
    ids = np.empty((n_queries, k), dtype=np.int64)
    scores = np.empty((n_queries, k), dtype=np.float64)

    def solve(start: int) -> int:
        stop = min(start + block, n_queries)
        approximate = np.empty((stop - start, n_base), dtype=np.float32)
        for row in range(start, stop):
            approximate[row - start] = _core.dot_rows(queries[row], base)
        if half_norms is not None:
            approximate *= 2.0
            approximate -= half_norms
        if candidates < n_base:
            picked = np.argpartition(-approximate, candidates - 1, axis=1)[:, :candidates]
        else:
            picked = np.broadcast_to(np.arange(n_base), approximate.shape).copy()
        rows = base[picked].astype(np.float64)  # [queries, candidates, dim]
        wanted = queries[start:stop].astype(np.float64)[:, None, :]
        if metric == "ip":
            exact = np.einsum("qcd,qcd->qc", rows, np.broadcast_to(wanted, rows.shape))
        else:
            exact = -np.square(rows - wanted).sum(axis=2)
        order = np.lexsort((picked, -exact), axis=1)[:, :k]
        ids[start:stop] = np.take_along_axis(picked, order, axis=1)
        scores[start:stop] = np.take_along_axis(exact, order, axis=1)
        return stop - start

    workers = threads if threads > 0 else (os.cpu_count() or 1)
    starts = range(0, n_queries, block)
    bar = tqdm(total=n_queries, desc="ground truth", unit="query", disable=not progress)
    with bar, ThreadPoolExecutor(max_workers=max(1, min(workers, len(starts)))) as pool:
        for done in pool.map(solve, starts):
            bar.update(done)
    return ids, scores


def ground_truth_key(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> str:
    """A hash of everything the exact neighbours depend on."""
    digest = hashlib.blake2b(digest_size=16)
    header = {
        "format": GROUND_TRUTH_FORMAT,
        "metric": metric,
        "k": k,
        "base": list(base.shape),
        "queries": list(queries.shape),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for array in (base, queries):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).data)
    return digest.hexdigest()


def cached_ground_truth(
    cache_dir: Path,
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    progress: bool = True,
) -> tuple[Path, Path, bool]:
    """Paths of the ids and scores files of the exact neighbours in ``cache_dir`` (computed and
    saved there unless a previous run left them), and whether they were cached."""
    key = ground_truth_key(base, queries, k, metric)
    ids_path = cache_dir / f"{key}-ids.npy"
    scores_path = cache_dir / f"{key}-scores.npy"
    meta_path = cache_dir / f"{key}.json"
    if meta_path.is_file() and ids_path.is_file() and scores_path.is_file():
        try:
            ids = np.load(ids_path, mmap_mode="r")
            found = np.load(scores_path, mmap_mode="r")
            if ids.shape == found.shape == (len(queries), k):
                return ids_path, scores_path, True
        except (OSError, ValueError):
            pass  # unreadable: computed again below
    from .. import simd_level

    print(
        f"ground truth: exact top-{k} of {len(queries):,} queries over {len(base):,} vectors "
        f"with matry's {simd_level()} kernels",
        flush=True,
    )
    started = time.perf_counter()
    ids, found = exact_neighbours(base, queries, k, metric, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path, array in ((ids_path, ids), (scores_path, found)):
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, array)
        os.replace(temporary, path)
    meta = {
        "format": GROUND_TRUTH_FORMAT,
        "metric": metric,
        "k": k,
        "n_base": len(base),
        "n_queries": len(queries),
        "dim": int(base.shape[1]),
        "seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    temporary_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    temporary_meta.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(temporary_meta, meta_path)
    print(f"ground truth: {meta['seconds']:.1f} s, saved in {cache_dir}", flush=True)
    return ids_path, scores_path, False


def hold_out(count: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows in a seeded random order, base rows in file order) of ``count`` rows."""
    permutation = np.random.default_rng(seed).permutation(count)
    return permutation[:queries], np.sort(permutation[queries:])


@dataclass
class Inputs:
    """The checked base rows and queries of a run (cosine rows normalized), before any file is
    written."""

    name: str
    base: np.ndarray
    queries: np.ndarray
    metric: str
    k: int
    source: str


def load_inputs(
    data: str | os.PathLike[str],
    *,
    queries: str | os.PathLike[str] | None = None,
    metric: str = "cosine",
    k: int = 10,
    column: str | None = None,
    query_count: int | None = None,
    max_base: int | None = None,
    seed: int = 0,
) -> Inputs:
    """Read, split, check and normalize the user's vectors; nothing is written.

    Without ``queries``, ``query_count`` rows (default: 1,000, at most a tenth of the data) are
    held out at random (``seed``) and the rest is the base; with ``queries``, ``query_count``
    keeps the first that many. ``max_base`` keeps the first rows of the base. Raises ValueError
    naming the option at fault (and the row of the file, for NaN, zero or non-unit rows).
    """
    index_metric_of(metric)
    if k < 1:
        raise ValueError(f"--k: must be >= 1, got {k}")
    for option, value in (("--queries-count", query_count), ("--max-base", max_base)):
        if value is not None and value < 1:
            raise ValueError(f"{option}: must be >= 1, got {value}")
    # checked whole, so that an error names the row of the file
    vectors = check_rows(read_vectors(data, column), "--data", metric)
    source = f"{Path(data)}"
    if queries is None:
        wanted = query_count if query_count is not None else DEFAULT_QUERY_COUNT
        if query_count is None:
            wanted = max(1, min(wanted, len(vectors) // 10))
        if wanted >= len(vectors):
            raise ValueError(
                f"--queries-count: {wanted} queries cannot be held out of the {len(vectors)} "
                "rows of --data (pass --queries, or a smaller --queries-count)"
            )
        query_rows, base_rows = hold_out(len(vectors), wanted, seed)
        query_matrix, base = vectors[query_rows], vectors[base_rows]
        source += f" ({wanted:,} rows held out as queries, seed {seed})"
    else:
        query_matrix = read_vectors(queries, column)
        if query_matrix.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"--queries: {queries} has dimension {query_matrix.shape[1]}, but --data "
                f"{data} has dimension {vectors.shape[1]}"
            )
        query_matrix = check_rows(query_matrix, "--queries", metric)
        if query_count is not None:
            query_matrix = query_matrix[:query_count]
        base = vectors
        source += f", queries {Path(queries)}"
    del vectors
    if max_base is not None and max_base < len(base):
        base = base[:max_base]
        source += f", first {max_base:,} base rows"
    if k > len(base):
        raise ValueError(f"--k: {k} neighbours need at least {k} base vectors, have {len(base)}")
    return Inputs(
        name=Path(data).stem,
        base=np.ascontiguousarray(base),
        queries=np.ascontiguousarray(query_matrix),
        metric=metric,
        k=k,
        source=source,
    )


def write_prepared(
    inputs: Inputs, work_dir: Path, cache_dir: Path, progress: bool = True
) -> PreparedData:
    """Write the arrays the workers read to ``work_dir`` and find (or compute and cache in
    ``cache_dir``) the exact neighbours."""
    index_metric = index_metric_of(inputs.metric)
    work_dir.mkdir(parents=True, exist_ok=True)
    base_path, queries_path = work_dir / "base.npy", work_dir / "queries.npy"
    np.save(base_path, inputs.base)
    np.save(queries_path, inputs.queries)
    gt_ids, gt_scores, cached = cached_ground_truth(
        cache_dir, inputs.base, inputs.queries, inputs.k, index_metric, progress=progress
    )
    if cached:
        print(f"ground truth: cached ({gt_ids.parent})", flush=True)
    return PreparedData(
        name=inputs.name,
        base_path=str(base_path),
        queries_path=str(queries_path),
        gt_ids_path=str(gt_ids),
        gt_scores_path=str(gt_scores),
        metric=inputs.metric,
        index_metric=index_metric,
        n_base=len(inputs.base),
        n_queries=len(inputs.queries),
        dim=int(inputs.base.shape[1]),
        source=inputs.source,
    )


def prepare_files(
    data: str | os.PathLike[str],
    work_dir: Path,
    cache_dir: Path,
    *,
    progress: bool = True,
    **options: Any,
) -> PreparedData:
    """:func:`load_inputs` (``options``: queries, metric, k, column, query_count, max_base,
    seed), then :func:`write_prepared`."""
    return write_prepared(load_inputs(data, **options), work_dir, cache_dir, progress=progress)
