"""hnswlib 0.8's Python API on top of matry.

Change ``import hnswlib`` to ``from matry.compat import hnswlib`` and nothing else: the names,
signatures, defaults, result shapes and dtypes (labels ``uint64 [n, k]``, distances
``float32 [n, k]``), distance conventions and RuntimeError messages are hnswlib 0.8's.

Distances: ``'l2'`` squared euclidean, ``'ip'`` ``1 - dot`` (any vectors, unit length not
required), ``'cosine'`` ``1 - cos``.

Errors: where hnswlib raises RuntimeError the shim raises :class:`HnswlibCompatError`, which
is a ``RuntimeError`` and a ``ValueError`` (what matry raises), with hnswlib's message first.
A negative count or label (which hnswlib declares unsigned) also is a ``TypeError``, and
negative labels in an array an ``OverflowError``, as in hnswlib; a non-integer scalar count
or label (``k=1.5``, ``mark_deleted(1.0)``) is a ``TypeError``. ``get_items`` raises
hnswlib's ``ValueError`` for a scalar and for an unknown ``return_type``, and reads a 2-D label
array such as the ``[n, 1]`` labels of ``knn_query(k=1)`` along its first axis.
``ef_construction`` below ``M`` becomes ``M``, as in hnswlib.

Where this shim deliberately differs from hnswlib 0.8:

* Files are matry files (``Index``) or a small numpy archive (``BFIndex``), not hnswlib's
  binary format; neither library reads the other's files.
* ``load_index`` refuses a file of another space or dimension (hnswlib silently reinterprets it).
* Bad input that hnswlib accepts silently or crashes on raises :class:`HnswlibCompatError`:
  data or queries of the wrong dimension, NaN or inf values, all-zero rows under ``'cosine'``
  (``Index`` only: they have no direction; ``BFIndex`` keeps them, as hnswlib does), labels
  with a fractional part (hnswlib truncates 1.7 to 1), labels above ``2**63 - 1`` (matry ids
  are int64), ``dim < 1``, calls on an index that was never initialised, and a
  ``get_items`` label array of shape ``[n, k]`` with ``k > 1`` (hnswlib returns the vectors of
  its first ``n`` labels in row-major order, i.e. of the first ``n / k`` rows).
* ``M`` must lie in matry's range [2, 128] (hnswlib accepts 0 and 1 and caps M at 10000).
* A failed ``add_items`` changes nothing (hnswlib keeps the rows added before the error).
* ``knn_query(filter=callable)`` is called per candidate inside the traversal, as in hnswlib
  (from the search threads, taking the GIL per call); when the traversal finds fewer than ``k``
  labels that pass, every element is scanned with it, so it finds at least what hnswlib
  finds. ``filter=`` also takes matry's fast forms: an array of labels, a boolean mask over
  labels, or a ``matry.IdSet`` (evaluated in C++, no Python call per candidate).
* ``get_ids_list`` returns labels in ascending order (hnswlib: hash-map order).
* ``Index(params=...)``, hnswlib's constructor from its pickled state dict, is not offered;
  ``pickle`` and the copy constructor ``Index(other_index)`` work.
"""

from __future__ import annotations

import contextlib
import errno
import io
import operator
import os
import pickle
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import matry

__all__ = ["BFIndex", "HnswlibCompatError", "HnswlibCorruptIndexError", "Index"]

_SPACES = ("l2", "ip", "cosine")
_COMPAT_KEY = "hnswlib_compat"
_DEFAULT_EF = 10  # hnswlib's default query-time ef, also set again by load_index
_MAX_LABEL = 2**63 - 1  # matry ids are int64
_NOT_ENOUGH_RESULTS = (
    "Cannot return the results in a contiguous 2D array. Probably ef or M is too small"
)
_LABEL_NOT_FOUND = "Label not found"
_BF_FORMAT = "matry.compat.hnswlib.BFIndex"
_BF_FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_DISTANCE_BLOCK = 1 << 22  # entries of a query x vector distance block held at once


class HnswlibCompatError(RuntimeError, ValueError):
    """Bad input or state: a RuntimeError as hnswlib raises, and a ValueError as matry raises."""


class _NegativeArgumentError(HnswlibCompatError, TypeError):
    """A negative count or label, which hnswlib declares unsigned: its pybind11 raises
    TypeError for those."""


class _NegativeLabelsError(HnswlibCompatError, OverflowError):
    """Negative labels in an array: hnswlib's conversion to uint64 raises OverflowError."""


class HnswlibCorruptIndexError(matry.CorruptIndexError, RuntimeError):
    """A truncated, corrupted or foreign index file (hnswlib raises RuntimeError here)."""


class _CannotOpenFileError(FileNotFoundError, RuntimeError):
    """A missing index file: FileNotFoundError, and RuntimeError like hnswlib's."""


# ----------------------------------------------------------------------------------------------
# argument conversion


def _check_space(space: object) -> str:
    if not isinstance(space, str) or space not in _SPACES:
        raise HnswlibCompatError(
            f"Space name must be one of l2, ip, or cosine (space: got {space!r})."
        )
    return space


def _check_dim(dim: object) -> int:
    try:
        value = operator.index(dim)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"dim: expected an integer, got {type(dim).__name__}") from exc
    if value < 1:
        raise HnswlibCompatError(f"dim: must be >= 1, got {value}")
    return value


def _as_count(value: object, argument: str) -> int:
    try:
        count = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{argument}: expected an integer, got {type(value).__name__}") from exc
    if count < 0:
        raise _NegativeArgumentError(f"{argument}: must be >= 0, got {count}")
    return count


def _as_label(label: object, argument: str = "label") -> int:
    try:
        value = operator.index(label)  # type: ignore[arg-type]
    except TypeError as exc:
        raise TypeError(f"{argument}: expected an integer, got {type(label).__name__}") from exc
    if value < 0:
        raise _NegativeArgumentError(f"{argument}: must be >= 0, got {value}")
    if value > _MAX_LABEL:
        raise HnswlibCompatError(f"{argument}: {value} is above 2**63 - 1")
    return value


def _as_rows(data: object, dim: int, argument: str = "data") -> np.ndarray:
    """A 1-D or 2-D array-like as C-contiguous float32 [n, dim] (1-D = one row)."""
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as exc:
        raise HnswlibCompatError(f"{argument}: not a numeric array ({exc})") from exc
    if array.dtype.kind not in "biuf":
        raise HnswlibCompatError(f"{argument}: expected numbers, got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise HnswlibCompatError(
            f"Input vector data wrong shape. Number of dimensions {array.ndim}. "
            "Data must be a 1D or 2D array."
        )
    rows = array.reshape(1, -1) if array.ndim == 1 else array
    if rows.shape[1] != dim:
        raise HnswlibCompatError(
            f"Wrong dimensionality of the vectors: {argument} has {rows.shape[1]} columns, "
            f"the index has dim={dim}"
        )
    with np.errstate(all="ignore"):  # float64 -> float32 overflow gives inf, rejected later
        return np.ascontiguousarray(rows, dtype=np.float32)


def _as_labels(ids: object, rows: int) -> np.ndarray:
    """hnswlib labels (one per data row, or a scalar for one row) as int64 [rows]."""
    try:
        array = np.asarray(ids)
    except (TypeError, ValueError) as exc:
        raise HnswlibCompatError(f"ids: not an array of labels ({exc})") from exc
    if array.dtype.kind not in "biuf":
        raise HnswlibCompatError(f"ids: expected integer labels, got dtype {array.dtype}")
    if not ((array.ndim == 1 and array.shape[0] == rows) or (array.ndim == 0 and rows == 1)):
        raise HnswlibCompatError(
            f"The input label shape {array.shape} does not match the input data vector "
            f"shape ({rows} rows)"
        )
    flat = array.reshape(-1)
    if flat.dtype.kind == "f" and not np.all(np.isfinite(flat) & (flat == np.floor(flat))):
        raise HnswlibCompatError("ids: labels must be whole numbers")
    if flat.dtype.kind in "if" and np.any(flat < 0):
        raise _NegativeLabelsError("ids: labels must be non-negative (hnswlib labels are unsigned)")
    if flat.size and flat.max() > _MAX_LABEL:
        raise HnswlibCompatError("ids: labels above 2**63 - 1 are not supported")
    return flat.astype(np.int64)


def _lookup_labels(ids: object) -> np.ndarray:
    """get_items' labels as int64 [n]: any array-like of labels, read along its first axis.

    hnswlib reads the first ``len(ids)`` labels of the flattened array, so the [n, 1] labels of
    ``knn_query(k=1)`` work; for [n, k] with k > 1 that would be the first n/k rows' labels,
    which is refused here instead.
    """
    try:
        array = np.asarray(ids)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise HnswlibCompatError(f"ids: not an array of labels ({exc})") from exc
    if array.ndim == 0:
        raise ValueError("get_items accepts a list of indices and returns a list of vectors")
    if array.ndim > 1:
        if array.size != array.shape[0]:
            raise HnswlibCompatError(
                f"ids: expected one label per row, got an array of shape {array.shape}; pass "
                "ids.reshape(-1) for all of its labels or ids[:, 0] for the first column"
            )
        array = array.reshape(-1)
    return _as_labels(array, array.shape[0])


def _check_values(rows: np.ndarray, refuse_zero_rows: bool = False) -> None:
    """Refuses NaN and inf (and, for matry's 'cosine', all-zero rows: no direction), before
    matry would, under hnswlib's name for the argument."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad_row = int(np.flatnonzero(~finite)[0])
        raise HnswlibCompatError(f"data: row {bad_row} contains NaN or inf")
    if refuse_zero_rows:
        zero = ~rows.any(axis=1)
        if zero.any():
            bad_row = int(np.flatnonzero(zero)[0])
            raise HnswlibCompatError(
                f"data: row {bad_row} is all zeros, which has no direction under space='cosine'"
            )


@contextlib.contextmanager
def _hnswlib_errors() -> Iterator[None]:
    """Any ValueError matry raises comes out as HnswlibCompatError (a RuntimeError too)."""
    try:
        yield
    except HnswlibCompatError:
        raise
    except ValueError as exc:
        raise HnswlibCompatError(str(exc)) from exc


def _resolve_threads(num_threads: int, default: int) -> int:
    """hnswlib's rule (<= 0: the default, itself <= 0: all cores) in matry's terms (0 = all)."""
    value = operator.index(num_threads)
    if value <= 0:
        value = default
    return max(value, 0)


def _last_occurrences(labels: np.ndarray) -> np.ndarray:
    """Row positions keeping the last row of each label (hnswlib's sequential update order)."""
    _, first_from_end = np.unique(labels[::-1], return_index=True)
    return np.sort(labels.shape[0] - 1 - first_from_end)


def _empty_result(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((rows, k), dtype=np.uint64), np.empty((rows, k), dtype=np.float32)


def _read_header(path: str) -> dict[str, Any]:
    """matry.read_metadata, with hnswlib-style errors for missing and foreign files."""
    if not os.path.exists(path):
        raise _CannotOpenFileError(errno.ENOENT, "Cannot open file", path)
    with open(path, "rb") as handle:
        if handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
            raise HnswlibCompatError(
                f"load_index: {path!r} is a BFIndex file; load it with BFIndex.load_index"
            )
    try:
        return matry.read_metadata(path)
    except matry.CorruptIndexError as exc:
        raise HnswlibCorruptIndexError(str(exc)) from exc


def _check_file_matches(path: str, metric: str, dim: int, space: str, own_dim: int) -> None:
    if metric != space or dim != own_dim:
        raise HnswlibCompatError(
            f"load_index: {path!r} holds an index with space {metric!r} and dim {dim}, but this "
            f"index was created with space {space!r} and dim {own_dim}; create it as "
            f"Index(space={metric!r}, dim={dim}) to load this file"
        )


def _new_matry_index(space: str, dim: int, M: int, ef_construction: int, seed: int) -> matry.Index:
    if space == "ip":  # hnswlib's 'ip' takes vectors of any length
        return matry.Index(
            dim,
            metric="ip",
            M=M,
            ef_construction=ef_construction,
            seed=seed,
            _require_unit_norm=False,
        )
    return matry.Index(dim, metric=space, M=M, ef_construction=ef_construction, seed=seed)


# ----------------------------------------------------------------------------------------------
# filtered search


def _callback_filter(accept: Callable[[int], object]) -> Callable[[int], bool]:
    """hnswlib's filter as the core calls it: once per candidate, with its label."""

    def accept_id(label: int) -> bool:
        return bool(accept(label))

    return accept_id


# ----------------------------------------------------------------------------------------------
# Index


class Index:
    """``hnswlib.Index(space, dim)``: an HNSW index (matry's) with hnswlib's fixed capacity.

    Marked-deleted elements keep their label and their slot until ``unmark_deleted`` or
    ``add_items(..., replace_deleted=True)`` reuses the slot, exactly as in hnswlib:
    ``element_count``, ``get_current_count()`` and ``get_ids_list()`` include them.
    ``Index(other_index)`` makes a copy, as hnswlib's copy constructor does.
    """

    def __init__(self, space: str | Index, dim: int | None = None) -> None:
        if isinstance(space, Index):
            if dim is not None:
                raise TypeError("Index(index) takes no dim")
            self.__setstate__(pickle.loads(pickle.dumps(space)).__getstate__())
            return
        if dim is None:
            raise TypeError("Index() missing required argument: 'dim'")
        self._space = _check_space(space)
        self._dim = _check_dim(dim)
        self._index: matry.Index | None = None
        self._max_elements = 0
        self._deleted: dict[int, None] = {}  # marked-deleted labels (ordered set)
        self._next_label = 0  # hnswlib's cur_l: the default label of the next added row
        self._allow_replace_deleted = False
        self._ef = _DEFAULT_EF
        self._num_threads = os.cpu_count() or 1
        self._lock = threading.RLock()

    # -- properties ----------------------------------------------------------------------------

    @property
    def space(self) -> str:
        """'l2', 'ip' or 'cosine'."""
        return self._space

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def M(self) -> int:  # noqa: N802 - hnswlib's name
        """Graph degree parameter (0 before init_index)."""
        return self._index.M if self._index is not None else 0

    @property
    def ef_construction(self) -> int:
        """Build-time beam width (0 before init_index)."""
        return self._index.ef_construction if self._index is not None else 0

    @property
    def max_elements(self) -> int:
        """Capacity (0 before init_index)."""
        return self._max_elements if self._index is not None else 0

    @property
    def element_count(self) -> int:
        """Elements held, marked-deleted ones included (0 before init_index)."""
        return self._element_count() if self._index is not None else 0

    @property
    def ef(self) -> int:
        """Query-time beam width (hnswlib's default 10; k is used when ef < k)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self.set_ef(value)

    @property
    def num_threads(self) -> int:
        """Default thread count of add_items and knn_query."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        self.set_num_threads(value)

    # -- life cycle ----------------------------------------------------------------------------

    def init_index(
        self,
        max_elements: int,
        M: int = 16,
        ef_construction: int = 200,
        random_seed: int = 100,
        allow_replace_deleted: bool = False,
    ) -> None:
        """Creates the empty index with room for max_elements."""
        if self._index is not None:
            raise HnswlibCompatError("The index is already initiated.")
        capacity = _as_count(max_elements, "max_elements")
        degree = _as_count(M, "M")
        beam = max(_as_count(ef_construction, "ef_construction"), degree)  # hnswlib's rule
        seed = _as_count(random_seed, "random_seed")
        with _hnswlib_errors():  # matry's bounds on M
            index = _new_matry_index(self._space, self._dim, degree, beam, seed)
        with self._lock:
            self._index = index
            self._max_elements = capacity
            self._deleted = {}
            self._next_label = 0
            self._allow_replace_deleted = bool(allow_replace_deleted)
            self._push_ef()

    def set_ef(self, ef: int) -> None:
        """Sets the query-time beam width."""
        self._ef = _as_count(ef, "ef")
        self._push_ef()

    def set_num_threads(self, num_threads: int) -> None:
        """Sets the default thread count (<= 0: all cores, as in hnswlib)."""
        self._num_threads = operator.index(num_threads)

    def resize_index(self, new_size: int) -> None:
        """Changes the capacity; it may not drop below the current element count."""
        self._require_index()
        size = _as_count(new_size, "new_size")
        with self._lock:
            if size < self._element_count():
                raise HnswlibCompatError(
                    "Cannot resize, max element is less than the current number of elements"
                )
            self._max_elements = size

    def get_max_elements(self) -> int:
        """Capacity."""
        self._require_index()
        return self._max_elements

    def get_current_count(self) -> int:
        """Elements held, marked-deleted ones included."""
        self._require_index()
        return self._element_count()

    # -- data ----------------------------------------------------------------------------------

    def add_items(
        self,
        data: Any,
        ids: Any = None,
        num_threads: int = -1,
        replace_deleted: bool = False,
    ) -> None:
        """Adds rows of data under ids (default: consecutive labels); an existing label is
        updated. replace_deleted=True reuses slots of marked-deleted elements."""
        index = self._require_index()
        rows = _as_rows(data, self._dim)
        _check_values(rows, refuse_zero_rows=self._space == "cosine")
        threads = _resolve_threads(num_threads, self._num_threads)
        if replace_deleted and not self._allow_replace_deleted:
            raise HnswlibCompatError("Replacement of deleted elements is disabled in constructor")
        with self._lock:
            n_rows = rows.shape[0]
            if ids is None:
                labels = np.arange(self._next_label, self._next_label + n_rows, dtype=np.int64)
            else:
                labels = _as_labels(ids, n_rows)
            if n_rows == 0:
                return
            keep = _last_occurrences(labels)
            labels, rows = labels[keep], rows[keep]
            label_list = labels.tolist()
            revived = [label for label in label_list if label in self._deleted]
            if revived and self._allow_replace_deleted and not replace_deleted:
                raise HnswlibCompatError(
                    "Can't use addPoint to update deleted elements if replacement of deleted "
                    f"elements is enabled (label {revived[0]} is marked deleted)."
                )
            new_labels = [
                label for label in label_list if label not in self._deleted and label not in index
            ]
            n_new = len(new_labels)
            revived_set = set(revived)
            vacant = [label for label in self._deleted if label not in revived_set]
            n_reused = min(n_new, len(vacant)) if replace_deleted else 0
            count = self._element_count()
            if count + n_new - n_reused > self._max_elements:
                raise HnswlibCompatError(
                    "The number of elements exceeds the specified limit: "
                    f"{count} held + {n_new - n_reused} new > max_elements={self._max_elements}"
                    " (call resize_index first)"
                )
            try:
                with _hnswlib_errors():
                    index.add(rows, labels, num_threads=threads, replace=True)
            finally:  # Ctrl-C may leave part of the batch added: account for what is in
                for label in revived:
                    if label in index:
                        del self._deleted[label]
                if n_reused:
                    n_added = sum(1 for label in new_labels if label in index)
                    for label in vacant[: min(n_reused, n_added)]:
                        del self._deleted[label]
            self._next_label += n_rows

    def knn_query(
        self,
        data: Any,
        k: int = 1,
        num_threads: int = -1,
        filter: Callable[[int], bool] | Any = None,  # noqa: A002 - hnswlib's name
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint64 [n, k], distances float32 [n, k]) of the k nearest per query row,
        nearest first; RuntimeError if fewer than k elements (passing filter) exist."""
        index = self._require_index()
        queries = _as_rows(data, self._dim)
        _check_values(queries, refuse_zero_rows=self._space == "cosine")
        k = _as_count(k, "k")
        threads = _resolve_threads(num_threads, self._num_threads)
        if queries.shape[0] == 0 or k == 0:
            return _empty_result(queries.shape[0], k)
        live_count = len(index)
        if k > live_count:
            raise HnswlibCompatError(
                f"{_NOT_ENOUGH_RESULTS} (k={k}, {live_count} elements not marked deleted)"
            )

        ef = max(self._ef, k)
        if filter is not None and callable(filter):
            # hnswlib's semantics: the traversal calls it for each candidate it meets (from
            # the search threads, each call taking the GIL). When the traversal finds fewer
            # than k that pass, the core scans every element with it, so this finds at least
            # what hnswlib finds. The filter's own exceptions pass through unchanged.
            # (queries are checked above, so any exception here is the filter's own)
            rows = np.ascontiguousarray(queries, dtype=np.float32)
            found_ids, found_distances = index._core.search(
                rows, k, ef, 0, 0, threads, None, None, 0, _callback_filter(filter)
            )
        else:
            # matry's fast forms too: an array of labels, a boolean mask, a matry.IdSet.
            with _hnswlib_errors():
                found_ids, found_distances = index.search(
                    queries, k=k, ef=ef, num_threads=threads, filter=filter
                )
        if np.any(found_ids < 0):
            raise HnswlibCompatError(
                _NOT_ENOUGH_RESULTS
                + (f" (fewer than k={k} elements pass the filter)" if filter is not None else "")
            )
        return found_ids.astype(np.uint64), np.ascontiguousarray(found_distances, np.float32)

    def mark_deleted(self, label: int) -> None:
        """Hides label from searches; its slot stays taken until reused or unmarked."""
        index = self._require_index()
        value = _as_label(label)
        with self._lock:
            if value in self._deleted:
                raise HnswlibCompatError(
                    f"The requested to delete element is already deleted (label {value})"
                )
            if value not in index:
                raise HnswlibCompatError(f"{_LABEL_NOT_FOUND} (label {value})")
            index.remove([value])
            self._deleted[value] = None

    def unmark_deleted(self, label: int) -> None:
        """Makes a marked-deleted label searchable again."""
        index = self._require_index()
        value = _as_label(label)
        with self._lock:
            if value not in self._deleted:
                if value in index:
                    raise HnswlibCompatError(
                        f"The requested to undelete element is not deleted (label {value})"
                    )
                raise HnswlibCompatError(f"{_LABEL_NOT_FOUND} (label {value})")
            index._restore([value])
            del self._deleted[value]

    def get_items(self, ids: Any = None, return_type: str = "numpy") -> Any:
        """Stored vectors of ids (cosine: normalized), float32 [n, dim] or a list of lists."""
        if return_type not in ("numpy", "list"):
            raise ValueError('return_type should be "numpy" or "list"')
        index = self._require_index()
        if ids is None:
            vectors = np.empty(0, dtype=np.float32)
        else:
            labels = _lookup_labels(ids)
            missing = [label for label in labels.tolist() if label not in index]
            if missing:
                raise HnswlibCompatError(f"{_LABEL_NOT_FOUND} (labels {missing[:10]})")
            if labels.size == 0:
                vectors = np.empty(0, dtype=np.float32)
            else:
                unique_labels, inverse = np.unique(labels, return_inverse=True)
                vectors = np.asarray(index.get(unique_labels), dtype=np.float32)[inverse]
        return vectors.tolist() if return_type == "list" else vectors

    def get_ids_list(self) -> list[int]:
        """All labels held, marked-deleted ones included, ascending."""
        index = self._require_index()
        with self._lock:
            return sorted(index.ids().tolist() + list(self._deleted))

    # -- persistence ---------------------------------------------------------------------------

    def save_index(self, path_to_index: str | os.PathLike[str]) -> None:
        """Writes a matry file (with the capacity and the marked-deleted labels)."""
        index = self._require_index()
        with self._lock:
            metadata = dict(index.metadata)
            metadata[_COMPAT_KEY] = {
                "kind": "Index",
                "max_elements": self._max_elements,
                "deleted": list(self._deleted),
            }
            index.metadata = metadata
            index.save(os.fspath(path_to_index))

    def load_index(
        self,
        path_to_index: str | os.PathLike[str],
        max_elements: int = 0,
        allow_replace_deleted: bool = False,
    ) -> None:
        """Replaces this index by a saved one of the same space and dim. The capacity becomes
        max_elements, or the saved one if max_elements is below the element count; ef is
        reset to 10 as in hnswlib."""
        path = os.fspath(path_to_index)
        capacity = _as_count(max_elements, "max_elements")
        header = _read_header(path)
        _check_file_matches(path, header["metric"], header["dim"], self._space, self._dim)
        state = (header.get("metadata") or {}).get(_COMPAT_KEY) or {}
        try:
            deleted = [int(label) for label in state.get("deleted", [])]
            saved_capacity = int(state.get("max_elements", 0))
        except (TypeError, ValueError, AttributeError) as exc:
            raise HnswlibCorruptIndexError(
                f"{path!r}: bad {_COMPAT_KEY!r} metadata ({exc})"
            ) from exc
        try:
            index = matry.Index.load(path)
        except matry.CorruptIndexError as exc:
            raise HnswlibCorruptIndexError(str(exc)) from exc
        count = len(index) + len(deleted)
        if capacity < count:
            capacity = max(saved_capacity, count)
        with self._lock:
            self._index = index
            self._max_elements = capacity
            self._deleted = dict.fromkeys(deleted)
            self._next_label = count
            self._allow_replace_deleted = bool(allow_replace_deleted)
            self._ef = _DEFAULT_EF
            self._push_ef()

    def index_file_size(self) -> int:
        """Bytes that save_index would write now."""
        self._require_index()
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "index.matry")
            self.save_index(path)
            return os.path.getsize(path)

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = {key: value for key, value in self.__dict__.items() if key != "_lock"}
            state["_deleted"] = dict(self._deleted)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        if self._index is not None:
            self._next_label = self._element_count()  # as hnswlib: cur_l = element count

    def __repr__(self) -> str:
        return f"<matry.compat.hnswlib.Index(space='{self._space}', dim={self._dim})>"

    # -- helpers -------------------------------------------------------------------------------

    def _require_index(self) -> matry.Index:
        if self._index is None:
            raise HnswlibCompatError(
                "The index is not initialized: call init_index() or load_index() first"
            )
        return self._index

    def _element_count(self) -> int:
        return len(self._require_index()) + len(self._deleted)

    def _push_ef(self) -> None:
        """Keeps matry's ef (saved in files) equal to ours where matry allows it."""
        if self._index is not None and self._ef >= 1:
            self._index.ef = self._ef


# ----------------------------------------------------------------------------------------------
# BFIndex


class BFIndex:
    """``hnswlib.BFIndex(space, dim)``: exact (brute-force) search over a fixed capacity.

    Vectors live in numpy; distances are computed in float64 and returned as float32.
    """

    def __init__(self, space: str, dim: int) -> None:
        self._space = _check_space(space)
        self._dim = _check_dim(dim)
        self._initialized = False
        self._max_elements = 0
        self._vectors = np.empty((0, self._dim), dtype=np.float32)
        self._labels = np.empty(0, dtype=np.int64)
        self._slot_of: dict[int, int] = {}
        self._next_label = 0
        self._num_threads = os.cpu_count() or 1
        self._lock = threading.RLock()

    @property
    def space(self) -> str:
        """'l2', 'ip' or 'cosine'."""
        return self._space

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def num_threads(self) -> int:
        """Accepted for compatibility (numpy decides its own threads)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int) -> None:
        self.set_num_threads(value)

    def set_num_threads(self, num_threads: int) -> None:
        """Accepted for compatibility."""
        self._num_threads = operator.index(num_threads)

    def init_index(self, max_elements: int) -> None:
        """Creates the empty index with room for max_elements."""
        if self._initialized:
            raise HnswlibCompatError("The index is already initiated.")
        self._max_elements = _as_count(max_elements, "max_elements")
        self._initialized = True

    def get_max_elements(self) -> int:
        """Capacity."""
        self._require_init()
        return self._max_elements

    def get_current_count(self) -> int:
        """Elements held."""
        self._require_init()
        return len(self._slot_of)

    def add_items(self, data: Any, ids: Any = None) -> None:
        """Adds rows of data under ids (default: consecutive labels); an existing label is
        updated."""
        self._require_init()
        rows = _as_rows(data, self._dim)
        _check_values(rows)  # zero rows stay zero, as in hnswlib
        with self._lock:
            n_rows = rows.shape[0]
            if ids is None:
                labels = np.arange(self._next_label, self._next_label + n_rows, dtype=np.int64)
            else:
                labels = _as_labels(ids, n_rows)
            if n_rows == 0:
                return
            keep = _last_occurrences(labels)
            labels, rows = labels[keep], rows[keep]
            if self._space == "cosine":
                rows = _normalized(rows)
            label_list = labels.tolist()
            new_labels = [label for label in label_list if label not in self._slot_of]
            count = len(self._slot_of)
            if count + len(new_labels) > self._max_elements:
                raise HnswlibCompatError(
                    "The number of elements exceeds the specified limit: "
                    f"{count} held + {len(new_labels)} new > max_elements={self._max_elements}"
                )
            self._reserve(count + len(new_labels))
            for label in new_labels:
                self._slot_of[label] = len(self._slot_of)
            slots = np.array([self._slot_of[label] for label in label_list], dtype=np.int64)
            self._vectors[slots] = rows
            self._labels[slots] = labels
            self._next_label += n_rows

    def delete_vector(self, label: int) -> None:
        """Removes label (an unknown label is ignored, as in hnswlib)."""
        self._require_init()
        value = _as_label(label)
        with self._lock:
            slot = self._slot_of.pop(value, None)
            if slot is None:
                return
            last = len(self._slot_of)  # the slot of the last element before the pop
            if slot != last:
                self._vectors[slot] = self._vectors[last]
                self._labels[slot] = self._labels[last]
                self._slot_of[int(self._labels[slot])] = slot

    def knn_query(
        self,
        data: Any,
        k: int = 1,
        num_threads: int = -1,
        filter: Callable[[int], bool] | None = None,  # noqa: A002 - hnswlib's name
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint64 [n, k], distances float32 [n, k]), exact, nearest first;
        RuntimeError if fewer than k elements (passing filter) exist."""
        self._require_init()
        queries = _as_rows(data, self._dim)
        _check_values(queries)
        k = _as_count(k, "k")
        _resolve_threads(num_threads, self._num_threads)
        if queries.shape[0] == 0 or k == 0:
            return _empty_result(queries.shape[0], k)
        with self._lock:
            count = len(self._slot_of)
            vectors = self._vectors[:count]
            labels = self._labels[:count]
            if filter is not None:
                allowed = np.array([bool(filter(label)) for label in labels.tolist()], bool)
                vectors, labels = vectors[allowed], labels[allowed]
            if k > labels.shape[0]:
                raise HnswlibCompatError(
                    f"{_NOT_ENOUGH_RESULTS} (k={k}, {labels.shape[0]} elements"
                    f"{' pass the filter' if filter is not None else ''})"
                )
            slots, distances = _exact_top_k(self._space, queries, vectors, k)
            return labels[slots].astype(np.uint64), distances

    def save_index(self, path_to_index: str | os.PathLike[str]) -> None:
        """Writes a numpy archive (labels, vectors, space, dim, capacity), atomically."""
        self._require_init()
        path = os.fspath(path_to_index)
        with self._lock:
            count = len(self._slot_of)
            buffer = io.BytesIO()
            np.savez(
                buffer,
                format=np.array(_BF_FORMAT),
                format_version=np.array(_BF_FORMAT_VERSION),
                space=np.array(self._space),
                dim=np.array(self._dim),
                max_elements=np.array(self._max_elements),
                labels=self._labels[:count],
                vectors=self._vectors[:count],
            )
        directory = os.path.dirname(os.path.abspath(path))
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".bfindex-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(buffer.getvalue())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    def load_index(self, path_to_index: str | os.PathLike[str], max_elements: int = 0) -> None:
        """Replaces this index by a saved BFIndex (or any matry index file) of the same space
        and dim; the capacity becomes max_elements if that holds all elements."""
        path = os.fspath(path_to_index)
        capacity = _as_count(max_elements, "max_elements")
        if not os.path.exists(path):
            raise _CannotOpenFileError(errno.ENOENT, "Cannot open file", path)
        with open(path, "rb") as handle:
            is_archive = handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
        if is_archive:
            labels, vectors, saved_capacity = self._read_archive(path)
        else:
            labels, vectors, saved_capacity = self._read_matry_file(path)
        if len(np.unique(labels)) != labels.shape[0]:
            raise HnswlibCorruptIndexError(f"{path!r}: duplicate labels")
        count = labels.shape[0]
        if capacity < count:
            capacity = max(saved_capacity, count)
        with self._lock:
            self._vectors = np.array(vectors, dtype=np.float32)
            self._labels = np.array(labels, dtype=np.int64)
            self._slot_of = {label: slot for slot, label in enumerate(labels.tolist())}
            self._max_elements = capacity
            self._next_label = count
            self._initialized = True

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<matry.compat.hnswlib.BFIndex(space='{self._space}', dim={self._dim})>"

    # -- helpers -------------------------------------------------------------------------------

    def _require_init(self) -> None:
        if not self._initialized:
            raise HnswlibCompatError(
                "The index is not initialized: call init_index() or load_index() first"
            )

    def _reserve(self, rows: int) -> None:
        if rows <= self._vectors.shape[0]:
            return
        capacity = max(rows, min(self._max_elements, 2 * self._vectors.shape[0] + 16))
        vectors = np.empty((capacity, self._dim), dtype=np.float32)
        labels = np.empty(capacity, dtype=np.int64)
        used = len(self._slot_of)
        vectors[:used] = self._vectors[:used]
        labels[:used] = self._labels[:used]
        self._vectors, self._labels = vectors, labels

    def _read_archive(self, path: str) -> tuple[np.ndarray, np.ndarray, int]:
        try:
            with np.load(path, allow_pickle=False) as archive:
                if str(archive["format"]) != _BF_FORMAT:
                    raise ValueError("not a BFIndex archive")
                if int(archive["format_version"]) > _BF_FORMAT_VERSION:
                    raise ValueError(f"format version {int(archive['format_version'])} is newer")
                space, dim = str(archive["space"]), int(archive["dim"])
                saved_capacity = int(archive["max_elements"])
                labels = np.asarray(archive["labels"], dtype=np.int64)
                vectors = np.asarray(archive["vectors"], dtype=np.float32)
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
            message = f"{path!r}: not a readable BFIndex file ({exc})"
            raise HnswlibCorruptIndexError(message) from exc
        _check_file_matches(path, space, dim, self._space, self._dim)
        if vectors.shape != (labels.shape[0], dim) or (labels.size and labels.min() < 0):
            raise HnswlibCorruptIndexError(f"{path!r}: inconsistent labels and vectors")
        return labels, vectors, saved_capacity

    def _read_matry_file(self, path: str) -> tuple[np.ndarray, np.ndarray, int]:
        header = _read_header(path)
        _check_file_matches(path, header["metric"], header["dim"], self._space, self._dim)
        try:
            index = matry.Index.load(path)
        except matry.CorruptIndexError as exc:
            raise HnswlibCorruptIndexError(str(exc)) from exc
        labels = np.asarray(index.ids(), dtype=np.int64)
        if labels.size == 0:
            return labels, np.empty((0, self._dim), dtype=np.float32), 0
        state = (header.get("metadata") or {}).get(_COMPAT_KEY) or {}
        saved_capacity = int(state.get("max_elements", 0)) if isinstance(state, dict) else 0
        return labels, np.asarray(index.get(labels), dtype=np.float32), saved_capacity


def _normalized(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length like hnswlib (a zero row stays zero)."""
    as_float64 = rows.astype(np.float64)
    norms = np.sqrt((as_float64 * as_float64).sum(axis=1, keepdims=True))
    unit: np.ndarray = as_float64 / (norms + 1e-30)
    return unit.astype(np.float32)


def _exact_top_k(
    space: str, queries: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of vectors per query: (row indices [n, k], float32 distances)."""
    if space == "cosine":
        queries = _normalized(queries)
    matrix = vectors.astype(np.float64)
    squared_norms = (matrix * matrix).sum(axis=1)
    n_queries = queries.shape[0]
    slots = np.empty((n_queries, k), dtype=np.int64)
    distances = np.empty((n_queries, k), dtype=np.float32)
    block = max(1, _DISTANCE_BLOCK // max(matrix.shape[0], k * matrix.shape[1], 1))
    for start in range(0, n_queries, block):
        chunk = queries[start : start + block].astype(np.float64)
        products = chunk @ matrix.T
        if space == "l2":
            block_distances = (chunk * chunk).sum(axis=1)[:, None] + squared_norms - 2 * products
        else:
            block_distances = 1.0 - products
        if k < block_distances.shape[1]:
            candidates = np.argpartition(block_distances, k - 1, axis=1)[:, :k]
        else:
            candidates = np.broadcast_to(np.arange(block_distances.shape[1]), block_distances.shape)
        if space == "l2":  # exact differences for the winners (the expansion loses digits)
            differences = chunk[:, None, :] - matrix[candidates]
            chosen = (differences * differences).sum(axis=2)
        else:
            chosen = np.take_along_axis(block_distances, candidates, axis=1)
        order = np.lexsort((candidates, chosen), axis=1)
        slots[start : start + block] = np.take_along_axis(candidates, order, axis=1)
        distances[start : start + block] = np.take_along_axis(chosen, order, axis=1)
    return slots, distances
