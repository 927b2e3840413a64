"""`matry tune`: grid-tune an index for a recall target from a vector file."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._grid import grid

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


def _int_list(option: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected comma-separated integers, got {text!r}"
            ) from None
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matry tune",
        description=(
            "Build an index for each (M, ef_construction), find the smallest ef whose lower"
            " confidence bound on recall@k reaches the target, and recommend the fastest"
            " configuration. Prints a Markdown report."
        ),
    )
    parser.add_argument("--data", required=True, help=".npy, .fvecs, .bvecs, .parquet, .arrow")
    parser.add_argument(
        "--queries",
        help="held-out queries (same formats); default: a sample"
        " of the data, each query excluding itself",
    )
    parser.add_argument("--column", help="list column holding the vectors (parquet/arrow)")
    parser.add_argument("--target", type=float, default=0.95, help="recall@k target (0, 1]")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"])
    parser.add_argument("--Ms", type=_int_list("--Ms"), default=[8, 12, 16, 24, 32, 48])
    parser.add_argument(
        "--ef-constructions", type=_int_list("--ef-constructions"), default=[100, 200, 400]
    )
    parser.add_argument(
        "--efs",
        type=_int_list("--efs"),
        default=None,
        help="ef values of the recall/QPS curve (default: automatic)",
    )
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        help="bytes per vector the recommendation may use",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=1000,
        help="queries sampled from the data when --queries is not given",
    )
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--qps-min-seconds",
        type=float,
        default=0.2,
        help="time each point's batch search for at least this long (best batch counts)",
    )
    parser.add_argument("--plot", help="write the recall/QPS plot (PNG) here")
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--markdown", help="write the Markdown report here")
    parser.add_argument("--save-index", help="save the recommended index (tuned ef) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def cli_main(argv: list[str]) -> int:
    """Run `matry tune` with ``argv`` (the arguments after "tune"). Returns the exit status:
    0 when a configuration meets the target, 1 when none does (the report is still written),
    2 on bad arguments or input."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits on --help and on usage errors
        return int(stop.code or 0) if not isinstance(stop.code, str) else 2
    try:
        return _run(args)
    except ValueError as error:
        print(f"matry tune: error: {error}", file=sys.stderr)
        return 2


def _run(args: Any) -> int:
    # checked before the grid runs: it can take minutes, and its report should not be lost
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(
            "--plot: writing the plot needs matplotlib, which is not installed"
            " (pip install 'matry[plot]')"
        )
    vectors = read_vectors(args.data, args.column)
    queries = None if args.queries is None else read_vectors(args.queries, args.column)
    report = grid(
        vectors,
        queries=queries,
        Ms=args.Ms,
        ef_constructions=args.ef_constructions,
        k=args.k,
        target=args.target,
        metric=args.metric,
        memory_budget=args.memory_budget,
        num_threads=args.threads,
        progress=not args.no_progress,
        efs=args.efs,
        sample=args.sample,
        confidence=args.confidence,
        seed=args.seed,
        save_index=args.save_index,
        qps_min_seconds=args.qps_min_seconds,
    )
    print(report.to_markdown(args.markdown), end="")
    if args.json:
        report.to_json(args.json)
    if args.plot:
        report.plot(args.plot)
    if report.recommended is None:
        print("matry tune: no configuration meets the target", file=sys.stderr)
        if args.save_index:
            print(f"matry tune: {args.save_index} was not written", file=sys.stderr)
        return 1
    return 0
