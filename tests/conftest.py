"""Shared helpers for the matry core tests: exact (numpy, float64) search and test data.

The helpers are plain functions so that hypothesis tests (which must not use function-scoped
fixtures) and subprocess scripts can use them as well; test modules import them with
``from conftest import ...``.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "ip", "l2")

# Tolerances for comparing matry's float32 distances against the float64 reference.
DISTANCE_RTOL = 1e-4
DISTANCE_ATOL = 1e-5


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 length (computed in float64, returned as float32)."""
    as_float64 = np.asarray(vectors, dtype=np.float64)
    if as_float64.ndim == 1:
        as_float64 = as_float64[None, :]
    norms = np.linalg.norm(as_float64, axis=1, keepdims=True)
    return (as_float64 / norms).astype(np.float32)


def prepare_for_metric(metric: str, vectors: np.ndarray) -> np.ndarray:
    """Data that `metric` accepts: "ip" needs unit vectors, the others take anything."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric == "ip":
        return normalize_rows(vectors)
    return vectors


def stored_form(metric: str, vectors: np.ndarray) -> np.ndarray:
    """What `Index.get` should return for vectors added under `metric`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        return normalize_rows(vectors)
    return vectors


def exact_distances(metric: str, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float64 distance matrix [n_queries, n_vectors] under matry's conventions.

    cosine: 1 - cos(q, x); ip: 1 - q.x; l2: squared euclidean distance.
    """
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(vectors, dtype=np.float64)
    if q.ndim == 1:
        q = q[None, :]
    if x.ndim == 1:
        x = x[None, :]
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1.0 - qn @ xn.T
    if metric == "ip":
        return 1.0 - q @ x.T
    if metric == "l2":
        squared = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (q @ x.T)
        return np.maximum(squared, 0.0)
    raise AssertionError(f"unknown metric {metric!r}")


def exact_top_k(
    metric: str, queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest (ids int64 [nq, k'], distances float64 [nq, k']), k' = min(k, n)."""
    distances = exact_distances(metric, queries, vectors)
    k_found = min(k, distances.shape[1])
    if k_found < distances.shape[1]:
        part = np.argpartition(distances, k_found - 1, axis=1)[:, :k_found]
    else:
        part = np.tile(np.arange(distances.shape[1]), (distances.shape[0], 1))
    part_distances = np.take_along_axis(distances, part, axis=1)
    order = np.argsort(part_distances, axis=1, kind="stable")
    columns = np.take_along_axis(part, order, axis=1)
    ids = np.asarray(ids, dtype=np.int64)
    return ids[columns], np.take_along_axis(distances, columns, axis=1)


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    """Mean over rows of |found ∩ true| / k (k = number of true columns)."""
    k = true_ids.shape[1]
    hits = sum(
        len(set(found_row.tolist()) & set(true_row.tolist()))
        for found_row, true_row in zip(found_ids, true_ids)
    )
    return hits / (k * true_ids.shape[0])


def clustered_vectors(
    rng: np.random.Generator,
    n_vectors: int,
    dim: int,
    n_clusters: int,
    spread: float = 0.35,
    centers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters: (vectors float32 [n, dim], centers float64 [n_clusters, dim])."""
    if centers is None:
        centers = rng.standard_normal((n_clusters, dim))
    labels = rng.integers(0, centers.shape[0], size=n_vectors)
    vectors = centers[labels] + spread * rng.standard_normal((n_vectors, dim))
    return vectors.astype(np.float32), centers


def assert_valid_search_rows(
    metric: str,
    live_vectors: dict[int, np.ndarray],
    queries: np.ndarray,
    found_ids: np.ndarray,
    found_distances: np.ndarray,
    k: int,
) -> None:
    """Checks every row of a search result against the live set (not exactness).

    Shapes and dtypes, padding (-1 / +inf exactly in the tail when fewer than k live vectors),
    ids live and unique per row, distances ascending and equal to the exact distance of each
    returned id.
    """
    n_queries = np.asarray(queries).reshape(-1, np.asarray(queries).shape[-1]).shape[0]
    assert found_ids.dtype == np.int64
    assert found_distances.dtype == np.float32
    assert found_ids.shape == (n_queries, k)
    assert found_distances.shape == (n_queries, k)
    n_expected = min(k, len(live_vectors))
    queries_2d = np.asarray(queries, dtype=np.float32).reshape(n_queries, -1)
    for row, (row_ids, row_distances) in enumerate(zip(found_ids, found_distances)):
        head_ids = row_ids[:n_expected]
        head_distances = row_distances[:n_expected]
        assert np.all(row_ids[n_expected:] == -1), f"row {row}: tail not padded: {row_ids}"
        assert np.all(np.isposinf(row_distances[n_expected:])), (
            f"row {row}: tail distances not +inf: {row_distances}"
        )
        assert np.all(head_ids >= 0), f"row {row}: padding inside the first {n_expected}"
        assert len(set(head_ids.tolist())) == n_expected, f"row {row}: duplicate ids {row_ids}"
        unknown = [int(i) for i in head_ids if int(i) not in live_vectors]
        assert not unknown, f"row {row}: ids {unknown} are not live"
        assert np.all(np.isfinite(head_distances)), f"row {row}: non-finite {row_distances}"
        assert np.all(np.diff(head_distances) >= 0), f"row {row}: not ascending {row_distances}"
        if n_expected:
            vectors = np.stack([live_vectors[int(i)] for i in head_ids])
            expected = exact_distances(metric, queries_2d[row], vectors)[0]
            np.testing.assert_allclose(
                head_distances,
                expected,
                rtol=DISTANCE_RTOL,
                atol=DISTANCE_ATOL,
                err_msg=f"row {row}: distances differ from the exact ones of the returned ids",
            )


def assert_exact_up_to_ties(
    metric: str,
    live_vectors: dict[int, np.ndarray],
    queries: np.ndarray,
    found_ids: np.ndarray,
    found_distances: np.ndarray,
    k: int,
) -> None:
    """The result is the exact top-k, except that ties at the k-th distance may go either way."""
    assert_valid_search_rows(metric, live_vectors, queries, found_ids, found_distances, k)
    if not live_vectors:
        return
    live_ids = np.array(sorted(live_vectors), dtype=np.int64)
    matrix = np.stack([live_vectors[int(i)] for i in live_ids])
    n_queries = found_ids.shape[0]
    queries_2d = np.asarray(queries, dtype=np.float32).reshape(n_queries, -1)
    _, true_distances = exact_top_k(metric, queries_2d, matrix, live_ids, k)
    all_distances = exact_distances(metric, queries_2d, matrix)
    n_expected = true_distances.shape[1]
    for row in range(n_queries):
        np.testing.assert_allclose(
            found_distances[row, :n_expected],
            true_distances[row],
            rtol=DISTANCE_RTOL,
            atol=DISTANCE_ATOL,
            err_msg=f"row {row}: not the exact top-{k} distances",
        )
        kth = true_distances[row, -1]
        slack = DISTANCE_ATOL + DISTANCE_RTOL * abs(kth)
        must_have = set(live_ids[all_distances[row] < kth - slack].tolist())
        missing = must_have - set(found_ids[row].tolist())
        assert not missing, f"row {row}: exact neighbours {sorted(missing)} missing"
