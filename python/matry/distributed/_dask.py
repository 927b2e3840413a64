"""Engine "dask": futures for the split and the build, one actor per worker for serving.

Needs a ``distributed.Client`` (passed as ``client=``, else the current default client);
``dask`` and ``distributed`` are imported when this engine is created, never by
``import matry``. Actors are pinned one per worker (at most one per shard), each serving the
shards ``s`` with ``s % actors == actor``. Dask does not reserve CPUs for actors: give each
worker ``threads_per_worker >= threads_per_shard`` so a shard's threads fit its worker.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CorruptIndexError
from ._core import IndexParams, PartitionSpec, ShardHost, build_shard_to_file, split_block
from ._engine import Engine
from ._sources import Block

# Exceptions raised by matry's own calls on a shard: re-raised as they are.
_CALL_ERRORS = (ValueError, KeyError, TypeError, CorruptIndexError)
# How Dask words the loss of an actor's worker (RuntimeError / OSError).
_LOST_WORDS = ("lost", "unable to contact")


class DaskEngine(Engine):
    name = "dask"

    def __init__(
        self,
        threads_per_shard: int,
        timeout: float | None,
        client: Any = None,
        actors: int | None = None,
    ) -> None:
        super().__init__(threads_per_shard, timeout)
        try:
            import distributed
        except ImportError as error:
            raise ImportError(
                "engine 'dask' needs dask.distributed: pip install 'matry[dask]'"
            ) from error
        if client is None:
            try:
                client = distributed.get_client()
            except ValueError:
                raise ValueError(
                    "client: engine 'dask' needs a distributed.Client; pass client= or create "
                    "one first (distributed.Client(LocalCluster(...)))"
                ) from None
        self._client = client
        self._requested_actors = actors
        self._actors: list[Any] = []
        self._actor_futures: list[Any] = []
        self._workers: list[str] = []

    def _worker_alive(self, address: str) -> bool:
        try:
            return address in self._client.scheduler_info()["workers"]
        except Exception:
            return False

    def _result(self, future: Any, host: int, shards: Sequence[int]) -> Any:
        return self._guard(lambda: future.result(timeout=self.timeout), host, shards)

    def _guard(self, action: Callable[[], Any], host: int, shards: Sequence[int]) -> Any:
        """Runs ``action``; a lost worker or a timeout becomes ShardUnavailableError."""
        try:
            return action()
        except _CALL_ERRORS:
            raise
        except TimeoutError:
            raise self.unavailable(
                host, shards, f"no answer within timeout={self.timeout} s"
            ) from None
        except Exception as error:
            worker = self._workers[host] if host < len(self._workers) else ""
            text = str(error).lower()
            if any(w in text for w in _LOST_WORDS) or (worker and not self._worker_alive(worker)):
                raise self.unavailable(host, shards, f"worker {worker} lost ({error})") from None
            raise

    # -- build --------------------------------------------------------------------------

    def map_blocks(
        self, function: Callable[..., Any], blocks: Sequence[Block], args: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        futures = [
            self._client.submit(function, self._data(block), *extra, pure=False)
            for block, extra in zip(blocks, args)
        ]
        return list(self._client.gather(futures))

    def _data(self, block: Block) -> Any:
        """A dask.array chunk is computed on a worker once; other blocks pass as they are."""
        if hasattr(block.data, "dask") and hasattr(block.data, "key"):
            block.data = self._client.compute(block.data)
        return block.data

    def split(self, blocks: Sequence[Block], spec: PartitionSpec, dim: int) -> list[list[Any]]:
        per_shard: list[list[Any]] = [[] for _ in range(spec.shards)]
        for block in blocks:
            data = self._data(block)
            if isinstance(data, tuple) or hasattr(data, "key"):
                whole = self._client.submit(
                    split_block,
                    data,
                    block.column,
                    block.ids,
                    block.first_row,
                    spec,
                    dim,
                    pure=False,
                )
                futures = [
                    self._client.submit(operator.getitem, whole, s, pure=False)
                    for s in range(spec.shards)
                ]
            else:  # an array already in the driver's memory: split here, scatter the parts
                parts = split_block(data, None, block.ids, block.first_row, spec, dim)  # type: ignore[arg-type]
                futures = self._client.scatter(parts)
            for s, future in enumerate(futures):
                per_shard[s].append(future)
        return per_shard

    def build(
        self, params: IndexParams, paths: Sequence[str], parts: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        futures = [
            self._client.submit(
                build_shard_to_file,
                params,
                path,
                self.threads_per_shard,
                *shard_parts,
                pure=False,
            )
            for path, shard_parts in zip(paths, parts)
        ]
        return list(self._client.gather(futures))

    # -- serving ------------------------------------------------------------------------

    def place(self, paths: Sequence[str], mmap: bool) -> None:
        # Actor handles bind to the current client: make ours current even when it is not
        # the default one.
        with self._client.as_current():
            self._place(paths, mmap)

    def _place(self, paths: Sequence[str], mmap: bool) -> None:
        self.shard_files = list(paths)
        workers = sorted(self._client.scheduler_info()["workers"])
        if not workers:
            raise ValueError("client: the Dask cluster has no workers")
        count = len(workers) if self._requested_actors is None else self._requested_actors
        self.hosts = max(1, min(len(paths), count))
        self._workers = [workers[host % len(workers)] for host in range(self.hosts)]
        self._actor_futures = [
            self._client.submit(
                ShardHost, actor=True, workers=[worker], allow_other_workers=False, pure=False
            )
            for worker in self._workers
        ]
        self._actors = [
            self._result(future, host, [s for s in range(len(paths)) if self.host_of(s) == host])
            for host, future in enumerate(self._actor_futures)
        ]
        loads = [
            (self._actors[self.host_of(shard)].load(shard, path, mmap), shard)
            for shard, path in enumerate(paths)
        ]
        try:
            for future, shard in loads:
                self._result(future, self.host_of(shard), [shard])
        except CorruptIndexError:
            self.close()
            raise

    def call(
        self, method: str, calls: dict[int, tuple[Any, ...]], shared: tuple[Any, ...] = ()
    ) -> dict[int, Any]:
        if not self._actors:
            raise self.unavailable(0, sorted(calls), "the sharded index is closed")
        with self._client.as_current():
            return self._call(method, calls, shared)

    def _call(
        self, method: str, calls: dict[int, tuple[Any, ...]], shared: tuple[Any, ...]
    ) -> dict[int, Any]:
        groups = self.grouped(calls)
        futures = []
        for host, group in groups.items():
            actor = self._actors[host]
            submitted = self._guard(
                functools.partial(actor.run, method, group, *shared), host, list(group)
            )
            futures.append((submitted, host, list(group)))
        merged: dict[int, Any] = {}
        for future, host, shards in futures:
            merged.update(self._result(future, host, shards))
        return merged

    def host_handles(self) -> list[Any]:
        return list(self._actors)

    def worker_of_host(self, host: int) -> str:
        """Address of the Dask worker holding actor ``host``."""
        return self._workers[host]

    def close(self) -> None:
        self._actors = []
        for future in self._actor_futures:
            with contextlib.suppress(Exception):  # the client or the worker is gone already
                future.release()
        self._actor_futures = []
