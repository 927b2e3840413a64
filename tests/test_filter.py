"""Filtered search: ``Index.search(filter=...)`` in every form and on every path."""

from __future__ import annotations

from typing import Any

import matry
import numpy as np
import pytest
from matry.compat import hnswlib as shim

DIM = 24
CLUSTERS = 20
LATENT = 10


def _clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clusters in a 10-d subspace of DIM dims (embeddings have a low intrinsic dimension)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(LATENT, DIM))
    centres = np.random.default_rng(98).normal(size=(CLUSTERS, LATENT)) * 3
    labels = rng.integers(0, CLUSTERS, size=n)
    latent = centres[labels] + rng.normal(size=(n, LATENT))
    vectors = latent @ basis + 0.05 * rng.normal(size=(n, DIM))
    return vectors.astype(np.float32), labels


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    vectors, clusters = _clustered(20_000, seed=3)
    queries, _ = _clustered(200, seed=4)
    indexes = {}
    for name, kwargs in {
        "f32": {},
        "int8": {"quantization": "int8"},
        "prefix": {"prefix_dim": 8},
    }.items():
        index = matry.Index(DIM, "cosine", M=16, ef_construction=100, seed=1, **kwargs)
        index.add(vectors)
        indexes[name] = index
    return {"vectors": vectors, "clusters": clusters, "queries": queries, "indexes": indexes}


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = total = 0
    for row, expected in zip(found, truth):
        expected_set = set(expected[expected >= 0].tolist())
        hits += len(expected_set & set(row[row >= 0].tolist()))
        total += len(expected_set)
    return hits / max(total, 1)


def _allowed(kind: str, fraction: float, data: dict[str, Any]) -> np.ndarray:
    n = data["vectors"].shape[0]
    rng = np.random.default_rng(int(fraction * 1e6))
    if kind == "random":
        return np.flatnonzero(rng.random(n) < fraction)
    # Correlated with the vectors: whole clusters (each holds ~5% of the ids), then a random
    # part of one more cluster, so the allowed ids sit together in one region of the space.
    clusters = data["clusters"]
    wanted = int(round(fraction * n))
    order = np.flatnonzero(clusters == 0)
    chosen = [order]
    cluster = 1
    while sum(len(c) for c in chosen) < wanted and cluster < CLUSTERS:
        chosen.append(np.flatnonzero(clusters == cluster))
        cluster += 1
    ids = np.concatenate(chosen)
    return np.sort(rng.permutation(ids)[: max(wanted, 1)])


@pytest.mark.parametrize("kind", ["random", "correlated"])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.01, 0.001])
@pytest.mark.parametrize("variant", ["f32", "int8"])
def test_recall_at_every_selectivity(
    data: dict[str, Any], kind: str, fraction: float, variant: str
) -> None:
    index = data["indexes"][variant]
    allowed = _allowed(kind, fraction, data)
    truth, _ = index.exact_search(data["queries"], k=10, filter=allowed)
    found, _, stats = index.search(data["queries"], k=10, filter=allowed, stats=True)
    assert np.isin(found[found >= 0], allowed).all()
    assert _recall(found, truth) >= 0.95, (kind, fraction, variant, stats.brute_force.mean())


@pytest.mark.parametrize("variant", ["f32", "int8", "prefix"])
@pytest.mark.parametrize("path", ["auto", "graph", "brute_force"])
@pytest.mark.parametrize("form", ["ids", "mask", "idset", "per_query"])
def test_results_are_allowed_ids(data: dict[str, Any], variant: str, path: str, form: str) -> None:
    index = data["indexes"][variant]
    queries = data["queries"][:40]
    allowed = _allowed("random", 0.05, data)
    mask = np.zeros(len(index), dtype=bool)
    mask[allowed] = True
    filters: dict[str, Any] = {
        "ids": allowed,
        "mask": mask,
        "idset": matry.IdSet(allowed),
        "per_query": [allowed[i::3] for i in range(3)] * 13 + [None],
    }
    found, distances = index.search(queries, k=10, filter=filters[form], filter_path=path)
    if form == "per_query":
        for row, row_filter in zip(found, filters["per_query"]):
            expected = np.arange(len(index)) if row_filter is None else row_filter
            assert np.isin(row[row >= 0], expected).all()
    else:
        assert np.isin(found[found >= 0], allowed).all()
    assert (found >= 0).all()  # 1,000 allowed ids: every query fills k
    assert np.all(np.diff(distances, axis=1) >= -1e-6)


@pytest.mark.parametrize("variant", ["f32", "int8", "prefix"])
def test_brute_force_path_is_exact(data: dict[str, Any], variant: str) -> None:
    index = data["indexes"][variant]
    allowed = _allowed("correlated", 0.02, data)
    truth, truth_distances = index.exact_search(data["queries"], k=10, filter=allowed)
    found, distances, stats = index.search(
        data["queries"], k=10, filter=allowed, filter_path="brute_force", stats=True
    )
    assert stats.brute_force.all()
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_allclose(distances, truth_distances, rtol=1e-6, atol=1e-6)


def test_exact_search_filter_matches_numpy(data: dict[str, Any]) -> None:
    index = data["indexes"]["f32"]
    allowed = _allowed("random", 0.01, data)
    rows = data["vectors"][allowed]
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    queries = data["queries"][:20] / np.linalg.norm(data["queries"][:20], axis=1, keepdims=True)
    expected = allowed[np.argsort(1.0 - queries @ rows.T, axis=1, kind="stable")[:, :10]]
    found, _ = index.exact_search(data["queries"][:20], k=10, filter=allowed)
    assert _recall(found, expected) >= 0.999  # float ties may swap the 10th


def test_cost_model_picks_the_scan_only_when_selective(data: dict[str, Any]) -> None:
    index = data["indexes"]["f32"]
    picks = {}
    for fraction in (0.5, 0.1, 0.01, 0.001):
        allowed = _allowed("random", fraction, data)
        _, _, stats = index.search(data["queries"], k=10, filter=allowed, stats=True)
        picks[fraction] = float(stats.brute_force.mean())
    assert picks[0.5] == 0.0
    assert picks[0.001] == 1.0
    assert picks[0.01] == 1.0
    # The model's own threshold: a scan when allowed <= 12 * ef / fraction.
    assert index._core.prefers_brute_force(100, 64)
    assert not index._core.prefers_brute_force(10_000, 64)


def test_traversal_that_finds_too_few_falls_back_to_the_scan(data: dict[str, Any]) -> None:
    index = data["indexes"]["f32"]
    # 30 allowed ids in one far cluster: a graph-only search with a small beam can miss some,
    # the automatic path must not.
    allowed = np.flatnonzero(data["clusters"] == 7)[:30]
    truth, _ = index.exact_search(data["queries"][:50], k=10, filter=allowed)
    found, _ = index.search(data["queries"][:50], k=10, ef=10, filter=allowed)
    assert _recall(found, truth) == 1.0


def test_filter_and_deletion(data: dict[str, Any]) -> None:
    vectors = data["vectors"][:3000]
    index = matry.Index(DIM, "l2", M=12, ef_construction=60)
    index.add(vectors)
    allowed = np.arange(0, 3000, 2)
    removed = allowed[:500]
    index.remove(removed)
    idset = matry.IdSet(allowed)  # an IdSet may name removed ids: they are never returned
    for path in ("auto", "graph", "brute_force"):
        found, _ = index.search(data["queries"][:30], k=10, filter=idset, filter_path=path)
        assert not np.isin(found, removed).any()
        assert np.isin(found[found >= 0], allowed).all()
    with pytest.raises(KeyError, match="filter: id 0 .* not in the index"):
        index.search(data["queries"][:2], k=10, filter=allowed)  # a plain array must be live


def test_fewer_allowed_than_k_pads(data: dict[str, Any]) -> None:
    index = data["indexes"]["f32"]
    found, distances = index.search(data["queries"][:5], k=10, filter=[3, 9, 12])
    assert (np.sort(found[:, :3], axis=1) == [3, 9, 12]).all()
    assert (found[:, 3:] == -1).all() and np.isinf(distances[:, 3:]).all()
    found, _ = index.search(data["queries"][:5], k=10, filter=matry.IdSet([]))
    assert (found == -1).all()


def test_bad_filters_raise_clear_errors(data: dict[str, Any]) -> None:
    index = data["indexes"]["f32"]
    queries = data["queries"][:3]
    before = index.search(queries, k=5)
    with pytest.raises(ValueError, match="boolean mask needs one entry per id"):
        index.search(queries, k=5, filter=np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="mask must be 1-D"):
        index.search(queries, k=5, filter=np.ones((2, len(index)), dtype=bool))
    with pytest.raises(KeyError, match="id 10000000"):
        index.search(queries, k=5, filter=[1, 2, 10_000_000])
    with pytest.raises(ValueError, match="dtype float"):
        index.search(queries, k=5, filter=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="non-negative"):
        index.search(queries, k=5, filter=[1, -2])
    with pytest.raises(TypeError, match="hnswlib shim takes a callable"):
        index.search(queries, k=5, filter=lambda i: True)
    with pytest.raises(TypeError, match="filter"):
        index.search(queries, k=5, filter="all")
    with pytest.raises(ValueError, match="one per query row"):
        index.search(queries, k=5, filter=[np.arange(5), np.arange(5)])
    with pytest.raises(ValueError, match="filter_path"):
        index.search(queries, k=5, filter=[1], filter_path="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ids must be non-negative"):
        matry.IdSet([-1])
    after = index.search(queries, k=5)
    np.testing.assert_array_equal(before[0], after[0])


def test_idset_forms() -> None:
    dense = matry.IdSet(np.array([5, 1, 5, 3]))
    assert len(dense) == 3 and 3 in dense and 4 not in dense and -1 not in dense
    assert dense.ids().tolist() == [1, 3, 5]
    sparse = matry.IdSet([2**62, 7, 2**40])  # too sparse for a bitmap: sorted array
    assert len(sparse) == 3 and 2**62 in sparse and 2**41 not in sparse
    assert sparse.ids().tolist() == [7, 2**40, 2**62]
    assert sparse.memory_bytes < 1024
    mask = matry.IdSet(np.array([True, False, True]))
    assert mask.ids().tolist() == [0, 2]
    assert repr(dense) == "IdSet(3 ids)"


def test_sparse_ids_filter(data: dict[str, Any]) -> None:
    vectors = data["vectors"][:2000]
    ids = np.arange(2000, dtype=np.int64) * 10**12
    index = matry.Index(DIM, "cosine", M=12, ef_construction=60)
    index.add(vectors, ids)
    allowed = ids[::4]
    truth, _ = index.exact_search(data["queries"][:20], k=10, filter=allowed)
    found, _ = index.search(data["queries"][:20], k=10, filter=allowed, filter_path="graph")
    assert np.isin(found[found >= 0], allowed).all()
    assert _recall(found, truth) >= 0.95


def test_filtered_search_threads_match_single(data: dict[str, Any]) -> None:
    index = data["indexes"]["int8"]
    allowed = matry.IdSet(_allowed("random", 0.1, data))
    one, _ = index.search(data["queries"], k=10, filter=allowed, num_threads=1)
    many, _ = index.search(data["queries"], k=10, filter=allowed, num_threads=4)
    np.testing.assert_array_equal(one, many)


def test_shim_callback_is_called_per_candidate(data: dict[str, Any]) -> None:
    vectors = data["vectors"][:5000]
    index = shim.Index(space="l2", dim=DIM)
    index.init_index(max_elements=5000, M=16, ef_construction=100)
    index.add_items(vectors, np.arange(5000))
    index.set_ef(50)
    calls: list[int] = []

    def even(label: int) -> bool:
        calls.append(label)
        return label % 2 == 0

    labels, _ = index.knn_query(data["queries"][:1], k=5, num_threads=1, filter=even)
    assert (labels % 2 == 0).all()
    # Called inside the traversal for the candidates it met: far fewer than every element.
    assert 5 <= len(calls) < 5000
    # The fast forms give the same answer without calling back.
    mask = np.arange(5000) % 2 == 0
    fast, _ = index.knn_query(data["queries"][:1], k=5, filter=mask)
    np.testing.assert_array_equal(labels, fast)
    # Fewer than k passing: hnswlib's RuntimeError.
    with pytest.raises(RuntimeError, match="pass the filter"):
        index.knn_query(data["queries"][:1], k=5, filter=lambda label: label < 3)


def test_shim_callback_exception_from_threads(data: dict[str, Any]) -> None:
    index = shim.Index(space="ip", dim=DIM)
    index.init_index(max_elements=1000)
    rows = data["vectors"][:1000] / np.linalg.norm(data["vectors"][:1000], axis=1, keepdims=True)
    index.add_items(rows)

    def broken(label: int) -> bool:
        raise LookupError("no such tenant")

    with pytest.raises(LookupError, match="no such tenant"):
        index.knn_query(data["queries"][:50], k=3, num_threads=4, filter=broken)


def test_collection_where() -> None:
    pytest.importorskip("onnxruntime", reason="the encoder extra (matry[encoder])")
    from matry.collection import Collection

    docs = Collection(matry.Encoder.default(), M=8, ef_construction=40)
    texts = [f"document {i} about {topic}" for i, topic in enumerate(["cats", "ships"] * 30)]
    metadata = [{"tenant": i % 3, "topic": text.split()[-1]} for i, text in enumerate(texts)]
    docs.add(texts, metadata=metadata)
    hits = docs.search("a cat", k=50, where={"tenant": 1})
    assert hits and all(hit.metadata is not None and hit.metadata["tenant"] == 1 for hit in hits)
    assert len(hits) == 20
    both = docs.search(["cats", "ships"], k=5, where={"tenant": [0, 2], "topic": "ships"})
    for row in both:
        assert row and all(
            hit.metadata is not None
            and hit.metadata["tenant"] in (0, 2)
            and hit.metadata["topic"] == "ships"
            for hit in row
        )
    assert docs.search("cats", k=5, where={"tenant": 7}) == []
    with pytest.raises(TypeError, match="where"):
        docs.search("cats", where={})
    with pytest.raises(TypeError, match="where"):
        docs.search("cats", where=[("tenant", 1)])  # type: ignore[arg-type]
