"""Engine-neutral pieces of sharding: partitioning, per-shard build and search, the exact merge.

Everything here is a plain function or a plain class over numpy arrays and matry indexes, so
the same code runs in-process (engine "local"), in Ray tasks and actors, and in Dask tasks and
actors; the engine adapters only move arguments and results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..index import Index

PARTITIONS = ("hash", "contiguous", "kmeans")
# Largest relative deviation of |x| from 1 accepted under metric "ip" (Index checks the same).
_UNIT_TOLERANCE = 1e-3
_KMEANS_ITERATIONS = 25
_HASH_SALT = np.uint64(0x9E3779B97F4A7C15)


# ------------------------------------------------------------------------------ partitioning


@dataclass(frozen=True)
class PartitionSpec:
    """How rows are assigned to shards (everything a worker needs, small enough to ship).

    ``hash``: a 64-bit mix of the id modulo the shard count (deterministic, independent of row
    order). ``contiguous``: row positions split into ``shards`` equal ranges (``bounds`` holds
    the first row of each shard and the row count). ``kmeans``: the nearest of ``centroids``
    under the index metric.
    """

    kind: str
    shards: int
    metric: str
    bounds: tuple[int, ...] = ()
    centroids: np.ndarray | None = None


def hash_ids(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each id under partition "hash": splitmix64(id) mod shards (int64)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + _HASH_SALT
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(shards)).astype(np.int64)


def contiguous_bounds(count: int, shards: int) -> tuple[int, ...]:
    """First row of each of ``shards`` near-equal ranges of ``count`` rows, then ``count``."""
    return tuple(int(count * s // shards) for s in range(shards + 1))


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = rows / np.maximum(norms, np.finfo(np.float32).tiny)
    return unit


def nearest_centroids(
    rows: np.ndarray, centroids: np.ndarray, metric: str, count: int = 1
) -> np.ndarray:
    """The ``count`` nearest centroids of each row, nearest first (int64 [n, count]).

    cosine compares directions (centroids are unit vectors), ip the inner product, l2 the
    euclidean distance. Ties go to the lower centroid number, so every engine routes alike.
    """
    rows64 = np.asarray(rows, dtype=np.float64)
    c64 = np.asarray(centroids, dtype=np.float64)
    if metric == "l2":
        scores = (c64 * c64).sum(axis=1)[None, :] - 2.0 * rows64 @ c64.T
    else:
        if metric == "cosine":
            rows64 = _unit_rows(rows64)
        scores = -(rows64 @ c64.T)
    if count == 1:
        return np.asarray(np.argmin(scores, axis=1), dtype=np.int64).reshape(-1, 1)
    order = np.argsort(scores, axis=1, kind="stable")
    return np.ascontiguousarray(order[:, :count], dtype=np.int64)


def train_kmeans(sample: np.ndarray, shards: int, metric: str, seed: int = 0) -> np.ndarray:
    """k-means centroids (float32 [shards, dim]) of a sample, seeded k-means++ then Lloyd.

    Under cosine and ip the sample and the centroids are unit vectors (spherical k-means), so a
    shard holds the vectors of one region of the sphere. A cluster that empties is re-seeded on
    the sample row farthest from its centroid.
    """
    data = np.asarray(sample, dtype=np.float64)
    if data.shape[0] < shards:
        raise ValueError(
            f"partition: kmeans needs at least as many vectors as shards ({shards}), "
            f"got {data.shape[0]}"
        )
    spherical = metric != "l2"
    if spherical:
        data = _unit_rows(data)
    rng = np.random.default_rng(seed)
    centroids = np.empty((shards, data.shape[1]), dtype=np.float64)
    centroids[0] = data[rng.integers(data.shape[0])]
    closest = ((data - centroids[0]) ** 2).sum(axis=1)
    for c in range(1, shards):
        total = float(closest.sum())
        pick = (
            int(rng.choice(data.shape[0], p=closest / total))
            if total > 0
            else int(rng.integers(data.shape[0]))
        )
        centroids[c] = data[pick]
        closest = np.minimum(closest, ((data - centroids[c]) ** 2).sum(axis=1))
    assignment = np.full(data.shape[0], -1, dtype=np.int64)
    for _ in range(_KMEANS_ITERATIONS):
        new_assignment = nearest_centroids(data, centroids, "l2")[:, 0]
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for c in range(shards):
            members = data[assignment == c]
            if members.shape[0]:
                centroids[c] = members.mean(axis=0)
            else:
                distance = ((data - centroids[assignment]) ** 2).sum(axis=1)
                far = int(np.argmax(distance))
                centroids[c] = data[far]
                assignment[far] = c
        if spherical:
            centroids = _unit_rows(centroids)
    return np.ascontiguousarray(centroids, dtype=np.float32)


def assign_shards(
    spec: PartitionSpec, ids: np.ndarray, rows: np.ndarray | None, first_row: int = 0
) -> np.ndarray:
    """Shard number (int64) of each row of a block whose first row is ``first_row``."""
    if spec.kind == "hash":
        return hash_ids(ids, spec.shards)
    if spec.kind == "contiguous":
        positions = np.arange(first_row, first_row + ids.shape[0], dtype=np.int64)
        return np.searchsorted(np.asarray(spec.bounds[1:-1]), positions, side="right").astype(
            np.int64
        )
    if spec.kind == "kmeans":
        if rows is None or spec.centroids is None:
            raise ValueError("partition: kmeans routing needs the vectors and the centroids")
        return nearest_centroids(rows, spec.centroids, spec.metric)[:, 0]
    raise ValueError(f"partition: expected one of {PARTITIONS}, got {spec.kind!r}")


def check_block(rows: np.ndarray, metric: str, first_row: int, argument: str = "data") -> None:
    """NaN/inf, zero rows under cosine and non-unit rows under ip, named by their global row."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{argument}: row {first_row + row} contains NaN or inf")
    if metric in ("cosine", "ip"):
        norms = np.linalg.norm(rows.astype(np.float64, copy=False), axis=1)
        bad = (norms == 0) if metric == "cosine" else (np.abs(norms - 1.0) > _UNIT_TOLERANCE)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what = "is all zeros" if metric == "cosine" else f"has norm {norms[row]:.6f}, not 1"
            raise ValueError(
                f"{argument}: row {first_row + row} {what} (metric {metric!r}"
                + (", use metric='cosine' to normalize on the way in)" if metric == "ip" else ")")
            )


Part = tuple[np.ndarray, np.ndarray]  # (float32 rows [m, dim], int64 ids [m])


def split_block(
    block: Any,
    column: str | None,
    ids: np.ndarray,
    first_row: int,
    spec: PartitionSpec,
    dim: int,
) -> list[Part]:
    """Rows of one input block, split into one (rows, ids) part per shard (empty parts kept).

    ``block`` is an array (in memory, memory-mapped, or read-only from an object store) or a
    block descriptor of a file (see :func:`read_block`). Contiguous partitions get views, not
    copies, where a block falls inside one shard.
    """
    rows = as_block_rows(read_block(block, column), dim, first_row)
    if rows.shape[0] != ids.shape[0]:
        raise ValueError(
            f"ids: block at row {first_row} has {rows.shape[0]} rows but {ids.shape[0]} ids"
        )
    check_block(rows, spec.metric, first_row)
    shard_of = assign_shards(spec, ids, rows, first_row)
    parts: list[Part] = []
    if spec.kind == "contiguous":
        for s in range(spec.shards):
            start, stop = np.searchsorted(shard_of, [s, s + 1])
            parts.append((rows[start:stop], ids[start:stop]))
        return parts
    order = np.argsort(shard_of, kind="stable")
    cuts = np.searchsorted(shard_of[order], np.arange(spec.shards + 1))
    for s in range(spec.shards):
        chosen = order[cuts[s] : cuts[s + 1]]
        parts.append((np.ascontiguousarray(rows[chosen]), ids[chosen]))
    return parts


def as_block_rows(values: Any, dim: int, first_row: int) -> np.ndarray:
    """A block as a float32 [n, dim] C-contiguous array, without a copy when it already is."""
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(
            f"data: block at row {first_row} has shape {array.shape}, expected [n, {dim}]"
        )
    if array.dtype.kind not in "iuf":
        raise ValueError(f"data: expected real numbers, got dtype {array.dtype}")
    if array.dtype == np.float32 and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


def read_block(block: Any, column: str | None = None) -> Any:
    """An in-memory block as is; a file block descriptor read from disk (on the worker).

    Descriptors: ``("npy", path, start, stop)`` (memory-mapped), ``("fvecs", path, start,
    stop, dim)`` (memory-mapped), ``("parquet", path, row_group, column)``. A Ray Data block
    (a dict of columns) gives its ``column``.
    """
    if isinstance(block, dict):
        return block[column]
    if not isinstance(block, tuple):
        return block
    kind = block[0]
    if kind == "npy":
        _, path, start, stop = block
        return np.load(path, mmap_mode="r", allow_pickle=False)[start:stop]
    if kind == "fvecs":
        _, path, start, stop, dim = block
        table = np.memmap(path, dtype="<f4", mode="r").reshape(-1, dim + 1)
        return np.ascontiguousarray(table[start:stop, 1:], dtype=np.float32)
    if kind == "parquet":
        _, path, row_group, column = block
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path).read_row_group(row_group, columns=[column])
        return arrow_vectors(table.column(column), f"{path} row group {row_group}")
    raise ValueError(f"data: unknown block descriptor {kind!r}")


def block_length(block: Any, column: str | None) -> int:
    return int(len(read_block(block, column)))


def block_ids(block: Any, id_column: str) -> np.ndarray:
    from ..index import _as_ids

    return _as_ids(np.asarray(block[id_column]), f"ids (column {id_column!r})")


def sample_block(block: Any, column: str | None, offsets: np.ndarray, dim: int) -> np.ndarray:
    """The rows at ``offsets`` of a block (for the k-means sample)."""
    if offsets.size == 0:
        return np.zeros((0, dim), np.float32)
    rows = read_block(block, column)
    return np.ascontiguousarray(np.asarray(rows)[offsets], dtype=np.float32)


def arrow_vectors(column: Any, where: str) -> np.ndarray:
    """A pyarrow list / fixed-size-list column of equal-length vectors as [n, dim]."""
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if array.null_count:
        raise ValueError(f"data: {where} has {array.null_count} null vectors")
    values = np.asarray(array.flatten().to_numpy(zero_copy_only=False))
    if len(array) == 0 or values.size % len(array):
        raise ValueError(f"data: {where} does not hold equal-length vectors")
    dim = values.size // len(array)
    lengths = np.asarray(array.value_lengths()) if hasattr(array, "value_lengths") else None
    if lengths is not None and not np.all(lengths == dim):
        raise ValueError(f"data: {where} does not hold equal-length vectors")
    return values.reshape(len(array), dim)


# ------------------------------------------------------------------------------ shards


@dataclass(frozen=True)
class IndexParams:
    """Build parameters of every shard (the keyword arguments of :class:`matry.Index`)."""

    dim: int
    metric: str
    M: int
    ef_construction: int
    seed: int
    prefix_dim: int | None
    quantization: str | None
    ef: int

    def new_index(self) -> Index:
        index = Index(
            self.dim,
            self.metric,
            M=self.M,
            ef_construction=self.ef_construction,
            seed=self.seed,
            prefix_dim=self.prefix_dim,
            quantization=self.quantization,
        )
        index.ef = self.ef
        return index


def shard_file_name(shard: int) -> str:
    return f"shard-{shard:04d}.matry"


def shard_info(index: Index) -> dict[str, Any]:
    """Size and id range of a shard as the manifest records them."""
    ids = index.ids()
    return {
        "count": int(ids.size),
        "min_id": int(ids[0]) if ids.size else None,
        "max_id": int(ids[-1]) if ids.size else None,
    }


def build_shard(
    params: IndexParams, path: str | None, threads: int, *parts: Part
) -> tuple[dict[str, Any], Index]:
    """Builds one shard from its parts, in order (one thread and a fixed seed: a fixed graph),
    saves it to ``path`` when given, and returns (its manifest entry, the index).

    Parts are added one by one, so a read-only part from an object store is used in place.
    """
    index = params.new_index()
    for rows, ids in parts:
        if rows.shape[0]:
            index.add(rows, ids, num_threads=threads)
    if path is not None:
        index.save(path)
    info = shard_info(index)
    if path is not None:
        info["bytes"] = os.path.getsize(path)
    return info, index


def build_shard_to_file(
    params: IndexParams, path: str, threads: int, *parts: Part
) -> dict[str, Any]:
    """:func:`build_shard` for remote tasks: only the manifest entry travels back."""
    return build_shard(params, path, threads, *parts)[0]


def search_shard(
    index: Index,
    queries: np.ndarray,
    k: int,
    ef: int | None,
    num_threads: int,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of one shard for ``queries`` (or only ``queries[rows]`` when routed)."""
    if rows is not None:
        if rows.size == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        queries = np.ascontiguousarray(queries[rows])
    if ef is not None:
        ef = max(ef, k)
    return index.search(queries, k=k, ef=ef, num_threads=num_threads)


class ShardHost:
    """Holds the shards placed on one worker (an actor, or in-process) and serves calls on them.

    Every call takes ``{shard: args}`` and returns ``{shard: result}``, so one actor can serve
    a group of shards and the driver speaks the same way to every engine.
    """

    def __init__(self) -> None:
        self._shards: dict[int, Index] = {}

    def pid(self) -> int:
        return os.getpid()

    def adopt(self, shard: int, index: Index) -> None:
        self._shards[shard] = index

    def load(self, shard: int, path: str, mmap: bool) -> int:
        from ..errors import CorruptIndexError

        try:
            index = Index.load(path, mmap=mmap)
        except CorruptIndexError as error:
            raise CorruptIndexError(f"shard {shard} ({path}): {error}") from None
        self._shards[shard] = index
        return len(index)

    def run(self, method: str, calls: dict[int, tuple[Any, ...]], *shared: Any) -> dict[int, Any]:
        """``{shard: method(shard's index, *shared, *args)}`` for each shard of ``calls``.

        ``shared`` arguments (the query batch) are sent once per host, not once per shard.
        """
        handler = getattr(self, f"_do_{method}", None)
        if handler is None:
            raise ValueError(f"unknown shard call {method!r}")
        missing = [shard for shard in calls if shard not in self._shards]
        if missing:
            raise KeyError(f"shards {missing} are not placed on this host")
        return {
            shard: handler(self._shards[shard], *shared, *args) for shard, args in calls.items()
        }

    @staticmethod
    def _do_search(index: Index, *args: Any) -> tuple[np.ndarray, np.ndarray]:
        return search_shard(index, *args)

    @staticmethod
    def _do_exact_search(
        index: Index, queries: np.ndarray, k: int, num_threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return index.exact_search(queries, k=k, num_threads=num_threads)

    @staticmethod
    def _do_add(index: Index, rows: np.ndarray, ids: np.ndarray, threads: int) -> int:
        index.add(rows, ids, num_threads=threads)
        return len(index)

    @staticmethod
    def _do_remove(index: Index, ids: np.ndarray) -> int:
        index.remove(ids)
        return len(index)

    @staticmethod
    def _do_contains(index: Index, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((int(i) in index for i in ids), dtype=bool, count=ids.size)

    @staticmethod
    def _do_get(index: Index, ids: np.ndarray) -> np.ndarray:
        return index.get(ids)

    @staticmethod
    def _do_ids(index: Index) -> np.ndarray:
        return index.ids()

    @staticmethod
    def _do_save(index: Index, path: str) -> dict[str, Any]:
        index.save(path)
        info = shard_info(index)
        info["bytes"] = os.path.getsize(path)
        return info

    @staticmethod
    def _do_memory(index: Index) -> int:
        return index.memory_bytes


# ------------------------------------------------------------------------------ merge


def merge_topk(
    results: Sequence[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact merge of per-shard top lists into the global top-``k`` of each query.

    ``results`` holds one (ids int64 [n, k_s], distances float32 [n, k_s]) pair per shard,
    padded with id -1 / distance inf. The output is sorted by distance, ties by id, padding
    last, so the same per-shard lists give the same ids on every engine. Nothing is lost:
    shards hold disjoint ids, and each of the global k nearest is among the k nearest of its
    own shard, so the union of per-shard exact top-k contains the global top-k.
    """
    if not results:
        raise ValueError("results: no shard results to merge")
    ids = np.concatenate([np.asarray(r[0], dtype=np.int64) for r in results], axis=1)
    distances = np.concatenate([np.asarray(r[1], dtype=np.float32) for r in results], axis=1)
    n, width = ids.shape
    tie_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((tie_key, distances), axis=-1)[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_distances = np.take_along_axis(distances, order, axis=1)
    if width < k:
        out_ids = np.concatenate([out_ids, np.full((n, k - width), -1, np.int64)], axis=1)
        out_distances = np.concatenate(
            [out_distances, np.full((n, k - width), np.inf, np.float32)], axis=1
        )
    out_distances[out_ids < 0] = np.inf
    return np.ascontiguousarray(out_ids), np.ascontiguousarray(out_distances)


def undersampled_shard_k(k: int, shards: int, z: float = 2.0) -> int:
    """Per-shard depth ``ceil(k/S + z·sqrt(k/S·(1 - 1/S)))``, at most k (Qdrant's, Lucene's).

    Under a hash partition the number of a query's true top-k held by one shard is
    Binomial(k, 1/S); this asks each shard for its mean plus ``z`` standard deviations.
    :func:`undersampling_loss` gives the expected share of the true top-k it cuts off.
    """
    if shards <= 1:
        return k
    mean = k / shards
    depth = math.ceil(mean + z * math.sqrt(mean * (1.0 - 1.0 / shards)))
    return max(1, min(k, depth))


def undersampling_loss(k: int, shards: int, shard_k: int) -> float:
    """Expected share of a query's exact top-k missed when each of ``shards`` hash shards
    returns only ``shard_k``: ``S · E[(X - shard_k)+] / k`` with X ~ Binomial(k, 1/S).

    It is exact for exact per-shard search over a uniformly random partition (the hash), and
    the recall cost of undersampling on top of an approximate search is at most about this.
    """
    if shards <= 1 or shard_k >= k:
        return 0.0
    p = 1.0 / shards
    excess = 0.0
    for x in range(shard_k + 1, k + 1):
        excess += (x - shard_k) * math.comb(k, x) * p**x * (1.0 - p) ** (k - x)
    return shards * excess / k
