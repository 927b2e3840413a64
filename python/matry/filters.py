"""Filters for :meth:`matry.Index.search`: which ids a search may return.

A filter is evaluated in C++ inside the traversal (no Python call per candidate): excluded
nodes still route the search but never take a result slot. When the allowed ids are few, a
cost model scans them exactly instead (:attr:`SearchStats.brute_force` says which path ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import numpy.typing as npt

from . import _core

if TYPE_CHECKING:
    from .index import Index

__all__ = ["FILTER_PATHS", "Filter", "IdSet", "SearchStats"]

#: How a filtered search runs: the cost model's choice ("auto"), the filtered graph traversal
#: ("graph") or an exact scan of the allowed ids ("brute_force").
FILTER_PATHS = {"auto": 0, "graph": 1, "brute_force": 2}
FilterPath = Literal["auto", "graph", "brute_force"]


class IdSet:
    """An immutable set of ids, built once and reused across searches.

    Membership costs one bit test for dense ids (a bitmap up to the largest id) and a bisection
    for sparse ones. Unlike a plain id array, which must name live ids of the index searched,
    an IdSet may hold ids the index does not (or no longer) contain: they are never returned.

    Args:
        ids: non-negative integer ids (any order, duplicates allowed), or a boolean mask over
            ids (``mask[i]`` True = id i allowed).
    """

    __slots__ = ("_core",)

    def __init__(self, ids: npt.ArrayLike) -> None:
        array = np.asarray(ids)
        if array.dtype == np.bool_:
            self._core = _core.IdSet.from_mask(_as_mask(array))
        else:
            from .index import _as_ids

            self._core = _core.IdSet.from_ids(_as_ids(array, "ids"))

    @classmethod
    def _wrap(cls, core: _core.IdSet) -> IdSet:
        created = cls.__new__(cls)
        created._core = core
        return created

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
            return False
        return int(id) >= 0 and int(id) < 2**63 and self._core.__contains__(int(id))

    def ids(self) -> np.ndarray:
        """The ids, ascending (int64)."""
        return self._core.ids()

    @property
    def memory_bytes(self) -> int:
        return self._core.memory_bytes

    def __repr__(self) -> str:
        return f"IdSet({len(self)} ids)"


#: What ``filter=`` accepts: an array of allowed ids, a boolean mask over ids, or an IdSet.
Filter = Union[IdSet, npt.ArrayLike]


@dataclass(frozen=True)
class SearchStats:
    """What each query of a search did (from ``Index.search(..., stats=True)``).

    ``brute_force[i]`` is True when query i scanned its allowed ids exactly instead of
    traversing the graph (the cost model's choice for a selective filter, or the fallback when
    a traversal found fewer than k allowed ids); ``distances[i]`` counts the distances it
    computed (traversal, rerank and scan).
    """

    brute_force: np.ndarray
    distances: np.ndarray


def _as_mask(array: np.ndarray) -> np.ndarray:
    if array.ndim != 1:
        raise ValueError(f"filter: a boolean mask must be 1-D, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.bool_)


def _one_filter(value: Any, index: Index) -> _core.IdSet:
    if isinstance(value, IdSet):
        return value._core
    if isinstance(value, (str, bytes, dict)) or callable(value):
        raise TypeError(
            "filter: expected an array of ids, a boolean mask over ids or a matry.IdSet, got "
            f"{type(value).__name__} (the hnswlib shim takes a callable)"
        )
    array = np.asarray(value)
    if array.dtype == np.bool_:
        mask = _as_mask(array)
        bound = index._core.id_bound
        if mask.shape[0] < bound:
            raise ValueError(
                f"filter: a boolean mask needs one entry per id up to the largest id ever added "
                f"({bound} entries), got {mask.shape[0]}"
            )
        return _core.IdSet.from_mask(mask)
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(
            f"filter: expected integer ids or a boolean mask, got an array of dtype {array.dtype}"
        )
    from .index import _as_ids

    ids = _as_ids(array, "filter")
    missing = index._core.first_missing(ids)
    if missing >= 0:
        raise KeyError(
            f"filter: id {int(ids[missing])} (position {missing}) is not in the index; a "
            "matry.IdSet may hold ids the index lacks"
        )
    return _core.IdSet.from_ids(ids)


def _is_per_query(value: Any) -> bool:
    """A list (or tuple) of filters, as opposed to one filter given as a list of ids."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(
        item is None or isinstance(item, (IdSet, np.ndarray, list, tuple, range)) for item in value
    )


def resolve(
    value: Any, index: Index, query_count: int
) -> tuple[_core.IdSet | None, list[_core.IdSet | None] | None]:
    """``filter=`` as the core takes it: one set for every query, or one per query row."""
    if value is None:
        return None, None
    if _is_per_query(value):
        sequence: Sequence[Any] = value
        if len(sequence) != query_count:
            raise ValueError(
                f"filter: a list of filters needs one per query row ({query_count}), "
                f"got {len(sequence)}"
            )
        cache: dict[int, _core.IdSet] = {}
        per_query: list[_core.IdSet | None] = []
        for item in sequence:
            if item is None:
                per_query.append(None)
                continue
            key = id(item)
            if key not in cache:
                cache[key] = _one_filter(item, index)
            per_query.append(cache[key])
        return None, per_query
    return _one_filter(value, index), None


def filter_path_code(path: Any) -> int:
    if path not in FILTER_PATHS:
        raise ValueError(f"filter_path: expected one of {tuple(FILTER_PATHS)}, got {path!r}")
    return FILTER_PATHS[path]
