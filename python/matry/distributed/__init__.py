"""Sharded build and search: partition, one matry index per shard, fan out, exact merge.

    from matry.distributed import build, ShardedIndex
    sidx = build(vectors, shards=8, engine="local", path="./idx", partition="hash")
    ids, dist = sidx.search(queries, k=10, ef=64)          # global ids, ascending, -1 / inf pad
    sidx.close()
    sidx = ShardedIndex.open("./idx", engine="ray")         # reads manifest.json, places shards

Engines: "local" (this process, a thread pool; needs nothing), "ray" (tasks build the shards,
actors serve them; ``pip install 'matry[ray]'``) and "dask" (futures and actors on a
``distributed.Client``; ``pip install 'matry[dask]'``). Neither Ray nor Dask is imported until
an engine needs it. On disk a sharded index is a directory of ``shard-XXXX.matry`` files (plain
matry indexes) and ``manifest.json``; shards travel between processes as paths. See
docs/scale-out.md for the design, the measurements and a sizing model.
"""

from __future__ import annotations

from ..errors import ShardUnavailableError
from ._core import (
    PARTITIONS,
    PartitionSpec,
    ShardHost,
    assign_shards,
    build_shard,
    hash_ids,
    merge_topk,
    search_shard,
    train_kmeans,
    undersampled_shard_k,
    undersampling_loss,
)
from ._engine import ENGINES
from ._manifest import FORMAT_VERSION, MANIFEST_NAME
from ._sharded import DEFAULT_TIMEOUT, ShardedIndex, build

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENGINES",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PARTITIONS",
    "PartitionSpec",
    "ShardHost",
    "ShardUnavailableError",
    "ShardedIndex",
    "assign_shards",
    "build",
    "build_shard",
    "hash_ids",
    "merge_topk",
    "search_shard",
    "train_kmeans",
    "undersampled_shard_k",
    "undersampling_loss",
]
