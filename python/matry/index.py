"""The typed ``Index``: friendly validation in front of the C++ HNSW core."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from typing import Any, BinaryIO, Literal, Union, overload

import numpy as np
import numpy.typing as npt

from . import _core, filters
from .errors import CorruptIndexError
from .filters import FilterPath, SearchStats

ArrayLike = npt.ArrayLike
PathLike = Union[str, "os.PathLike[str]"]

_METRICS = ("cosine", "ip", "l2")
_QUANTIZATIONS = (None, "int8")
_FLOAT32 = np.dtype(np.float32)
DEFAULT_EF = 64
_ORTHOGONALITY_TOLERANCE = 1e-4
# A rotation is checked in float64 and stored as float32; the rounding moves R @ R.T by at most
# about 2 * 2^-24 per entry (Cauchy-Schwarz over unit rows). A loaded one gets this much more.
_STORED_ROTATION_SLACK = 1e-6


def simd_level() -> str:
    """Instruction set of the kernels in use: "scalar", "avx2", "avxvnni", "avx512", "avx512vnni"
    or "neon".

    Chosen once at import from what the CPU supports; ``MATRY_SIMD`` forces a level.
    """
    return _core.simd_level()


def _as_rows(values: ArrayLike, dim: int, argument: str) -> np.ndarray:
    """Converts once to a C-contiguous float32 [n, dim] array, or raises ValueError.

    NaN and inf are left to the core, which checks every row anyway and names the bad one.
    """
    if (
        isinstance(values, np.ndarray)
        and values.dtype == np.float32
        and values.flags.c_contiguous
        and values.ndim == 2
        and values.shape[0] > 0
        and values.shape[1] == dim
    ):
        return values  # the common case, kept cheap for one-query-per-call loops
    if (
        isinstance(values, np.ndarray)
        and values.dtype == np.float32
        and values.ndim == 1
        and values.shape[0] == dim
        and values.flags.c_contiguous
    ):
        return values.reshape(1, dim)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged lists and the like
        raise ValueError(f"{argument}: not a numeric array ({error})") from None
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{argument}: expected real numbers, got an array of dtype {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise ValueError(f"{argument}: expected a 2-D array [n, {dim}], got {array.ndim}-D")
    if array.shape[0] == 0:
        raise ValueError(f"{argument}: empty batch (0 rows)")
    if array.shape[1] != dim:
        raise ValueError(
            f"{argument}: expected {dim} columns (the index dim), got {array.shape[1]}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(array, dtype=np.float32)


def _as_ids(values: ArrayLike, argument: str = "ids") -> np.ndarray:
    """Converts to a 1-D int64 array of non-negative ids, or raises ValueError."""
    array = np.asarray(values)
    if array.ndim == 0 and array.dtype.kind in "iu":
        array = array.reshape(1)  # one id
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{argument}: expected integers, got an array of dtype {array.dtype}")
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{argument}: ids must fit in int64")
    ids = np.ascontiguousarray(array, dtype=np.int64)
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise ValueError(
            f"{argument}: ids must be non-negative, got {int(ids[negative[0]])} "
            f"at position {int(negative[0])}"
        )
    return ids


def _positive_int(value: Any, argument: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{argument}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{argument}: must be >= {minimum}, got {value}")
    return int(value)


def _threads(value: Any) -> int:
    return _positive_int(value, "num_threads", minimum=0)


def fit_rotation(sample: ArrayLike) -> np.ndarray:
    """Orthogonal PCA rotation ``R`` (dim x dim, float32) ordering directions by variance.

    Rows of ``R`` are the principal directions of ``sample`` (centered), largest variance first.
    An index with ``rotation=R`` stores ``R @ x``: dot products and L2 distances between full
    vectors are unchanged (R is orthogonal), while the first dims carry the most variance, so
    a prefix search (``prefix_dim``) keeps more of each vector's meaning.
    """
    array = np.asarray(sample, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError("sample: expected a 2-D array with at least 2 rows")
    if not np.isfinite(array).all():
        raise ValueError("sample: contains NaN or inf")
    centered = array - array.mean(axis=0)
    covariance = centered.T @ centered / (array.shape[0] - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return np.ascontiguousarray(eigenvectors[:, order].T, dtype=np.float32)


def _checked_rotation(rotation: ArrayLike, dim: int) -> np.ndarray:
    matrix = np.asarray(rotation, dtype=np.float64)
    if matrix.shape != (dim, dim):
        raise ValueError(f"rotation: expected a ({dim}, {dim}) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("rotation: contains NaN or inf")
    error = np.abs(matrix @ matrix.T - np.eye(dim)).max()
    if error > _ORTHOGONALITY_TOLERANCE:
        raise ValueError(
            f"rotation: must be orthogonal (R @ R.T = I); max deviation is {error:.2e}. "
            "Use matry.fit_rotation(sample) to make one"
        )
    return np.ascontiguousarray(matrix, dtype=np.float32)


class Index:
    """HNSW index over embedding vectors.

    Args:
        dim: vector dimension.
        metric: ``"cosine"`` (vectors are normalized on the way in; distance = 1 - cos),
            ``"ip"`` (vectors must already be unit length within 1e-3; distance = 1 - dot),
            or ``"l2"`` (squared euclidean distance).
        M: links per node on the upper layers (2*M on layer 0).
        ef_construction: beam width while building.
        seed: seed of the level generator; one thread and the same seed give the same graph.
        prefix_dim: Matryoshka search: build and traverse the graph on the first
            ``prefix_dim`` dims, rerank on the full vector. ``None`` = full width.
        rotation: ``None``, an orthogonal (dim, dim) matrix applied to every vector and query,
            or ``"pca"`` to fit one (see :func:`fit_rotation`) on the first batch added.
        quantization: ``None`` (traverse the graph on the float32 rows) or ``"int8"``: one
            byte per dimension stored beside each node's links, traversed with an integer
            kernel; the best ``rerank`` candidates are rescored exactly on the float32 rows.
            The quantizer is fitted on the first batch added.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        seed: int = 0,
        prefix_dim: int | None = None,
        rotation: ArrayLike | str | None = None,
        quantization: str | None = None,
        *,
        _require_unit_norm: bool = True,
        _int8_mode: str = "per_vector",
        _build_on_codes: bool = True,
        _core_index: _core.Index | None = None,
        _metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata: dict[str, Any] = dict(_metadata or {})
        self._auto_compact: float | None = None
        # Held while the first add fits rotation="pca" and stores its batch: every concurrent
        # add waits for that rotation instead of storing rows unrotated or under another one.
        self._rotation_fit_lock = threading.Lock()
        if _core_index is not None:
            self._core = _core_index
            self._rotation: np.ndarray | None = _core_index.rotation
            self._fit_rotation_on_first_add = False
            return
        dim = _positive_int(dim, "dim")
        if metric not in _METRICS:
            raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}")
        M = _positive_int(M, "M", minimum=2)
        if M > _core.MAX_M:
            raise ValueError(f"M: must be <= {_core.MAX_M}, got {M}")
        ef_construction = _positive_int(ef_construction, "ef_construction")
        seed = _positive_int(seed, "seed", minimum=0)
        if prefix_dim is not None:
            prefix_dim = _positive_int(prefix_dim, "prefix_dim")
            if prefix_dim > dim:
                raise ValueError(f"prefix_dim: must be between 1 and dim ({dim}), got {prefix_dim}")
        if quantization not in _QUANTIZATIONS:
            raise ValueError(f"quantization: expected None or 'int8', got {quantization!r}")
        if quantization is not None and prefix_dim is not None and metric == "l2":
            raise ValueError(
                "prefix_dim: a Matryoshka prefix on int8 codes needs metric 'cosine' or 'ip' "
                "(prefix l2 works on float32 rows: quantization=None)"
            )
        self._fit_rotation_on_first_add = isinstance(rotation, str)
        if isinstance(rotation, str) and rotation != "pca":
            raise ValueError(f"rotation: expected None, a matrix or 'pca', got {rotation!r}")
        self._core = _core.Index(
            dim,
            metric,
            M,
            ef_construction,
            seed,
            prefix_dim or 0,
            _require_unit_norm,
            quantization or "none",
            _int8_mode,
            bool(_build_on_codes),
        )
        self._core.ef = DEFAULT_EF
        self._rotation = None
        if rotation is not None and not isinstance(rotation, str):
            self._set_rotation(_checked_rotation(rotation, dim))

    # -- properties -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self._core.dim)

    @property
    def metric(self) -> str:
        return str(self._core.metric)

    @property
    def M(self) -> int:  # noqa: N802 - the name HNSW papers and hnswlib use
        return int(self._core.M)

    @property
    def ef_construction(self) -> int:
        return int(self._core.ef_construction)

    @property
    def seed(self) -> int:
        return int(self._core.seed)

    @property
    def prefix_dim(self) -> int | None:
        width = int(self._core.prefix_dim)
        return width or None

    @property
    def quantization(self) -> str | None:
        """``"int8"`` when the graph is traversed on int8 codes, else ``None``."""
        name = str(self._core.quantization)
        return None if name == "none" else name

    @property
    def read_only(self) -> bool:
        """True for an index loaded with ``mmap=True``."""
        return bool(self._core.read_only)

    @property
    def rotation(self) -> np.ndarray | None:
        """The orthogonal rotation applied to vectors and queries, if any."""
        return None if self._rotation is None else self._rotation.copy()

    @property
    def capacity(self) -> int:
        """Rows allocated; grows geometrically as vectors are added."""
        return int(self._core.capacity)

    @property
    def ef(self) -> int:
        """Default search beam width (64 unless set); saved with the index."""
        return int(self._core.ef)

    @ef.setter
    def ef(self, value: int) -> None:
        self._core.ef = _positive_int(value, "ef")

    @property
    def simd_level(self) -> str:
        return str(self._core.simd_level)

    @property
    def memory_bytes(self) -> int:
        """Approximate bytes held by the index (vectors, links, ids)."""
        return int(self._core.memory_bytes)

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, (int, np.integer)) or id < 0:
            return False
        if id > np.iinfo(np.int64).max:
            return False
        return bool(self._core.contains(int(id)))

    def __repr__(self) -> str:
        prefix = f", prefix_dim={self.prefix_dim}" if self.prefix_dim else ""
        if self.quantization:
            prefix += f", quantization={self.quantization!r}"
        return (
            f"matry.Index(dim={self.dim}, metric={self.metric!r}, M={self.M}, "
            f"ef_construction={self.ef_construction}{prefix}, len={len(self)})"
        )

    # -- rotation ---------------------------------------------------------------------------

    def _set_rotation(self, rotation: np.ndarray) -> None:
        self._core.set_rotation(rotation)
        self._rotation = rotation

    def _rotate(self, rows: np.ndarray) -> np.ndarray:
        if self._rotation is None:
            return rows
        return np.ascontiguousarray(rows @ self._rotation.T, dtype=np.float32)

    # -- data -------------------------------------------------------------------------------

    def add(
        self,
        vectors: ArrayLike,
        ids: ArrayLike | None = None,
        num_threads: int = 0,
        replace: bool = False,
    ) -> np.ndarray:
        """Adds vectors; returns their ids (int64).

        ``ids`` default to consecutive integers after the largest id ever used. An id that is
        already present raises KeyError unless ``replace=True``. The whole batch is validated
        before anything changes. Ctrl-C stops a long add between chunks: rows added before it
        stay, the index remains consistent, and KeyboardInterrupt propagates.
        """
        rows = _as_rows(vectors, self.dim, "vectors")
        id_array = None
        if ids is not None:
            id_array = _as_ids(ids)
            if id_array.shape[0] != rows.shape[0]:
                raise ValueError(
                    f"ids: expected {rows.shape[0]} ids (one per row of vectors), "
                    f"got {id_array.shape[0]}"
                )
        threads = _threads(num_threads)
        if self._fit_rotation_on_first_add:
            with self._rotation_fit_lock:
                if self._rotation is None:
                    return self._fit_rotation_and_add(rows, id_array, threads, bool(replace))
        assigned = self._core.add(self._rotate(rows), id_array, threads, bool(replace))
        if replace:
            self._maybe_compact()
        return assigned

    def _fit_rotation_and_add(
        self, rows: np.ndarray, ids: np.ndarray | None, threads: int, replace: bool
    ) -> np.ndarray:
        """First add under rotation="pca": fit on this batch, then store it rotated."""
        if rows.shape[0] < 2:
            raise ValueError("vectors: rotation='pca' needs at least 2 rows in the first batch")
        rotation = fit_rotation(rows)
        self._set_rotation(rotation)
        try:
            return self._core.add(self._rotate(rows), ids, threads, replace)
        except BaseException:
            if len(self._core) == 0:  # nothing stored: a failed first add leaves no rotation
                self._core.set_rotation(None)
                self._rotation = None
            raise

    @overload
    def search(
        self,
        queries: ArrayLike,
        k: int = 10,
        ef: int | None = None,
        num_threads: int = 0,
        prefix_dim: int | None = None,
        rerank: int | None = None,
        *,
        filter: Any = None,
        filter_path: FilterPath = "auto",
        stats: Literal[False] = False,
    ) -> tuple[np.ndarray, np.ndarray]: ...
    @overload
    def search(
        self,
        queries: ArrayLike,
        k: int = 10,
        ef: int | None = None,
        num_threads: int = 0,
        prefix_dim: int | None = None,
        rerank: int | None = None,
        *,
        filter: Any = None,
        filter_path: FilterPath = "auto",
        stats: Literal[True],
    ) -> tuple[np.ndarray, np.ndarray, SearchStats]: ...
    def search(
        self,
        queries: ArrayLike,
        k: int = 10,
        ef: int | None = None,
        num_threads: int = 0,
        prefix_dim: int | None = None,
        rerank: int | None = None,
        *,
        filter: Any = None,
        filter_path: FilterPath = "auto",
        stats: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, SearchStats]:
        """Approximate k nearest neighbours of each query.

        Returns ``(ids, distances)``: int64 and float32 arrays of shape [n, k], ascending
        distance. Missing results (k larger than the live count) are id -1, distance inf.
        ``ef`` defaults to :attr:`ef` and is raised to k (and to ``rerank``). With
        ``prefix_dim``, the graph is traversed on the first ``prefix_dim`` dims and the best
        ``rerank`` candidates (default: all ``ef`` of them) are rescored on the full vector.
        With ``quantization="int8"`` the traversal runs on codes and the best ``rerank``
        candidates (default: ``max(2 * k, 20)``, at most ``ef``) are rescored on the float32
        rows.

        ``filter`` limits the results to allowed ids: an array of ids (each must be in the
        index), a boolean mask over ids (length at least one past the largest id added), a
        :class:`matry.IdSet`, or a list of those, one per query row (``None`` entries: no
        filter). It is evaluated in C++ inside the traversal; when few ids are allowed a cost
        model scans them exactly instead, and a traversal that finds fewer than k allowed ids
        falls back to that scan, so results are right at any selectivity. ``filter_path``
        forces "graph" or "brute_force"; ``stats=True`` also returns a :class:`SearchStats`
        saying which path each query took.
        """
        if (
            filter is None
            and not stats
            and type(queries) is np.ndarray
            and queries.dtype == _FLOAT32
            and queries.flags.c_contiguous
            and type(k) is int
            and k > 0
            and (ef is None or (type(ef) is int and ef > 0))
            and prefix_dim is None
            and rerank is None
            and type(num_threads) is int
            and num_threads >= 0
            and self._rotation is None
            and queries.size > 0
        ):
            # One query per call is most of the time at tens of thousands of queries per
            # second: plain float32 rows skip the conversions (the core checks dim, NaN, inf).
            if queries.ndim == 1:
                queries = queries.reshape(1, queries.shape[0])
            ids, distances = self._core.search(queries, k, ef or 0, 0, 0, num_threads)
            return ids, distances
        rows = _as_rows(queries, self.dim, "queries")
        k = _positive_int(k, "k")
        ef_value = 0 if ef is None else _positive_int(ef, "ef")
        width = 0
        if prefix_dim is not None:
            width = _positive_int(prefix_dim, "prefix_dim")
            if width > self.dim:
                raise ValueError(f"prefix_dim: must be between 1 and dim ({self.dim}), got {width}")
        rerank_value = 0
        if rerank is not None:
            rerank_value = _positive_int(rerank, "rerank")
            if rerank_value < k:
                raise ValueError(f"rerank: must be >= k ({k}), got {rerank_value}")
        path = filters.filter_path_code(filter_path)
        if stats and not isinstance(stats, bool):
            raise TypeError(f"stats: expected a bool, got {type(stats).__name__}")
        one, per_query = filters.resolve(filter, self, rows.shape[0])
        threads = _threads(num_threads)
        rotated = self._rotate(rows)
        found = self._core.search(
            rotated, k, ef_value, width, rerank_value, threads, one, per_query, path, None, stats
        )
        if stats:
            ids, distances, brute_force, computed = found
            return ids, distances, SearchStats(brute_force.astype(np.bool_), computed)
        return found[0], found[1]

    def search_radius(
        self,
        query: ArrayLike,
        radius: float,
        max_results: int | None = None,
        ef: int | None = None,
        *,
        exact: bool = False,
        filter: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every live id within ``radius`` of one query: ``(ids, distances)``, ascending.

        ``radius`` is in the search's distance: 1 - cos for "cosine" and "ip", the squared
        euclidean distance for "l2". ``max_results`` keeps the nearest that many (default:
        no limit). :meth:`search_radius_batch` takes many queries.

        Recall: the traversal is a beam search of width ``ef`` (default :attr:`ef`, at least
        16) that doubles its width while every member of the beam lies inside the radius, so
        it stops only once its farthest member is outside; ids near the boundary are then
        found with the recall of a k-NN search at that width, and ids well inside it are
        found. ``exact=True`` scans every row instead (exact, linear in the index size).
        ``filter`` as in :meth:`search`.
        """
        rows = _as_rows(query, self.dim, "query")
        if rows.shape[0] != 1:
            raise ValueError(
                f"query: expected one vector, got {rows.shape[0]} (use search_radius_batch)"
            )
        return self.search_radius_batch(
            rows, radius, max_results, ef, exact=exact, filter=filter, num_threads=1
        )[0]

    def search_radius_batch(
        self,
        queries: ArrayLike,
        radius: float,
        max_results: int | None = None,
        ef: int | None = None,
        *,
        exact: bool = False,
        filter: Any = None,
        num_threads: int = 0,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search_radius` for each query row: one ``(ids, distances)`` pair per row."""
        rows = _as_rows(queries, self.dim, "queries")
        if isinstance(radius, bool) or not isinstance(radius, (int, float, np.floating)):
            raise ValueError(f"radius: expected a number, got {radius!r}")
        if not np.isfinite(radius):
            raise ValueError(f"radius: must be finite, got {radius}")
        limit = 0 if max_results is None else _positive_int(max_results, "max_results")
        ef_value = 0 if ef is None else _positive_int(ef, "ef")
        if not isinstance(exact, bool):
            raise ValueError(f"exact: expected True or False, got {exact!r}")
        one, per_query = filters.resolve(filter, self, rows.shape[0])
        if per_query is not None:
            raise ValueError("filter: search_radius takes one filter for every query")
        return self._core.search_radius(
            self._rotate(rows), float(radius), limit, ef_value, exact, one, _threads(num_threads)
        )

    def exact_search(
        self, queries: ArrayLike, k: int = 10, num_threads: int = 0, *, filter: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest neighbours by brute force over the live vectors (same output).

        ``filter`` as in :meth:`search`: the exact nearest among the allowed ids.
        """
        rows = _as_rows(queries, self.dim, "queries")
        k = _positive_int(k, "k")
        one, per_query = filters.resolve(filter, self, rows.shape[0])
        return self._core.exact_search(self._rotate(rows), k, _threads(num_threads), one, per_query)

    def reorder(self) -> None:
        """Renumbers the stored nodes in breadth-first order of the graph's bottom layer.

        Ids, vectors and search results stay the same; graph neighbours end up next to each
        other in memory, which makes searches touch fewer pages. Worth calling once after a
        large build (it briefly holds a second copy of the vectors and links).
        """
        self._core.reorder()

    def remove(self, ids: ArrayLike) -> None:
        """Removes ids (KeyError for an unknown one; nothing changes then).

        A removed id leaves a tombstone that searches still walk (it routes, but is never
        returned) until :meth:`compact`, which :attr:`auto_compact` can run by itself.
        """
        id_array = _as_ids(ids)
        if id_array.size:
            self._core.remove(id_array)
            self._maybe_compact()

    @property
    def deleted_fraction(self) -> float:
        """Share of the stored nodes that are tombstones (removed or replaced ids)."""
        nodes = int(self._core.node_count)
        return 0.0 if nodes == 0 else (nodes - len(self._core)) / nodes

    @property
    def auto_compact(self) -> float | None:
        """Run :meth:`compact` after a ``remove`` (or ``add(replace=True)``) leaves at least
        this share of tombstones; None (the default) leaves it to the caller."""
        return self._auto_compact

    @auto_compact.setter
    def auto_compact(self, value: float | None) -> None:
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 < float(value) <= 1.0
        ):
            raise ValueError(f"auto_compact: expected None or a fraction in (0, 1], got {value!r}")
        self._auto_compact = None if value is None else float(value)

    def _maybe_compact(self) -> None:
        if self._auto_compact is not None and self.deleted_fraction >= self._auto_compact:
            self.compact()

    def compact(
        self, num_threads: int = 0, mode: Literal["auto", "repair", "rebuild"] = "auto"
    ) -> int:
        """Drops tombstones for good and rebuilds the links that led to them; returns how
        many nodes were dropped.

        Removing many ids leaves tombstones every search still walks: at 90% removed a search
        does several times the work. Compaction keeps the survivors and their ids and
        renumbers them densely. ``mode="repair"`` gives each node that lost neighbours new
        ones from its neighbours' neighbours (pruned by the neighbour heuristic) and links
        them back; ``"rebuild"`` inserts the survivors into a fresh graph; ``"auto"`` repairs
        unless more than 40% of the nodes are gone (bench/results/compaction*: with 20% or 35%
        removed a repaired graph searches as well as a fresh build at a fifth of its cost; at
        50% it falls short and at 90% far short, where a rebuild matches a fresh build).
        Searches keep running meanwhile and see the old graph or the new one; adds and removes
        wait. It needs memory for a second copy of the survivors while it runs. Removed ids
        cannot be restored afterwards.
        """
        modes = {"auto": 0, "repair": 1, "rebuild": 2}
        if mode not in modes:
            raise ValueError(f"mode: expected one of {tuple(modes)}, got {mode!r}")
        return int(self._core.compact(_threads(num_threads), modes[mode]))

    def _restore(self, ids: ArrayLike) -> None:
        """Undoes remove() for ids not re-added since (hnswlib's unmark_deleted)."""
        id_array = _as_ids(ids)
        if id_array.size:
            self._core.restore(id_array)

    def get(self, ids: ArrayLike) -> np.ndarray:
        """Stored vectors of ids, float32 [n, dim] (normalized under metric="cosine")."""
        rows = self._core.get(_as_ids(ids))
        if self._rotation is not None and rows.shape[0]:
            rows = np.ascontiguousarray(rows @ self._rotation, dtype=np.float32)
        return rows

    def ids(self) -> np.ndarray:
        """Live ids, ascending (int64)."""
        return self._core.ids()

    # -- persistence ------------------------------------------------------------------------

    def _metadata_json(self) -> str:
        try:
            return json.dumps({"user": self.metadata}, separators=(",", ":"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata: not JSON-serializable ({error})") from None

    def save(self, path: PathLike | BinaryIO) -> None:
        """Writes the index (with :attr:`metadata` and :attr:`ef`) atomically to ``path``.

        ``path`` may also be a binary file object open for writing (``io.BytesIO``, an
        ``open(..., "wb")`` file, a socket's makefile): the format is streamed to its
        ``write()`` in pieces of at most 1 MiB, from its current position, and it is neither
        flushed nor closed. Saving never holds more than the index plus a 1 MiB buffer.

        The bytes go to a temporary file in the same directory, which is fsynced, renamed over
        ``path``, and then the directory is fsynced. If the process is killed or the machine
        crashes at any moment, ``path`` holds either its old contents or the complete new
        index, never a mix. A crash can leave the temporary file behind, named
        ``.<16 hex digits>.matry-tmp-<pid>-<n>`` beside ``path``; the next save to the same
        ``path`` removes those whose process is no longer running.

        If ``path`` is a symbolic link, the file it points to is replaced and the link is kept.
        A replaced file keeps its permission bits. An existing ``path`` that is not a regular
        file (a directory, FIFO, device or socket) is never replaced: OSError. A path with a
        NUL byte raises ValueError.
        """
        if _is_stream(path, "write"):
            self._core.save_to(path.write, self._metadata_json())  # type: ignore[union-attr]
            return
        self._core.save(_path_bytes(path), self._metadata_json())  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        """The saved form as bytes (what :meth:`save` writes), built in place."""
        return self._core.to_bytes(self._metadata_json())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Index:
        """An index from :meth:`to_bytes` output (read in place, not copied first)."""
        if isinstance(data, str) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expected bytes, got {type(data).__name__}")
        core, metadata_json = _core.Index.from_bytes(data)
        return cls._from_core(core, metadata_json)

    @classmethod
    def _from_core(cls, core: _core.Index, metadata_json: bytes) -> Index:
        metadata = _parse_metadata(metadata_json)["user"]
        _check_loaded_rotation(core)
        return cls(0, _core_index=core, _metadata=metadata)

    @classmethod
    def load(cls, path: PathLike | BinaryIO, mmap: bool = False) -> Index:
        """Loads a saved index; CorruptIndexError names what is wrong with a bad file.

        The file is read section by section straight into the index's buffers: a load needs
        the memory of the index, not that of the index plus the file. ``path`` may also be a
        binary file object open for reading (its ``read()`` is called, from its current
        position, for pieces of at most 4 MiB; it is left just past the index).

        ``mmap=True`` reads the float32 rows (and the links and codes of an int8 index) in
        place from a read-only mapping of the file instead of copying them: resident memory
        is then what searches touch. The whole file is still read once to check it. Such an
        index is read-only: add, remove and rotation changes raise ValueError. Do not replace
        or truncate the file while it is mapped (save() to it renames a new file over it,
        which is safe).
        """
        if not isinstance(mmap, bool):
            raise ValueError(f"mmap: expected True or False, got {mmap!r}")
        if _is_stream(path, "read"):
            if mmap:
                raise ValueError("mmap: needs a path; a file object is read, not mapped")
            core, metadata_json = _core.Index.load_from(path.read)  # type: ignore[union-attr]
        else:
            core, metadata_json = _core.Index.load(_existing_file(path), mmap)  # type: ignore[arg-type]
        return cls._from_core(core, metadata_json)

    def __getstate__(self) -> dict[str, Any]:
        return {"index": self._core.to_bytes(self._metadata_json())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        data = state.get("index") if isinstance(state, dict) else None
        if not isinstance(data, bytes):
            raise CorruptIndexError("pickled state: expected a dict with the index bytes")
        core, metadata_json = _core.Index.from_bytes(data)
        metadata = _parse_metadata(metadata_json)["user"]
        _check_loaded_rotation(core)
        self.__init__(0, _core_index=core, _metadata=metadata)  # type: ignore[misc]


def _is_stream(target: object, method: str) -> bool:
    """A file object (has ``read`` / ``write``) rather than a path."""
    return not isinstance(target, (str, bytes, os.PathLike)) and callable(
        getattr(target, method, None)
    )


def _path_bytes(path: PathLike) -> bytes:
    """``path`` as the bytes the OS sees (any file name, UTF-8 or not), or ValueError."""
    name = os.fsencode(os.fspath(path))
    if not name:
        raise ValueError("path: empty")
    if b"\0" in name:
        # The C file API would cut the path at the NUL and write to another file.
        raise ValueError(f"path: contains a NUL byte ({os.fsdecode(name)!r})")
    return name


def _existing_file(path: PathLike) -> bytes:
    """``path`` of an existing regular file (followed through symlinks), or OSError / ValueError.

    Checked before the core opens it: opening a FIFO would wait for a writer forever.
    """
    name = _path_bytes(path)
    shown = os.fsdecode(name)
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such index file", shown) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not an index file", shown)
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"is {_file_kind(mode)}, not a regular index file", shown)
    return name


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_loaded_rotation(core: _core.Index) -> None:
    """A stored rotation must still be orthogonal: searches rotate every query with it."""
    rotation = core.rotation
    if rotation is None:
        return
    matrix = np.asarray(rotation, dtype=np.float64)
    error = float(np.abs(matrix @ matrix.T - np.eye(matrix.shape[0])).max())
    if not error <= _ORTHOGONALITY_TOLERANCE + _STORED_ROTATION_SLACK:  # NaN fails too
        raise CorruptIndexError(f"stored rotation is not orthogonal (max deviation {error:.2e})")


def _parse_metadata(metadata_json: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(metadata_json.decode("utf-8")) if metadata_json else {}
    except (ValueError, RecursionError) as error:
        # ValueError covers bad UTF-8, bad JSON and integers over Python's digit limit;
        # RecursionError, arrays or objects nested deeper than the interpreter's stack.
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise CorruptIndexError(f"metadata block is not valid JSON ({reason})") from None
    if not isinstance(parsed, dict):
        raise CorruptIndexError("metadata block is not a JSON object")
    user = parsed.get("user", {})
    if not isinstance(user, dict):
        raise CorruptIndexError("metadata block: 'user' is not an object")
    return {"user": user}


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Header fields and user metadata of a saved index, without reading its payload."""
    header = _core.read_header(_existing_file(path))
    return {
        "format_version": int(header["format_version"]),
        "quantization": None if header["quantization"] == "none" else str(header["quantization"]),
        "metric": str(header["metric"]),
        "dim": int(header["dim"]),
        "count": int(header["count"]),
        "M": int(header["M"]),
        "ef_construction": int(header["ef_construction"]),
        "ef": int(header["ef"]),
        "prefix_dim": int(header["prefix_dim"]) or None,
        "has_rotation": bool(header["has_rotation"]),
        "metadata": _parse_metadata(header["metadata_json"])["user"],
    }
