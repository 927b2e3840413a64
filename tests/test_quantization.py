"""int8 codes beside the links: recall against f32 traversal, persistence, bad input."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import matry
import numpy as np
import pytest
from conftest import clustered_vectors, exact_top_k, recall_at_k

DIM = 48


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    vectors, centers = clustered_vectors(rng, 12_000, DIM, 60, spread=0.6)
    queries, _ = clustered_vectors(rng, 300, DIM, 60, spread=0.6, centers=centers)
    return vectors, queries


def _for_metric(metric: str, rows: np.ndarray) -> np.ndarray:
    if metric == "ip":
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return rows


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("mode", ["per_vector", "per_dimension"])
def test_int8_with_rerank_keeps_f32_recall(
    clustered: tuple[np.ndarray, np.ndarray], metric: str, mode: str
) -> None:
    vectors, queries = (_for_metric(metric, a) for a in clustered)
    truth, _ = exact_top_k(metric, queries, vectors, np.arange(len(vectors)), 10)
    recalls = {}
    for quantization in (None, "int8"):
        ix = matry.Index(
            DIM, metric, M=16, ef_construction=100, quantization=quantization, _int8_mode=mode
        )
        ix.add(vectors, num_threads=2)
        found, distances = ix.search(queries, k=10, ef=48)
        recalls[quantization] = recall_at_k(found, truth)
        # Returned distances are the exact f32 ones (the rerank), ascending.
        assert (np.diff(distances, axis=1) >= 0).all()
    assert recalls["int8"] >= recalls[None] - 0.005, recalls


def test_returned_distances_are_exact_after_rerank(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    ix = matry.Index(DIM, "l2", quantization="int8")
    ix.add(vectors[:3000])
    found, distances = ix.search(queries[:20], k=5)
    exact = ((queries[:20, None, :].astype(np.float64) - vectors[found]) ** 2).sum(-1)
    np.testing.assert_allclose(distances, exact, rtol=1e-4, atol=1e-3)


def test_prefix_traversal_on_codes_with_pca_keeps_recall(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    truth, _ = exact_top_k("cosine", queries, vectors, np.arange(len(vectors)), 10)
    recalls = {}
    for quantization in (None, "int8"):
        ix = matry.Index(
            DIM, "cosine", prefix_dim=24, rotation="pca", quantization=quantization, seed=3
        )
        ix.add(vectors)
        found, _ = ix.search(queries, k=10, ef=64)
        recalls[quantization] = recall_at_k(found, truth)
    assert recalls["int8"] >= recalls[None] - 0.01, recalls
    assert recalls["int8"] > 0.9, recalls


def test_rerank_more_candidates_never_lowers_recall_much(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    truth, _ = exact_top_k("cosine", queries, vectors, np.arange(len(vectors)), 10)
    ix = matry.Index(DIM, "cosine", quantization="int8")
    ix.add(vectors)
    low = recall_at_k(ix.search(queries, k=10, ef=64, rerank=10)[0], truth)
    high = recall_at_k(ix.search(queries, k=10, ef=64, rerank=64)[0], truth)
    assert high >= low - 0.002, (low, high)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_codes_round_trip_through_save_load_and_pickle(
    tmp_path: Path, clustered: tuple[np.ndarray, np.ndarray], metric: str
) -> None:
    vectors, queries = clustered
    ix = matry.Index(DIM, metric, quantization="int8", rotation="pca")
    ix.add(vectors[:2000])
    ix.remove([3, 4])
    expected = ix.search(queries, k=10)
    path = tmp_path / "codes.matry"
    ix.save(path)
    header = matry.read_metadata(path)
    assert header["quantization"] == "int8"
    assert header["format_version"] == 2
    for copy in (matry.Index.load(path), pickle.loads(pickle.dumps(ix))):
        assert copy.quantization == "int8"
        got = copy.search(queries, k=10)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(copy.get([10, 11]), ix.get([10, 11]))
    # A loaded index keeps adding with the saved quantizer.
    loaded = matry.Index.load(path)
    loaded.add(vectors[2000:2100])
    assert len(loaded) == 2098


def test_f32_index_is_still_written_as_format_version_1(tmp_path: Path) -> None:
    ix = matry.Index(8, "l2")
    ix.add(np.eye(8, dtype=np.float32))
    ix.save(tmp_path / "f32.matry")
    assert matry.read_metadata(tmp_path / "f32.matry")["format_version"] == 1
    assert matry.read_metadata(tmp_path / "f32.matry")["quantization"] is None


def test_a_code_that_does_not_match_its_row_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ix = matry.Index(16, "l2", quantization="int8")
    ix.add(rng.standard_normal((50, 16)).astype(np.float32))
    blob = bytearray(ix.__getstate__()["index"])

    def with_crc(data: bytearray) -> bytes:
        body = bytes(data[:-4])
        return body + zlib.crc32(body).to_bytes(4, "little")

    # Format v2 (io.hpp): node 0's block starts at the first 64-byte offset after the levels;
    # its payload follows the count and 2M links: three floats, then the code bytes.
    n, dim, links = 50, 16, 1 + 32
    before_blocks = 128 + len(b'{"user":{}}') + 4 + n * dim * 4 + n * 8 + n + n
    start = before_blocks + (-before_blocks) % 64
    code_byte = start + links * 4 + 12 + 3  # header floats, then code bytes
    blob[code_byte] ^= 0x5A
    with pytest.raises(matry.CorruptIndexError, match="int8 code of node 0"):
        matry.Index.__new__(matry.Index).__setstate__({"index": with_crc(blob)})


def test_bad_quantization_arguments() -> None:
    with pytest.raises(ValueError, match="quantization"):
        matry.Index(8, quantization="int4")
    with pytest.raises(ValueError, match="quantization"):
        matry.Index(8, quantization=8)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix_dim"):
        matry.Index(8, "l2", prefix_dim=4, quantization="int8")
    ix = matry.Index(8, quantization="int8")
    with pytest.raises(ValueError, match="rerank"):
        ix.search(np.ones(8, dtype=np.float32), k=5, rerank=2)


def test_empty_and_tiny_int8_indexes() -> None:
    ix = matry.Index(8, "cosine", quantization="int8")
    ids, distances = ix.search(np.ones(8, dtype=np.float32), k=3)
    assert (ids == -1).all() and np.isinf(distances).all()
    ix.add(np.ones((1, 8), dtype=np.float32))  # one row: the quantizer fits a degenerate range
    ids, distances = ix.search(np.ones(8, dtype=np.float32), k=3)
    assert ids[0, 0] == 0 and ids[0, 1] == -1
    assert abs(float(distances[0, 0])) < 1e-6


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_mmap_load_gives_identical_results_and_refuses_writes(
    tmp_path: Path, clustered: tuple[np.ndarray, np.ndarray], quantization: str | None
) -> None:
    vectors, queries = clustered
    ix = matry.Index(DIM, "cosine", quantization=quantization)
    ix.add(vectors[:4000])
    ix.remove([1])
    path = tmp_path / "mapped.matry"
    ix.save(path)
    copied = matry.Index.load(path)
    mapped = matry.Index.load(path, mmap=True)
    assert mapped.read_only and not copied.read_only
    # The mapped rows (and int8 blocks) are not private memory.
    assert mapped.memory_bytes < copied.memory_bytes - 4000 * DIM * 4 // 2
    for got, want in zip(mapped.search(queries, k=10), copied.search(queries, k=10)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mapped.get([5, 6]), copied.get([5, 6]))
    np.testing.assert_array_equal(mapped.ids(), copied.ids())
    before = len(mapped)
    with pytest.raises(ValueError, match="mmap=True"):
        mapped.add(vectors[:2])
    with pytest.raises(ValueError, match="mmap=True"):
        mapped.remove([5])
    assert len(mapped) == before
    # Saving a mapped index writes a normal file; replacing the mapped file is safe.
    mapped.save(path)
    assert len(matry.Index.load(path)) == before
    assert len(mapped.search(queries[:3], k=5)[0]) == 3


def test_mmap_load_of_missing_truncated_and_golden_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        matry.Index.load(tmp_path / "missing.matry", mmap=True)
    rng = np.random.default_rng(0)
    ix = matry.Index(16, "l2", quantization="int8")
    ix.add(rng.standard_normal((300, 16)).astype(np.float32))
    path = tmp_path / "t.matry"
    ix.save(path)
    data = path.read_bytes()
    (tmp_path / "short.matry").write_bytes(data[: len(data) // 2])
    with pytest.raises(matry.CorruptIndexError):
        matry.Index.load(tmp_path / "short.matry", mmap=True)
    (tmp_path / "empty.matry").write_bytes(b"")
    with pytest.raises(matry.CorruptIndexError):
        matry.Index.load(tmp_path / "empty.matry", mmap=True)
    with pytest.raises(ValueError, match="mmap"):
        matry.Index.load(path, mmap="yes")  # type: ignore[arg-type]
    golden = Path(__file__).parent / "data" / "golden_v1.matry"
    mapped, copied = matry.Index.load(golden, mmap=True), matry.Index.load(golden)
    assert len(mapped) == len(copied)
    np.testing.assert_array_equal(mapped.get(mapped.ids()), copied.get(copied.ids()))


def test_prefix_codes_cover_only_the_prefix_and_other_widths_still_search(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    truth, _ = exact_top_k("cosine", queries, vectors, np.arange(len(vectors)), 10)
    full = matry.Index(DIM, "cosine", quantization="int8")
    prefix = matry.Index(DIM, "cosine", quantization="int8", prefix_dim=16)
    full.add(vectors)
    prefix.add(vectors)
    # Codes of 64 dims instead of 256: the level-0 blocks shrink by whole cache lines.
    rows = np.random.default_rng(0).standard_normal((2000, 256)).astype(np.float32)
    small = {
        width: matry.Index(256, "cosine", quantization="int8", prefix_dim=width)
        for width in (None, 64)
    }
    for ix in small.values():
        ix.add(rows)
    assert small[64].memory_bytes < small[None].memory_bytes - 2000 * 150
    f32_prefix = matry.Index(DIM, "cosine", prefix_dim=16)
    f32_prefix.add(vectors)
    for width in (None, 8, 16, DIM):  # index prefix, narrower (codes), wider (f32 rows)
        found, distances = prefix.search(queries, k=10, ef=96, prefix_dim=width)
        reference, _ = f32_prefix.search(queries, k=10, ef=96, prefix_dim=width)
        assert recall_at_k(found, truth) >= recall_at_k(reference, truth) - 0.02, width
        assert (np.diff(distances, axis=1) >= 0).all()


def test_l2_int8_index_searched_on_a_prefix_uses_exact_prefix_distances(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    int8 = matry.Index(DIM, "l2", quantization="int8")
    f32 = matry.Index(DIM, "l2")
    int8.add(vectors[:5000])
    f32.add(vectors[:5000])
    truth, _ = exact_top_k("l2", queries, vectors[:5000], np.arange(5000), 10)
    got = recall_at_k(int8.search(queries, k=10, ef=64, prefix_dim=24)[0], truth)
    want = recall_at_k(f32.search(queries, k=10, ef=64, prefix_dim=24)[0], truth)
    assert got >= want - 0.03, (got, want)
