"""``build`` and ``ShardedIndex``: the driver side of a sharded index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from ..errors import ContractError, CorruptIndexError
from ..index import DEFAULT_EF, Index, _as_ids, _as_rows, _positive_int
from ._core import (
    PARTITIONS,
    IndexParams,
    PartitionSpec,
    block_ids,
    block_length,
    check_block,
    contiguous_bounds,
    hash_ids,
    merge_topk,
    nearest_centroids,
    sample_block,
    shard_file_name,
    train_kmeans,
    undersampled_shard_k,
)
from ._engine import ENGINES, Engine, LocalEngine
from ._manifest import (
    CENTROIDS_NAME,
    MANIFEST_NAME,
    read_manifest,
    write_centroids,
    write_manifest,
)
from ._sources import Source, attach_ids, check_unique, open_source, sample_plan

PathLike = Union[str, "os.PathLike[str]"]

#: Seconds a call on the shards may take before ShardUnavailableError (None: no limit).
DEFAULT_TIMEOUT = 300.0
#: Rows of the sample the k-means partition is trained on (at least 50 per shard).
KMEANS_SAMPLE = 20_000
_INDEX_PARAMS = ("seed", "prefix_dim", "quantization")
_COLLECTION_KEY = "collection"


def _make_engine(
    engine: str,
    threads_per_shard: int,
    timeout: float | None,
    client: Any,
    actors: int | None,
) -> Engine:
    if engine == "local":
        return LocalEngine(threads_per_shard, timeout)
    if engine == "ray":
        from ._ray import RayEngine

        return RayEngine(threads_per_shard, timeout, actors)
    if engine == "dask":
        from ._dask import DaskEngine

        return DaskEngine(threads_per_shard, timeout, client, actors)
    raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def _check_engine_args(
    engine: str, threads_per_shard: Any, timeout: Any, actors: Any
) -> tuple[int, float | None, int | None]:
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    threads = _positive_int(threads_per_shard, "threads_per_shard")
    actor_count = None if actors is None else _positive_int(actors, "actors")
    return threads, _check_timeout(timeout), actor_count


def _collection_vectors(collection: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Vectors, ids and the embedding contract of a :class:`matry.Collection`."""
    index = collection.index
    ids = index.ids()
    vectors = index.get(ids) if ids.size else np.zeros((0, index.dim), np.float32)
    record = collection._record()
    contract = {
        key: record[key]
        for key in ("fingerprint", "encoder", "dims", "metric", "normalized", "input_types")
    }
    return vectors, ids, contract


def build(
    data: Any,
    ids: npt.ArrayLike | None = None,
    shards: int = 8,
    engine: str = "local",
    path: PathLike = "./idx",
    metric: str = "cosine",
    M: int = 16,
    ef_construction: int = 200,
    partition: str = "hash",
    threads_per_shard: int = 1,
    *,
    column: str | None = None,
    id_column: str | None = None,
    ef: int = DEFAULT_EF,
    overwrite: bool = False,
    timeout: float | None = DEFAULT_TIMEOUT,
    client: Any = None,
    actors: int | None = None,
    seed: int = 0,
    **index_params: Any,
) -> ShardedIndex:
    """Partitions ``data`` into ``shards``, builds one matry index per shard in parallel on
    ``engine``, writes them and ``manifest.json`` under ``path``, and returns them placed.

    Args:
        data: a float [n, dim] numpy array (or memory map), a list of such arrays, a path to an
            ``.npy`` / ``.fvecs`` / ``.parquet`` file (read block by block on the workers), a
            ``ray.data.Dataset`` (engine "ray"; ``column`` names the vector column, optional
            ``id_column`` the ids), a ``dask.array`` (engine "dask"), or a
            :class:`matry.Collection` (its vectors, ids and encoder contract).
        ids: int64 ids, one per row; default 0..n-1.
        shards: number of shards.
        engine: "local" (this process, a thread pool), "ray" or "dask".
        path: directory for ``shard-XXXX.matry`` files and ``manifest.json``.
        partition: "hash" (by id), "contiguous" (row ranges) or "kmeans" (nearest of
            ``shards`` k-means centroids trained on a seeded sample; searches can then be
            routed to the ``probe`` nearest shards).
        threads_per_shard: threads of each shard's build and search (CPUs reserved per shard
            under Ray).
        metric, M, ef_construction, ef, seed, **index_params: as for :class:`matry.Index`
            (``prefix_dim``, ``quantization``); every shard gets the same parameters.
        overwrite: replace an existing sharded index at ``path``.
        timeout: seconds a call on the shards may take before ShardUnavailableError.
        client: the ``distributed.Client`` for engine "dask" (default: the current one).
        actors: Ray/Dask serving actors (default: one per shard, at most the CPUs (Ray) or
            workers (Dask) available); each serves the shards ``s % actors``.

    A failed build leaves no manifest (shard files it wrote are removed), so nothing opens it.
    """
    contract = None
    if type(data).__name__ == "Collection" and hasattr(data, "fingerprint"):
        if ids is not None:
            raise ValueError("ids: a Collection brings its own ids")
        if metric != data.metric:
            metric = data.metric
        data, ids, contract = _collection_vectors(data)
    shards = _positive_int(shards, "shards")
    if partition not in PARTITIONS:
        raise ValueError(f"partition: expected one of {PARTITIONS}, got {partition!r}")
    threads, timeout_value, actor_count = _check_engine_args(
        engine, threads_per_shard, timeout, actors
    )
    unknown = sorted(set(index_params) - set(_INDEX_PARAMS))
    if unknown:
        raise TypeError(f"unexpected index parameters {unknown}; accepted: {_INDEX_PARAMS}")
    directory = Path(os.fspath(path))
    if (directory / MANIFEST_NAME).exists() and not overwrite:
        raise FileExistsError(f"path: {directory} already holds a sharded index (overwrite=True)")
    source = open_source(data, engine, column, id_column)
    runner = _make_engine(engine, threads, timeout_value, client, actor_count)
    try:
        if source.kind == "ray":
            _fill_ray_blocks(runner, source, id_column, ids)
        elif id_column is not None:
            raise ValueError("id_column: only for a ray.data.Dataset (pass ids= otherwise)")
        attach_ids(source, ids)
        if ids is not None or id_column is not None:
            check_unique(source)
        if source.count < 1:
            raise ValueError("data: no rows")
        # Validates every parameter (a bad M or metric fails here, before any work).
        probe_index = Index(
            source.dim, metric, M=M, ef_construction=ef_construction, seed=seed, **index_params
        )
        probe_index.ef = ef
        params = IndexParams(
            dim=source.dim,
            metric=metric,
            M=M,
            ef_construction=ef_construction,
            seed=seed,
            prefix_dim=index_params.get("prefix_dim"),
            quantization=index_params.get("quantization"),
            ef=probe_index.ef,
        )
        spec = _partition_spec(runner, source, partition, shards, metric, seed)
        directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            # The old index stops being one before any of its files is replaced.
            (directory / MANIFEST_NAME).unlink(missing_ok=True)
            _remove_stale_shards(directory)
        paths = [str(directory / shard_file_name(s)) for s in range(shards)]
        try:
            parts = runner.split(source.blocks, spec, source.dim)
            infos = runner.build(params, paths, parts)
            manifest = _new_manifest(params, spec, paths, infos, source.count, contract)
            if spec.centroids is not None:
                manifest["partition"]["centroids_sha256"] = write_centroids(
                    directory, spec.centroids
                )
            write_manifest(directory, manifest)
        except BaseException:
            for file in paths:
                if os.path.exists(file):
                    os.remove(file)
            raise
        runner.place(paths, mmap=False)
    except BaseException:
        runner.close()
        raise
    return ShardedIndex(directory, read_manifest(directory), runner, timeout_value)


def _remove_stale_shards(directory: Path) -> None:
    for file in [*directory.glob("shard-*.matry"), directory / CENTROIDS_NAME]:
        file.unlink(missing_ok=True)


def _fill_ray_blocks(runner: Engine, source: Source, id_column: str | None, ids: Any) -> None:
    """Sizes (and ids from ``id_column``) of Ray Data blocks, computed on the workers."""
    from ._core import arrow_vectors  # noqa: F401  (imported so workers resolve the module)

    lengths = runner.map_blocks(block_length, source.blocks, [(b.column,) for b in source.blocks])
    start = 0
    for block, rows in zip(source.blocks, lengths):
        block.first_row, block.rows = start, int(rows)
        start += int(rows)
    source.blocks = [block for block in source.blocks if block.rows]
    if not source.blocks:
        raise ValueError("data: the dataset has no rows")
    first = runner.map_blocks(
        sample_block, source.blocks[:1], [(source.blocks[0].column, np.arange(1), 0)]
    )
    source.dim = int(np.asarray(first[0]).reshape(1, -1).shape[1])
    if id_column is not None:
        if ids is not None:
            raise ValueError("ids: pass either ids or id_column, not both")
        found = runner.map_blocks(block_ids, source.blocks, [(id_column,)] * len(source.blocks))
        for block, block_id_array in zip(source.blocks, found):
            block.ids = np.asarray(block_id_array, dtype=np.int64)


def _partition_spec(
    runner: Engine, source: Source, partition: str, shards: int, metric: str, seed: int
) -> PartitionSpec:
    if partition == "hash":
        return PartitionSpec("hash", shards, metric)
    if partition == "contiguous":
        return PartitionSpec("contiguous", shards, metric, contiguous_bounds(source.count, shards))
    sample_size = max(KMEANS_SAMPLE, 50 * shards)
    plan = sample_plan(source, sample_size, seed)
    chosen = [(block, offsets) for block, offsets in zip(source.blocks, plan) if offsets.size]
    samples = runner.map_blocks(
        sample_block,
        [block for block, _ in chosen],
        [(block.column, offsets, source.dim) for block, offsets in chosen],
    )
    sample = np.concatenate([np.asarray(s, dtype=np.float32) for s in samples], axis=0)
    check_block(sample, metric, 0, "data (k-means sample)")
    centroids = train_kmeans(sample, shards, metric, seed)
    return PartitionSpec("kmeans", shards, metric, centroids=centroids)


def _new_manifest(
    params: IndexParams,
    spec: PartitionSpec,
    paths: list[str],
    infos: list[dict[str, Any]],
    count: int,
    contract: dict[str, Any] | None,
) -> dict[str, Any]:
    partition: dict[str, Any] = {"kind": spec.kind}
    if spec.kind == "hash":
        partition["hash"] = "splitmix64(id + 0x9E3779B97F4A7C15) mod shards"
    elif spec.kind == "contiguous":
        partition["row_bounds"] = list(spec.bounds)
    else:
        partition["centroids"] = CENTROIDS_NAME
    shards = []
    for path, info in zip(paths, infos):
        entry: dict[str, Any] = {"file": os.path.basename(path)}
        entry.update(info)
        shards.append(entry)
    max_ids = [int(entry["max_id"]) for entry in shards if entry.get("max_id") is not None]
    return {
        "dim": params.dim,
        "metric": params.metric,
        "params": {
            "M": params.M,
            "ef_construction": params.ef_construction,
            "seed": params.seed,
            "prefix_dim": params.prefix_dim,
            "quantization": params.quantization,
            "ef": params.ef,
        },
        "partition": partition,
        "count": count,
        "next_id": (max(max_ids) + 1) if max_ids else 0,
        "shards": shards,
        _COLLECTION_KEY: contract,
    }


class ShardedIndex:
    """A set of matry indexes (shards) placed on an engine, searched as one index.

    Made by :func:`build` or :meth:`open`. ``search`` broadcasts the queries (or routes them to
    the ``probe`` nearest shards under a k-means partition), asks each shard for its top
    ``shard_k`` and merges them exactly (:func:`merge_topk`). Ids are the global int64 ids.
    """

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        engine: Engine,
        timeout: float | None,
    ) -> None:
        self._directory = directory
        self._manifest = manifest
        self._engine = engine
        self._timeout = timeout
        self._centroids: np.ndarray | None = manifest.pop("_centroids", None)
        self._ef = int(manifest["params"].get("ef", DEFAULT_EF))
        self._counts = [int(entry["count"]) for entry in manifest["shards"]]
        self._next_id = int(manifest.get("next_id", sum(self._counts)))
        self._closed = False

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: PathLike,
        engine: str = "local",
        mmap: bool = False,
        threads_per_shard: int = 1,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        client: Any = None,
        actors: int | None = None,
    ) -> ShardedIndex:
        """Reads ``path/manifest.json``, checks every shard file and places the shards on
        ``engine`` (each worker loads its shard from its path; ``mmap=True`` maps them
        read-only). A missing or corrupt shard file raises CorruptIndexError naming it."""
        if not isinstance(mmap, bool):
            raise ValueError(f"mmap: expected True or False, got {mmap!r}")
        threads, timeout_value, actor_count = _check_engine_args(
            engine, threads_per_shard, timeout, actors
        )
        directory = Path(os.fspath(path))
        manifest = read_manifest(directory)
        runner = _make_engine(engine, threads, timeout_value, client, actor_count)
        paths = [str(directory / entry["file"]) for entry in manifest["shards"]]
        try:
            runner.place(paths, mmap=mmap)
            counts = runner.call("ids", {s: () for s in range(len(paths))})
        except BaseException:
            runner.close()
            raise
        for shard, entry in enumerate(manifest["shards"]):
            if counts[shard].size != entry["count"]:
                runner.close()
                raise CorruptIndexError(
                    f"shard {shard}: shard file {paths[shard]} holds {counts[shard].size} "
                    f"vectors, the manifest says {entry['count']}"
                )
        return cls(directory, manifest, runner, timeout_value)

    # -- properties ---------------------------------------------------------------------

    @property
    def shards(self) -> int:
        """Number of shards."""
        return len(self._counts)

    @property
    def shard_sizes(self) -> list[int]:
        return list(self._counts)

    @property
    def path(self) -> Path:
        return self._directory

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def metric(self) -> str:
        return str(self._manifest["metric"])

    @property
    def partition(self) -> str:
        return str(self._manifest["partition"]["kind"])

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest as last written."""
        import copy

        return copy.deepcopy(self._manifest)

    @property
    def fingerprint(self) -> str | None:
        """Encoder fingerprint when built from a Collection, else None."""
        contract = self._manifest.get(_COLLECTION_KEY)
        return None if not contract else str(contract["fingerprint"])

    @property
    def ef(self) -> int:
        """Default per-shard search beam width (saved in the manifest by ``save``)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self._ef = _positive_int(value, "ef")

    def __len__(self) -> int:
        return sum(self._counts)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)) or id < 0:
            return False
        return bool(self._contains(np.asarray([id], dtype=np.int64))[0])

    def __repr__(self) -> str:
        return (
            f"matry.distributed.ShardedIndex(path={str(self._directory)!r}, "
            f"engine={self.engine!r}, shards={self.shards}, partition={self.partition!r}, "
            f"dim={self.dim}, metric={self.metric!r}, len={len(self)})"
        )

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the sharded index is closed (ShardedIndex.open it again)")

    # -- search -------------------------------------------------------------------------

    def _shard_k(self, shard_k: int | str | None, k: int, searched: int) -> int:
        if shard_k is None:
            return k
        if shard_k == "auto":
            if self.partition == "kmeans":
                return k  # near neighbours concentrate in few shards: never undersample
            return undersampled_shard_k(k, searched)
        value = _positive_int(shard_k, "shard_k")
        if value > k:
            raise ValueError(f"shard_k: must be <= k ({k}), got {value}")
        return value

    def _routes(self, queries: np.ndarray, probe: int | None) -> dict[int, np.ndarray | None]:
        """Shards to ask and which query rows each gets (None: all)."""
        if probe is None:
            return {s: None for s in range(self.shards)}
        probe = _positive_int(probe, "probe")
        if self._centroids is None:
            raise ValueError(
                f"probe: routing needs partition='kmeans' (this index is {self.partition!r})"
            )
        probe = min(probe, self.shards)
        if probe == self.shards:
            return {s: None for s in range(self.shards)}
        nearest = nearest_centroids(queries, self._centroids, self.metric, probe)
        routes: dict[int, np.ndarray | None] = {}
        for s in range(self.shards):
            rows = np.flatnonzero((nearest == s).any(axis=1))
            if rows.size:
                routes[s] = rows
        return routes

    def search(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        ef: int | None = None,
        shard_k: int | str | None = None,
        probe: int | None = None,
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest neighbours over all shards: (ids int64 [n, k], distances
        float32 [n, k]), ascending, padded with -1 / inf.

        Args:
            ef: per-shard beam width (default :attr:`ef`), raised to ``shard_k``.
            shard_k: results asked of each shard: None = k (the merge then loses nothing
                that the shards found), an int <= k, or "auto" =
                :func:`undersampled_shard_k` (hash and contiguous partitions; expected recall
                cost :func:`undersampling_loss`).
            probe: k-means partitions only: search each query on its ``probe`` nearest shards
                (None: all).
            num_threads: threads per shard (default ``threads_per_shard``).
        """
        self._check_open()
        rows = _as_rows(queries, self.dim, "queries")
        check_block(rows, "l2", 0, "queries")
        k = _positive_int(k, "k")
        ef_value = self._ef if ef is None else _positive_int(ef, "ef")
        threads = self._threads(num_threads)
        routes = self._routes(rows, probe)
        depth = self._shard_k(shard_k, k, len(routes))
        shared = self._engine.put(rows)
        results = self._engine.call(
            "search",
            {s: (depth, max(ef_value, depth), threads, route) for s, route in routes.items()},
            (shared,),
        )
        return self._merge(rows.shape[0], k, depth, routes, results)

    def _merge(
        self,
        n: int,
        k: int,
        depth: int,
        routes: dict[int, np.ndarray | None],
        results: dict[int, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        lists = []
        for shard in sorted(results):
            ids, distances = results[shard]
            route = routes.get(shard)
            if route is not None:  # routed: scatter back to the full query batch
                full_ids = np.full((n, depth), -1, np.int64)
                full_distances = np.full((n, depth), np.inf, np.float32)
                full_ids[route], full_distances[route] = ids, distances
                ids, distances = full_ids, full_distances
            lists.append((ids, distances))
        return merge_topk(lists, k)

    def exact_search(
        self, queries: npt.ArrayLike, k: int = 10, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest neighbours over all shards (brute force per shard, exact merge)."""
        self._check_open()
        rows = _as_rows(queries, self.dim, "queries")
        check_block(rows, "l2", 0, "queries")
        k = _positive_int(k, "k")
        threads = self._threads(num_threads)
        shared = self._engine.put(rows)
        results = self._engine.call(
            "exact_search", {s: (k, threads) for s in range(self.shards)}, (shared,)
        )
        return merge_topk([results[s] for s in sorted(results)], k)

    def search_texts(
        self, texts: Any, encoder: Any, k: int = 10, **search_args: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes ``texts`` as queries with ``encoder`` and searches; the encoder must be the
        one recorded in the manifest (built from a Collection), else ContractError."""
        contract = self._manifest.get(_COLLECTION_KEY)
        if not contract:
            raise ContractError("this sharded index was not built from a Collection")
        dims = int(contract["dims"])
        from ..encoder import fingerprints_match

        own = encoder.fingerprint_for(dims) if dims <= encoder.dim else encoder.fingerprint
        if not fingerprints_match(own, contract["fingerprint"]):
            raise ContractError(
                f"{self._directory} holds vectors of encoder {contract['fingerprint']!r}, "
                f"but the encoder given is {own!r}"
            )
        vectors = encoder.encode(texts, input_type="query", dims=dims)
        return self.search(vectors, k=k, **search_args)

    def _threads(self, num_threads: int | None) -> int:
        if num_threads is None:
            return self._engine.threads_per_shard
        return _positive_int(num_threads, "num_threads", minimum=0)

    # -- contents -----------------------------------------------------------------------

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        found = self._engine.call("contains", {s: (ids,) for s in range(self.shards)})
        present: np.ndarray = np.logical_or.reduce([found[s] for s in sorted(found)])
        return present

    def ids(self) -> np.ndarray:
        """Live ids of all shards, ascending (int64)."""
        self._check_open()
        found = self._engine.call("ids", {s: () for s in range(self.shards)})
        return np.sort(np.concatenate([found[s] for s in sorted(found)]))

    def get(self, ids: npt.ArrayLike) -> np.ndarray:
        """Stored vectors of ``ids`` (KeyError for an unknown id), float32 [n, dim]."""
        self._check_open()
        id_array = _as_ids(ids)
        owners = self._owners(id_array)
        rows = np.empty((id_array.size, self.dim), np.float32)
        calls = {s: (id_array[owners == s],) for s in range(self.shards) if np.any(owners == s)}
        for shard, shard_rows in self._engine.call("get", calls).items():
            rows[owners == shard] = shard_rows
        return rows

    def _owners(self, ids: np.ndarray) -> np.ndarray:
        """Shard of each existing id; KeyError naming the first unknown one."""
        owners = np.full(ids.size, -1, np.int64)
        if self.partition == "hash":
            owners = hash_ids(ids, self.shards)
            found = self._engine.call(
                "contains",
                {s: (ids[owners == s],) for s in range(self.shards) if np.any(owners == s)},
            )
            present = np.zeros(ids.size, bool)
            for shard, mask in found.items():
                present[owners == shard] = mask
            owners[~present] = -1
        else:
            found = self._engine.call("contains", {s: (ids,) for s in range(self.shards)})
            for shard in sorted(found):
                owners[found[shard]] = shard
        missing = np.flatnonzero(owners < 0)
        if missing.size:
            raise KeyError(f"ids: id {int(ids[missing[0]])} is not in the index")
        return owners

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike | None = None) -> np.ndarray:
        """Adds vectors to the shards the partition assigns them (hash: by id; k-means: the
        nearest centroid; contiguous: the last shard, like a growing segment); returns the
        ids. ``ids`` default to consecutive ids after the largest ever used. Everything is
        checked first (dimension, NaN, ip norms, duplicates, existing ids): a failed add
        changes nothing. Call :meth:`save` to write the shards and the manifest."""
        self._check_open()
        rows = _as_rows(vectors, self.dim, "vectors")
        check_block(rows, self.metric, 0, "vectors")
        if ids is None:
            id_array = np.arange(self._next_id, self._next_id + rows.shape[0], dtype=np.int64)
        else:
            id_array = _as_ids(ids)
            if id_array.size != rows.shape[0]:
                raise ValueError(
                    f"ids: expected {rows.shape[0]} ids (one per row of vectors), "
                    f"got {id_array.size}"
                )
            unique, counts = np.unique(id_array, return_counts=True)
            if unique.size != id_array.size:
                raise ValueError(f"ids: id {int(unique[np.argmax(counts > 1)])} appears twice")
            present = self._contains(id_array)
            if present.any():
                raise KeyError(f"ids: id {int(id_array[np.argmax(present)])} already exists")
        if self.partition == "hash":
            owners = hash_ids(id_array, self.shards)
        elif self.partition == "kmeans":
            assert self._centroids is not None
            owners = nearest_centroids(rows, self._centroids, self.metric)[:, 0]
        else:
            owners = np.full(id_array.size, self.shards - 1, np.int64)
        calls = {
            s: (np.ascontiguousarray(rows[owners == s]), id_array[owners == s], self._threads(None))
            for s in range(self.shards)
            if np.any(owners == s)
        }
        for shard, count in self._engine.call("add", calls).items():
            self._counts[shard] = int(count)
        self._next_id = max(self._next_id, int(id_array.max()) + 1)
        return id_array

    def remove(self, ids: npt.ArrayLike) -> None:
        """Removes ids (KeyError for an unknown one; nothing changes then)."""
        self._check_open()
        id_array = _as_ids(ids)
        if id_array.size == 0:
            return
        if np.unique(id_array).size != id_array.size:
            raise ValueError("ids: an id appears more than once")
        owners = self._owners(id_array)
        calls = {s: (id_array[owners == s],) for s in range(self.shards) if np.any(owners == s)}
        for shard, count in self._engine.call("remove", calls).items():
            self._counts[shard] = int(count)

    def memory_bytes(self) -> list[int]:
        """Bytes held by each shard's index (on its worker)."""
        self._check_open()
        found = self._engine.call("memory", {s: () for s in range(self.shards)})
        return [int(found[s]) for s in range(self.shards)]

    # -- persistence --------------------------------------------------------------------

    def save(self) -> None:
        """Writes every shard (atomically, each to its own file) and then the manifest, with
        the current sizes, id ranges and :attr:`ef`."""
        self._check_open()
        paths = {
            s: (str(self._directory / entry["file"]),)
            for s, entry in enumerate(self._manifest["shards"])
        }
        infos = self._engine.call("save", paths)
        manifest = self._manifest
        for shard, entry in enumerate(manifest["shards"]):
            entry.update(infos[shard])
        manifest["params"]["ef"] = self._ef
        manifest["count"] = len(self)
        manifest["next_id"] = self._next_id
        write_manifest(self._directory, {k: v for k, v in manifest.items() if k != "format"})

    def close(self) -> None:
        """Releases the engine's actors (or in-process shards). The files stay."""
        if not self._closed:
            self._closed = True
            self._engine.close()

    def engine_hosts(self) -> list[Any]:
        """The engine's host objects (Ray actor handles, Dask actors, local ShardHosts)."""
        return self._engine.host_handles()

    def delete(self) -> None:
        """Closes the index and removes its directory."""
        self.close()
        shutil.rmtree(self._directory, ignore_errors=True)
