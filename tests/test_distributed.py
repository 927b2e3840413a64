"""matry.distributed with the in-process engine: the merge, recall over shards, persistence,
inputs, failure on bad files and bad arguments. Ray and Dask: test_distributed_engines.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import matry
import numpy as np
import pytest
from matry import tune
from matry.distributed import (
    ShardedIndex,
    build,
    hash_ids,
    merge_topk,
    train_kmeans,
    undersampled_shard_k,
    undersampling_loss,
)

DIM = 24


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random centres (harder for HNSW than uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 3.0
    labels = rng.integers(clusters, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(6000)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(200, seed=1)


# ---------------------------------------------------------------------------- merge_topk


def _sorted_top(ids: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per row, sort by (distance, id) and keep k, padded with -1 / inf."""
    n = ids.shape[0]
    out_ids = np.full((n, k), -1, np.int64)
    out_dist = np.full((n, k), np.inf, np.float32)
    for row in range(n):
        order = sorted(range(ids.shape[1]), key=lambda c: (dist[row, c], ids[row, c]))[:k]
        out_ids[row, : len(order)] = ids[row, order]
        out_dist[row, : len(order)] = dist[row, order]
    return out_ids, out_dist


@pytest.mark.parametrize("total,shards,k", [(40, 4, 10), (7, 3, 10), (100, 8, 25), (5, 1, 5)])
def test_merge_of_exact_shard_results_equals_global_brute_force(
    total: int, shards: int, k: int
) -> None:
    rng = np.random.default_rng(total + shards)
    n_queries = 30
    # Integer-valued distances: many ties, broken by id on both sides.
    distances = rng.integers(0, 6, size=(n_queries, total)).astype(np.float32)
    ids = rng.permutation(10 * total)[:total].astype(np.int64)
    owner = rng.integers(shards, size=total)
    per_shard = []
    for s in range(shards):
        members = np.flatnonzero(owner == s)
        shard_ids = np.tile(ids[members], (n_queries, 1))
        per_shard.append(_sorted_top(shard_ids, distances[:, members], k))
    merged_ids, merged_dist = merge_topk(per_shard, k)
    expected_ids, expected_dist = _sorted_top(np.tile(ids, (n_queries, 1)), distances, k)
    np.testing.assert_array_equal(merged_ids, expected_ids)
    np.testing.assert_array_equal(merged_dist, expected_dist)
    assert merged_ids.dtype == np.int64 and merged_dist.dtype == np.float32


def test_merge_pads_when_all_shards_together_hold_fewer_than_k() -> None:
    a = (np.array([[3, -1]]), np.array([[0.5, np.inf]], np.float32))
    b = (np.array([[1]]), np.array([[0.5]], np.float32))
    ids, dist = merge_topk([a, b], 4)
    assert ids.tolist() == [[1, 3, -1, -1]]
    assert dist[0, :2].tolist() == [0.5, 0.5] and np.isinf(dist[0, 2:]).all()


def test_sharded_exact_search_equals_one_index_exact_search(
    data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    single = matry.Index(DIM, "l2")
    single.add(data)
    with build(data, shards=5, path=tmp_path / "idx", metric="l2") as sidx:
        ids, dist = sidx.exact_search(queries, k=15)
    expected_ids, expected_dist = single.exact_search(queries, k=15)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-5, atol=1e-4)
    # Same ids except where two neighbours are tied at the cut.
    assert recall_at(ids, expected_ids) > 0.999


# ---------------------------------------------------------------------------- recall over shards


def test_recall_with_more_shards_is_no_worse_than_one_index(tmp_path: Path) -> None:
    """S in {1, 2, 4, 8} on 20k clustered vectors; also the undersampling option's bound."""
    vectors = clustered(20_000, dim=32, clusters=50, seed=3)
    query_rows = clustered(500, dim=32, clusters=50, seed=4)
    single = matry.Index(32, "cosine", M=12, ef_construction=80)
    single.add(vectors)
    truth, _ = single.exact_search(query_rows, k=10)
    ef = 64
    single_recall = recall_at(single.search(query_rows, k=10, ef=ef)[0], truth)
    lines = [f"one index: recall@10 {single_recall:.4f} at ef {ef}"]
    for shards in (1, 2, 4, 8):
        sidx = build(vectors, shards=shards, path=tmp_path / f"s{shards}", M=12, ef_construction=80)
        full = recall_at(sidx.search(query_rows, k=10, ef=ef)[0], truth)
        assert full >= single_recall - 0.01, (shards, full, single_recall)
        shard_k = undersampled_shard_k(10, shards)
        under = recall_at(sidx.search(query_rows, k=10, ef=ef, shard_k="auto")[0], truth)
        loss = undersampling_loss(10, shards, shard_k)
        assert under >= full - loss - 0.01, (shards, under, full, loss)
        lines.append(
            f"S={shards}: recall@10 {full:.4f}; shard_k={shard_k}: {under:.4f} "
            f"(expected loss {loss:.4f})"
        )
        sidx.close()
    print("\n".join(lines))


def test_undersampling_loss_matches_a_simulated_hash_partition() -> None:
    rng = np.random.default_rng(0)
    for k, shards in ((10, 4), (100, 8), (10, 2)):
        shard_k = undersampled_shard_k(k, shards)
        assert shard_k == min(
            k, math.ceil(k / shards + 2.0 * math.sqrt(k / shards * (1 - 1 / shards)))
        )
        # Where the true top-k land under the hash of random ids, and how many are cut off.
        owners = hash_ids(rng.integers(0, 2**40, size=(20_000, k)), shards)
        held = np.stack([(owners == s).sum(axis=1) for s in range(shards)], axis=1)
        lost = np.maximum(held - shard_k, 0).sum(axis=1) / k
        assert abs(lost.mean() - undersampling_loss(k, shards, shard_k)) < 0.003
    assert undersampling_loss(10, 1, 5) == 0.0 and undersampled_shard_k(10, 1) == 10


def test_kmeans_routing_to_the_nearest_shards(tmp_path: Path) -> None:
    vectors = clustered(8000, clusters=8, seed=5)
    query_rows = clustered(300, clusters=8, seed=5)[:300] + 0.01
    sidx = build(vectors, shards=8, path=tmp_path / "km", partition="kmeans")
    truth, _ = sidx.exact_search(query_rows, k=10)
    full = recall_at(sidx.search(query_rows, k=10)[0], truth)
    probe_all = recall_at(sidx.search(query_rows, k=10, probe=8)[0], truth)
    probe_two = recall_at(sidx.search(query_rows, k=10, probe=2)[0], truth)
    assert probe_all == full
    # Blobs fall into shards whole, so two of eight shards hold nearly every neighbour.
    assert probe_two >= full - 0.05
    centroids = train_kmeans(vectors[:2000], 8, "cosine", seed=0)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    sidx.close()


def test_ef_for_recall_works_on_a_sharded_index(
    data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    sidx = build(data, shards=3, path=tmp_path / "t")
    report = tune.ef_for_recall(sidx, target=0.9, queries=queries, set=True)
    assert report.reached and sidx.ef == report.ef
    truth, _ = sidx.exact_search(queries, k=10)
    assert recall_at(sidx.search(queries, k=10)[0], truth) >= report.recall.ci_low - 1e-9
    sampled = tune.recall(sidx, k=10, sample=200, latency_queries=5)
    assert sampled.n_queries == 200 and not sampled.held_out and sampled.recall > 0.5
    sidx.save()
    sidx.close()
    assert ShardedIndex.open(tmp_path / "t").ef == report.ef


# ---------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("partition", ["hash", "contiguous", "kmeans"])
def test_build_close_open_search_is_identical(
    partition: str, data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    sidx = build(data, shards=4, path=tmp_path / "p", partition=partition, seed=2)
    before = sidx.search(queries, k=10)
    routed = sidx.search(queries, k=10, probe=2) if partition == "kmeans" else None
    sizes = sidx.shard_sizes
    sidx.close()
    with pytest.raises(ValueError, match="closed"):
        sidx.search(queries)
    for mmap in (False, True):
        reopened = ShardedIndex.open(tmp_path / "p", mmap=mmap)
        assert reopened.shard_sizes == sizes and len(reopened) == data.shape[0]
        after = reopened.search(queries, k=10)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])
        if routed is not None:
            np.testing.assert_array_equal(reopened.search(queries, k=10, probe=2)[0], routed[0])
        reopened.close()
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["partition"]["kind"] == partition
    assert [s["count"] for s in manifest["shards"]] == sizes
    assert manifest["dim"] == DIM and manifest["params"]["M"] == 16


def test_contiguous_partition_keeps_row_ranges(data: np.ndarray, tmp_path: Path) -> None:
    sidx = build(data, shards=3, path=tmp_path / "c", partition="contiguous")
    entries = sidx.manifest["shards"]
    assert [(e["min_id"], e["max_id"]) for e in entries] == [(0, 1999), (2000, 3999), (4000, 5999)]
    sidx.close()


def test_add_remove_get_and_save(data: np.ndarray, queries: np.ndarray, tmp_path: Path) -> None:
    sidx = build(data[:4000], shards=4, path=tmp_path / "a", partition="kmeans")
    new_ids = sidx.add(data[4000:])
    assert new_ids.tolist() == list(range(4000, 6000)) and len(sidx) == 6000
    np.testing.assert_allclose(sidx.get([4001, 5]), _unit(data[[4001, 5]]), rtol=1e-5)
    found, _ = sidx.search(data[4500], k=1)
    assert found[0, 0] == 4500
    with pytest.raises(KeyError, match="4500"):
        sidx.add(data[:1], ids=[4500])
    with pytest.raises(KeyError, match="123456"):
        sidx.remove([3, 123456])
    assert 3 in sidx and len(sidx) == 6000  # the failed remove changed nothing
    sidx.remove([3, 4500])
    assert 3 not in sidx and 4500 not in sidx and len(sidx) == 5998
    assert sidx.search(data[4500], k=1)[0][0, 0] != 4500
    sidx.save()
    sidx.close()
    reopened = ShardedIndex.open(tmp_path / "a")
    assert len(reopened) == 5998 and 4500 not in reopened
    assert reopened.add(data[:1]).tolist() == [6000]  # next id survives save / open
    reopened.close()


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------- inputs


def test_read_only_arrays_and_files_give_the_same_index(
    data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    reference = build(data, shards=3, path=tmp_path / "ref")
    expected = reference.search(queries, k=10)[0]
    reference.close()
    frozen = data.copy()
    frozen.setflags(write=False)
    np.save(tmp_path / "v.npy", data)
    fvecs = np.hstack([np.full((data.shape[0], 1), DIM, np.int32).view(np.float32), data])
    fvecs.tofile(tmp_path / "v.fvecs")
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.FixedSizeListArray.from_arrays(pa.array(data.ravel()), DIM)
    pq.write_table(pa.table({"embedding": column}), tmp_path / "v.parquet", row_group_size=1500)
    inputs = {
        "read-only": frozen,
        "list": [data[:2500], data[2500:]],
        "npy": tmp_path / "v.npy",
        "npy-mmap": np.load(tmp_path / "v.npy", mmap_mode="r"),
        "fvecs": tmp_path / "v.fvecs",
        "parquet": str(tmp_path / "v.parquet"),
    }
    for name, source in inputs.items():
        sidx = build(source, shards=3, path=tmp_path / name)
        np.testing.assert_array_equal(sidx.search(queries, k=10)[0], expected, err_msg=name)
        sidx.close()


def test_explicit_ids_are_global(data: np.ndarray, tmp_path: Path) -> None:
    ids = np.arange(data.shape[0], dtype=np.int64) * 7 + 1000
    sidx = build(data, ids=ids, shards=4, path=tmp_path / "i")
    found, _ = sidx.search(data[[10, 20]], k=1)
    assert found[:, 0].tolist() == [1070, 1140]
    np.testing.assert_array_equal(sidx.ids(), ids)
    sidx.close()


def test_built_from_a_collection_keeps_the_encoder_contract(tmp_path: Path) -> None:
    encoder = matry.Encoder.default()
    texts = [f"note number {i} about {t}" for i, t in enumerate(["cats", "rates", "bread"] * 20)]
    collection = matry.Collection(encoder)
    collection.add(texts)
    sidx = build(collection, shards=2, path=tmp_path / "col")
    assert sidx.fingerprint == collection.fingerprint
    assert sidx.manifest["collection"]["fingerprint"] == collection.fingerprint
    ids, _ = sidx.search_texts(["note number 7 about rates"], encoder, k=3)
    expected = [hit.id for hit in collection.search("note number 7 about rates", k=3)]
    assert ids[0].tolist() == expected
    sidx.close()
    other = matry.Encoder.from_dir(encoder.model_path.parent, pooling="cls", name="minilm-cls")
    reopened = ShardedIndex.open(tmp_path / "col")
    with pytest.raises(matry.ContractError, match="minilm-cls"):
        reopened.search_texts(["x"], other)
    reopened.close()


def test_import_matry_distributed_imports_no_engine() -> None:
    code = (
        "import sys, numpy as np, matry, matry.distributed as d\n"
        "s = d.build(np.eye(4, dtype=np.float32) + 1, shards=2, path=sys.argv[1])\n"
        "s.search(np.ones(4, np.float32))\n"
        "bad = [m for m in ('ray', 'dask', 'distributed', 'pandas') if m in sys.modules]\n"
        "print(bad)\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run(
            [sys.executable, "-c", code, str(Path(directory) / "x")],
            capture_output=True,
            text=True,
            check=True,
        )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- failures


def test_missing_or_corrupt_shard_file_raises_naming_it(data: np.ndarray, tmp_path: Path) -> None:
    build(data, shards=3, path=tmp_path / "x").close()
    shard = tmp_path / "x" / "shard-0001.matry"
    original = shard.read_bytes()
    shard.unlink()
    with pytest.raises(matry.CorruptIndexError, match="shard-0001.matry is missing"):
        ShardedIndex.open(tmp_path / "x")
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # payload: the header still reads, the CRC fails
    shard.write_bytes(bytes(damaged))
    with pytest.raises(matry.CorruptIndexError, match="shard-0001.matry"):
        ShardedIndex.open(tmp_path / "x")
    shard.write_bytes(original[:100])
    with pytest.raises(matry.CorruptIndexError, match="shard-0001.matry"):
        ShardedIndex.open(tmp_path / "x")
    shard.write_bytes(original)
    ShardedIndex.open(tmp_path / "x").close()
    manifest = tmp_path / "x" / "manifest.json"
    manifest.write_text(manifest.read_text()[:-20])
    with pytest.raises(matry.CorruptIndexError, match="manifest.json"):
        ShardedIndex.open(tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="manifest"):
        ShardedIndex.open(tmp_path / "nothing-here")


def test_tampered_centroids_are_refused(data: np.ndarray, tmp_path: Path) -> None:
    build(data, shards=2, path=tmp_path / "k", partition="kmeans").close()
    centroids = tmp_path / "k" / "centroids.npy"
    np.save(centroids, np.load(centroids) * 2)
    with pytest.raises(matry.CorruptIndexError, match="centroids.npy"):
        ShardedIndex.open(tmp_path / "k")


def test_failed_build_leaves_nothing(data: np.ndarray, tmp_path: Path) -> None:
    bad = data.copy()
    bad[4321, 3] = np.nan
    with pytest.raises(ValueError, match="row 4321"):
        build(bad, shards=3, path=tmp_path / "f")
    assert not (tmp_path / "f").exists() or not list((tmp_path / "f").iterdir())
    build(data, shards=2, path=tmp_path / "g").close()
    with pytest.raises(FileExistsError, match="overwrite"):
        build(data, shards=2, path=tmp_path / "g")
    build(data[:100], shards=3, path=tmp_path / "g", overwrite=True).close()
    assert len(ShardedIndex.open(tmp_path / "g")) == 100


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"shards": 0}, "shards"),
        ({"partition": "range"}, "partition"),
        ({"engine": "spark"}, "engine"),
        ({"threads_per_shard": 0}, "threads_per_shard"),
        ({"M": 1}, "M"),
        ({"metric": "dot"}, "metric"),
        ({"ids": [1, 2, 3]}, "ids"),
        ({"timeout": -1}, "timeout"),
    ],
)
def test_bad_build_arguments_name_the_argument(
    kwargs: dict[str, object], match: str, data: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=match):
        build(data, path=tmp_path / "b", **kwargs)  # type: ignore[arg-type]


def test_bad_search_arguments_name_the_argument(
    data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    sidx = build(data, shards=2, path=tmp_path / "s")
    with pytest.raises(ValueError, match="queries"):
        sidx.search(np.ones((2, DIM + 1), np.float32))
    with pytest.raises(ValueError, match="queries: row 1"):
        sidx.search(np.array([np.ones(DIM), np.full(DIM, np.nan)], np.float32))
    with pytest.raises(ValueError, match="shard_k"):
        sidx.search(queries, k=5, shard_k=6)
    with pytest.raises(ValueError, match="probe"):
        sidx.search(queries, probe=1)
    with pytest.raises(ValueError, match="k"):
        sidx.search(queries, k=0)
    with pytest.raises(ValueError, match="ids"):
        build(data, ids=np.zeros(data.shape[0], np.int64), path=tmp_path / "dup")
    with pytest.raises(ValueError, match="vectors"):
        sidx.add(np.ones((1, 3), np.float32))
    ids, dist = sidx.search(queries[:2], k=data.shape[0] + 5, ef=10)
    assert (ids[:, -5:] == -1).all() and np.isinf(dist[:, -5:]).all()
    sidx.close()
