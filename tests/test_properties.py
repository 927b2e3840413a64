"""Hypothesis: random add / remove / replace / compact / search (filtered too) sequences
against a brute-force model.

The model is a dict id -> stored vector. With at most ~60 vectors and ef >= the number of
vectors ever added, HNSW must return the exact top-k (up to ties at the k-th distance).
"""

from __future__ import annotations

import matry
import numpy as np
from conftest import (
    assert_exact_up_to_ties,
    exact_distances,
    normalize_rows,
    stored_form,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

DIM = 6
MAX_LIVE = 60
ID_POOL = 90  # explicit ids are drawn from 0..ID_POOL-1
SEARCH_EF = 256  # >= every vector the index can ever hold here, so search is exhaustive

STATE_MACHINE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class IndexModelMachine(RuleBasedStateMachine):
    """One matry.Index and its brute-force model, driven by hypothesis."""

    metric = "cosine"
    quantization: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.index = matry.Index(
            dim=DIM,
            metric=self.metric,
            M=16,
            ef_construction=64,
            seed=0,
            quantization=self.quantization,
        )
        self.index.ef = SEARCH_EF
        self.model: dict[int, np.ndarray] = {}
        self.removed: set[int] = set()
        self.largest_id_used = -1

    # -- data -----------------------------------------------------------------------------

    def draw_vectors(self, data: st.DataObject, n: int) -> np.ndarray:
        """Random rows: Gaussian, or a small integer lattice (many ties and duplicates)."""
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        lattice = data.draw(st.booleans(), label="lattice")
        rng = np.random.default_rng(seed)
        if lattice:
            rows = rng.integers(-2, 3, size=(n, DIM)).astype(np.float32)
            zero_rows = ~rows.any(axis=1)
            rows[zero_rows, 0] = 1.0  # cosine and ip need a direction
        else:
            rows = rng.standard_normal((n, DIM)).astype(np.float32)
        if self.metric == "ip":
            rows = normalize_rows(rows)
        return rows

    def record(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        stored = stored_form(self.metric, vectors)
        for row, new_id in enumerate(ids.tolist()):
            self.model[new_id] = stored[row]
            self.removed.discard(new_id)
        self.largest_id_used = max(self.largest_id_used, *ids.tolist())

    # -- rules ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_LIVE - 8)
    @rule(data=st.data(), n=st.integers(1, 8))
    def add_with_default_ids(self, data: st.DataObject, n: int) -> None:
        vectors = self.draw_vectors(data, n)
        ids = self.index.add(vectors, num_threads=1)
        expected = np.arange(self.largest_id_used + 1, self.largest_id_used + 1 + n)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, expected)
        self.record(ids, vectors)

    @precondition(lambda self: len(self.model) < MAX_LIVE - 8)
    @rule(data=st.data(), n=st.integers(1, 8))
    def add_with_explicit_ids(self, data: st.DataObject, n: int) -> None:
        free = sorted(set(range(ID_POOL)) - set(self.model))
        chosen = data.draw(
            st.lists(st.sampled_from(free), min_size=1, max_size=n, unique=True), label="ids"
        )
        vectors = self.draw_vectors(data, len(chosen))
        ids = self.index.add(vectors, ids=chosen, num_threads=1)
        np.testing.assert_array_equal(ids, chosen)
        self.record(np.asarray(chosen, dtype=np.int64), vectors)

    @precondition(lambda self: len(self.removed) > 0 and len(self.model) < MAX_LIVE)
    @rule(data=st.data())
    def readd_removed_id(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sampled_from(sorted(self.removed)), label="removed id")
        vectors = self.draw_vectors(data, 1)
        ids = self.index.add(vectors, ids=[chosen], num_threads=1)
        np.testing.assert_array_equal(ids, [chosen])
        self.record(ids, vectors)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def replace_existing(self, data: st.DataObject) -> None:
        live = sorted(self.model)
        chosen = data.draw(
            st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True), label="ids"
        )
        vectors = self.draw_vectors(data, len(chosen))
        ids = self.index.add(vectors, ids=chosen, replace=True, num_threads=1)
        np.testing.assert_array_equal(ids, chosen)
        self.record(ids, vectors)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def add_existing_without_replace_fails(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sampled_from(sorted(self.model)), label="existing id")
        vectors = self.draw_vectors(data, 1)
        before = self.index.get([chosen])
        try:
            self.index.add(vectors, ids=[chosen])
        except KeyError:
            pass
        else:
            raise AssertionError(f"adding existing id {chosen} without replace did not raise")
        np.testing.assert_array_equal(self.index.get([chosen]), before)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def remove_some(self, data: st.DataObject) -> None:
        live = sorted(self.model)
        chosen = data.draw(
            st.lists(st.sampled_from(live), min_size=1, max_size=min(6, len(live)), unique=True),
            label="ids to remove",
        )
        self.index.remove(chosen)
        for removed_id in chosen:
            del self.model[removed_id]
            self.removed.add(removed_id)

    @rule(data=st.data(), n_queries=st.integers(1, 4), k=st.integers(1, 70))
    def search(self, data: st.DataObject, n_queries: int, k: int) -> None:
        queries = self.draw_vectors(data, n_queries)
        if self.model and data.draw(st.booleans(), label="query is a stored vector"):
            queries[0] = self.model[data.draw(st.sampled_from(sorted(self.model)))]
        found, distances = self.index.search(queries, k=k)
        assert_exact_up_to_ties(self.metric, self.model, queries, found, distances, k)
        assert not set(found.ravel().tolist()) & self.removed

    @rule(data=st.data(), k=st.integers(1, 70))
    def filtered_search(self, data: st.DataObject, k: int) -> None:
        # Any subset of the ids ever used (removed ones too: an IdSet may name them).
        pool = sorted(set(self.model) | self.removed)
        allowed = (
            data.draw(st.lists(st.sampled_from(pool), unique=True), label="allowed") if pool else []
        )
        path = data.draw(st.sampled_from(["auto", "graph", "brute_force"]), label="filter path")
        queries = self.draw_vectors(data, 2)
        found, distances = self.index.search(
            queries, k=k, filter=matry.IdSet(allowed), filter_path=path
        )
        allowed_model = {i: v for i, v in self.model.items() if i in set(allowed)}
        assert_exact_up_to_ties(self.metric, allowed_model, queries, found, distances, k)

    @rule(mode=st.sampled_from(["auto", "repair", "rebuild"]))
    def compact(self, mode: str) -> None:
        tombstones = self.index._core.node_count - len(self.index)
        assert self.index.compact(mode=mode) == tombstones  # type: ignore[arg-type]
        assert self.index._core.node_count == len(self.model)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data(), k=st.integers(1, 70))
    def exact_search(self, data: st.DataObject, k: int) -> None:
        queries = self.draw_vectors(data, 2)
        found, distances = self.index.exact_search(queries, k=k)
        assert_exact_up_to_ties(self.metric, self.model, queries, found, distances, k)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def live_set_matches_model(self) -> None:
        assert len(self.index) == len(self.model)
        np.testing.assert_array_equal(self.index.ids(), np.array(sorted(self.model), np.int64))
        for live_id in list(self.model)[:5]:
            assert live_id in self.index
        for removed_id in list(self.removed)[:5]:
            assert removed_id not in self.index

    @invariant()
    def stored_vectors_match_model(self) -> None:
        if not self.model:
            return
        live = sorted(self.model)
        expected = np.stack([self.model[i] for i in live])
        np.testing.assert_allclose(self.index.get(live), expected, rtol=1e-6, atol=1e-6)

    @invariant()
    def self_query_finds_itself(self) -> None:
        if not self.model:
            return
        some_id = max(self.model)
        found, distances = self.index.search(self.model[some_id], k=1)
        exact = exact_distances(self.metric, self.model[some_id], self.model[some_id])[0, 0]
        assert abs(float(distances[0, 0]) - exact) <= 1e-5, (found, distances)


class CosineMachine(IndexModelMachine):
    metric = "cosine"


class InnerProductMachine(IndexModelMachine):
    metric = "ip"


class SquaredL2Machine(IndexModelMachine):
    metric = "l2"


class Int8CosineMachine(IndexModelMachine):
    metric = "cosine"
    quantization = "int8"


class Int8SquaredL2Machine(IndexModelMachine):
    metric = "l2"
    quantization = "int8"


TestInt8CosineAgainstModel = Int8CosineMachine.TestCase
TestInt8CosineAgainstModel.settings = STATE_MACHINE_SETTINGS
TestInt8SquaredL2AgainstModel = Int8SquaredL2Machine.TestCase
TestInt8SquaredL2AgainstModel.settings = STATE_MACHINE_SETTINGS
TestCosineAgainstModel = CosineMachine.TestCase
TestCosineAgainstModel.settings = STATE_MACHINE_SETTINGS
TestInnerProductAgainstModel = InnerProductMachine.TestCase
TestInnerProductAgainstModel.settings = STATE_MACHINE_SETTINGS
TestSquaredL2AgainstModel = SquaredL2Machine.TestCase
TestSquaredL2AgainstModel.settings = STATE_MACHINE_SETTINGS
