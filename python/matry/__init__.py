"""matry: HNSW nearest-neighbour search for embeddings.

SIMD kernels chosen at run time, Matryoshka prefix search with full-vector rerank, and an
embedding contract (which encoder made the vectors) that collections enforce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ContractError, CorruptIndexError, ShardUnavailableError
from .filters import IdSet, SearchStats
from .index import DEFAULT_EF, Index, fit_rotation, read_metadata, simd_level

if TYPE_CHECKING:
    from .collection import Collection, Hit
    from .encoder import Encoder

# The encoder needs optional dependencies (matry[encoder]); import it on first use only.
_LAZY = {"Encoder": "encoder", "Collection": "collection", "Hit": "collection"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'matry' has no attribute {name!r}")


__all__ = [
    "DEFAULT_EF",
    "Collection",
    "ContractError",
    "CorruptIndexError",
    "Encoder",
    "Hit",
    "IdSet",
    "Index",
    "SearchStats",
    "ShardUnavailableError",
    "__version__",
    "fit_rotation",
    "read_metadata",
    "simd_level",
]
