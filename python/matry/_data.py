"""Reading vector files: .npy, .fvecs / .bvecs, and parquet / arrow list columns.

Shared by ``matry tune`` and ``matry bench``; pyarrow is imported only for parquet/arrow files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_ARROW_SUFFIXES = {".arrow", ".feather", ".ipc"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


def read_vectors(path: str | os.PathLike[str], column: str | None = None) -> np.ndarray:
    """Read a float32 [n, dim] matrix from .npy, .fvecs, .bvecs, or a parquet/arrow file with a
    list column (``column``, or the only list column). Raises ValueError naming the file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{file}: not a readable .npy array ({error})") from error
    elif suffix == ".fvecs":
        array = _read_vecs(file, np.dtype("<f4"))
    elif suffix == ".bvecs":
        array = _read_vecs(file, np.dtype("u1"))
    elif suffix in _PARQUET_SUFFIXES or suffix in _ARROW_SUFFIXES:
        array = _read_arrow(file, column)
    else:
        raise ValueError(
            f"{file}: unknown vector file type {suffix!r}; use .npy, .fvecs, .bvecs, .parquet"
            " or .arrow/.feather"
        )
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{file}: expected a non-empty 2-D [n, dim] array, got {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{file}: expected numeric vectors, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _read_vecs(file: Path, component: np.dtype) -> np.ndarray:
    """.fvecs / .bvecs: each row is a little-endian int32 dim, then dim components."""
    raw = np.fromfile(file, dtype=np.uint8)
    if raw.size < 4:
        raise ValueError(f"{file}: too short for a {file.suffix} header")
    dim = int(raw[:4].view("<i4")[0])
    if dim <= 0:
        raise ValueError(f"{file}: bad dimension {dim} in the first row header")
    row_bytes = 4 + dim * component.itemsize
    if raw.size % row_bytes:
        raise ValueError(
            f"{file}: size {raw.size} is not a multiple of the row size {row_bytes} (dim {dim})"
        )
    rows = raw.reshape(-1, row_bytes)
    headers = rows[:, :4].copy().view("<i4").ravel()
    if not np.all(headers == dim):
        bad = int(np.flatnonzero(headers != dim)[0])
        raise ValueError(f"{file}: row {bad} has dimension {headers[bad]}, row 0 has {dim}")
    return rows[:, 4:].copy().view(component).reshape(-1, dim)


def _read_arrow(file: Path, column: str | None) -> np.ndarray:
    try:
        import pyarrow as pa
    except ImportError as error:
        raise ValueError(
            f"{file}: reading parquet/arrow files needs pyarrow (pip install pyarrow)"
        ) from error
    if file.suffix.lower() in _PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        table = pq.read_table(file)
    else:
        import pyarrow.feather as feather

        table = feather.read_table(file)
    list_columns = [
        field.name
        for field in table.schema
        if pa.types.is_list(field.type)
        or pa.types.is_large_list(field.type)
        or pa.types.is_fixed_size_list(field.type)
    ]
    if column is None:
        if len(list_columns) != 1:
            raise ValueError(
                f"{file}: found list columns {list_columns}; name the vector column with --column"
            )
        column = list_columns[0]
    elif column not in table.column_names:
        raise ValueError(f"--column: {file} has no column {column!r} ({table.column_names})")
    elif column not in list_columns:
        raise ValueError(f"--column: column {column!r} of {file} is not a list column")
    chunked = table.column(column)
    if chunked.null_count:
        raise ValueError(f"{file}: column {column!r} has {chunked.null_count} null rows")
    array = chunked.combine_chunks()
    lengths = np.asarray(array.value_lengths() if hasattr(array, "value_lengths") else [])
    if pa.types.is_fixed_size_list(array.type):
        dim = array.type.list_size
    else:
        if lengths.size and not np.all(lengths == lengths[0]):
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ValueError(
                f"{file}: row {bad} of column {column!r} has {lengths[bad]} values, row 0 has"
                f" {lengths[0]}"
            )
        dim = int(lengths[0]) if lengths.size else 0
    values = array.flatten().to_numpy(zero_copy_only=False)
    if dim == 0 or values.size != len(array) * dim:
        raise ValueError(f"{file}: column {column!r} does not hold equal-length vectors")
    return np.asarray(values).reshape(len(array), dim)
