"""What an engine adapter does for a sharded index, and the in-process engine "local".

An engine runs four kinds of work: small per-block tasks whose results come back to the driver
(block sizes, the k-means sample), the split of every block into per-shard parts (kept where
the engine keeps data), the build of each shard from its parts into its file, and calls on
placed shards (a :class:`ShardHost` per worker, holding one or more shards). Scheduling,
transport and failure detection are the engine's; the adapter maps its failures to
:class:`matry.ShardUnavailableError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ShardUnavailableError
from ..index import Index
from ._core import IndexParams, PartitionSpec, ShardHost, build_shard, split_block
from ._sources import Block

ENGINES = ("local", "ray", "dask")


class Engine:
    """Base of the adapters; ``hosts`` workers, shard ``s`` placed on host ``s % hosts``."""

    name = "engine"

    def __init__(self, threads_per_shard: int, timeout: float | None) -> None:
        self.threads_per_shard = threads_per_shard
        self.timeout = timeout
        self.hosts = 0
        self.shard_files: list[str] = []

    # -- build --------------------------------------------------------------------------

    def map_blocks(
        self, function: Callable[..., Any], blocks: Sequence[Block], args: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """``function(block.data, *args[i])`` for every block, results gathered here."""
        raise NotImplementedError

    def split(self, blocks: Sequence[Block], spec: PartitionSpec, dim: int) -> list[list[Any]]:
        """Per shard, the handles of its parts in block order."""
        raise NotImplementedError

    def build(
        self, params: IndexParams, paths: Sequence[str], parts: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        """Builds shard ``s`` from ``parts[s]`` into ``paths[s]``; returns manifest entries."""
        raise NotImplementedError

    # -- serving ------------------------------------------------------------------------

    def place(self, paths: Sequence[str], mmap: bool) -> None:
        """Starts the hosts and loads every shard from its file."""
        raise NotImplementedError

    def put(self, value: Any) -> Any:
        """A handle for a value sent to every host (Ray's object store; the value itself)."""
        return value

    def call(
        self, method: str, calls: dict[int, tuple[Any, ...]], shared: tuple[Any, ...] = ()
    ) -> dict[int, Any]:
        """Runs ``ShardHost.run(method, ...)`` for every shard of ``calls`` on its host."""
        raise NotImplementedError

    def host_handles(self) -> list[Any]:
        """The engine's objects for the hosts (actors), for inspection and tests."""
        return []

    def close(self) -> None:
        """Releases the hosts (actors); the shard files stay."""

    # -- shared helpers -----------------------------------------------------------------

    def host_of(self, shard: int) -> int:
        return shard % self.hosts

    def grouped(self, calls: dict[int, tuple[Any, ...]]) -> dict[int, dict[int, tuple[Any, ...]]]:
        groups: dict[int, dict[int, tuple[Any, ...]]] = {}
        for shard in sorted(calls):
            groups.setdefault(self.host_of(shard), {})[shard] = calls[shard]
        return groups

    def unavailable(self, host: int, shards: Sequence[int], reason: str) -> ShardUnavailableError:
        names = ", ".join(
            f"{s} ({os.path.basename(self.shard_files[s])})"
            if s < len(self.shard_files)
            else str(s)
            for s in shards
        )
        label = "shard" if len(shards) == 1 else "shards"
        return ShardUnavailableError(
            f"{label} {names} on {self.name} host {host} unavailable: {reason}",
            shards=tuple(shards),
            engine=self.name,
        )


def local_threads(threads_per_shard: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, threads_per_shard))


class LocalEngine(Engine):
    """Shards in this process; calls on several shards run on a thread pool (the GIL is
    released inside matry's search and add), sized so shards do not oversubscribe the cores.
    """

    name = "local"

    def __init__(self, threads_per_shard: int, timeout: float | None) -> None:
        super().__init__(threads_per_shard, timeout)
        self._pool = ThreadPoolExecutor(max_workers=local_threads(threads_per_shard))
        self._hosts: list[ShardHost] = []
        self._built: dict[str, Index] = {}

    def map_blocks(
        self, function: Callable[..., Any], blocks: Sequence[Block], args: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        return [function(block.data, *extra) for block, extra in zip(blocks, args)]

    def split(self, blocks: Sequence[Block], spec: PartitionSpec, dim: int) -> list[list[Any]]:
        per_shard: list[list[Any]] = [[] for _ in range(spec.shards)]
        for block in blocks:
            parts = split_block(block.data, block.column, block.ids, block.first_row, spec, dim)  # type: ignore[arg-type]
            for s, part in enumerate(parts):
                per_shard[s].append(part)
        return per_shard

    def build(
        self, params: IndexParams, paths: Sequence[str], parts: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        futures = [
            self._pool.submit(build_shard, params, path, self.threads_per_shard, *shard_parts)
            for path, shard_parts in zip(paths, parts)
        ]
        infos = []
        for path, future in zip(paths, futures):
            info, index = future.result()
            self._built[path] = index  # served as built: no reload of a file just written
            infos.append(info)
        return infos

    def place(self, paths: Sequence[str], mmap: bool) -> None:
        self.shard_files = list(paths)
        self.hosts = len(paths)
        self._hosts = [ShardHost() for _ in paths]
        loads = []
        for shard, path in enumerate(paths):
            built = self._built.pop(path, None)
            if built is not None and not mmap:
                self._hosts[shard].adopt(shard, built)
            else:
                loads.append(self._pool.submit(self._hosts[shard].load, shard, path, mmap))
        for future in loads:
            future.result()
        self._built.clear()

    def call(
        self, method: str, calls: dict[int, tuple[Any, ...]], shared: tuple[Any, ...] = ()
    ) -> dict[int, Any]:
        if not self._hosts:
            raise ShardUnavailableError("the sharded index is closed", shards=(), engine=self.name)
        if len(calls) == 1:
            ((shard, args),) = calls.items()
            return self._hosts[shard].run(method, {shard: args}, *shared)
        futures = {
            shard: self._pool.submit(self._hosts[shard].run, method, {shard: args}, *shared)
            for shard, args in calls.items()
        }
        return {shard: future.result()[shard] for shard, future in futures.items()}

    def host_handles(self) -> list[Any]:
        return list(self._hosts)

    def close(self) -> None:
        self._hosts = []
        self._built.clear()
        self._pool.shutdown(wait=True)
