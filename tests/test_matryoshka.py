"""Matryoshka prefix search: traverse on the first ``prefix_dim`` dims, rerank on the full vector.

Covers the exact equivalences (``prefix_dim == dim`` is the plain path; an orthogonal rotation
changes no full-dimension score), persistence of the rotation, the recall of a 128-d prefix
search on real 384-d sentence embeddings from the bundled encoder, the per-query overrides,
bad input, and a Collection built with prefix search.
"""

from __future__ import annotations

import ast
import pickle
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

import matry
import numpy as np
import pytest
from conftest import (
    METRICS,
    assert_valid_search_rows,
    clustered_vectors,
    exact_distances,
    prepare_for_metric,
    recall_at_k,
    stored_form,
)
from matry.encoder import Encoder

K = 10
ROTATION_ATOL = 1e-5

# Real embeddings: first lines of standard-library docstrings, encoded by the bundled model.
N_DOCUMENTS = 3000
N_QUERIES = 200
TEXT_SEED = 5
SENTENCE_DIM = 384
PREFIX_DIM = 128
RECALL_EF = 64  # matry's default ef
RECALL_TOLERANCE = 0.01
_SKIPPED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "__pycache__"}
)


def _orthogonal(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _build(vectors: np.ndarray, metric: str, **params: object) -> matry.Index:
    """One build thread, seed 0: the same inputs give the same graph."""
    ix = matry.Index(vectors.shape[1], metric=metric, M=12, ef_construction=80, seed=0, **params)
    ix.add(vectors, num_threads=1)
    return ix


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(77)
    vectors, centers = clustered_vectors(rng, 2000, 48, 40, spread=0.6)
    queries, _ = clustered_vectors(rng, 60, 48, 40, spread=0.6, centers=centers)
    return vectors, queries


# ---------------------------------------------------------------- prefix_dim == dim


@pytest.mark.parametrize("metric", METRICS)
def test_prefix_dim_equal_to_dim_is_exactly_the_plain_search(
    metric: str, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors = prepare_for_metric(metric, clustered[0])
    queries = prepare_for_metric(metric, clustered[1])
    dim = vectors.shape[1]
    plain = _build(vectors, metric)
    full_prefix = _build(vectors, metric, prefix_dim=dim)
    for ef in (10, 40):
        plain_ids, plain_distances = plain.search(queries, k=K, ef=ef, num_threads=1)
        ids, distances = full_prefix.search(queries, k=K, ef=ef, num_threads=1)
        np.testing.assert_array_equal(ids, plain_ids)
        np.testing.assert_array_equal(distances, plain_distances)
        # The per-query override at full width is the plain path too.
        ids, distances = plain.search(queries, k=K, ef=ef, num_threads=1, prefix_dim=dim)
        np.testing.assert_array_equal(ids, plain_ids)
        np.testing.assert_array_equal(distances, plain_distances)


@pytest.mark.parametrize("metric", METRICS)
def test_prefix_search_returns_full_dimension_distances(
    metric: str, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors = prepare_for_metric(metric, clustered[0])
    queries = prepare_for_metric(metric, clustered[1])
    ix = _build(vectors, metric, prefix_dim=8)
    assert ix.prefix_dim == 8
    live = dict(enumerate(stored_form(metric, vectors)))
    ids, distances = ix.search(queries, k=K, ef=30)
    # Distances are those of the whole vector (the rerank), sorted ascending.
    assert_valid_search_rows(metric, live, queries, ids, distances, K)


# ---------------------------------------------------------------- rotation


def test_fit_rotation_is_orthogonal_and_orders_directions_by_variance() -> None:
    rng = np.random.default_rng(3)
    scales = np.linspace(0.2, 2.0, 32)
    scales[-1] = 4.0  # one clearly dominant direction
    mixing = _orthogonal(rng, 32)
    sample = (rng.standard_normal((4000, 32)) * scales) @ mixing
    rotation = matry.fit_rotation(sample)
    assert rotation.shape == (32, 32)
    assert rotation.dtype == np.float32
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(32), atol=ROTATION_ATOL)
    projected = (sample - sample.mean(axis=0)) @ rotation.T.astype(np.float64)
    variances = projected.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-9), variances
    # The first direction is the one of largest variance in the data.
    np.testing.assert_allclose(np.abs(rotation[0] @ mixing[-1]), 1.0, atol=1e-2)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("rotation_kind", ["random", "pca"])
def test_rotation_preserves_full_dimension_scores(
    metric: str, rotation_kind: str, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors = prepare_for_metric(metric, clustered[0])
    queries = prepare_for_metric(metric, clustered[1])
    dim = vectors.shape[1]
    rotation: np.ndarray | str = (
        _orthogonal(np.random.default_rng(11), dim) if rotation_kind == "random" else "pca"
    )
    plain = _build(vectors, metric)
    rotated = _build(vectors, metric, rotation=rotation)
    assert rotated.rotation is not None
    if rotation_kind == "pca":
        np.testing.assert_allclose(rotated.rotation, matry.fit_rotation(vectors), atol=1e-6)
    else:
        np.testing.assert_array_equal(rotated.rotation, rotation)
    ids = np.arange(len(vectors))
    # get() un-rotates: the vectors come back as they were stored without rotation.
    np.testing.assert_allclose(rotated.get(ids), plain.get(ids), atol=ROTATION_ATOL)
    # Exact (brute-force) search sees the same full-dimension scores with and without it.
    plain_ids, plain_distances = plain.exact_search(queries, k=K)
    rotated_ids, rotated_distances = rotated.exact_search(queries, k=K)
    reference = exact_distances(metric, queries, vectors)
    expected = np.take_along_axis(reference, rotated_ids, axis=1)
    # Squared L2 distances are not bounded by 1: compare them relative to their size.
    tolerance = ROTATION_ATOL * (1.0 if metric != "l2" else float(np.abs(expected).max()))
    np.testing.assert_array_equal(rotated_ids, plain_ids)
    np.testing.assert_allclose(rotated_distances, plain_distances, atol=tolerance)
    np.testing.assert_allclose(rotated_distances, expected, atol=tolerance)


@pytest.mark.parametrize("metric", METRICS)
def test_rotation_and_prefix_are_saved_loaded_and_pickled(
    metric: str, clustered: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    vectors = prepare_for_metric(metric, clustered[0])
    queries = prepare_for_metric(metric, clustered[1])
    ix = _build(vectors, metric, prefix_dim=16, rotation="pca")
    ix.ef = 50
    rotation = ix.rotation
    assert rotation is not None
    expected_ids, expected_distances = ix.search(queries, k=K, num_threads=1)
    path = tmp_path / "prefix.matry"
    ix.save(path)
    header = matry.read_metadata(path)
    assert header["prefix_dim"] == 16
    assert header["has_rotation"] is True
    for copy in (matry.Index.load(path), pickle.loads(pickle.dumps(ix))):
        assert copy.prefix_dim == 16
        assert copy.rotation is not None
        np.testing.assert_array_equal(copy.rotation, rotation)
        np.testing.assert_array_equal(copy.get(np.arange(5)), ix.get(np.arange(5)))
        ids, distances = copy.search(queries, k=K, num_threads=1)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(distances, expected_distances)
        # Vectors added after loading are rotated with the saved rotation, not refitted.
        copy.add(vectors[:3], ids=[10_000, 10_001, 10_002])
        np.testing.assert_array_equal(copy.rotation, rotation)
        np.testing.assert_allclose(
            copy.get([10_000, 10_001, 10_002]), stored_form(metric, vectors[:3]), atol=1e-5
        )


def test_a_pca_rotation_is_fitted_once_on_the_first_batch() -> None:
    rng = np.random.default_rng(8)
    first = rng.standard_normal((300, 24)).astype(np.float32) * np.linspace(3, 0.1, 24)
    second = rng.standard_normal((300, 24)).astype(np.float32)
    ix = matry.Index(24, "l2", prefix_dim=6, rotation="pca")
    assert ix.rotation is None
    ix.add(first)
    fitted = ix.rotation
    np.testing.assert_allclose(fitted, matry.fit_rotation(first), atol=1e-6)
    ix.add(second)
    np.testing.assert_array_equal(ix.rotation, fitted)
    np.testing.assert_allclose(ix.get(np.arange(300, 600)), second, atol=1e-5)


# ---------------------------------------------------------------- per-query overrides


def _prefix_distances(metric: str, queries: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Traversal distance over the first ``width`` dims (cosine/ip: re-normalized prefixes)."""
    if metric == "l2":
        return exact_distances("l2", queries[:, :width], rows[:, :width])
    return exact_distances("cosine", queries[:, :width], rows[:, :width])


@pytest.mark.parametrize("metric", METRICS)
def test_per_query_prefix_and_rerank_on_an_index_built_without_prefix(
    metric: str, clustered: tuple[np.ndarray, np.ndarray]
) -> None:
    vectors = prepare_for_metric(metric, clustered[0])
    queries = prepare_for_metric(metric, clustered[1])
    ix = _build(vectors, metric)
    assert ix.prefix_dim is None
    stored = ix.get(np.arange(len(vectors)))
    live = dict(enumerate(stored))
    width, ef = 6, 40
    plain_ids, _ = ix.search(queries, k=K, ef=ef)
    wide_ids, wide_distances = ix.search(queries, k=K, ef=ef, prefix_dim=width)
    narrow_ids, narrow_distances = ix.search(queries, k=K, ef=ef, prefix_dim=width, rerank=K)
    assert_valid_search_rows(metric, live, queries, wide_ids, wide_distances, K)
    assert_valid_search_rows(metric, live, queries, narrow_ids, narrow_distances, K)
    # A 6-dim traversal is a different search than the full-width one.
    assert not np.array_equal(wide_ids, plain_ids)
    # rerank=K keeps the K best candidates of the (same) beam by prefix distance, so every id
    # the default rerank (the whole beam) adds must be no closer on the prefix than those K.
    prefix = _prefix_distances(metric, queries, stored, width)
    for row in range(len(queries)):
        kept = prefix[row, narrow_ids[row]].max()
        extra = np.setdiff1d(wide_ids[row], narrow_ids[row])
        assert np.all(prefix[row, extra] >= kept - 1e-5), f"row {row}"
    # Reranking the whole beam can only find closer full-dimension neighbours, on average.
    true_ids = np.argsort(exact_distances(metric, queries, stored), axis=1)[:, :K]
    assert recall_at_k(wide_ids, true_ids) > recall_at_k(narrow_ids, true_ids)


def test_rerank_larger_than_ef_widens_the_beam(clustered: tuple[np.ndarray, np.ndarray]) -> None:
    vectors, queries = clustered
    ix = _build(vectors, "cosine", prefix_dim=12)
    ids, distances = ix.search(queries, k=K, ef=10, rerank=60, num_threads=1)
    wide_ids, wide_distances = ix.search(queries, k=K, ef=60, rerank=60, num_threads=1)
    np.testing.assert_array_equal(ids, wide_ids)
    np.testing.assert_array_equal(distances, wide_distances)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("reload", [False, True])
def test_exhaustive_prefix_traversal_ranks_by_the_prefix_formula(metric: str, reload: bool) -> None:
    # ef >= n makes the beam hold every node, and rerank = k keeps the k best by traversal
    # distance: their ids must be the k best by the documented prefix formula, for the index's
    # own prefix (norm table, rebuilt on load) and for a per-query width (norms on the fly).
    rng = np.random.default_rng(31)
    n, dim, own_width, other_width = 150, 24, 8, 12
    vectors = prepare_for_metric(metric, rng.standard_normal((n, dim)))
    queries = prepare_for_metric(metric, rng.standard_normal((20, dim)))
    ix = _build(vectors, metric, prefix_dim=own_width)
    ix.remove([3, 77])
    if reload:
        ix = pickle.loads(pickle.dumps(ix))
    stored = stored_form(metric, vectors)
    live = np.array([i for i in range(n) if i not in (3, 77)])
    for width in (own_width, other_width):
        ids, distances = ix.search(queries, k=K, ef=n, prefix_dim=width, rerank=K)
        reference = _prefix_distances(metric, queries, stored[live], width)
        expected = live[np.argsort(reference, axis=1, kind="stable")[:, :K]]
        for row in range(len(queries)):
            assert set(ids[row].tolist()) == set(expected[row].tolist()), (width, row)
        # Returned distances are the full-dimension ones, sorted.
        full = exact_distances(metric, queries, stored)
        np.testing.assert_allclose(
            distances, np.take_along_axis(full, ids, axis=1), rtol=1e-4, atol=1e-4
        )
        assert np.all(np.diff(distances, axis=1) >= 0)


def test_bad_prefix_dim_in_the_constructor_raises_value_error() -> None:
    for prefix_dim in (0, -3, 17):
        with pytest.raises(ValueError, match="prefix_dim"):
            matry.Index(16, prefix_dim=prefix_dim)


def test_bad_prefix_dim_and_rerank_in_search_raise_value_error() -> None:
    rng = np.random.default_rng(1)
    ix = matry.Index(16, prefix_dim=4)
    ix.add(rng.standard_normal((50, 16)))
    query = rng.standard_normal(16)
    before = ix.search(query, k=5)
    for prefix_dim in (0, -1, 17):
        with pytest.raises(ValueError, match="prefix_dim"):
            ix.search(query, k=5, prefix_dim=prefix_dim)
    for rerank in (0, -1, 4):
        with pytest.raises(ValueError, match="rerank"):
            ix.search(query, k=5, rerank=rerank)
    with pytest.raises(ValueError, match="rerank"):
        ix.search(query, k=10, rerank=9)
    after = ix.search(query, k=5)
    np.testing.assert_array_equal(after[0], before[0])


@pytest.mark.parametrize(
    "rotation",
    [
        pytest.param(np.eye(16, 15), id="not-square"),
        pytest.param(np.eye(15), id="too-small"),
        pytest.param(np.eye(17), id="too-large"),
        pytest.param(np.ones(16), id="one-dimensional"),
        pytest.param(np.eye(16)[None], id="three-dimensional"),
        pytest.param(2.0 * np.eye(16), id="scaled"),
        pytest.param(np.eye(16) + np.triu(np.full((16, 16), 0.1), 1), id="sheared"),
        pytest.param(np.where(np.eye(16) > 0, np.nan, 0.0), id="nan"),
        pytest.param(np.where(np.eye(16) > 0, np.inf, 0.0), id="inf"),
        pytest.param("svd", id="unknown-name"),
    ],
)
def test_bad_rotation_raises_value_error(rotation: object) -> None:
    with pytest.raises(ValueError, match="rotation"):
        matry.Index(16, prefix_dim=4, rotation=rotation)  # type: ignore[arg-type]


def test_nearly_orthogonal_float32_rotation_is_accepted() -> None:
    rotation = _orthogonal(np.random.default_rng(4), 64)  # float32 rounding, ~1e-7 off
    ix = matry.Index(64, prefix_dim=16, rotation=rotation)
    np.testing.assert_array_equal(ix.rotation, rotation)


# ---------------------------------------------------------------- real sentence embeddings


def stdlib_docstring_lines() -> list[str]:
    """First lines (>= 20 characters) of the docstrings of the standard library, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        if _SKIPPED_STDLIB_DIRS & set(path.relative_to(root).parts[:-1]):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in old sources
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docstring = ast.get_docstring(node)
                if docstring:
                    line = docstring.strip().splitlines()[0].strip()
                    if len(line) >= 20:
                        found.add(line)
    return sorted(found)


@dataclass(frozen=True)
class SentenceData:
    documents: list[str]
    document_vectors: np.ndarray  # float32 [N_DOCUMENTS, 384], unit rows
    query_vectors: np.ndarray  # float32 [N_QUERIES, 384], held-out texts, input_type="query"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.default()


@pytest.fixture(scope="module")
def sentences(encoder: Encoder) -> SentenceData:
    lines = stdlib_docstring_lines()
    assert len(lines) >= N_DOCUMENTS + N_QUERIES, len(lines)
    order = np.random.default_rng(TEXT_SEED).permutation(len(lines))
    documents = [lines[i] for i in order[:N_DOCUMENTS]]
    queries = [lines[i] for i in order[N_DOCUMENTS : N_DOCUMENTS + N_QUERIES]]
    document_vectors = encoder.encode(documents, input_type="document", batch_size=128)
    query_vectors = encoder.encode(queries, input_type="query", batch_size=128)
    assert document_vectors.shape == (N_DOCUMENTS, SENTENCE_DIM)
    return SentenceData(documents, document_vectors, query_vectors)


@pytest.fixture(scope="module")
def sentence_truth(sentences: SentenceData) -> np.ndarray:
    distances = exact_distances("cosine", sentences.query_vectors, sentences.document_vectors)
    return np.argsort(distances, axis=1, kind="stable")[:, :K]


@pytest.fixture(scope="module")
def full_sentence_index(sentences: SentenceData) -> matry.Index:
    """Full-width index (no prefix, no rotation) of the document vectors."""
    index = matry.Index(SENTENCE_DIM, "cosine", seed=0)
    index.add(sentences.document_vectors, num_threads=2)
    return index


def test_prefix_128_with_pca_rotation_matches_full_dimension_recall(
    sentences: SentenceData, sentence_truth: np.ndarray, full_sentence_index: matry.Index
) -> None:
    documents, queries = sentences.document_vectors, sentences.query_vectors
    full = full_sentence_index
    prefix = matry.Index(SENTENCE_DIM, "cosine", seed=0, prefix_dim=PREFIX_DIM, rotation="pca")
    prefix.add(documents, num_threads=2)
    # Ground truth is matry's exact search; it agrees with numpy.
    exact_ids, _ = full.exact_search(queries, k=K)
    assert recall_at_k(exact_ids, sentence_truth) >= 0.999
    full_recall = recall_at_k(full.search(queries, k=K, ef=RECALL_EF)[0], exact_ids)
    prefix_ids, prefix_distances = prefix.search(queries, k=K, ef=RECALL_EF)
    prefix_recall = recall_at_k(prefix_ids, exact_ids)
    assert prefix_recall >= full_recall - RECALL_TOLERANCE, (
        f"recall@{K} at ef={RECALL_EF}: prefix {PREFIX_DIM} + PCA {prefix_recall:.4f}, "
        f"full {full_recall:.4f}"
    )
    # The scores are full-dimension cosines of the (un-rotated) vectors.
    live = dict(enumerate(documents))
    assert_valid_search_rows("cosine", live, queries, prefix_ids, prefix_distances, K)


def test_per_query_prefix_on_sentence_embeddings(
    sentences: SentenceData, sentence_truth: np.ndarray, full_sentence_index: matry.Index
) -> None:
    queries = sentences.query_vectors
    ix = full_sentence_index
    full_recall = recall_at_k(ix.search(queries, k=K, ef=RECALL_EF)[0], sentence_truth)
    wide = recall_at_k(ix.search(queries, k=K, ef=RECALL_EF, prefix_dim=192)[0], sentence_truth)
    narrow = recall_at_k(
        ix.search(queries, k=K, ef=RECALL_EF, prefix_dim=16, rerank=K)[0], sentence_truth
    )
    # A 192-d traversal of a full-width graph, reranked, stays close to the full search;
    # 16 dims without a wider rerank loses a visible part of it.
    assert wide >= full_recall - 0.02, (wide, full_recall)
    assert narrow < wide - 0.05, (narrow, wide)


def test_collection_with_prefix_search(
    encoder: Encoder, sentences: SentenceData, sentence_truth: np.ndarray, tmp_path: Path
) -> None:
    collection = matry.Collection(encoder, prefix_dim=PREFIX_DIM, rotation="pca")
    collection.add_vectors(
        sentences.document_vectors, collection.fingerprint, texts=sentences.documents
    )
    index = collection.index
    assert index.prefix_dim == PREFIX_DIM
    assert index.rotation is not None
    np.testing.assert_allclose(
        index.rotation, matry.fit_rotation(sentences.document_vectors), atol=1e-6
    )
    hits = collection.search_vectors(sentences.query_vectors, collection.fingerprint, k=K)
    assert isinstance(hits[0], list)
    found = np.array([[hit.id for hit in row] for row in hits])  # type: ignore[union-attr]
    assert recall_at_k(found, sentence_truth) >= 0.95
    first = hits[0][0]  # type: ignore[index]
    assert first.text == sentences.documents[first.id]
    expected_score = float(sentences.query_vectors[0] @ sentences.document_vectors[first.id])
    assert first.score == pytest.approx(expected_score, abs=1e-5)
    # A text query, encoded by the collection, finds its own document first.
    text = sentences.documents[7]
    top = collection.search(text, k=1)[0]
    assert top.id == 7  # type: ignore[union-attr]
    path = tmp_path / "prefix-collection.matry"
    collection.save(path)
    loaded = matry.Collection.load(path, encoder=encoder)
    assert loaded.index.prefix_dim == PREFIX_DIM
    np.testing.assert_array_equal(loaded.index.rotation, index.rotation)
    loaded_hits = loaded.search_vectors(sentences.query_vectors, loaded.fingerprint, k=K)
    assert [[h.id for h in row] for row in loaded_hits] == found.tolist()  # type: ignore[union-attr]
