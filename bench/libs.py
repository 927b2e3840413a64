"""One adapter per library, all with the same interface.

Every adapter indexes unit-length float32 rows with ids 0..n-1 by inner product (cosine on
normalized data) and returns int64 ids:

* ``build(data, M, ef_construction, threads)``: add all rows using ``threads`` threads,
* ``set_search_param(value)``: ef (HNSW libraries) or search_k (Annoy),
* ``set_query_threads(threads)``: threads of a batched search,
* ``search_batch(queries, k)`` -> int64 [n, k]; ``search_one(query, k)`` -> int64 [k],
* ``save(path)`` -> size in bytes of what was written.

The libraries are imported lazily, so a missing one only fails when it is used; ``available()``
tells beforehand.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Rows per add() call when building, so that long builds can show a progress bar.
BUILD_CHUNK_ROWS = 20_000
HNSW_SEED = 100

ProgressCallback = Callable[[int], None]


class LibraryAdapter(ABC):
    """Common interface of the benchmarked libraries."""

    name: ClassVar[str]
    module_name: ClassVar[str]
    distribution: ClassVar[str]
    search_param_name: ClassVar[str] = "ef"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self.search_param = 0
        self.query_threads = 1

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module_name) is not None

    @classmethod
    def version(cls) -> str:
        try:
            return version(cls.distribution)
        except PackageNotFoundError:
            module = importlib.import_module(cls.module_name)
            return str(getattr(module, "__version__", "unknown"))

    def build_config(self) -> dict[str, Any]:
        """Library-specific build parameters beyond M / ef_construction (Annoy: n_trees)."""
        return {}

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
        return os.path.getsize(path)


def _chunks(count: int) -> range:
    return range(0, count, BUILD_CHUNK_ROWS)


class MatryAdapter(LibraryAdapter):
    name = "matry"
    module_name = "matry"
    distribution = "matry"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        import matry

        self.index = matry.Index(self.dim, metric="ip", M=M, ef_construction=ef_construction)
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            self.index.add(rows, ids=np.arange(start, start + len(rows)), num_threads=threads)
            if progress:
                progress(len(rows))
        self.count = len(data)

    def build_config(self) -> dict[str, Any]:
        import matry

        return {"simd_level": matry.simd_level()}

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.index.ef = int(value)

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(queries, k=k, num_threads=self.query_threads)
        return np.asarray(ids, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        ids, _ = self.index.search(query, k=k, num_threads=1)
        return np.asarray(ids[0], dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save(str(path))


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
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(
            max_elements=len(data), ef_construction=ef_construction, M=M, random_seed=HNSW_SEED
        )
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            self.index.add_items(rows, np.arange(start, start + len(rows)), num_threads=threads)
            if progress:
                progress(len(rows))
        self.count = len(data)

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


class FaissAdapter(LibraryAdapter):
    """faiss IndexHNSWFlat, METRIC_INNER_PRODUCT; threads through OpenMP."""

    name = "faiss"
    module_name = "faiss"
    distribution = "faiss-cpu"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(self.dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        for start in _chunks(len(data)):
            rows = np.ascontiguousarray(data[start : start + BUILD_CHUNK_ROWS])
            self.index.add(rows)
            if progress:
                progress(len(rows))
        self.count = len(data)
        faiss.omp_set_num_threads(self.query_threads)

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        self.index.hnsw.efSearch = int(value)

    def set_query_threads(self, threads: int) -> None:
        import faiss

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
        import faiss

        faiss.write_index(self.index, str(path))


class UsearchAdapter(LibraryAdapter):
    """usearch f32 (no quantization), metric ip, connectivity = M."""

    name = "usearch"
    module_name = "usearch"
    distribution = "usearch"

    def build(
        self,
        data: np.ndarray,
        M: int,
        ef_construction: int,
        threads: int,
        progress: ProgressCallback | None = None,
    ) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=self.dim,
            metric="ip",
            dtype="f32",
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

    def set_search_param(self, value: int) -> None:
        super().set_search_param(value)
        # usearch defines the setter apart from the getter, which confuses type checkers.
        self.index.expansion_search = int(value)  # type: ignore[misc]

    def search_batch(self, queries: np.ndarray, k: int) -> np.ndarray:
        matches = self.index.search(queries, k, threads=self.query_threads)
        return np.asarray(matches.keys, dtype=np.int64)

    def search_one(self, query: np.ndarray, k: int) -> np.ndarray:
        matches = self.index.search(query, k, threads=1)
        return np.asarray(matches.keys, dtype=np.int64)

    def _save(self, path: Path) -> None:
        self.index.save(str(path))


class VoyagerAdapter(LibraryAdapter):
    """voyager Space.Cosine (on unit rows: 1 - dot), float32 storage."""

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
        import voyager

        self.index = voyager.Index(
            voyager.Space.Cosine,
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


class AnnoyAdapter(LibraryAdapter):
    """Annoy 'angular' (same order as cosine) with n_trees trees; M and ef are not used.

    Annoy has no batched query call: ``search_batch`` is a Python loop over
    get_nns_by_vector, and a batch runs on one thread whatever ``query_threads`` says.
    """

    name = "annoy"
    module_name = "annoy"
    distribution = "annoy"
    search_param_name = "search_k"

    def __init__(self, dim: int, n_trees: int = 50) -> None:
        super().__init__(dim)
        self.n_trees = n_trees

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
        from annoy import AnnoyIndex

        self.index = AnnoyIndex(self.dim, "angular")
        self.index.set_seed(HNSW_SEED)
        for start in _chunks(len(data)):
            rows = data[start : start + BUILD_CHUNK_ROWS]
            for offset, row in enumerate(rows.tolist()):
                self.index.add_item(start + offset, row)
            if progress:
                progress(len(rows))
        self.index.build(self.n_trees, n_jobs=threads)
        self.count = len(data)

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


ADAPTERS: dict[str, type[LibraryAdapter]] = {
    adapter.name: adapter
    for adapter in (
        MatryAdapter,
        HnswlibAdapter,
        AnnoyAdapter,
        UsearchAdapter,
        FaissAdapter,
        VoyagerAdapter,
    )
}
LIBRARY_NAMES = tuple(ADAPTERS)


def make_adapter(name: str, dim: int, **options: Any) -> LibraryAdapter:
    """Adapter for library ``name`` (options: Annoy's n_trees)."""
    try:
        adapter_class = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"libs: unknown library {name!r}; known: {', '.join(ADAPTERS)}") from None
    return adapter_class(dim, **options)
