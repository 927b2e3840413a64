"""compact(): tombstones dropped, links repaired, ids kept; safe beside concurrent searches."""

from __future__ import annotations

import threading

import matry
import numpy as np
import pytest
from conftest import recall_at_k

DIM = 32
LATENT = 12


def clustered_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """40 clusters in a 12-d subspace (shared by every seed): embedding-like, not trivial."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).normal(size=(LATENT, dim))
    centres = np.random.default_rng(4321).normal(size=(40, LATENT)) * 2.5
    latent = centres[rng.integers(0, 40, size=n)] + rng.normal(size=(n, LATENT))
    return (latent @ basis + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(12_000, DIM, seed=5)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered_vectors(300, DIM, seed=6)


def _built(vectors: np.ndarray, quantization: str | None = None) -> matry.Index:
    index = matry.Index(DIM, "cosine", M=16, ef_construction=100, seed=2, quantization=quantization)
    index.add(vectors)
    return index


@pytest.mark.parametrize("mode", ["auto", "repair", "rebuild"])
@pytest.mark.parametrize("quantization", [None, "int8"])
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_compaction_recall_matches_a_fresh_build(
    vectors: np.ndarray, queries: np.ndarray, quantization: str | None, fraction: float, mode: str
) -> None:
    index = _built(vectors, quantization)
    rng = np.random.default_rng(int(fraction * 10))
    removed = rng.choice(len(vectors), int(fraction * len(vectors)), replace=False)
    index.remove(removed)
    survivors = np.setdiff1d(np.arange(len(vectors)), removed)
    truth, _ = index.exact_search(queries, k=10)
    before, _ = index.search(queries, k=10)
    assert index.compact(mode=mode) == len(removed)  # type: ignore[arg-type]
    assert index.deleted_fraction == 0.0 and len(index) == len(survivors)
    np.testing.assert_array_equal(index.ids(), survivors)
    np.testing.assert_allclose(
        index.get(survivors[:50]), _built(vectors[survivors[:50]]).get(np.arange(50)), atol=1e-6
    )
    after, _ = index.search(queries, k=10)
    fresh = matry.Index(DIM, "cosine", M=16, ef_construction=100, seed=2, quantization=quantization)
    fresh.add(vectors[survivors], survivors)
    fresh_found, _ = fresh.search(queries, k=10)
    fresh_recall = recall_at_k(fresh_found, truth)
    assert recall_at_k(after, truth) >= fresh_recall - 0.01
    assert recall_at_k(after, truth) >= recall_at_k(before, truth) - 0.01
    assert not np.isin(after, removed).any()


def test_bad_compact_mode(vectors: np.ndarray) -> None:
    index = _built(vectors[:200])
    index.remove([1])
    with pytest.raises(ValueError, match="mode"):
        index.compact(mode="fast")  # type: ignore[arg-type]
    assert index._core.node_count == 200  # nothing changed


def test_compact_without_tombstones_is_a_no_op(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = _built(vectors[:2000])
    found, _ = index.search(queries, k=10)
    assert index.compact() == 0
    np.testing.assert_array_equal(index.search(queries, k=10)[0], found)


def test_compact_keeps_prefix_and_rotation_indexes_searchable(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    index = matry.Index(DIM, "cosine", M=12, ef_construction=80, prefix_dim=16, rotation="pca")
    index.add(vectors[:4000])
    index.remove(np.arange(0, 4000, 3))
    truth, _ = index.exact_search(queries, k=10)
    index.compact()
    found, _ = index.search(queries, k=10)
    assert recall_at_k(found, truth) >= 0.9
    assert not np.isin(found, np.arange(0, 4000, 3)).any()


def test_everything_removed_then_compacted(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = _built(vectors[:500])
    index.remove(np.arange(500))
    assert index.compact() == 500
    assert len(index) == 0 and index._core.node_count == 0
    found, _ = index.search(queries[:3], k=5)
    assert (found == -1).all()
    index.add(vectors[:10])  # default ids continue after the largest id used
    assert index.ids().tolist() == list(range(500, 510))


def test_removed_ids_cannot_be_restored_after_compaction(vectors: np.ndarray) -> None:
    index = _built(vectors[:300])
    index.remove([5, 6])
    index.compact()
    with pytest.raises(KeyError):
        index._restore([5])
    index.add(vectors[5:7], [5, 6])  # but they can be added again
    assert 5 in index and 6 in index


def test_auto_compact(vectors: np.ndarray) -> None:
    index = _built(vectors[:1000])
    index.auto_compact = 0.25
    index.remove(np.arange(200))
    assert index._core.node_count == 1000  # 20% tombstones: below the threshold
    index.remove(np.arange(200, 260))
    assert index._core.node_count == 740 and index.deleted_fraction == 0.0
    index.add(vectors[:300] * 2, np.arange(260, 560), replace=True)  # 300 replaced: 29%
    assert index._core.node_count == 740
    with pytest.raises(ValueError, match="auto_compact"):
        index.auto_compact = 1.5
    with pytest.raises(ValueError, match="auto_compact"):
        index.auto_compact = True  # type: ignore[assignment]


def test_mmap_index_refuses_compact(vectors: np.ndarray, tmp_path: object) -> None:
    index = _built(vectors[:200])
    index.remove([1])
    path = f"{tmp_path}/a.matry"
    index.save(path)
    mapped = matry.Index.load(path, mmap=True)
    with pytest.raises(ValueError, match="read-only"):
        mapped.compact()


def test_saved_after_compaction_loads(
    vectors: np.ndarray, queries: np.ndarray, tmp_path: object
) -> None:
    index = _built(vectors[:3000], "int8")
    index.remove(np.arange(0, 3000, 2))
    index.compact()
    path = f"{tmp_path}/c.matry"
    index.save(path)
    loaded = matry.Index.load(path)
    np.testing.assert_array_equal(loaded.search(queries, k=10)[0], index.search(queries, k=10)[0])


def test_concurrent_compact_and_search_never_return_a_removed_id(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    index = _built(vectors[:6000])
    removed = np.arange(0, 6000, 2)  # removed before the searchers start: never to be seen
    index.remove(removed)
    stop = threading.Event()
    failures: list[str] = []

    def searcher() -> None:
        while not stop.is_set():
            found, _ = index.search(queries[:20], k=10)
            if np.isin(found, removed).any():
                failures.append("a removed id was returned")
            if (found < 0).any():
                failures.append("a search came back short")

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(6):
            index.compact()
            # Churn between compactions: more tombstones (odd ids removed, odd ids replaced).
            index.remove(np.arange(1 + 200 * round_, 201 + 200 * round_, 2))
            replaced = np.arange(3001 + 200 * round_, 3201 + 200 * round_, 2)
            index.add(vectors[6000 : 6000 + len(replaced)], replaced, replace=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    index.compact()
    assert len(index) == index._core.node_count


def test_replace_keeps_recall(vectors: np.ndarray, queries: np.ndarray) -> None:
    """add(replace=True) of existing ids (usearch #399/#445: replacing broke recall there)."""
    index = _built(vectors[:6000])
    replacement = clustered_vectors(3000, DIM, seed=9)
    index.add(replacement, np.arange(3000), replace=True)
    expected = np.concatenate([replacement, vectors[3000:6000]])
    reference = matry.Index(DIM, "cosine", M=16, ef_construction=100, seed=2)
    reference.add(expected)
    truth, _ = reference.exact_search(queries, k=10)
    found, _ = index.search(queries, k=10)
    assert recall_at_k(found, truth) >= 0.95
    index.compact()
    found, _ = index.search(queries, k=10)
    assert recall_at_k(found, truth) >= 0.95
    np.testing.assert_allclose(index.get([0, 1]), reference.get([0, 1]), atol=1e-6)


def test_remove_and_readd_of_the_entry_point_keeps_recall(
    vectors: np.ndarray, queries: np.ndarray
) -> None:
    index = _built(vectors[:5000])
    for _ in range(3):
        entry = index._core.entry_id
        assert entry >= 0
        index.remove([entry])
        assert index._core.entry_id == entry  # a tombstone still routes until compaction
        index.compact()
        assert index._core.entry_id != entry
        index.add(vectors[entry : entry + 1], [entry])
    truth, _ = index.exact_search(queries, k=10)
    found, _ = index.search(queries, k=10)
    assert recall_at_k(found, truth) >= 0.95
