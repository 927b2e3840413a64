"""Recall@10 against exact numpy search on clustered data, for each metric."""

from __future__ import annotations

import matry
import numpy as np
import pytest
from conftest import METRICS, clustered_vectors, exact_top_k, prepare_for_metric, recall_at_k

N_VECTORS = 20_000
N_QUERIES = 300
DIM = 64
N_CLUSTERS = 200
K = 10
EF = 100
MIN_RECALL = 0.95


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    vectors, centers = clustered_vectors(rng, N_VECTORS, DIM, N_CLUSTERS, spread=0.5)
    queries, _ = clustered_vectors(rng, N_QUERIES, DIM, N_CLUSTERS, spread=0.5, centers=centers)
    return vectors, queries


@pytest.mark.parametrize("metric", METRICS)
def test_recall_at_10_on_clustered_vectors(
    metric: str, clustered_data: tuple[np.ndarray, np.ndarray]
) -> None:
    raw_vectors, raw_queries = clustered_data
    vectors = prepare_for_metric(metric, raw_vectors)
    queries = prepare_for_metric(metric, raw_queries)
    ix = matry.Index(dim=DIM, metric=metric, M=16, ef_construction=200, seed=0)
    ids = ix.add(vectors, num_threads=2)
    np.testing.assert_array_equal(ids, np.arange(N_VECTORS))
    assert len(ix) == N_VECTORS
    found, distances = ix.search(queries, k=K, ef=EF, num_threads=2)
    true_ids, true_distances = exact_top_k(metric, queries, vectors, ids, K)
    recall = recall_at_k(found, true_ids)
    assert recall >= MIN_RECALL, f"{metric}: recall@{K} = {recall:.4f} at ef={EF}"
    # The first neighbour's distance can never beat the exact nearest one.
    assert np.all(distances[:, 0] >= true_distances[:, 0] - 1e-4)
    # exact_search (matry's brute force) agrees with numpy.
    exact_ids, exact_distances = ix.exact_search(queries[:50], k=K, num_threads=2)
    assert recall_at_k(exact_ids, true_ids[:50]) >= 0.999
    np.testing.assert_allclose(exact_distances, true_distances[:50], rtol=1e-4, atol=1e-4)


def test_recall_improves_with_ef(clustered_data: tuple[np.ndarray, np.ndarray]) -> None:
    raw_vectors, raw_queries = clustered_data
    vectors = raw_vectors[:5000]
    ix = matry.Index(dim=DIM, metric="l2", M=8, ef_construction=40, seed=0)
    ix.add(vectors, num_threads=2)
    true_ids, _ = exact_top_k("l2", raw_queries, vectors, np.arange(5000), K)
    recalls = [
        recall_at_k(ix.search(raw_queries, k=K, ef=ef, num_threads=2)[0], true_ids)
        for ef in (10, 40, 400)
    ]
    assert recalls[2] >= 0.98, recalls
    assert recalls[2] >= recalls[0], recalls
