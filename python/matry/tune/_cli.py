"""`matry tune`: grid-tune an index for a recall target from a vector file."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from .._data import read_vectors
from ._grid import grid


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
