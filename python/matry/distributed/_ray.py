"""Engine "ray": tasks for the split and the build, one actor per group of shards for serving.

Ray is imported when this engine is created, never by ``import matry``. Every actor and build
task reserves ``threads_per_shard`` CPUs, so shards never oversubscribe a node; as many actors
are started as the cluster has CPUs for (at most one per shard), each serving the shards
``s`` with ``s % actors == actor``. Inputs are put in the object store once; the split tasks
and the builds read their blocks and parts there, read-only and without a copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CorruptIndexError
from ._core import IndexParams, PartitionSpec, ShardHost, build_shard_to_file, split_block
from ._engine import Engine
from ._sources import Block

# Seconds to wait for Ray to report the CPUs a finished build freed.
_FREE_CPU_WAIT = 3.0
# Query batches up to this size are sent inline rather than through the object store.
_INLINE_BYTES = 64 * 1024


def _remote_split(
    block: Any, column: str | None, ids: Any, first_row: int, spec: PartitionSpec, dim: int
) -> Any:
    parts = split_block(block, column, ids, first_row, spec, dim)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _remote_map(function: Callable[..., Any], block: Any, *args: Any) -> Any:
    return function(block, *args)


class RayEngine(Engine):
    name = "ray"

    def __init__(
        self, threads_per_shard: int, timeout: float | None, actors: int | None = None
    ) -> None:
        super().__init__(threads_per_shard, timeout)
        try:
            import ray
        except ImportError as error:
            raise ImportError("engine 'ray' needs Ray: pip install 'matry[ray]'") from error
        self._ray: Any = ray  # typed loosely: the adapter only passes values through
        if not ray.is_initialized():
            ray.init()  # a local Ray runtime, or the cluster in RAY_ADDRESS
        self._requested_actors = actors
        self._actors: list[Any] = []
        self._split: Any = ray.remote(_remote_split)
        self._map: Any = ray.remote(_remote_map)
        self._build: Any = ray.remote(build_shard_to_file)

    # -- errors -------------------------------------------------------------------------

    def _get(self, refs: Sequence[Any], owners: Sequence[tuple[int, Sequence[int]]]) -> list[Any]:
        """``ray.get`` of each ref within the timeout; a dead actor or a timeout becomes
        ShardUnavailableError naming the shards, a task's exception is re-raised as itself."""
        exceptions = self._ray.exceptions
        results = []
        for ref, (host, shards) in zip(refs, owners):
            try:
                results.append(self._ray.get(ref, timeout=self.timeout))
            except exceptions.RayTaskError as error:
                cause = error.cause if isinstance(error.cause, BaseException) else error
                raise cause from None
            except exceptions.GetTimeoutError:
                raise self.unavailable(
                    host, shards, f"no answer within timeout={self.timeout} s"
                ) from None
            except (exceptions.RayActorError, exceptions.ObjectLostError) as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else "lost"
                raise self.unavailable(host, shards, f"actor died ({reason})") from None
        return results

    # -- build --------------------------------------------------------------------------

    def map_blocks(
        self, function: Callable[..., Any], blocks: Sequence[Block], args: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        refs = [
            self._map.options(num_cpus=1).remote(function, block.data, *extra)
            for block, extra in zip(blocks, args)
        ]
        return list(self._ray.get(refs))

    def split(self, blocks: Sequence[Block], spec: PartitionSpec, dim: int) -> list[list[Any]]:
        per_shard: list[list[Any]] = [[] for _ in range(spec.shards)]
        for block in blocks:
            if block.column is None and not isinstance(block.data, (tuple, self._ray.ObjectRef)):
                # An array already in the driver's memory: split here, put each part once.
                parts = split_block(block.data, None, block.ids, block.first_row, spec, dim)  # type: ignore[arg-type]
                refs = [self._ray.put(part) for part in parts]
            else:
                result = self._split.options(num_cpus=1, num_returns=spec.shards).remote(
                    block.data, block.column, block.ids, block.first_row, spec, dim
                )
                refs = [result] if spec.shards == 1 else list(result)
            for s, ref in enumerate(refs):
                per_shard[s].append(ref)
        return per_shard

    def build(
        self, params: IndexParams, paths: Sequence[str], parts: Sequence[Sequence[Any]]
    ) -> list[dict[str, Any]]:
        builder = self._build.options(num_cpus=self.threads_per_shard)
        refs = [
            builder.remote(params, path, self.threads_per_shard, *shard_parts)
            for path, shard_parts in zip(paths, parts)
        ]
        try:
            return list(self._ray.get(refs))
        except self._ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, BaseException) else error
            raise cause from None

    # -- serving ------------------------------------------------------------------------

    def _actor_count(self, shards: int) -> int:
        """Actors that can start now: an actor waiting for CPUs would stall every call."""
        total = float(self._ray.cluster_resources().get("CPU", 0.0))
        wanted = shards if self._requested_actors is None else min(shards, self._requested_actors)
        wanted = max(1, min(wanted, int(total // self.threads_per_shard)))
        # Ray's view of free CPUs lags a finished task by up to a second or so: wait a little.
        deadline = time.monotonic() + _FREE_CPU_WAIT
        while True:
            free = float(self._ray.available_resources().get("CPU", 0.0))
            fits = int(free // self.threads_per_shard)
            if fits >= wanted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if fits < 1:
            raise self.unavailable(
                0,
                list(range(shards)),
                f"the Ray cluster has {free:g} free CPUs, a shard actor needs "
                f"threads_per_shard={self.threads_per_shard} (close other sharded indexes or "
                "add nodes)",
            )
        return max(1, min(wanted, fits))

    def place(self, paths: Sequence[str], mmap: bool) -> None:
        self.shard_files = list(paths)
        self.hosts = self._actor_count(len(paths))
        actor_class = self._ray.remote(ShardHost).options(
            num_cpus=self.threads_per_shard, max_restarts=0, max_task_retries=0
        )
        self._actors = [actor_class.remote() for _ in range(self.hosts)]
        refs, owners = [], []
        for shard, path in enumerate(paths):
            host = self.host_of(shard)
            refs.append(self._actors[host].load.remote(shard, path, mmap))
            owners.append((host, [shard]))
        try:
            self._get(refs, owners)
        except CorruptIndexError:
            self.close()
            raise

    def put(self, value: Any) -> Any:
        # Small batches travel inline with each call (cheaper than an object-store round trip);
        # large ones are put once and read in place by every actor.
        if getattr(value, "nbytes", _INLINE_BYTES + 1) <= _INLINE_BYTES:
            return value
        return self._ray.put(value)

    def call(
        self, method: str, calls: dict[int, tuple[Any, ...]], shared: tuple[Any, ...] = ()
    ) -> dict[int, Any]:
        if not self._actors:
            raise self.unavailable(0, sorted(calls), "the sharded index is closed")
        groups = self.grouped(calls)
        refs = [
            self._actors[host].run.remote(method, group, *shared) for host, group in groups.items()
        ]
        owners = [(host, list(group)) for host, group in groups.items()]
        merged: dict[int, Any] = {}
        for result in self._get(refs, owners):
            merged.update(result)
        return merged

    def host_handles(self) -> list[Any]:
        return list(self._actors)

    def close(self) -> None:
        for actor in self._actors:
            with contextlib.suppress(Exception):  # already dead: nothing to release
                self._ray.kill(actor, no_restart=True)
        self._actors = []
