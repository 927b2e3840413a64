"""Input of ``build``: the rows of every kind of ``data`` as a list of blocks, never gathered.

A block is something a worker turns into rows: an in-memory (or memory-mapped) array, a file
descriptor tuple read by :func:`matry.distributed._core.read_block`, a Ray object reference of
a Ray Data block, or a Dask future of a dask.array chunk. The driver keeps only block sizes
and ids (8 bytes a row).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..index import _as_ids

# Rows per block cut from an in-memory array or a file: the batches each shard adds in order.
BLOCK_ROWS = 65_536
ID_COLUMN_DEFAULT = "id"


@dataclass
class Block:
    data: Any
    first_row: int
    rows: int
    column: str | None = None  # vector column of a Ray Data block (a dict of columns)
    ids: np.ndarray | None = None


@dataclass
class Source:
    kind: str  # "memory", "file", "ray", "dask"
    dim: int
    blocks: list[Block]

    @property
    def count(self) -> int:
        return sum(block.rows for block in self.blocks)


def _memory_blocks(array: np.ndarray, first_row: int, block_rows: int) -> list[Block]:
    return [
        Block(array[start : start + block_rows], first_row + start, min(block_rows, n - start))
        for n in (array.shape[0],)
        for start in range(0, n, block_rows)
    ]


def _check_matrix(array: Any, argument: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{argument}: expected real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{argument}: expected a 2-D array [n, dim], got {array.ndim}-D")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{argument}: empty ({array.shape[0]} rows, {array.shape[1]} columns)")
    matrix: np.ndarray = array
    return matrix


def _is_ray_dataset(data: Any) -> bool:
    module = type(data).__module__
    return module.startswith("ray.data") and hasattr(data, "to_numpy_refs")


def _is_dask_array(data: Any) -> bool:
    return type(data).__module__.startswith("dask.array") and hasattr(data, "to_delayed")


def _file_source(path: Path, column: str | None, block_rows: int) -> Source:
    if not path.is_file():
        raise ValueError(f"data: {path}: no such file")
    suffix = path.suffix.lower()
    name = str(path)
    blocks: list[Block] = []
    if suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"data: {path}: not a readable .npy array ({error})") from None
        array = _check_matrix(array, f"data ({path})")
        n, dim = array.shape
        for start in range(0, n, block_rows):
            stop = min(n, start + block_rows)
            blocks.append(Block(("npy", name, start, stop), start, stop - start))
    elif suffix == ".fvecs":
        size = path.stat().st_size
        if size < 4:
            raise ValueError(f"data: {path}: too short for an .fvecs header")
        dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
        row_bytes = 4 * (dim + 1)
        if dim <= 0 or size % row_bytes:
            raise ValueError(f"data: {path}: not an .fvecs file of dimension {dim}")
        n = size // row_bytes
        headers = np.memmap(path, dtype="<i4", mode="r").reshape(-1, dim + 1)[:, 0]
        if not np.all(headers == dim):
            bad = int(np.flatnonzero(headers != dim)[0])
            raise ValueError(f"data: {path}: row {bad} has dimension {headers[bad]}, not {dim}")
        for start in range(0, n, block_rows):
            stop = min(n, start + block_rows)
            blocks.append(Block(("fvecs", name, start, stop, dim), start, stop - start))
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ValueError(f"data: {path}: reading parquet needs pyarrow") from error
        from ._core import arrow_vectors

        parquet = pq.ParquetFile(path)
        list_columns = [
            field.name
            for field in parquet.schema_arrow
            if str(field.type).startswith(("list", "large_list", "fixed_size_list"))
        ]
        if column is None:
            if len(list_columns) != 1:
                raise ValueError(f"column: {path} has list columns {list_columns}; name one")
            column = list_columns[0]
        elif column not in list_columns:
            raise ValueError(f"column: {path} has no list column {column!r} ({list_columns})")
        first = parquet.read_row_group(0, columns=[column]) if parquet.num_row_groups else None
        if first is None or first.num_rows == 0:
            raise ValueError(f"data: {path} has no rows")
        dim = arrow_vectors(first.column(column).slice(0, 1), f"{path}").shape[1]
        start = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if rows:
                blocks.append(Block(("parquet", name, group, column), start, rows))
            start += rows
    else:
        raise ValueError(f"data: {path}: unknown file type {suffix!r}; use .npy, .fvecs, .parquet")
    return Source("file", int(dim), blocks)


def _ray_source(dataset: Any, column: str | None, id_column: str | None) -> Source:
    names = list(dataset.schema().names)
    if id_column is not None and id_column not in names:
        raise ValueError(f"id_column: the dataset has no column {id_column!r} ({names})")
    if column is None:
        candidates = [name for name in names if name != id_column]
        if len(candidates) != 1:
            raise ValueError(f"column: the dataset has columns {names}; name the vector column")
        column = candidates[0]
    elif column not in names:
        raise ValueError(f"column: the dataset has no column {column!r} ({names})")
    refs = dataset.to_numpy_refs()  # materializes blocks in the object store, not here
    return Source("ray", 0, [Block(ref, 0, 0, column) for ref in refs])


def _dask_source(array: Any) -> Source:
    if array.ndim != 2:
        raise ValueError(f"data: expected a 2-D dask array [n, dim], got {array.ndim}-D")
    if np.dtype(array.dtype).kind not in "iuf":
        raise ValueError(f"data: expected real numbers, got dtype {array.dtype}")
    if any(np.isnan(size) for size in array.chunks[0]):
        raise ValueError("data: the dask array has unknown chunk sizes (call compute_chunk_sizes)")
    if len(array.chunks[1]) > 1:
        array = array.rechunk({1: -1})
    delayed = list(array.to_delayed()[:, 0])
    blocks: list[Block] = []
    start = 0
    for chunk, rows in zip(delayed, array.chunks[0]):
        if rows:
            blocks.append(Block(chunk, start, int(rows)))
        start += int(rows)
    if start == 0 or array.shape[1] == 0:
        raise ValueError(f"data: empty dask array {array.shape}")
    return Source("dask", int(array.shape[1]), blocks)


def open_source(
    data: Any, engine: str, column: str | None, id_column: str | None, block_rows: int = BLOCK_ROWS
) -> Source:
    """Recognizes ``data`` and cuts it into blocks (sizes of Ray blocks are filled in later)."""
    if isinstance(data, (str, os.PathLike)):
        return _file_source(Path(data), column, block_rows)
    if _is_ray_dataset(data):
        if engine != "ray":
            raise ValueError(f"data: a ray.data.Dataset needs engine='ray' (got {engine!r})")
        return _ray_source(data, column, id_column)
    if _is_dask_array(data):
        if engine != "dask":
            raise ValueError(f"data: a dask.array needs engine='dask' (got {engine!r})")
        return _dask_source(data)
    if isinstance(data, (list, tuple)) and data and not np.isscalar(data[0]):
        arrays = [_check_matrix(part, f"data[{i}]") for i, part in enumerate(data)]
        dims = {a.shape[1] for a in arrays}
        if len(dims) != 1:
            raise ValueError(f"data: the arrays have different dimensions {sorted(dims)}")
        blocks: list[Block] = []
        start = 0
        for array in arrays:
            blocks.extend(_memory_blocks(array, start, block_rows))
            start += array.shape[0]
        return Source("memory", dims.pop(), blocks)
    array = _check_matrix(data, "data")
    return Source("memory", int(array.shape[1]), _memory_blocks(array, 0, block_rows))


def attach_ids(source: Source, ids: Any) -> None:
    """Gives every block its int64 ids: ``ids`` split by block, or row numbers when None."""
    count = source.count
    if ids is None:
        for block in source.blocks:
            if block.ids is None:
                block.ids = np.arange(block.first_row, block.first_row + block.rows, dtype=np.int64)
        return
    array = _as_ids(ids)
    if array.shape[0] != count:
        raise ValueError(f"ids: expected {count} ids (one per row of data), got {array.shape[0]}")
    for block in source.blocks:
        block.ids = array[block.first_row : block.first_row + block.rows]


def check_unique(source: Source) -> None:
    all_ids = np.concatenate([b.ids for b in source.blocks if b.ids is not None])
    unique, counts = np.unique(all_ids, return_counts=True)
    if unique.size != all_ids.size:
        duplicate = int(unique[np.argmax(counts > 1)])
        raise ValueError(f"ids: id {duplicate} appears more than once")


def sample_plan(source: Source, sample: int, seed: int) -> list[np.ndarray]:
    """Row offsets inside each block of a seeded uniform sample of ``sample`` rows."""
    rng = np.random.default_rng(seed)
    count = source.count
    chosen = np.sort(rng.choice(count, size=min(sample, count), replace=False))
    plan = []
    for block in source.blocks:
        lo, hi = np.searchsorted(chosen, [block.first_row, block.first_row + block.rows])
        plan.append(chosen[lo:hi] - block.first_row)
    return plan
