"""The hnswlib shim side by side with the real hnswlib 0.8 (needs the bench extra).

Run with ``python -m pytest bench/test_hnswlib_parity.py``. It lives here rather than in tests/
because hnswlib is a benchmark-only dependency: CI does not install it, and a test that CI
always skips would check nothing there.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from matry.compat import hnswlib as shim  # noqa: E402
from test_compat_hnswlib import (  # noqa: E402
    ATOL,
    RTOL,
    SPACES,
    assert_result_arrays,
    distances_of_labels,
    exact_labels,
    gaussian,
    recall,
)

# ---------------------------------------------------------------------------------------------
# the real hnswlib, side by side


@pytest.mark.parametrize("space", SPACES)
def test_matches_real_hnswlib_results(space: str) -> None:
    real = hnswlib
    rng = np.random.default_rng(16)
    data = gaussian(rng, 2000, 24, scale=1.5)
    queries = gaussian(rng, 100, 24)
    truth = exact_labels(space, queries, data, 10)
    outcomes = {}
    for module in (real, shim):
        index = module.Index(space=space, dim=24)
        index.init_index(max_elements=2000, ef_construction=100, M=16)
        index.add_items(data, np.arange(2000))
        index.set_ef(64)
        labels, distances = index.knn_query(queries, k=10)
        assert_result_arrays(labels, distances, (100, 10))
        np.testing.assert_allclose(
            distances, distances_of_labels(space, queries, data, labels), rtol=RTOL, atol=ATOL
        )
        bf = module.BFIndex(space=space, dim=24)
        bf.init_index(max_elements=2000)
        bf.add_items(data)
        bf_labels, bf_distances = bf.knn_query(queries, k=10)
        assert_result_arrays(bf_labels, bf_distances, (100, 10))
        outcomes[module] = (recall(labels, truth), bf_labels, bf_distances)
    assert outcomes[shim][0] >= outcomes[real][0] - 0.02
    assert recall(outcomes[shim][1], outcomes[real][1]) >= 0.99  # ties may swap
    shim_bf_distances, real_bf_distances = outcomes[shim][2], outcomes[real][2]
    np.testing.assert_allclose(
        shim_bf_distances,
        distances_of_labels(space, queries, data, outcomes[shim][1]),
        rtol=RTOL,
        atol=ATOL,
    )
    if space == "cosine":
        # hnswlib 0.8's BFIndex does not normalize cosine queries: it returns 1 - |q| cos
        # (same ranking); the shim returns the documented 1 - cos.
        query_norms = np.linalg.norm(queries.astype(np.float64), axis=1, keepdims=True)
        shim_bf_distances = 1.0 - query_norms * (1.0 - shim_bf_distances)
    np.testing.assert_allclose(shim_bf_distances, real_bf_distances, rtol=RTOL, atol=1e-4)


def _observe(call: Any) -> Any:
    """A call's result in comparable form, or the name of the exception class it raised."""
    try:
        result = call()
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        return "RuntimeError" if isinstance(exc, RuntimeError) else type(exc).__name__
    if isinstance(result, np.ndarray):  # labels compared in full, vectors by dtype and shape
        content = result.tolist() if result.dtype.kind == "u" else None
        return ("array", result.dtype.str, result.shape, content)
    if isinstance(result, tuple):
        return tuple(_observe(lambda item=item: item) for item in result)
    if isinstance(result, list):
        return sorted(result) if all(isinstance(x, int) for x in result) else result
    return result


def _script(module: Any, directory: str) -> list[Any]:
    """One sequence of hnswlib calls; returns what each step observed."""
    rng = np.random.default_rng(17)
    data = rng.random((12, 4)).astype(np.float32)
    index = module.Index("l2", 4)
    seen: list[Any] = [index.M, index.ef, index.ef_construction, index.max_elements]
    index.init_index(6, allow_replace_deleted=False)
    seen += [
        _observe(lambda: index.add_items(data[:3], [7, 8, 9])),
        _observe(lambda: index.add_items(data[3:5])),
        _observe(lambda: index.get_ids_list()),
        _observe(lambda: index.add_items(data[5])),
        _observe(lambda: index.add_items(data[6])),  # full: hnswlib adds nothing either
        _observe(lambda: index.add_items(data[7], 7)),
        _observe(lambda: (index.get_current_count(), index.element_count)),
        _observe(lambda: index.mark_deleted(8)),
        _observe(lambda: index.mark_deleted(8)),
        _observe(lambda: index.mark_deleted(99)),
        _observe(lambda: index.unmark_deleted(9)),
        _observe(lambda: index.get_items([8])),
        _observe(lambda: index.get_items([9, 9])),
        _observe(lambda: index.get_items([9], return_type="list") == [data[2].tolist()]),
        _observe(lambda: index.get_items()),
        _observe(lambda: index.get_ids_list()),
        _observe(lambda: index.knn_query(data[:2], k=5)),
        _observe(lambda: index.knn_query(data[:2], k=6)),
        _observe(lambda: index.knn_query(data[:2], k=0)),
        _observe(lambda: index.knn_query(np.empty((0, 4)), k=2)),
        _observe(lambda: index.knn_query(data[:2], k=2, filter=lambda label: label > 7)),
        _observe(lambda: index.add_items(data[9], 20, replace_deleted=True)),
        _observe(lambda: index.resize_index(4)),
        _observe(lambda: index.resize_index(8)),
        _observe(lambda: index.add_items(data[9:11], [20, 21])),
        _observe(lambda: index.add_items(data[11], 8)),  # re-adding a deleted label
        _observe(lambda: (index.get_current_count(), index.get_max_elements())),
        _observe(lambda: index.save_index(os.path.join(directory, "script.bin"))),
    ]
    copy = pickle.loads(pickle.dumps(index))
    seen += [copy.ef, copy.max_elements, copy.element_count, _observe(copy.get_ids_list)]
    loaded = module.Index("l2", 4)
    loaded.load_index(os.path.join(directory, "script.bin"), max_elements=3)
    seen += [loaded.ef, loaded.max_elements, loaded.element_count, loaded.M]
    seen += [
        _observe(lambda: loaded.add_items(data[0])),  # default label 8 exists: an update
        _observe(lambda: loaded.add_items(data[1], 100)),  # full
        _observe(loaded.get_ids_list),
    ]
    bf = module.BFIndex("cosine", 4)
    bf.init_index(3)
    seen += [
        _observe(lambda: bf.add_items(data[:2])),
        _observe(lambda: bf.add_items(data[2])),
        _observe(lambda: bf.add_items(data[3])),  # full: hnswlib adds nothing either
        _observe(lambda: bf.add_items(data[4], 1)),
        _observe(lambda: (bf.get_current_count(), bf.get_max_elements())),
        _observe(lambda: bf.delete_vector(0)),
        _observe(lambda: bf.delete_vector(0)),
        _observe(lambda: bf.get_current_count()),
        _observe(lambda: bf.knn_query(data[:3], k=2)),
    ]
    return seen


def test_behaves_like_real_hnswlib_step_by_step(tmp_path: Any) -> None:
    real = hnswlib
    (tmp_path / "real").mkdir()
    (tmp_path / "shim").mkdir()
    expected = _script(real, str(tmp_path / "real"))
    observed = _script(shim, str(tmp_path / "shim"))
    for step, (want, got) in enumerate(zip(expected, observed)):
        assert got == want, f"step {step}: hnswlib gave {want!r}, the shim gave {got!r}"
    assert len(observed) == len(expected)
