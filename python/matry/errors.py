"""Exceptions raised by matry."""

from __future__ import annotations

from ._core import CorruptIndexError


class ContractError(ValueError):
    """Vectors that do not fit the embedding contract of an index or collection.

    Raised for a dimension mismatch, non-unit vectors under ``metric="ip"``, vectors made by
    another encoder (fingerprint mismatch), or document vectors used as queries where the model
    distinguishes the two.
    """


class ShardUnavailableError(RuntimeError):
    """A shard of a :class:`matry.distributed.ShardedIndex` cannot answer: its actor or worker
    died, or it did not answer within the index's ``timeout``.

    ``shards`` holds the shard numbers concerned, ``engine`` the engine's name ("ray", "dask",
    "local"). The index stays usable for nothing but ``close()``; reopen it from its directory.
    """

    def __init__(self, message: str, shards: tuple[int, ...] = (), engine: str = "") -> None:
        super().__init__(message)
        self.shards = shards
        self.engine = engine

    def __reduce__(self) -> tuple[type[ShardUnavailableError], tuple[str, tuple[int, ...], str]]:
        return (type(self), (str(self), self.shards, self.engine))


__all__ = ["ContractError", "CorruptIndexError", "ShardUnavailableError"]
