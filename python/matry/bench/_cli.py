"""``matry bench``: the command line of the packaged benchmark runner."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._adapters import ADAPTERS, DEFAULT_NAMES, USER_NAMES, resolve_libraries
from ._prepare import DEFAULT_QUERY_COUNT, METRICS, load_inputs, write_prepared
from ._report import TIMERS, skipped_text
from ._runner import (
    DEFAULT_ANNOY_SEARCH_K,
    DEFAULT_ANNOY_TREES,
    DEFAULT_EF_VALUES,
    DEFAULT_POINT_TIME_CAP,
    DEFAULT_SCANN_LEAVES,
    DEFAULT_SINGLE_QUERY_COUNT,
    RunConfig,
    parse_int_list,
    run_benchmark,
)

GROUND_TRUTH_DIR = "ground-truth"
BENCH_EXTRA = "pip install 'matry[bench]'"


def _int_list(option: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            return parse_int_list(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{option}: {error}") from None

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _recall(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value <= 1.1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1.1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="matry bench",
        description=(
            "Compare matry with other ANN libraries on your vectors: each library builds an "
            "index with the same M / ef_construction and sweeps its search parameter; prints "
            "QPS at recall 0.90 / 0.95 / 0.99, build seconds and bytes per vector, and writes "
            "table.md, results.jsonl and plot.png to --out. Libraries that are not installed "
            f"are listed with the pip command that adds them ({BENCH_EXTRA} adds them all)."
        ),
    )
    parser.add_argument(
        "--data", required=True, help="vectors: .npy, .fvecs, .bvecs, .parquet, .arrow/.feather"
    )
    parser.add_argument(
        "--queries",
        help="query vectors (same formats); default: --queries-count rows of --data held out",
    )
    parser.add_argument("--column", help="list column holding the vectors (parquet/arrow)")
    parser.add_argument(
        "--metric", default="cosine", choices=METRICS, help="(default: %(default)s)"
    )
    parser.add_argument(
        "--libs",
        default=None,
        help=f"comma-separated: {', '.join(USER_NAMES)} (or a variant: "
        f"{', '.join(name for name in ADAPTERS if name not in USER_NAMES)}), or 'all'; "
        f"default: the installed ones of {','.join(DEFAULT_NAMES)}",
    )
    parser.add_argument("--k", type=_positive_int, default=10, help="neighbours (default 10)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a new ./matry-bench-<timestamp>); the exact neighbours "
        f"are cached in <out>/{GROUND_TRUTH_DIR}/ and reused by a later run on the same folder",
    )
    parser.add_argument(
        "--queries-count",
        type=_positive_int,
        default=None,
        help=f"queries held out of --data (default {DEFAULT_QUERY_COUNT:,}, at most a tenth "
        "of it), or kept of --queries (default: all)",
    )
    parser.add_argument(
        "--max-base", type=_positive_int, default=None, help="use at most this many base rows"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out sample (0)")
    parser.add_argument("--M", type=_positive_int, default=16, help="graph degree (16)")
    parser.add_argument("--ef-construction", type=_positive_int, default=200, help="(200)")
    parser.add_argument(
        "--build-threads",
        type=_positive_int,
        default=cores,
        help="threads of every build (default: all %(default)s cores)",
    )
    parser.add_argument(
        "--query-threads", type=_positive_int, default=1, help="threads of a batched search (1)"
    )
    parser.add_argument(
        "--ef-values",
        type=_int_list("--ef-values"),
        default=list(DEFAULT_EF_VALUES),
        help="ef sweep of the graph libraries (default: %(default)s)",
    )
    parser.add_argument(
        "--annoy-trees",
        type=_int_list("--annoy-trees"),
        default=list(DEFAULT_ANNOY_TREES),
        help="Annoy n_trees, one build each (default: %(default)s)",
    )
    parser.add_argument(
        "--annoy-search-k",
        type=_int_list("--annoy-search-k"),
        default=list(DEFAULT_ANNOY_SEARCH_K),
        help="Annoy search_k sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--scann-leaves",
        type=_int_list("--scann-leaves"),
        default=list(DEFAULT_SCANN_LEAVES),
        help="ScaNN leaves-to-search sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--single-query-count",
        type=_positive_int,
        default=DEFAULT_SINGLE_QUERY_COUNT,
        help="queries timed one per call (default %(default)s)",
    )
    parser.add_argument(
        "--point-time-cap",
        type=float,
        default=DEFAULT_POINT_TIME_CAP,
        help="stop a sweep when its next point would take longer than this many CPU seconds "
        "(default %(default).0f)",
    )
    parser.add_argument(
        "--stop-recall",
        type=_recall,
        default=0.999,
        help="stop a sweep once recall@k reaches this (0.999)",
    )
    parser.add_argument(
        "--timer",
        choices=sorted(TIMERS),
        default="wall",
        help="QPS by the wall clock (default) or by CPU time (steadier on a shared machine); "
        "table.md shows both",
    )
    parser.add_argument(
        "--no-resident",
        action="store_true",
        help="skip the resident-memory subprocesses (bytes/vector then from the library or disk)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def default_out_dir(parent: Path) -> Path:
    """A new folder ``matry-bench-<timestamp>[-n]`` under ``parent``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = parent / (f"matry-bench-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as error:
            raise ValueError(
                f"--out: cannot make {candidate} ({error.strerror}); pass --out DIR"
            ) from None
        return candidate
    raise ValueError(f"--out: could not make a new folder under {parent}")


def check_out_dir(out: Path) -> Path:
    """The output folder, made if needed; never inside the installed matry package."""
    package = Path(__file__).resolve().parents[1]
    resolved = out.expanduser().resolve()
    if resolved == package or package in resolved.parents:
        raise ValueError(f"--out: {out} is inside the matry package ({package}); pick a folder")
    if resolved.exists() and not resolved.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out: cannot make {out} ({error.strerror})") from None
    return resolved


def main(argv: list[str] | None = None) -> int:
    """Run ``matry bench`` with ``argv`` (the arguments after "bench"); returns the exit status:
    0 when every library that could run did, 1 when one failed or none could run, 2 on bad
    arguments or input."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # argparse exits on --help and on usage errors
        return int(stop.code or 0) if not isinstance(stop.code, str) else 2
    try:
        return _run(args)
    except ValueError as error:
        print(f"matry bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matry bench: interrupted", file=sys.stderr)
        return 130


def _run(args: Any) -> int:
    libraries = resolve_libraries(args.libs)
    for option in ("data", "queries"):
        path = getattr(args, option)
        if path is not None and not Path(path).is_file():
            raise ValueError(f"--{option}: {path}: no such file")
    # Not installed: listed (with the pip command), never run.
    skipped = {
        name: ADAPTERS[name].not_installed_reason()
        for name in libraries
        if not ADAPTERS[name].available()
    }
    runnable = [name for name in libraries if name not in skipped]
    if not runnable:
        print(
            "matry bench: none of the libraries of --libs is installed:\n"
            + skipped_text(skipped)
            + f"\n({BENCH_EXTRA} installs them all)",
            file=sys.stderr,
        )
        return 1
    # Everything is read and checked before any folder is made: a bad input changes nothing.
    started = time.perf_counter()
    inputs = load_inputs(
        args.data,
        queries=args.queries,
        metric=args.metric,
        k=args.k,
        column=args.column,
        query_count=args.queries_count,
        max_base=args.max_base,
        seed=args.seed,
    )
    out = check_out_dir(args.out) if args.out is not None else default_out_dir(Path.cwd())
    print(f"matry bench: results in {out}", flush=True)
    print(
        f"libraries: {', '.join(runnable) or 'none'}"
        + (f"; not installed: {', '.join(skipped)}" if skipped else ""),
        flush=True,
    )
    config = RunConfig(
        libs=runnable,
        M=args.M,
        ef_construction=args.ef_construction,
        build_threads=args.build_threads,
        query_threads=args.query_threads,
        k=args.k,
        ef_values=args.ef_values,
        annoy_trees=args.annoy_trees,
        annoy_search_k=args.annoy_search_k,
        scann_leaves=args.scann_leaves,
        single_query_count=args.single_query_count,
        point_time_cap=args.point_time_cap,
        stop_recall=args.stop_recall,
        timer=args.timer,
        progress=not args.no_progress,
        resident=not args.no_resident,
        skipped=skipped,
    )
    with tempfile.TemporaryDirectory(prefix=".matry-bench-data-", dir=out) as work:
        data = write_prepared(
            inputs, Path(work), out / GROUND_TRUTH_DIR, progress=not args.no_progress
        )
        seconds = time.perf_counter() - started
        print(
            f"{data.name}: {data.n_base:,} base vectors, {data.n_queries:,} queries, "
            f"dim {data.dim}, metric {data.metric} (ready in {seconds:.1f} s)",
            flush=True,
        )
        status = run_benchmark(data, config, out)
    if skipped:
        print(f"{BENCH_EXTRA} installs every library this command compares.", flush=True)
    if not (out / "results.jsonl").stat().st_size:
        print("matry bench: no library produced results", file=sys.stderr)
        return 1
    return status
