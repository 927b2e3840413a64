"""Command line: ``python -m bench run|prepare|report|kernels``.

``run`` hands a cached data set to the packaged runner (``matry.bench``, the code behind
``matry bench --data``); each library is built and swept in a ``python -m matry.bench worker``
subprocess.

Examples (from the repository root)::

    python -m bench run --dataset glove-50 --libs matry,hnswlib,annoy,usearch,faiss,voyager
    python -m bench run --dataset glove-50 --libs matry,matry-int8,hnswlib,glass-sq8u,scann
    python -m bench run --dataset glove-50 --libs matry,hnswlib --quick
    python -m bench prepare --dataset minilm-glove-vocab
    python -m bench report --dataset glove-50
    python -m bench kernels
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import datasets, kernel_scan, report, runner
from bench.libs import LIBRARY_NAMES, resolve_libraries


def _int_list(text: str) -> list[int]:
    try:
        return runner.parse_int_list(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"data set: {', '.join(datasets.KNOWN_DATASETS)} (e.g. random-100000-64)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"first {datasets.QUICK_BASE_COUNT:,} base vectors and "
        f"{datasets.QUICK_QUERY_COUNT:,} queries",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="data set cache (default: $MATRY_BENCH_CACHE or ~/.cache/matry-bench)",
    )


def _add_timer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timer",
        choices=sorted(report.TIMERS),
        default="wall",
        help="QPS of the headline tables and the plot: wall clock (default) or CPU time of "
        "the worker (steadier on a shared machine); table.md shows both",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="matry side-by-side ANN benchmarks"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="build, sweep and report")
    _add_dataset_options(run)
    run.add_argument(
        "--libs",
        default=",".join(LIBRARY_NAMES),
        help=f"comma-separated libraries (default: all of {','.join(LIBRARY_NAMES)}; "
        "glass, svs and vsag name glass-sq4u, svs-lvq and vsag-sq8)",
    )
    run.add_argument("--M", type=_positive_int, default=16, help="HNSW links per node (16)")
    run.add_argument("--ef-construction", type=_positive_int, default=200, help="(200)")
    run.add_argument("--build-threads", type=_positive_int, default=2, help="(2)")
    run.add_argument(
        "--query-threads", type=_positive_int, default=1, help="threads of a batched search (1)"
    )
    run.add_argument("--k", type=_positive_int, default=10, help="neighbours per query (10)")
    run.add_argument(
        "--out",
        type=Path,
        default=runner.REPO_ROOT / "bench" / "results",
        help="results root; files go to <out>/<dataset>[-quick]/ (default: bench/results)",
    )
    run.add_argument(
        "--ef-values",
        type=_int_list,
        default=list(runner.DEFAULT_EF_VALUES),
        help="ef sweep of the HNSW libraries (default: %(default)s)",
    )
    run.add_argument(
        "--annoy-trees",
        type=_int_list,
        default=list(runner.DEFAULT_ANNOY_TREES),
        help="Annoy n_trees, one build each (default: %(default)s)",
    )
    run.add_argument(
        "--annoy-search-k",
        type=_int_list,
        default=list(runner.DEFAULT_ANNOY_SEARCH_K),
        help="Annoy search_k sweep (default: %(default)s)",
    )
    run.add_argument(
        "--scann-leaves",
        type=_int_list,
        default=list(runner.DEFAULT_SCANN_LEAVES),
        help="ScaNN leaves-to-search sweep (default: %(default)s)",
    )
    run.add_argument(
        "--single-query-count",
        type=_positive_int,
        default=None,
        help=f"queries timed one per call (default {runner.DEFAULT_SINGLE_QUERY_COUNT}, "
        f"--quick {runner.QUICK_SINGLE_QUERY_COUNT})",
    )
    run.add_argument(
        "--point-time-cap",
        type=float,
        default=None,
        help="stop a sweep when its next point would take longer than this many seconds "
        f"(default {runner.DEFAULT_POINT_TIME_CAP:.0f}, --quick {runner.QUICK_POINT_TIME_CAP:.0f})",
    )
    run.add_argument(
        "--stop-recall",
        type=float,
        default=0.999,
        help="stop a sweep once recall@10 reaches this (0.999)",
    )
    _add_timer_option(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument(
        "--no-resident",
        action="store_true",
        help="skip the resident-memory subprocesses (RSS after loading the saved index)",
    )

    prepare = commands.add_parser("prepare", help="make and cache a data set only")
    _add_dataset_options(prepare)

    report_parser = commands.add_parser(
        "report", help="rewrite table.md and plot.png from results.jsonl"
    )
    report_parser.add_argument("--dataset", required=True)
    report_parser.add_argument("--quick", action="store_true")
    report_parser.add_argument("--out", type=Path, default=runner.REPO_ROOT / "bench" / "results")
    _add_timer_option(report_parser)

    kernels = commands.add_parser(
        "kernels", help="run the pytest-benchmark kernel micro-benchmarks and write kernels.md"
    )
    kernels.add_argument("--out", type=Path, default=runner.REPO_ROOT / "bench" / "results")

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    cache_dir = getattr(args, "cache_dir", None) or datasets.default_cache_dir()
    try:
        if args.command == "run":
            config = runner.RunConfig(
                dataset=args.dataset,
                libs=resolve_libraries(args.libs),
                M=args.M,
                ef_construction=args.ef_construction,
                build_threads=args.build_threads,
                query_threads=args.query_threads,
                k=args.k,
                quick=args.quick,
                cache_dir=cache_dir,
                out=args.out,
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
            )
            return runner.run(config)
        if args.command == "prepare":
            directory = datasets.prepare(args.dataset, cache_dir, quick=args.quick)
            dataset = datasets.load(directory, mmap=True)
            print(
                f"{directory}: {dataset.n_base:,} base vectors, {dataset.n_queries:,} queries, "
                f"dim {dataset.dim}"
            )
            return 0
        if args.command == "report":
            results_dir = args.out / datasets.dataset_key(args.dataset, args.quick)
            points = report.load_points(results_dir / "results.jsonl")
            skipped = report.load_skipped(results_dir)
            for path in report.write_report(results_dir, points, args.timer, skipped):
                print(f"wrote {path}")
            print((results_dir / "table.md").read_text())
            return 0
        if args.command == "kernels":
            return _kernels(args.out)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 2


def _level_order(level: str) -> int:
    return (
        ["scalar", "neon", "avx2", "avx512"].index(level)
        if level in ("scalar", "neon", "avx2", "avx512")
        else 9
    )


def _kernels(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        json_path = Path(scratch) / "kernels.json"
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                str(runner.REPO_ROOT / "bench" / "test_kernels.py"),
                "--benchmark-only",
                f"--benchmark-json={json_path}",
                "--benchmark-warmup=on",
                "--benchmark-warmup-iterations=10",
                "-q",
            ],
            cwd=str(runner.REPO_ROOT),
            env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
            check=False,
        )
        if completed.returncode != 0 or not json_path.exists():
            return completed.returncode or 1
        table = report.kernel_table(json_path)
    from matry import _core

    print("measuring the kernels inside a brute-force scan, one subprocess per level", flush=True)
    table += "\n" + kernel_scan.scan_table(sorted(_core.supported_simd_levels(), key=_level_order))
    (out / "kernels.md").write_text("# Kernel micro-benchmarks\n\n" + table)
    print(f"\nwrote {out / 'kernels.md'}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
