"""search_radius: every id within a distance, against brute force."""

from __future__ import annotations

import matry
import numpy as np
import pytest
from conftest import exact_distances, stored_form

DIM = 16


def _data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(7).normal(size=(6, DIM))
    centres = np.random.default_rng(8).normal(size=(15, 6)) * 2
    latent = centres[rng.integers(0, 15, size=n)] + rng.normal(size=(n, 6))
    return (latent @ basis + 0.05 * rng.normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _data(8000, 1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return _data(60, 2)


def _truth(metric: str, vectors: np.ndarray, query: np.ndarray, radius: float) -> set[int]:
    distances = exact_distances(metric, query, stored_form(metric, vectors))[0]
    return set(np.flatnonzero(distances <= radius).tolist())


@pytest.mark.parametrize(
    ("metric", "quantization", "prefix_dim"),
    [("cosine", None, None), ("l2", None, None), ("cosine", "int8", None), ("cosine", None, 8)],
)
def test_radius_against_brute_force(
    vectors: np.ndarray,
    queries: np.ndarray,
    metric: str,
    quantization: str | None,
    prefix_dim: int | None,
) -> None:
    index = matry.Index(
        DIM, metric, M=16, ef_construction=100, quantization=quantization, prefix_dim=prefix_dim
    )
    index.add(vectors)
    # A radius that holds about the 60 nearest of each query: wider than the first beam.
    _, distances = index.exact_search(queries, k=60)
    found_total = expected_total = 0
    for query, row in zip(queries, distances):
        radius = float(row[-1])
        expected = _truth(metric, vectors, query[None], radius)
        ids, found_distances = index.search_radius(query, radius)
        assert np.all(np.diff(found_distances) >= 0) and np.all(found_distances <= radius)
        assert len(set(ids.tolist())) == len(ids)
        assert set(ids.tolist()) <= expected | _truth(metric, vectors, query[None], radius + 1e-5)
        found_total += len(set(ids.tolist()) & expected)
        expected_total += len(expected)
        exact_ids, _ = index.search_radius(query, radius, exact=True)
        # Exact up to float rounding at the boundary.
        assert set(exact_ids.tolist()) ^ expected <= _truth(
            metric, vectors, query[None], radius + 1e-5
        ) - _truth(metric, vectors, query[None], radius - 1e-5)
    assert found_total / expected_total >= 0.95


def test_max_results_filter_and_batch(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = matry.Index(DIM, "l2", M=16, ef_construction=100)
    index.add(vectors)
    radius = float(index.exact_search(queries[:1], k=200)[1][0, -1])
    ids, distances = index.search_radius(queries[0], radius, max_results=25)
    assert len(ids) == 25
    nearest, _ = index.search(queries[:1], k=25, ef=200)
    assert len(set(ids.tolist()) & set(nearest[0].tolist())) >= 24
    allowed = np.arange(0, len(vectors), 3)
    ids, _ = index.search_radius(queries[0], radius, filter=allowed)
    assert np.isin(ids, allowed).all() and len(ids) > 0
    batch = index.search_radius_batch(queries[:5], radius, num_threads=2)
    assert len(batch) == 5
    np.testing.assert_array_equal(batch[0][0], index.search_radius(queries[0], radius)[0])
    index.remove(ids[:5])
    again, _ = index.search_radius(queries[0], radius, filter=matry.IdSet(allowed))
    assert not np.isin(again, ids[:5]).any()


def test_empty_and_bad_arguments(vectors: np.ndarray, queries: np.ndarray) -> None:
    empty = matry.Index(DIM, "cosine")
    ids, distances = empty.search_radius(queries[0], 0.5)
    assert ids.shape == (0,) and distances.shape == (0,) and ids.dtype == np.int64
    index = matry.Index(DIM, "cosine", M=8, ef_construction=40)
    index.add(vectors[:500])
    ids, _ = index.search_radius(queries[0], -1.0)
    assert len(ids) == 0
    everything, _ = index.search_radius(queries[0], 2.0)  # cosine distance is at most 2
    assert len(everything) == 500
    with pytest.raises(ValueError, match="radius"):
        index.search_radius(queries[0], float("nan"))
    with pytest.raises(ValueError, match="radius"):
        index.search_radius(queries[0], "far")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_results"):
        index.search_radius(queries[0], 0.5, max_results=0)
    with pytest.raises(ValueError, match="one vector"):
        index.search_radius(queries[:2], 0.5)
    with pytest.raises(ValueError, match="columns|dim"):
        index.search_radius(queries[0, :4], 0.5)
