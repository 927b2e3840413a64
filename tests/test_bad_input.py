"""One test per bad input: exception type, message names the argument, the index is unchanged."""

from __future__ import annotations

import re
from dataclasses import dataclass

import matry
import numpy as np
import pytest

DIM = 8


@dataclass
class Snapshot:
    length: int
    ids: np.ndarray
    vectors: np.ndarray
    found: np.ndarray
    distances: np.ndarray


QUERIES = np.random.default_rng(77).standard_normal((6, DIM)).astype(np.float32)


def take_snapshot(ix: matry.Index) -> Snapshot:
    ids = ix.ids()
    vectors = ix.get(ids) if len(ids) else np.empty((0, DIM), np.float32)
    queries = QUERIES / np.linalg.norm(QUERIES, axis=1, keepdims=True)
    found, distances = ix.search(queries, k=7, num_threads=1)
    return Snapshot(len(ix), ids, vectors, found, distances)


def assert_unchanged(ix: matry.Index, before: Snapshot) -> None:
    after = take_snapshot(ix)
    assert after.length == before.length
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.found, before.found)
    np.testing.assert_array_equal(after.distances, before.distances)


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=["cosine", "ip", "l2"])
def populated(request: pytest.FixtureRequest) -> matry.Index:
    ix = matry.Index(dim=DIM, metric=request.param, seed=0)
    ix.add(unit_rows(40, 1), num_threads=1)
    ix.remove([5, 6])
    return ix


def names_row(message: str, row: int) -> bool:
    return re.search(rf"\b{row}\b", message) is not None


# -- dimension and shape -----------------------------------------------------------------------


@pytest.mark.parametrize("bad_dim", [DIM - 1, DIM + 1, 1])
def test_add_wrong_dimension(populated: matry.Index, bad_dim: int) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(np.ones((3, bad_dim), dtype=np.float32))
    with pytest.raises(ValueError, match="vectors"):
        populated.add(np.ones(bad_dim, dtype=np.float32))
    assert_unchanged(populated, before)


@pytest.mark.parametrize("bad_dim", [DIM - 1, DIM + 1])
def test_search_wrong_dimension(populated: matry.Index, bad_dim: int) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="queries"):
        populated.search(np.ones((2, bad_dim), dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="queries"):
        populated.search(np.ones(bad_dim, dtype=np.float32), k=3)
    with pytest.raises(ValueError, match="queries"):
        populated.exact_search(np.ones((2, bad_dim), dtype=np.float32), k=3)
    assert_unchanged(populated, before)


def test_three_dimensional_arrays(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    cube = np.ones((2, 3, DIM), dtype=np.float32)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(cube)
    with pytest.raises(ValueError, match="queries"):
        populated.search(cube, k=3)
    assert_unchanged(populated, before)


def test_scalar_input_is_rejected(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(np.float32(1.0))
    with pytest.raises(ValueError, match="queries"):
        populated.search(np.float32(1.0), k=3)
    assert_unchanged(populated, before)


def test_empty_batch(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(np.empty((0, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match="vectors"):
        populated.add([])
    assert_unchanged(populated, before)


# -- values and dtypes -------------------------------------------------------------------------


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_add_nan_or_inf_names_the_row(populated: matry.Index, bad_value: float) -> None:
    before = take_snapshot(populated)
    batch = unit_rows(6, 2)
    batch[3, 5] = bad_value
    with pytest.raises(ValueError, match="vectors") as raised:
        populated.add(batch)
    assert names_row(str(raised.value), 3), str(raised.value)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(batch[3])
    assert_unchanged(populated, before)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_search_nan_or_inf_names_the_row(populated: matry.Index, bad_value: float) -> None:
    before = take_snapshot(populated)
    queries = unit_rows(5, 3)
    queries[2, 0] = bad_value
    with pytest.raises(ValueError, match="queries") as raised:
        populated.search(queries, k=3)
    assert names_row(str(raised.value), 2), str(raised.value)
    assert_unchanged(populated, before)


def test_nan_in_float64_input_is_caught(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    batch = unit_rows(4, 4).astype(np.float64)
    batch[1, 1] = np.nan
    with pytest.raises(ValueError, match="vectors") as raised:
        populated.add(batch)
    assert names_row(str(raised.value), 1), str(raised.value)
    too_large = unit_rows(2, 5).astype(np.float64)
    too_large[0, 0] = 1e300  # finite in float64, inf once converted to float32
    with pytest.raises(ValueError, match="vectors"):
        populated.add(too_large)
    assert_unchanged(populated, before)


@pytest.mark.parametrize(
    "bad_array",
    [
        np.array([[None] * DIM, [None] * DIM], dtype=object),
        np.array([[{"a": 1}] * DIM], dtype=object),
        np.array([["abc"] * DIM]),
        np.array([["1.5"] * DIM]),
        np.array([[b"1"] * DIM]),
        [["x"] * DIM],
    ],
    ids=["object-none", "object-dict", "str", "numeric-str", "bytes", "list-of-str"],
)
def test_object_or_string_arrays(populated: matry.Index, bad_array: object) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="vectors"):
        populated.add(bad_array)
    with pytest.raises(ValueError, match="queries"):
        populated.search(bad_array, k=3)
    assert_unchanged(populated, before)


def test_ip_metric_rejects_non_unit_vectors() -> None:
    ix = matry.Index(dim=DIM, metric="ip")
    ix.add(unit_rows(10, 6))
    before = take_snapshot(ix)
    batch = unit_rows(4, 7)
    batch[2] *= 1.01
    with pytest.raises(ValueError, match=r"metric=[\"']cosine[\"']") as raised:
        ix.add(batch)
    assert "vectors" in str(raised.value)
    assert_unchanged(ix, before)
    nearly_unit = unit_rows(1, 8) * np.float32(1.0005)  # within the 1e-3 tolerance
    ix.add(nearly_unit)
    assert len(ix) == 11


# -- k and ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_k", [0, -1, -100])
def test_k_below_one(populated: matry.Index, bad_k: int) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match=r"\bk\b"):
        populated.search(unit_rows(2, 9), k=bad_k)
    with pytest.raises(ValueError, match=r"\bk\b"):
        populated.exact_search(unit_rows(2, 9), k=bad_k)
    assert_unchanged(populated, before)


def test_negative_ids(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="ids"):
        populated.add(unit_rows(3, 10), ids=[100, -1, 101])
    assert_unchanged(populated, before)
    assert 100 not in populated


def test_duplicate_ids_within_one_batch(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="ids") as raised:
        populated.add(unit_rows(3, 11), ids=[200, 201, 200])
    assert "200" in str(raised.value)
    with pytest.raises(ValueError, match="ids"):
        populated.add(unit_rows(2, 11), ids=[7, 7], replace=True)
    assert_unchanged(populated, before)
    assert 201 not in populated


@pytest.mark.parametrize("bad_length", [2, 4, 0])
def test_ids_length_differs_from_vectors(populated: matry.Index, bad_length: int) -> None:
    before = take_snapshot(populated)
    with pytest.raises(ValueError, match="ids"):
        populated.add(unit_rows(3, 12), ids=list(range(300, 300 + bad_length)))
    assert_unchanged(populated, before)


def test_existing_id_without_replace(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(KeyError, match="ids") as raised:
        populated.add(unit_rows(3, 13), ids=[400, 12, 401])
    assert "12" in str(raised.value)
    assert_unchanged(populated, before)
    assert 400 not in populated and 401 not in populated


def test_get_unknown_ids(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(KeyError, match="ids") as raised:
        populated.get([0, 1, 999])
    assert "999" in str(raised.value)
    with pytest.raises(KeyError, match="ids") as raised:
        populated.get([5])  # removed
    assert "5" in str(raised.value)
    assert_unchanged(populated, before)


def test_remove_unknown_ids(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises(KeyError, match="ids") as raised:
        populated.remove([0, 1, 999])
    assert "999" in str(raised.value)
    with pytest.raises(KeyError, match="ids"):
        populated.remove([6])  # already removed
    assert_unchanged(populated, before)
    assert 0 in populated and 1 in populated


def test_remove_negative_id(populated: matry.Index) -> None:
    before = take_snapshot(populated)
    with pytest.raises((KeyError, ValueError), match="ids"):
        populated.remove([-3])
    assert_unchanged(populated, before)


# -- empty index and padding -------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_search_on_empty_index_returns_padding(metric: str) -> None:
    ix = matry.Index(dim=DIM, metric=metric)
    for searcher in (ix.search, ix.exact_search):
        found, distances = searcher(unit_rows(3, 14), k=4)
        assert found.shape == (3, 4) and found.dtype == np.int64
        assert distances.shape == (3, 4) and distances.dtype == np.float32
        np.testing.assert_array_equal(found, -1)
        assert np.all(np.isposinf(distances))
    ix.add(unit_rows(2, 15), ids=[0, 1])
    ix.remove([0, 1])
    found, distances = ix.search(unit_rows(1, 16), k=2)
    np.testing.assert_array_equal(found, -1)
    assert np.all(np.isposinf(distances))


def test_k_larger_than_live_count_pads_the_tail(populated: matry.Index) -> None:
    found, distances = populated.search(unit_rows(2, 17), k=50, ef=100)
    assert np.all(found[:, :38] >= 0)
    assert all(len(set(row[:38].tolist())) == 38 for row in found)
    np.testing.assert_array_equal(found[:, 38:], -1)
    assert np.all(np.isposinf(distances[:, 38:]))
    assert np.all(np.isfinite(distances[:, :38]))


# -- constructor ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_metric", ["cos", "L2", "euclidean", ""])
def test_unknown_metric(bad_metric: str) -> None:
    with pytest.raises(ValueError, match="metric"):
        matry.Index(dim=DIM, metric=bad_metric)


@pytest.mark.parametrize("bad_dim", [0, -4])
def test_non_positive_dim(bad_dim: int) -> None:
    with pytest.raises(ValueError, match="dim"):
        matry.Index(dim=bad_dim)
