"""Index.reorder(): renumbering nodes for locality changes no id, vector or result."""

from __future__ import annotations

from pathlib import Path

import matry
import numpy as np
import pytest


@pytest.mark.parametrize("quantization", [None, "int8"])
@pytest.mark.parametrize("prefix_dim", [None, 12])
def test_reorder_keeps_ids_vectors_and_results(
    tmp_path: Path, quantization: str | None, prefix_dim: int | None
) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((100, 24)).astype(np.float32)
    ix = matry.Index(24, "cosine", quantization=quantization, prefix_dim=prefix_dim)
    ix.add(vectors)
    ix.remove([5, 6, 7])
    ix.add(vectors[:2] * 2, ids=[8, 9], replace=True)  # tombstones sharing a label
    ix.add(vectors[5:6], ids=[5])  # a removed id re-added
    ids_before = ix.ids()
    stored_before = ix.get(ids_before)
    exact_before = ix.exact_search(queries, k=10)
    approx_before = ix.search(queries, k=10, ef=3000)  # exhaustive: the same set whatever order
    ix.reorder()
    np.testing.assert_array_equal(ix.ids(), ids_before)
    np.testing.assert_array_equal(ix.get(ids_before), stored_before)
    for got, want in zip(ix.exact_search(queries, k=10), exact_before):
        np.testing.assert_array_equal(got, want)
    got_ids, got_distances = ix.search(queries, k=10, ef=3000)
    np.testing.assert_allclose(got_distances, approx_before[1], rtol=1e-5, atol=1e-6)
    assert 6 not in ix and 5 in ix and 8 in ix
    # Still a consistent index: saves, loads, keeps adding and removing.
    ix.save(tmp_path / "r.matry")
    loaded = matry.Index.load(tmp_path / "r.matry")
    np.testing.assert_array_equal(loaded.ids(), ids_before)
    loaded.add(vectors[:10], ids=np.arange(10_000, 10_010))
    loaded.remove([8])
    found, _ = loaded.search(vectors[10:20], k=1)
    assert (found[:, 0] == np.arange(10, 20)).mean() >= 0.9
