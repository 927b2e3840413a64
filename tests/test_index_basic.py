"""The basic Index API: ids, get, remove / re-add, replace, input forms, dtypes, ef, determinism."""

from __future__ import annotations

import matry
import numpy as np
import pytest
from conftest import (
    METRICS,
    assert_exact_up_to_ties,
    assert_valid_search_rows,
    exact_distances,
    exact_top_k,
    normalize_rows,
    prepare_for_metric,
    stored_form,
)


def random_vectors(n: int, dim: int, seed: int, metric: str = "l2") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return prepare_for_metric(metric, rng.standard_normal((n, dim)))


def live_map(metric: str, ids: np.ndarray, vectors: np.ndarray) -> dict[int, np.ndarray]:
    stored = stored_form(metric, vectors)
    return {int(i): stored[row] for row, i in enumerate(ids)}


def test_public_api_surface() -> None:
    assert isinstance(matry.__version__, str) and matry.__version__
    assert issubclass(matry.CorruptIndexError, ValueError)
    assert issubclass(matry.ContractError, ValueError)
    assert matry.simd_level() in ("scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "neon")


@pytest.mark.parametrize("metric", METRICS)
def test_constructor_properties(metric: str) -> None:
    ix = matry.Index(dim=12, metric=metric, M=12, ef_construction=150, seed=42)
    assert ix.dim == 12
    assert ix.metric == metric
    assert ix.M == 12
    assert ix.ef_construction == 150
    assert ix.seed == 42
    assert ix.prefix_dim is None
    assert ix.ef == 64
    assert len(ix) == 0
    assert ix.ids().dtype == np.int64 and ix.ids().shape == (0,)
    assert ix.metadata == {}
    defaults = matry.Index(dim=3)
    assert defaults.metric == "cosine"
    assert defaults.M == 16
    assert defaults.ef_construction == 200
    assert defaults.seed == 0


def test_default_ids_continue_after_largest_id_ever_used() -> None:
    ix = matry.Index(dim=4, metric="l2")
    first = ix.add(random_vectors(5, 4, 0))
    assert first.dtype == np.int64
    np.testing.assert_array_equal(first, np.arange(5))
    explicit = ix.add(random_vectors(2, 4, 1), ids=[10, 11])
    np.testing.assert_array_equal(explicit, [10, 11])
    following = ix.add(random_vectors(2, 4, 2))
    np.testing.assert_array_equal(following, [12, 13])
    ix.remove([13])
    after_removal = ix.add(random_vectors(1, 4, 3))
    np.testing.assert_array_equal(after_removal, [14])
    ix.add(random_vectors(1, 4, 4), ids=[7])  # a smaller explicit id does not move the counter
    np.testing.assert_array_equal(ix.add(random_vectors(1, 4, 5)), [15])
    np.testing.assert_array_equal(ix.ids(), [0, 1, 2, 3, 4, 7, 10, 11, 12, 14, 15])


@pytest.mark.parametrize("metric", METRICS)
def test_get_returns_stored_vectors(metric: str) -> None:
    vectors = random_vectors(20, 9, 11, metric) * (3.0 if metric != "ip" else 1.0)
    ix = matry.Index(dim=9, metric=metric)
    ids = ix.add(vectors, ids=np.arange(100, 120))
    got = ix.get(ids[::-1])
    assert got.dtype == np.float32
    assert got.shape == (20, 9)
    expected = stored_form(metric, vectors)[::-1]
    if metric == "cosine":
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, expected)
    single = ix.get([105])
    assert single.shape == (1, 9)
    np.testing.assert_allclose(single[0], stored_form(metric, vectors)[5], rtol=1e-6, atol=1e-6)


def test_cosine_is_scale_invariant() -> None:
    direction = np.array([3.0, -4.0, 12.0], dtype=np.float32)
    ix = matry.Index(dim=3, metric="cosine")
    ix.add(np.stack([direction, 7.5 * direction, -direction]), ids=[0, 1, 2], num_threads=1)
    stored = ix.get([0, 1, 2])
    np.testing.assert_allclose(stored[0], direction / 13.0, rtol=1e-6)
    np.testing.assert_allclose(stored[1], direction / 13.0, rtol=1e-6)
    found, distances = ix.search(100.0 * direction, k=3)
    assert set(found[0, :2].tolist()) == {0, 1}
    assert found[0, 2] == 2
    np.testing.assert_allclose(distances[0], [0.0, 0.0, 2.0], atol=1e-6)


def test_distance_conventions_on_known_values() -> None:
    l2 = matry.Index(dim=2, metric="l2")
    l2.add(np.array([[3.0, 4.0], [1.0, 1.0]]), ids=[0, 1], num_threads=1)
    found, distances = l2.search([0.0, 0.0], k=2)
    np.testing.assert_array_equal(found, [[1, 0]])
    np.testing.assert_allclose(distances, [[2.0, 25.0]], rtol=1e-6)  # squared, not sqrt

    ip = matry.Index(dim=2, metric="ip")
    ip.add(np.array([[1.0, 0.0], [0.6, 0.8]]), ids=[0, 1], num_threads=1)
    found, distances = ip.search([0.6, 0.8], k=2)
    np.testing.assert_array_equal(found, [[1, 0]])
    np.testing.assert_allclose(distances, [[0.0, 0.4]], atol=1e-6)  # 1 - dot

    cosine = matry.Index(dim=2, metric="cosine")
    cosine.add(np.array([[2.0, 0.0], [0.0, 5.0]]), ids=[0, 1], num_threads=1)
    found, distances = cosine.search([1.0, 1.0], k=2)
    np.testing.assert_allclose(distances[0], [1 - np.sqrt(0.5)] * 2, atol=1e-6)  # 1 - cos
    assert set(found[0].tolist()) == {0, 1}


def test_ids_are_sorted_ascending() -> None:
    ix = matry.Index(dim=3, metric="l2")
    ix.add(random_vectors(6, 3, 4), ids=[50, 3, 17, 999, 0, 42])
    ids = ix.ids()
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [0, 3, 17, 42, 50, 999])


def test_len_and_contains() -> None:
    ix = matry.Index(dim=3, metric="l2")
    ix.add(random_vectors(4, 3, 5), ids=[1, 2, 3, 4])
    assert len(ix) == 4
    assert 3 in ix
    assert 5 not in ix
    ix.remove([3])
    assert len(ix) == 3
    assert 3 not in ix
    assert 2 in ix


@pytest.mark.parametrize("metric", METRICS)
def test_remove_then_readd(metric: str) -> None:
    vectors = random_vectors(200, 8, 6, metric)
    ix = matry.Index(dim=8, metric=metric, seed=1)
    ix.add(vectors, num_threads=1)
    removed = np.arange(0, 200, 3)
    ix.remove(removed)
    assert len(ix) == 200 - len(removed)
    found, _ = ix.search(vectors[removed], k=20, ef=200)
    assert not set(found.ravel().tolist()) & set(removed.tolist())
    for rid in removed[:5]:
        assert int(rid) not in ix
    new_vectors = random_vectors(len(removed), 8, 7, metric)
    ix.add(new_vectors, ids=removed, num_threads=1)
    assert len(ix) == 200
    np.testing.assert_allclose(ix.get(removed), stored_form(metric, new_vectors), atol=1e-6)
    found, distances = ix.search(new_vectors, k=1, ef=200)
    np.testing.assert_array_equal(found[:, 0], removed)
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_replace_true_replaces_vector(metric: str) -> None:
    vectors = random_vectors(100, 6, 8, metric)
    ix = matry.Index(dim=6, metric=metric)
    ix.add(vectors, num_threads=1)
    replacement = random_vectors(2, 6, 9, metric)
    returned = ix.add(replacement, ids=[10, 20], replace=True, num_threads=1)
    np.testing.assert_array_equal(returned, [10, 20])
    assert len(ix) == 100
    np.testing.assert_allclose(ix.get([10, 20]), stored_form(metric, replacement), atol=1e-6)
    found, distances = ix.search(replacement, k=1, ef=200)
    np.testing.assert_array_equal(found[:, 0], [10, 20])
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-5)
    live = live_map(metric, ix.ids(), ix.get(ix.ids()))
    found, distances = ix.search(vectors[[10, 20]], k=10, ef=200)
    assert_valid_search_rows(metric, live, vectors[[10, 20]], found, distances, 10)
    # replace=True with an id that does not exist yet is an ordinary add
    ix.add(replacement[:1], ids=[500], replace=True)
    assert 500 in ix and len(ix) == 101


def test_one_dimensional_add_and_search() -> None:
    ix = matry.Index(dim=5, metric="l2")
    vector = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32)
    ids = ix.add(vector)
    assert ids.shape == (1,)
    assert ids.dtype == np.int64
    found, distances = ix.search(vector, k=3)
    assert found.shape == (1, 3) and distances.shape == (1, 3)
    np.testing.assert_array_equal(found, [[ids[0], -1, -1]])
    assert distances[0, 0] == 0.0
    assert np.all(np.isposinf(distances[0, 1:]))


@pytest.mark.parametrize(
    "make_input",
    [
        lambda rows: rows.astype(np.int32),
        lambda rows: rows.astype(np.int64),
        lambda rows: rows.astype(np.float64),
        lambda rows: rows.astype(np.float16),
        lambda rows: rows.tolist(),
        lambda rows: [tuple(row) for row in rows.tolist()],
        lambda rows: np.asfortranarray(rows.astype(np.float32)),
        lambda rows: np.repeat(rows.astype(np.float32), 2, axis=0)[::2],  # strided
    ],
    ids=["int32", "int64", "float64", "float16", "list", "tuples", "fortran", "strided"],
)
def test_array_like_inputs_are_accepted(make_input: object) -> None:
    rows = np.array([[1, 2, 3], [-4, 5, 6], [7, -8, 9], [0, 1, -1]])
    ix = matry.Index(dim=3, metric="l2")
    ids = ix.add(make_input(rows), num_threads=1)  # type: ignore[operator]
    np.testing.assert_array_equal(ids, np.arange(4))
    np.testing.assert_array_equal(ix.get(ids), rows.astype(np.float32))
    found, distances = ix.search(make_input(rows), k=1)  # type: ignore[operator]
    np.testing.assert_array_equal(found[:, 0], ids)
    np.testing.assert_array_equal(distances[:, 0], 0.0)


def test_ids_accept_array_likes() -> None:
    ix = matry.Index(dim=2, metric="l2")
    rows = random_vectors(3, 2, 10)
    ix.add(rows, ids=[4, 5, 6])
    ix.add(rows, ids=np.array([7, 8, 9], dtype=np.int32))
    ix.add(rows, ids=np.array([10, 11, 12], dtype=np.uint64))
    np.testing.assert_array_equal(ix.ids(), np.arange(4, 13))
    ix.remove(np.array([4, 5], dtype=np.int32))
    ix.remove([6])
    np.testing.assert_array_equal(ix.ids(), np.arange(7, 13))


@pytest.mark.parametrize("metric", METRICS)
def test_search_output_dtypes_and_shapes(metric: str) -> None:
    vectors = random_vectors(300, 16, 12, metric)
    ix = matry.Index(dim=16, metric=metric)
    ix.add(vectors)
    queries = random_vectors(7, 16, 13, metric)
    found, distances = ix.search(queries, k=5)
    assert found.dtype == np.int64 and distances.dtype == np.float32
    assert found.shape == (7, 5) and distances.shape == (7, 5)
    live = live_map(metric, np.arange(300), vectors)
    assert_valid_search_rows(metric, live, queries, found, distances, 5)


@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_matches_numpy(metric: str) -> None:
    vectors = random_vectors(500, 20, 14, metric)
    ix = matry.Index(dim=20, metric=metric)
    ids = np.arange(1000, 1500)
    ix.add(vectors, ids=ids)
    ix.remove(ids[:50])
    queries = random_vectors(25, 20, 15, metric)
    found, distances = ix.exact_search(queries, k=10)
    assert found.dtype == np.int64 and distances.dtype == np.float32
    assert found.shape == (25, 10)
    true_ids, true_distances = exact_top_k(metric, queries, vectors[50:], ids[50:], 10)
    np.testing.assert_array_equal(found, true_ids)
    np.testing.assert_allclose(distances, true_distances, rtol=1e-4, atol=1e-5)
    padded_ids, padded_distances = ix.exact_search(queries[:2], k=460)
    assert np.all(padded_ids[:, 450:] == -1)
    assert np.all(np.isposinf(padded_distances[:, 450:]))
    assert np.all(padded_ids[:, :450] >= 0)


@pytest.mark.parametrize("metric", METRICS)
def test_k_larger_than_live_count_is_padded(metric: str) -> None:
    vectors = random_vectors(6, 4, 16, metric)
    ix = matry.Index(dim=4, metric=metric)
    ix.add(vectors, num_threads=1)
    ix.remove([2])
    found, distances = ix.search(vectors[:3], k=9)
    live = live_map(metric, np.array([0, 1, 3, 4, 5]), vectors[[0, 1, 3, 4, 5]])
    assert_exact_up_to_ties(metric, live, vectors[:3], found, distances, 9)
    assert np.all(found[:, 5:] == -1)
    assert np.all(np.isposinf(distances[:, 5:]))


def test_ef_property_default_settable_and_used() -> None:
    vectors = random_vectors(2000, 16, 17)
    ix = matry.Index(dim=16, metric="l2")
    assert ix.ef == 64
    ix.add(vectors, num_threads=2)
    ix.ef = 300
    assert ix.ef == 300
    queries = random_vectors(30, 16, 18)
    by_property = ix.search(queries, k=10)
    by_argument = ix.search(queries, k=10, ef=300)
    np.testing.assert_array_equal(by_property[0], by_argument[0])
    np.testing.assert_array_equal(by_property[1], by_argument[1])
    ix.ef = 10
    assert ix.ef == 10


def test_ef_below_k_is_raised_to_k() -> None:
    vectors = random_vectors(500, 8, 19)
    ix = matry.Index(dim=8, metric="l2")
    ix.add(vectors)
    queries = random_vectors(10, 8, 20)
    live = live_map("l2", np.arange(500), vectors)
    found, distances = ix.search(queries, k=40, ef=5)
    assert_valid_search_rows("l2", live, queries, found, distances, 40)
    assert np.all(found >= 0)
    ix.ef = 3
    found, distances = ix.search(queries, k=40)
    assert_valid_search_rows("l2", live, queries, found, distances, 40)
    assert np.all(found >= 0)
    np.testing.assert_array_equal(found, ix.search(queries, k=40, ef=40)[0])


@pytest.mark.parametrize("metric", METRICS)
def test_same_seed_single_thread_builds_identical_graphs(metric: str) -> None:
    vectors = random_vectors(1500, 12, 21, metric)
    queries = random_vectors(50, 12, 22, metric)
    results = []
    for _ in range(2):
        ix = matry.Index(dim=12, metric=metric, M=8, ef_construction=40, seed=123)
        ix.add(vectors[:700], num_threads=1)
        ix.add(vectors[700:], num_threads=1)
        results.append(ix.search(queries, k=10, ef=12, num_threads=1))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_growth_through_many_small_batches() -> None:
    rng = np.random.default_rng(23)
    ix = matry.Index(dim=8, metric="cosine")
    all_vectors = []
    total = 0
    while total < 3000:
        n = int(rng.integers(1, 120))
        batch = rng.standard_normal((n, 8)).astype(np.float32)
        ix.add(batch, num_threads=1)  # multi-threaded builds: test_concurrency.py
        all_vectors.append(batch)
        total += n
        assert len(ix) == total
        assert ix.capacity >= total
    vectors = np.concatenate(all_vectors)
    np.testing.assert_array_equal(ix.ids(), np.arange(total))
    np.testing.assert_allclose(ix.get(np.arange(total)), normalize_rows(vectors), atol=1e-6)
    found, _ = ix.search(vectors[:100], k=1, ef=100)
    np.testing.assert_array_equal(found[:, 0], np.arange(100))


def test_metadata_is_a_user_dict() -> None:
    ix = matry.Index(dim=3)
    ix.metadata = {"model": "test", "nested": {"a": [1, 2]}}
    assert ix.metadata == {"model": "test", "nested": {"a": [1, 2]}}


def test_search_distances_are_exact_for_returned_ids() -> None:
    rng = np.random.default_rng(24)
    vectors = rng.standard_normal((1000, 32)).astype(np.float32) * 5
    ix = matry.Index(dim=32, metric="l2")
    ix.add(vectors)
    queries = rng.standard_normal((20, 32)).astype(np.float32) * 5
    found, distances = ix.search(queries, k=10)
    expected = np.take_along_axis(exact_distances("l2", queries, vectors), found, axis=1)
    np.testing.assert_allclose(distances, expected, rtol=1e-4)


def test_unaligned_buffers_are_read_correctly() -> None:
    """Arrays viewing a buffer at an odd offset (np.frombuffer; Ray's and Dask's out-of-band
    pickle buffers): the core copies them rather than load floats from unaligned addresses
    (undefined behaviour; UBSan in .ci/sanitize reports it)."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(300, 12)).astype(np.float32)
    unaligned_rows = np.frombuffer(b"\0" + rows.tobytes(), dtype=np.float32, offset=1)
    unaligned_rows = unaligned_rows.reshape(300, 12)
    ids = np.arange(1000, 1300, dtype=np.int64)
    unaligned_ids = np.frombuffer(b"\0" + ids.tobytes(), dtype=np.int64, offset=1)
    assert not unaligned_rows.flags.aligned and not unaligned_ids.flags.aligned
    index = matry.Index(12, "l2", M=8, ef_construction=40)
    index.add(unaligned_rows, unaligned_ids)
    reference = matry.Index(12, "l2", M=8, ef_construction=40)
    reference.add(rows, ids)
    np.testing.assert_array_equal(index.get(unaligned_ids), rows)
    found, distances = index.search(unaligned_rows[:20], k=5)
    expected, expected_distances = reference.search(rows[:20], k=5)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(distances, expected_distances)
    found, _ = index.search(unaligned_rows[:5], k=5, filter=unaligned_ids[:100])
    assert np.isin(found, ids[:100]).all()
    index.remove(unaligned_ids[:10])
    assert len(index) == 290
