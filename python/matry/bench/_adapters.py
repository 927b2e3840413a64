"""One adapter per library configuration, all with the same interface.

Every adapter indexes float32 rows with ids 0..n-1 under one of two metrics, ``"ip"`` (inner
product on unit-length rows: the runner normalizes cosine data first) or ``"l2"`` (squared
Euclidean), and returns int64 ids:

* ``build(data, M, ef_construction, threads)``: add all rows using ``threads`` threads,
* ``set_search_param(value)``: the swept search parameter (ef for the HNSW libraries, Annoy's
  search_k, ScaNN's leaves to search, SVS's search window),
* ``set_query_threads(threads)``: threads of a batched search,
* ``search_batch(queries, k)`` -> int64 [n, k]; ``search_one(query, k)`` -> int64 [k],
* ``save(path)`` -> bytes written (a file, or a folder for libraries that write several),
* ``load(path, count, mode)``: read a saved index back (``mode`` one of ``load_modes()``, e.g.
  matry's ``"mmap"``), for the resident-memory measurement of bench/resident.py,
* ``memory_bytes()``: the library's own count of its index memory, where it has one.

``skip_reason(dim, metric)`` says beforehand why an adapter cannot run here (not installed,
with the pip command that adds it; an option this matry lacks; a CPU the library refuses). The
peer libraries are imported lazily, inside the methods, through :func:`_library` (typed ``Any``:
their type information varies between versions and they are optional).

The compressed leaders are configured as their own documentation recommends for throughput at
recall ~0.95; each class says which parameters it uses and where they come from. All graph
libraries get the same degree: HNSW M (level-0 degree 2*M) or a flat graph of degree 2*M, and
ef_construction (or the library's equivalent build beam).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Rows per add() call when building, so that long builds can show a progress bar.
BUILD_CHUNK_ROWS = 20_000
HNSW_SEED = 100
LOAD = "load"
MMAP = "mmap"

METRICS = ("ip", "l2")

ProgressCallback = Callable[[int], None]


def _library(module_name: str) -> Any:
    """Import an optional peer library (or one of its submodules) on first use."""
    return importlib.import_module(module_name)


def path_bytes(path: Path) -> int:
    """Size of a file, or of every file below a folder."""
    path = Path(path)
    if path.is_file():
        return os.path.getsize(path)
    return sum(os.path.getsize(item) for item in path.rglob("*") if item.is_file())


def cpu_vendor() -> str | None:
    """The CPU vendor string of /proc/cpuinfo (GenuineIntel, AuthenticAMD...); None elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


class LibraryAdapter(ABC):
    """Common interface of the benchmarked libraries."""

    name: ClassVar[str]
    module_name: ClassVar[str]
    distribution: ClassVar[str]
    search_param_name: ClassVar[str] = "ef"
    # Which sweep of the run configuration applies: "ef", "annoy_search_k" or "scann_leaves".
    sweep: ClassVar[str] = "ef"
    # True when the library has no batched query call and search_batch is a Python loop.
    batch_is_loop: ClassVar[bool] = False
    # Metrics the adapter can index: "ip" (unit rows) and "l2".
    metrics: ClassVar[tuple[str, ...]] = METRICS

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        self.dim = dim
        self.metric = metric
        self.count = 0
        self.search_param = 0
        self.query_threads = 1
        self.build_threads_used = 0

    @classmethod
    def available(cls) -> bool:
        """Whether the library is installed (found without importing it: some are slow to
        import). A module set to None in sys.modules counts as missing, as for import."""
        return importlib.util.find_spec(cls.module_name.split(".")[0]) is not None

    @classmethod
    def pip_command(cls) -> str:
        """The command that installs the library."""
        return f"pip install {cls.distribution}"

    @classmethod
    def not_installed_reason(cls) -> str:
        return f"not installed ({cls.pip_command()})"

    @classmethod
    def skip_reason(cls, dim: int, metric: str = "ip") -> str | None:
        """Why this adapter cannot run on ``dim``-dimensional ``metric`` data here; None if it
        can."""
        if not cls.available():
            return cls.not_installed_reason()
        if metric not in cls.metrics:
            return "runs on --metric cosine or ip only" if metric == "l2" else "runs on l2 only"
        return None

    @classmethod
    def version(cls) -> str:
        try:
            return version(cls.distribution)
        except PackageNotFoundError:
            module = importlib.import_module(cls.module_name.split(".")[0])
            return str(getattr(module, "__version__", "unknown"))

    def import_library(self) -> None:
        """Import everything the adapter uses (the resident-memory baseline includes it)."""
        importlib.import_module(self.module_name)

    def build_config(self) -> dict[str, Any]:
        """Options that tell builds of one library apart (Annoy: n_trees), plus the SIMD level."""
        return {}

    def parameters(self) -> dict[str, Any]:
        """The library's fixed index and search parameters, for the record and the table."""
        return {}

    def memory_bytes(self) -> int | None:
        """The library's own count of its index memory; None where it has none."""
        return None

    @abstractmethod
    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Index all rows of ``data`` (ids 0..n-1); ``progress(rows)`` after each chunk."""

    def set_search_param(self, value: int) -> None:
        self.search_param = int(value)

    def set_query_threads(self, threads: int) -> None:
        self.query_threads = int(threads)

    @abstractmethod
    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        """One call for all queries; int64 ids [n, k]."""

    @abstractmethod
    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        """One call for one query; int64 ids [k]."""

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    def save(self, path: Path) -> int:
        """Write the index to ``path``; returns the bytes written."""
        self._save(Path(path))
        return path_bytes(Path(path))

    @classmethod
    def load_modes(cls) -> tuple[str, ...]:
        """How a saved index can be read back: ``"load"``, and ``"mmap"`` where supported."""
        return (LOAD,)

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        """Read an index written by ``save``; ``count`` rows, ``mode`` from ``load_modes()``."""
        raise NotImplementedError(f"{self.name}: cannot load a saved index")


def _chunks(count: int) -> range:
    return range(0, count, BUILD_CHUNK_ROWS)


def _loop_search(
    search: Callable[[np.ndarray, int], np.ndarray], queries: np.ndarray, k: int
) -> np.ndarray:
    """search_batch for libraries without a batched call: one call per query, -1 padded."""
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, query in enumerate(queries):
        found = search(query, k)
        ids[row, : len(found)] = found
    return ids


# --------------------------------------------------------------------------------- matry


class MatryAdapter(LibraryAdapter):
    """matry f32: Index(dim, metric, M, ef_construction), ef per search call."""

    name = "matry"
    module_name = "matry"
    distribution = "matry"

    def index_options(self) -> dict[str, Any]:
        """Constructor arguments beyond dim, metric, M and ef_construction."""
        return {}

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        from ..index import Index

        self.index = Index(
            self.dim,
            metric=self.metric,
            M=M,
            ef_construction=ef_construction,
            **self.index_options(),
        )
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            self.index.add(rows, ids=np.arange(start, start + len(rows)), num_threads=threads)
            if progress:
                progress(len(rows))
        self.index.reorder()  # the documented step after a large build; counted in build s
        self.count = len(data)
        self.build_threads_used = threads

    def build_config(self) -> dict[str, Any]:
        from ..index import simd_level

        return {"simd_level": simd_level()}

    def parameters(self) -> dict[str, Any]:
        return dict(self.index_options())

    def memory_bytes(self) -> int | None:
        return int(self.index.memory_bytes)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(
            queries, k=k, ef=self.search_param, num_threads=self.query_threads
        )
        return np.asarray(ids, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(query, k=k, ef=self.search_param, num_threads=1)
        return np.asarray(ids[0], dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save(str(path))

    @classmethod
    def load_modes(cls) -> tuple[str, ...]:
        return (LOAD, MMAP)

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        from ..index import Index

        self.index = Index.load(str(path), mmap=mode == MMAP)
        self.count = count


class MatryInt8Adapter(MatryAdapter):
    """matry with int8 codes for the traversal and an f32 rescore: quantization="int8".

    The rescored candidate count (``rerank``) is left at matry's default.
    """

    name = "matry-int8"
    prefix_dim: ClassVar[int | None] = None

    @classmethod
    def skip_reason(cls, dim: int, metric: str = "ip") -> str | None:
        reason = super().skip_reason(dim, metric)
        if reason:
            return reason
        if cls.prefix_dim is not None and metric != "ip":
            return "prefix search on int8 codes needs metric cosine or ip"
        if cls.prefix_dim is not None and cls.prefix_dim >= dim:
            return f"prefix_dim={cls.prefix_dim} needs dim > {cls.prefix_dim}; this data has {dim}"
        return None

    def index_options(self) -> dict[str, Any]:
        return {"quantization": "int8"}


class MatryInt8PrefixAdapter(MatryInt8Adapter):
    """The Matryoshka form: int8 codes of the first 128 dims of a PCA rotation, f32 rescore."""

    name = "matry-int8-p128-pca"
    prefix_dim = 128

    def index_options(self) -> dict[str, Any]:
        return {"quantization": "int8", "prefix_dim": self.prefix_dim, "rotation": "pca"}


# ------------------------------------------------------------------------------- hnswlib


class HnswlibAdapter(LibraryAdapter):
    name = "hnswlib"
    module_name = "hnswlib"
    distribution = "hnswlib"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        hnswlib = _library("hnswlib")
        self.index = hnswlib.Index(space=self.metric, dim=self.dim)
        self.index.init_index(
            max_elements=len(data), ef_construction=ef_construction, M=M, random_seed=HNSW_SEED
        )
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            self.index.add_items(rows, np.arange(start, start + len(rows)), num_threads=threads)
            if progress:
                progress(len(rows))
        self.count = len(data)
        self.build_threads_used = threads

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.index.set_ef(int(value))

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(queries, k=k, num_threads=self.query_threads)
        return np.asarray(labels, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(query, k=k, num_threads=1)
        return np.asarray(labels[0], dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        hnswlib = _library("hnswlib")
        self.index = hnswlib.Index(space=self.metric, dim=self.dim)
        self.index.load_index(str(path), max_elements=count)
        self.count = count


# --------------------------------------------------------------------------------- faiss


class FaissAdapter(LibraryAdapter):
    """faiss IndexHNSWFlat, METRIC_INNER_PRODUCT or METRIC_L2; threads through OpenMP."""

    name = "faiss"
    module_name = "faiss"
    distribution = "faiss-cpu"

    def faiss_metric(self) -> Any:
        faiss = _library("faiss")
        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def make_index(self, M: int) -> Any:
        faiss = _library("faiss")
        return faiss.IndexHNSWFlat(self.dim, M, self.faiss_metric())

    def hnsw_of(self, index: Any) -> Any:
        """The IndexHNSW whose efSearch the sweep sets."""
        return index

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        faiss = _library("faiss")

        faiss.omp_set_num_threads(threads)
        self.index = self.make_index(M)
        self.hnsw_of(self.index).hnsw.efConstruction = ef_construction
        if not self.index.is_trained:
            self.index.train(np.ascontiguousarray(data))
        for start in _chunks(len(data)):
            rows = np.ascontiguousarray(data[start : start + BUILD_CHUNK_ROWS])
            self.index.add(rows)
            if progress:
                progress(len(rows))
        self.count = len(data)
        self.build_threads_used = threads
        faiss.omp_set_num_threads(self.query_threads)

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.hnsw_of(self.index).hnsw.efSearch = int(value)

    def set_query_threads(self, threads: int) -> None:
        faiss = _library("faiss")

        super().set_query_threads(threads)
        faiss.omp_set_num_threads(int(threads))

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        _, labels = self.index.search(queries, k)
        return np.asarray(labels, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        # One query per call: OpenMP runs it on the calling thread (query_threads is 1 then).
        _, labels = self.index.search(query.reshape(1, -1), k)
        return np.asarray(labels[0], dtype=np.int64)

    def _save(self, path: Path) -> None:
        faiss = _library("faiss")

        faiss.write_index(self.index, str(path))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        faiss = _library("faiss")

        self.index = faiss.read_index(str(path))
        self.count = count


class FaissHnswSq8Adapter(FaissAdapter):
    """faiss IndexHNSWSQ(d, QT_8bit, M, metric) inside IndexRefineFlat.

    The graph is traversed on 8-bit scalar codes (per-dimension ranges trained on the base);
    IndexRefineFlat keeps the f32 rows and rescores k * k_factor candidates. k_factor = 3 as in
    faiss's own refine tutorials (tutorial/python/8-PQFastScanRefine.py and
    9-RefineComparison.py). efSearch is swept on the inner IndexHNSWSQ.
    """

    name = "faiss-hnsw-sq8"
    K_FACTOR = 3.0
    base_index: Any

    def make_index(self, M: int) -> Any:
        faiss = _library("faiss")

        eight_bit: Any = faiss.ScalarQuantizer.QT_8bit
        self.base_index = faiss.IndexHNSWSQ(self.dim, eight_bit, M, self.faiss_metric())
        refine = faiss.IndexRefineFlat(self.base_index)
        refine.k_factor = self.K_FACTOR
        return refine

    def hnsw_of(self, index: Any) -> Any:
        return self.base_index

    def parameters(self) -> dict[str, Any]:
        return {"codes": "SQ8 (QT_8bit)", "refine": "IndexRefineFlat", "k_factor": self.K_FACTOR}

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        faiss = _library("faiss")

        self.index = faiss.read_index(str(path))
        self.base_index = faiss.downcast_index(self.index.base_index)
        self.count = count


# ------------------------------------------------------------------------------- usearch


class UsearchAdapter(LibraryAdapter):
    """usearch f32 (no quantization), metric ip or l2sq, connectivity = M."""

    name = "usearch"
    module_name = "usearch.index"
    distribution = "usearch"
    ip_metric: ClassVar[str] = "ip"
    dtype: ClassVar[str] = "f32"

    def usearch_metric(self) -> str:
        return self.ip_metric if self.metric == "ip" else "l2sq"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        Index = _library("usearch.index").Index

        self.index = Index(
            ndim=self.dim,
            metric=self.usearch_metric(),
            dtype=self.dtype,
            connectivity=M,
            expansion_add=ef_construction,
        )
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            keys = np.arange(start, start + len(rows), dtype=np.uint64)
            self.index.add(keys, rows, threads=threads)
            if progress:
                progress(len(rows))
        self.count = len(data)
        self.build_threads_used = threads

    def parameters(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "metric": self.usearch_metric()}

    def memory_bytes(self) -> int | None:
        return int(self.index.memory_usage)

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.index.expansion_search = int(value)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        matches = self.index.search(queries, k, threads=self.query_threads)
        return np.asarray(matches.keys, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        matches = self.index.search(query, k, threads=1)
        return np.asarray(matches.keys, dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save(str(path))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        Index = _library("usearch.index").Index

        restored = Index.restore(str(path), view=False)
        if restored is None:
            raise ValueError(f"usearch: {path} is not a usearch index")
        self.index = restored
        self.count = count


class UsearchI8Adapter(UsearchAdapter):
    """usearch with dtype="i8": vectors stored and compared as int8, no f32 rescore.

    Metric "cos": on unit rows it orders like the inner product, and it divides out the small
    norm changes that rounding to int8 makes (usearch scales each component by 127, so it
    expects components in [-1, 1]: unit rows; l2 data of any scale would be clipped).
    """

    name = "usearch-i8"
    ip_metric = "cos"
    dtype = "i8"
    metrics = ("ip",)


# ------------------------------------------------------------------------------- voyager


class VoyagerAdapter(LibraryAdapter):
    """voyager Space.Cosine (on unit rows: 1 - dot) or Space.Euclidean, float32 storage."""

    name = "voyager"
    module_name = "voyager"
    distribution = "voyager"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        voyager = _library("voyager")

        self.index = voyager.Index(
            voyager.Space.Cosine if self.metric == "ip" else voyager.Space.Euclidean,
            num_dimensions=self.dim,
            M=M,
            ef_construction=ef_construction,
            random_seed=HNSW_SEED,
            max_elements=len(data),
        )
        for start in _chunks(len(data)):
            rows = np.ascontiguousarray(data[start : start + BUILD_CHUNK_ROWS])
            ids = list(range(start, start + len(rows)))
            self.index.add_items(rows, ids=ids, num_threads=threads)
            if progress:
                progress(len(rows))
        self.count = len(data)
        self.build_threads_used = threads

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.query(
            queries, k=k, num_threads=self.query_threads, query_ef=max(self.search_param, k)
        )
        return np.asarray(labels, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.query(query, k=k, num_threads=1, query_ef=max(self.search_param, k))
        return np.asarray(labels, dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save(str(path))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        voyager = _library("voyager")

        self.index = voyager.Index.load(str(path))
        self.count = count


# --------------------------------------------------------------------------------- annoy


class AnnoyAdapter(LibraryAdapter):
    """Annoy 'angular' (same order as cosine) or 'euclidean' with n_trees trees; M and ef are
    not used.

    Annoy has no batched query call: ``search_batch`` is a Python loop over
    get_nns_by_vector, and a batch runs on one thread whatever ``query_threads`` says.
    Annoy always memory-maps a loaded index, so its resident figure counts the pages touched.
    """

    name = "annoy"
    module_name = "annoy"
    distribution = "annoy"
    search_param_name = "search_k"
    sweep = "annoy_search_k"
    batch_is_loop = True

    def __init__(self, dim: int, metric: str = "ip", n_trees: int = 50) -> None:
        super().__init__(dim, metric)
        self.n_trees = n_trees

    def annoy_metric(self) -> str:
        return "angular" if self.metric == "ip" else "euclidean"

    def build_config(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees}

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        AnnoyIndex = _library("annoy").AnnoyIndex

        self.index = AnnoyIndex(self.dim, self.annoy_metric())
        self.index.set_seed(HNSW_SEED)
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            for offset, row in enumerate(rows.tolist()):
                self.index.add_item(start + offset, row)
            if progress:
                progress(len(rows))
        self.index.build(self.n_trees, n_jobs=threads)
        self.count = len(data)
        self.build_threads_used = threads

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        search = self.index.get_nns_by_vector
        search_k = self.search_param
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, query in enumerate(queries.tolist()):
            found = search(query, k, search_k)
            ids[row, : len(found)] = found
        return ids

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        found = self.index.get_nns_by_vector(query.tolist(), k, self.search_param)
        ids = np.full(k, -1, dtype=np.int64)
        ids[: len(found)] = found
        return ids

    def _save(self, path: Path) -> None:
        # save() re-opens the file with mmap; queries afterwards read the page-cached file.
        self.index.save(str(path))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        AnnoyIndex = _library("annoy").AnnoyIndex

        self.index = AnnoyIndex(self.dim, self.annoy_metric())
        self.index.load(str(path))
        self.count = count


# --------------------------------------------------------------------------------- glass


class GlassAdapter(LibraryAdapter):
    """glass (PyPI pyglass-portable, imported as ``glass``): HNSW graph, quantized search, FP32
    refine.

    As in the pyglass README and its examples/main.py: build the HNSW graph with SQ8U codes
    ("Use SQ8U for indexing"), R = 2*M (glass's R is the level-0 degree; it builds hnswlib with
    M = R/2) and L = ef_construction; write the graph, read it back into a
    ``Searcher(graph, data, "IP" or "L2", search_quantizer, "FP32")``, whose refiner rescores
    1.5 * k candidates on the f32 rows (glass's refine factor for SQ8U / SQ4U), then
    ``optimize(1)`` (prefetch tuning on one thread, as ann-benchmarks' glass module does).
    ef is set with ``set_ef``. The build has no chunks: progress comes at the end.
    """

    module_name = "glass"
    distribution = "pyglass-portable"
    search_quantizer: ClassVar[str]
    BUILD_QUANTIZER = "SQ8U"
    REFINE_QUANTIZER = "FP32"
    GRAPH_FILE = "graph.glass"
    DATA_FILE = "data.npy"

    def glass_metric(self) -> str:
        return "IP" if self.metric == "ip" else "L2"

    def parameters(self) -> dict[str, Any]:
        return {
            "R": self.R,
            "build_quant": self.BUILD_QUANTIZER,
            "search_quant": self.search_quantizer,
            "refine_quant": self.REFINE_QUANTIZER,
        }

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        glass = _library("glass")

        self.R, self.L = 2 * M, ef_construction
        glass.set_num_threads(threads)
        self._scratch = tempfile.TemporaryDirectory(prefix="matry-bench-glass-")
        graph_path = Path(self._scratch.name) / self.GRAPH_FILE
        builder = glass.Index(
            "HNSW", self.glass_metric(), quant=self.BUILD_QUANTIZER, R=self.R, L=self.L
        )
        builder.build(data).save(str(graph_path))
        # The searcher takes the graph over, so save() copies the file written here.
        self._graph_path = graph_path
        self._data = data
        self._make_searcher(graph_path, data)
        self.count = len(data)
        self.build_threads_used = threads
        if progress:
            progress(len(data))

    def _make_searcher(self, graph_path: Path, data: np.ndarray) -> None:
        glass = _library("glass")

        graph = glass.Graph(str(graph_path))
        self.searcher = glass.Searcher(
            graph, data, self.glass_metric(), self.search_quantizer, self.REFINE_QUANTIZER
        )
        self.searcher.optimize(1)
        glass.set_num_threads(self.query_threads)

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.searcher.set_ef(int(value))

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.searcher.batch_search(queries, k, self.query_threads)
        return np.asarray(ids, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.searcher.search(query, k)
        return np.asarray(ids, dtype=np.int64)

    def _save(self, path: Path) -> None:
        # glass saves only the graph; the searcher is made again from the f32 rows it refines on.
        path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._graph_path, path / self.GRAPH_FILE)
        np.save(path / self.DATA_FILE, self._data)

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        # Mapped rows are only read while the searcher copies them into its own storage.
        data = np.load(path / self.DATA_FILE, mmap_mode="r")
        self._make_searcher(path / self.GRAPH_FILE, data)
        del data
        self.count = count


class GlassSq8uAdapter(GlassAdapter):
    name = "glass-sq8u"
    search_quantizer = "SQ8U"


class GlassSq4uAdapter(GlassAdapter):
    """glass's own rule of thumb: "SQ8U for indexing, and SQ4U for searching"."""

    name = "glass-sq4u"
    search_quantizer = "SQ4U"


# ----------------------------------------------------------------------------------- SVS


class SvsLvqAdapter(LibraryAdapter):
    """Intel SVS (PyPI scalable-vs, imported as ``svs``): static Vamana graph over LVQ codes.

    SVS's guide "Vector Compression" (performance/using_compression): one-level LVQ-8 for
    datasets under 200 dimensions, two-level LVQ-4x8 (4-bit traversal codes, 8-bit residuals
    for the rerank) for higher dimensions. VamanaBuildParameters(graph_max_degree = 2*M, the
    level-0 degree of HNSW M, window_size = ef_construction; alpha left at SVS's default),
    DistanceType.MIP (L2 for l2 data), built from an LVQLoader over an fvecs copy of the rows
    (SVS compresses from a file loader, as in its examples/python/vamana_with_compression_lvq.py).
    The sweep
    sets ``search_window_size``; queries on ``num_threads`` threads.

    SVS's LVQ is closed source and runs only on Intel CPUs: elsewhere the library prints "LVQ
    and Leanvec functionality of SVS is not supported on non-Intel hardware" and ends the
    process, so the adapter is skipped on other CPUs. ``storage="float32"`` builds the same
    graph over uncompressed rows (to check the adapter on any CPU; not a benchmark entry).
    """

    name = "svs-lvq"
    module_name = "svs"
    distribution = "scalable-vs"
    search_param_name = "search_window_size"
    LOW_DIMENSION = 200
    STORAGES = ("lvq8", "lvq4x8", "float32")

    def __init__(self, dim: int, metric: str = "ip", storage: str | None = None) -> None:
        super().__init__(dim, metric)
        if storage is None:
            storage = "lvq8" if dim < self.LOW_DIMENSION else "lvq4x8"
        if storage not in self.STORAGES:
            raise ValueError(f"svs storage: expected one of {self.STORAGES}, got {storage!r}")
        self.storage = storage

    @classmethod
    def skip_reason(cls, dim: int, metric: str = "ip") -> str | None:
        reason = super().skip_reason(dim, metric)
        if reason:
            return reason
        vendor = cpu_vendor()
        if vendor is not None and vendor != "GenuineIntel":
            return (
                "SVS's LVQ runs only on Intel CPUs (svs ends the process on others); "
                f"this CPU is {vendor}"
            )
        return None

    def parameters(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "graph_max_degree": self.graph_max_degree,
            "distance": "MIP" if self.metric == "ip" else "L2",
        }

    def _distance(self) -> Any:
        svs = _library("svs")
        return svs.DistanceType.MIP if self.metric == "ip" else svs.DistanceType.L2

    def _loader(self, source: str) -> Any:
        svs = _library("svs")

        if self.storage == "float32":
            return svs.VectorDataLoader(source, svs.DataType.float32, dims=self.dim)
        primary, residual = {"lvq8": (8, 0), "lvq4x8": (4, 8)}[self.storage]
        uncompressed = svs.VectorDataLoader(source, svs.DataType.float32, dims=self.dim)
        return svs.LVQLoader(uncompressed, primary=primary, residual=residual)

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        svs = _library("svs")

        self.graph_max_degree, self.window_size = 2 * M, ef_construction
        with tempfile.TemporaryDirectory(prefix="matry-bench-svs-") as scratch:
            rows_path = os.path.join(scratch, "data.fvecs")
            svs.write_vecs(np.ascontiguousarray(data, dtype=np.float32), rows_path)
            parameters = svs.VamanaBuildParameters(
                graph_max_degree=self.graph_max_degree, window_size=self.window_size
            )
            self.index = svs.Vamana.build(
                parameters, self._loader(rows_path), self._distance(), num_threads=threads
            )
        self.index.num_threads = self.query_threads
        self.count = len(data)
        self.build_threads_used = threads
        if progress:
            progress(len(data))

    def set_query_threads(self, threads: int) -> None:
        super().set_query_threads(threads)
        self.index.num_threads = int(threads)

    def _search(self, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
        self.index.num_threads = threads
        self.index.search_window_size = max(self.search_param, k)
        ids, _ = self.index.search(queries, k)
        return np.asarray(ids, dtype=np.int64)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self._search(queries, k, self.query_threads)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(self._search(query.reshape(1, -1), k, 1)[0], dtype=np.int64)

    def _save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.index.save(str(path / "config"), str(path / "graph"), str(path / "data"))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        svs = _library("svs")

        if self.storage == "float32":
            data_loader = svs.VectorDataLoader(str(path / "data"), svs.DataType.float32)
        else:
            data_loader = svs.LVQLoader(str(path / "data"))
        self.index = svs.Vamana(
            str(path / "config"),
            svs.GraphLoader(str(path / "graph")),
            data_loader,
            self._distance(),
            num_threads=self.query_threads,
        )
        self.count = count


# ---------------------------------------------------------------------------------- VSAG


class VsagAdapter(LibraryAdapter):
    """VSAG (PyPI pyvsag) HGraph: graph on sq8 codes, reorder on fp32.

    Build parameters as in VSAG's HGraph guide (docs/indexes/hgraph.md) and its recall-95
    benchmark configurations (benchs/indexes/hgraph-95.yml): ``base_quantization_type: "sq8"``,
    ``use_reorder: true`` with ``precise_quantization_type: "fp32"``, ``max_degree = 2*M`` (the
    bottom layer's degree, like HNSW level 0), ``ef_construction``, ``build_thread_count``,
    metric "ip" or "l2". Search: ``{"hgraph": {"ef_search": ef}}``. pyvsag has no batched query
    call, so ``search_batch`` is a Python loop over ``knn_search`` (one thread).
    """

    name = "vsag-sq8"
    module_name = "pyvsag"
    distribution = "pyvsag"
    search_param_name = "ef_search"
    batch_is_loop = True

    def index_parameters(self, M: int, ef_construction: int, threads: int) -> dict[str, Any]:
        return {
            "dtype": "float32",
            "metric_type": self.metric,
            "dim": self.dim,
            "index_param": {
                "base_quantization_type": "sq8",
                "max_degree": 2 * M,
                "ef_construction": ef_construction,
                "use_reorder": True,
                "precise_quantization_type": "fp32",
                "build_thread_count": threads,
            },
        }

    def parameters(self) -> dict[str, Any]:
        settings = dict(self._index_parameters["index_param"])
        # Shown elsewhere in the tables: the build beam and the build threads.
        for key in ("ef_construction", "build_thread_count"):
            settings.pop(key, None)
        return settings

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        pyvsag = _library("pyvsag")

        self._index_parameters = self.index_parameters(M, ef_construction, threads)
        self.index = pyvsag.Index("hgraph", json.dumps(self._index_parameters))
        rows = np.ascontiguousarray(data, dtype=np.float32)
        self.index.build(
            vectors=rows,
            ids=np.arange(len(rows), dtype=np.int64),
            num_elements=len(rows),
            dim=self.dim,
        )
        self.count = len(data)
        self.build_threads_used = threads
        if progress:
            progress(len(data))

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self._search_json = json.dumps({"hgraph": {"ef_search": int(value)}})

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.knn_search(vector=query, k=k, parameters=self._search_json)
        return np.asarray(ids, dtype=np.int64)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        return _loop_search(self.search_one, queries, k)

    def _save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.index.save(str(path / "index.vsag"))
        # pyvsag.load needs the parameters the index was built with.
        (path / "parameters.json").write_text(json.dumps(self._index_parameters))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        pyvsag = _library("pyvsag")

        self._index_parameters = json.loads((path / "parameters.json").read_text())
        self.index = pyvsag.Index("hgraph", json.dumps(self._index_parameters))
        self.index.load(str(path / "index.vsag"))
        self.count = count


# --------------------------------------------------------------------------------- ScaNN


class ScannAdapter(LibraryAdapter):
    """ScaNN: k-means partitions, anisotropic hashing (AH) scores, exact f32 reorder.

    ann-benchmarks' scann module for angular data (tree with spherical=True (False for l2),
    quantize_centroids=True, training_sample_size = n; score_ah with dimensions_per_block 2 and
    anisotropic_quantization_threshold 0.2, its "scann1"/"scann3" groups; reorder on f32),
    scaled to the data size by ScaNN's rule of thumb (docs/algorithms.md: num_leaves about
    sqrt(n), dimensions_per_block 2). The sweep is ``leaves_to_search``; each point rescores
    max(3k, 2 * leaves) candidates, the ratio of ann-benchmarks' (leaves, reorder) pairs.
    Batches use ``search_batched`` (one thread); build threads through
    ``set_n_training_threads``.
    """

    name = "scann"
    module_name = "scann"
    distribution = "scann"
    search_param_name = "leaves_to_search"
    sweep = "scann_leaves"
    DIMENSIONS_PER_BLOCK = 2
    AVQ_THRESHOLD = 0.2

    def parameters(self) -> dict[str, Any]:
        return {
            "num_leaves": self.num_leaves,
            "dimensions_per_block": self.DIMENSIONS_PER_BLOCK,
            "avq_threshold": self.AVQ_THRESHOLD,
            "reorder": "max(3k, 2*leaves), f32",
        }

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        scann = _library("scann")

        rows = np.ascontiguousarray(data, dtype=np.float32)
        self.num_leaves = max(1, round(math.sqrt(len(rows))))
        distance = "dot_product" if self.metric == "ip" else "squared_l2"
        builder = scann.scann_ops_pybind.builder(rows, 10, distance)
        builder.set_n_training_threads(threads)
        self.searcher = (
            builder.tree(
                self.num_leaves,
                max(1, self.num_leaves // 20),
                training_sample_size=len(rows),
                spherical=self.metric == "ip",
                quantize_centroids=True,
            )
            .score_ah(
                self.DIMENSIONS_PER_BLOCK, anisotropic_quantization_threshold=self.AVQ_THRESHOLD
            )
            .reorder(100)
            .build()
        )
        self.count = len(data)
        self.build_threads_used = threads
        if progress:
            progress(len(data))

    def _leaves_and_reorder(self, k: int) -> tuple[int, int]:
        leaves = min(self.search_param, self.num_leaves)
        return leaves, max(3 * k, 2 * leaves)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        leaves, reorder = self._leaves_and_reorder(k)
        ids, _ = self.searcher.search_batched(queries, k, reorder, leaves)
        return np.asarray(ids, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        leaves, reorder = self._leaves_and_reorder(k)
        ids, _ = self.searcher.search(query, k, reorder, leaves)
        return np.asarray(ids, dtype=np.int64)

    def _save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.searcher.serialize(str(path))
        (path / "num_leaves.json").write_text(json.dumps(self.num_leaves))

    def load(self, path: Path, count: int, mode: str = LOAD) -> None:
        scann = _library("scann")

        self.searcher = scann.scann_ops_pybind.load_searcher(str(path))
        self.num_leaves = int(json.loads((path / "num_leaves.json").read_text()))
        self.count = count


ADAPTERS: dict[str, type[LibraryAdapter]] = {
    adapter.name: adapter
    for adapter in (
        MatryAdapter,
        MatryInt8Adapter,
        MatryInt8PrefixAdapter,
        HnswlibAdapter,
        AnnoyAdapter,
        UsearchAdapter,
        UsearchI8Adapter,
        FaissAdapter,
        FaissHnswSq8Adapter,
        VoyagerAdapter,
        GlassSq8uAdapter,
        GlassSq4uAdapter,
        SvsLvqAdapter,
        VsagAdapter,
        ScannAdapter,
    )
}
LIBRARY_NAMES = tuple(ADAPTERS)

# Short names for the leaders' recommended configurations (the variant names work too).
ALIASES = {"glass": "glass-sq4u", "svs": "svs-lvq", "vsag": "vsag-sq8"}
# What `matry bench --libs` lists; "all" runs every one of them.
USER_NAMES = (
    "matry",
    "matry-int8",
    "hnswlib",
    "faiss",
    "usearch",
    "annoy",
    "voyager",
    "glass",
    "svs",
    "vsag",
    "scann",
)
# Without --libs: these, where installed (the slower leaders only when asked for).
DEFAULT_NAMES = ("matry", "matry-int8", "hnswlib", "faiss", "usearch", "annoy", "voyager")


def resolve_libraries(text: str | None) -> list[str]:
    """Adapter names for a ``--libs`` value (comma-separated names or aliases, ``all``, or None
    for the default set). Raises ValueError naming an unknown name and listing the known
    ones."""
    if text is None or not text.strip():
        return list(DEFAULT_NAMES)
    names: list[str] = []
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        expanded = list(USER_NAMES) if item == "all" else [item]
        for name in expanded:
            name = ALIASES.get(name, name)
            if name not in ADAPTERS:
                known = ", ".join([*USER_NAMES, *(n for n in ADAPTERS if n not in USER_NAMES)])
                raise ValueError(f"--libs: unknown library {item!r}; known: {known}, all")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"--libs: no library named in {text!r}")
    return names


def make_adapter(name: str, dim: int, metric: str = "ip", **options: Any) -> LibraryAdapter:
    """Adapter for library ``name`` (options: Annoy's n_trees, SVS's storage)."""
    try:
        adapter_class = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"libs: unknown library {name!r}; known: {', '.join(ADAPTERS)}") from None
    return adapter_class(dim, metric, **options)
