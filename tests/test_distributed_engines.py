"""matry.distributed on real Ray and Dask runtimes: one shared Ray runtime (2 CPUs) and one
shared Dask LocalCluster (2 workers x 1 thread) for every test of the session that needs one.

Both live in this module only (module-scoped, and every engine test is here), so they are shut
down before later modules run: their background threads would disturb tests that count the
process's threads."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matry
import numpy as np
import pytest
from matry.distributed import ShardedIndex, build

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
dask_array = pytest.importorskip("dask.array")

# Ray and Dask log through their own machinery; warnings raised inside their import paths or
# background threads are theirs, not matry's.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

DIM = 16
SHARDS = 4


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, processes=True
    )
    client = distributed.Client(cluster, set_as_default=False)  # engines get it as client=
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, DIM)) * 3
    return (centres[rng.integers(20, size=5000)] + rng.normal(size=(5000, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def queries(data: np.ndarray) -> np.ndarray:
    return data[::50] + np.float32(0.05)


@pytest.fixture(scope="module")
def local_results(
    data: np.ndarray, queries: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    results = {}
    for partition in ("hash", "kmeans"):
        path = tmp_path_factory.mktemp(f"local-{partition}")
        with build(data, shards=SHARDS, path=path, partition=partition) as sidx:
            results[partition] = sidx.search(queries, k=10)
            results[partition + "-probe"] = (
                sidx.search(queries, k=10, probe=2) if partition == "kmeans" else results[partition]
            )
    return results


def _assert_same(
    found: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]
) -> None:
    np.testing.assert_array_equal(found[0], expected[0])
    np.testing.assert_array_equal(found[1], expected[1])


# ---------------------------------------------------------------------------- Ray


@pytest.mark.parametrize("partition", ["hash", "kmeans"])
def test_ray_gives_the_ids_of_local(
    ray_runtime: Any,
    partition: str,
    data: np.ndarray,
    queries: np.ndarray,
    local_results: dict[str, tuple[np.ndarray, np.ndarray]],
    tmp_path: Path,
) -> None:
    with build(data, shards=SHARDS, engine="ray", path=tmp_path, partition=partition) as sidx:
        assert sidx.engine == "ray" and len(sidx.engine_hosts()) == 2  # 2 CPUs, 1 per actor
        _assert_same(sidx.search(queries, k=10), local_results[partition])
        if partition == "kmeans":
            _assert_same(sidx.search(queries, k=10, probe=2), local_results["kmeans-probe"])
    with ShardedIndex.open(tmp_path, engine="ray", mmap=True) as reopened:
        _assert_same(reopened.search(queries, k=10), local_results[partition])


def test_ray_dataset_and_object_store_arrays(
    ray_runtime: Any,
    data: np.ndarray,
    queries: np.ndarray,
    local_results: dict[str, tuple[np.ndarray, np.ndarray]],
    tmp_path: Path,
) -> None:
    ids = np.arange(data.shape[0], dtype=np.int64)
    dataset = ray.data.from_items(
        [{"id": int(i), "vector": row} for i, row in zip(ids, data)]
    ).repartition(3)
    with build(dataset, shards=SHARDS, engine="ray", path=tmp_path / "ds", id_column="id") as sidx:
        assert len(sidx) == data.shape[0]
        _assert_same(sidx.search(queries, k=10), local_results["hash"])
    # Arrays read back from the object store are read-only; they are used as they are.
    stored = ray.get(ray.put(data))
    assert not stored.flags.writeable
    with build(stored, shards=SHARDS, engine="ray", path=tmp_path / "ro") as sidx:
        _assert_same(sidx.search(queries, k=10), local_results["hash"])
        sidx.add(ray.get(ray.put(data[:3] * 2)))
        assert len(sidx) == data.shape[0] + 3


def test_killed_ray_actor_raises_shard_unavailable(
    ray_runtime: Any, data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    sidx = build(data, shards=SHARDS, engine="ray", path=tmp_path, timeout=30)
    hosts = sidx.engine_hosts()
    ray.kill(hosts[1])
    del hosts
    started = time.monotonic()
    with pytest.raises(matry.ShardUnavailableError, match=r"shard-0001\.matry") as caught:
        sidx.search(queries, k=10)
    assert time.monotonic() - started < 20
    assert caught.value.shards == (1, 3) and caught.value.engine == "ray"
    sidx.close()
    # The files are intact: the index opens again on fresh actors.
    with ShardedIndex.open(tmp_path, engine="ray") as reopened:
        assert len(reopened) == data.shape[0]


def test_ray_open_of_a_corrupt_shard_names_it(
    ray_runtime: Any, data: np.ndarray, tmp_path: Path
) -> None:
    build(data, shards=2, engine="ray", path=tmp_path).close()
    shard = tmp_path / "shard-0001.matry"
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0x55
    shard.write_bytes(bytes(damaged))
    with pytest.raises(matry.CorruptIndexError, match=r"shard-0001\.matry"):
        ShardedIndex.open(tmp_path, engine="ray")
    # No actor is left holding CPUs after the failed open.
    with build(data, shards=2, engine="ray", path=tmp_path / "again") as sidx:
        assert len(sidx.engine_hosts()) == 2


# ---------------------------------------------------------------------------- Dask


@pytest.mark.parametrize("partition", ["hash", "kmeans"])
def test_dask_gives_the_ids_of_local(
    dask_client: Any,
    partition: str,
    data: np.ndarray,
    queries: np.ndarray,
    local_results: dict[str, tuple[np.ndarray, np.ndarray]],
    tmp_path: Path,
) -> None:
    with build(
        data, shards=SHARDS, engine="dask", client=dask_client, path=tmp_path, partition=partition
    ) as sidx:
        assert len(sidx.engine_hosts()) == 2
        _assert_same(sidx.search(queries, k=10), local_results[partition])
        if partition == "kmeans":
            _assert_same(sidx.search(queries, k=10, probe=2), local_results["kmeans-probe"])
    with ShardedIndex.open(tmp_path, engine="dask", client=dask_client) as reopened:
        _assert_same(reopened.search(queries, k=10), local_results[partition])


def test_dask_array_input(
    dask_client: Any,
    data: np.ndarray,
    queries: np.ndarray,
    local_results: dict[str, tuple[np.ndarray, np.ndarray]],
    tmp_path: Path,
) -> None:
    chunked = dask_array.from_array(data, chunks=(1700, 8))  # rows and columns split
    with build(chunked, shards=SHARDS, engine="dask", client=dask_client, path=tmp_path) as sidx:
        _assert_same(sidx.search(queries, k=10), local_results["hash"])
        sidx.remove([0, 1])
        assert len(sidx) == data.shape[0] - 2 and 0 not in sidx


def test_lost_dask_worker_raises_shard_unavailable(
    dask_client: Any, data: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    sidx = build(data, shards=SHARDS, engine="dask", client=dask_client, path=tmp_path, timeout=30)
    worker = sidx._engine.worker_of_host(0)  # type: ignore[attr-defined]
    pid = dask_client.run(os.getpid, workers=[worker])[worker]
    os.kill(pid, 9)  # the nanny restarts the worker; the actor and its shards are gone
    started = time.monotonic()
    with pytest.raises(matry.ShardUnavailableError, match=r"shard-0000\.matry") as caught:
        for _ in range(50):  # the scheduler notices the loss within moments
            sidx.search(queries, k=10)
            time.sleep(0.1)
    assert time.monotonic() - started < 25
    assert caught.value.shards == (0, 2) and caught.value.engine == "dask"
    sidx.close()
    dask_client.wait_for_workers(2, timeout=30)


def test_engine_without_a_dask_client_says_so(data: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="client"):
        build(data, shards=2, engine="dask", path=tmp_path)
    with pytest.raises(ValueError, match="engine='dask'"):
        build(dask_array.from_array(data), shards=2, engine="local", path=tmp_path)
