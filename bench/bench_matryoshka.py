"""Matryoshka prefix search: QPS at recall@10 = 0.95 against full-width matry and hnswlib.

On the 384-d sentence data set (``minilm-glove-vocab`` from :mod:`bench.datasets`), the same
run builds

* hnswlib (space ``"ip"``) and full-width matry (metric ``"ip"``),
* matry with ``prefix_dim`` = p for p in 32, 64, 128, 192, each without and with the PCA
  rotation (``rotation="pca"``, fitted on the base when it is added): a graph built and
  traversed on the prefix,
* one full-width matry graph of the PCA-rotated vectors, searched with the per-query override
  ``search(prefix_dim=p)`` for the same p (traversal on the prefix, graph built on all dims),

all with M=16, ef_construction=200 and 2 build threads, then sweeps ef with one query thread
(one batched ``search`` call over all queries, ``num_threads=1``) and reads the QPS at
recall@10 = 0.95 off each sweep, interpolating log(QPS) linearly in recall between the two
points that bracket the target. Prefix indexes are swept with the default rerank (the whole
beam: max(ef, k) candidates) and with ``rerank`` = 2k and 4k (ef >= rerank). The two baselines
(hnswlib, full-width matry) are swept again at the end of the run and keep their better sweep,
so a quiet spell during the prefix sweeps cannot flatter the ratios.

Every QPS is measured twice: by the wall clock and by the CPU time of this process (one query
thread, so CPU time is the time the query thread ran; on a shared machine it is the figure
other processes do not distort). Ratios in the table use the CPU-time figures.

Run from the repository root::

    python -m bench.bench_matryoshka                     # 200k base vectors, 1k queries
    python -m bench.bench_matryoshka --base-count 100000 # a subset, for a busy machine
    python bench/bench_matryoshka.py --prepare           # make the data set first if missing

Writes ``bench/results/matryoshka/table.md`` (and ``sweeps.json`` with every point);
``--report-only`` rewrites the table from ``sweeps.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# One query thread means one thread for everything a query does, including the query rotation
# (a small matmul in numpy): a multi-threaded BLAS pool on a busy machine makes it many times
# slower. Set before numpy is imported; an explicit setting in the environment wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: python bench/bench_matryoshka.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import datasets  # noqa: E402
from bench.report import interpolate_log  # noqa: E402

K = 10
M = 16
EF_CONSTRUCTION = 200
BUILD_THREADS = 2
TARGET_RECALL = 0.95
STOP_RECALL = 0.985
PLATEAU_POINTS = 2  # stop a sweep below the target when the last 2 ef steps ...
PLATEAU_GAIN = 0.005  # ... added less recall than this (a small rerank caps the recall)
PREFIX_DIMS = (32, 64, 128, 192)
RERANK_FACTORS = (2, 4)  # rerank = factor * k, besides the default (the whole beam)
EF_VALUES = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
DEFAULT_BASE_COUNT = 200_000
DEFAULT_QUERY_COUNT = 1_000
MIN_POINT_SECONDS = 1.0  # repeat a timed search until the runs add up to this ...
MAX_POINT_REPEATS = 5  # ... or this many runs; the fastest run counts
POINT_TIME_CAP = 30.0  # skip the rest of a sweep when the next point would take longer
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "matryoshka"

SearchFunction = Callable[[np.ndarray, int], np.ndarray]  # (queries, ef) -> ids [n, k]


@dataclass
class SweepPoint:
    ef: int
    recall: float
    qps_wall: float
    qps_cpu: float


@dataclass
class Sweep:
    """One search configuration of one build, swept over ef."""

    rerank: int | None  # None = the default (whole beam); ignored for full-width searches
    points: list[SweepPoint] = field(default_factory=list)

    def qps_at(self, target: float, timer: str) -> tuple[float, str] | None:
        """(QPS at ``target`` recall@10, bracketing efs) or None if the sweep never reaches it.

        A sweep whose first point already exceeds the target gives that point's QPS, marked
        with ">=" (a lower bound).
        """
        key = "qps_cpu" if timer == "cpu" else "qps_wall"
        points = self.points
        if not points or max(p.recall for p in points) < target:
            return None
        if points[0].recall >= target:
            return getattr(points[0], key), f"ef<={points[0].ef}"
        for lower, upper in zip(points, points[1:]):
            if lower.recall < target <= upper.recall:
                qps = interpolate_log(
                    lower.recall, getattr(lower, key), upper.recall, getattr(upper, key), target
                )
                return qps, f"ef {lower.ef}-{upper.ef}"
        return None


@dataclass
class Build:
    label: str
    library: str
    prefix_dim: int | None
    rotation: bool
    build_seconds: float
    build_cpu_seconds: float
    shared_build: bool = False  # searches a graph built for another row (build s repeated)
    sweeps: list[Sweep] = field(default_factory=list)

    def best(self, target: float, timer: str) -> tuple[float, str, Sweep] | None:
        best: tuple[float, str, Sweep] | None = None
        for sweep in self.sweeps:
            found = sweep.qps_at(target, timer)
            if found and (best is None or found[0] > best[0]):
                best = (found[0], found[1], sweep)
        return best

    def max_recall(self) -> float:
        return max((p.recall for s in self.sweeps for p in s.points), default=0.0)


# ---------------------------------------------------------------- measuring


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact top-k| / k."""
    k = truth.shape[1]
    hits = (found[:, :k, None] == truth[:, None, :k]).any(axis=2).sum()
    return float(hits) / (k * truth.shape[0])


def time_search(
    search: SearchFunction, queries: np.ndarray, ef: int
) -> tuple[np.ndarray, float, float]:
    """(ids of the first run, fastest wall seconds, fastest CPU seconds) of one batched search."""
    walls: list[float] = []
    cpus: list[float] = []
    found: np.ndarray | None = None
    while True:
        cpu_started = time.process_time()
        started = time.perf_counter()
        ids = search(queries, ef)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
        if found is None:
            found = ids
        if sum(walls) >= MIN_POINT_SECONDS or len(walls) >= MAX_POINT_REPEATS:
            break
    return found, min(walls), max(min(cpus), 1e-9)


def sweep_ef(
    search: SearchFunction,
    queries: np.ndarray,
    truth: np.ndarray,
    ef_values: Sequence[int],
    rerank: int | None,
    progress: Callable[[str], None],
) -> Sweep:
    sweep = Sweep(rerank=rerank)
    for position, ef in enumerate(ef_values):
        found, wall, cpu = time_search(search, queries, ef)
        point = SweepPoint(ef, recall_at_k(found, truth), len(queries) / wall, len(queries) / cpu)
        sweep.points.append(point)
        progress(
            f"    ef={ef:5d} rerank={'default' if rerank is None else rerank:>7} "
            f"recall@10={point.recall:.4f} QPS={point.qps_cpu:8.0f} (cpu) {point.qps_wall:8.0f} "
            "(wall)"
        )
        if point.recall >= STOP_RECALL:
            break
        if (
            point.recall < TARGET_RECALL
            and position >= PLATEAU_POINTS
            and point.recall - sweep.points[-1 - PLATEAU_POINTS].recall < PLATEAU_GAIN
        ):
            progress("    stopping: recall has stopped growing below the target")
            break
        if position + 1 < len(ef_values):
            predicted = wall * ef_values[position + 1] / ef
            if predicted > POINT_TIME_CAP:
                progress(f"    stopping: the next point would take ~{predicted:.0f} s")
                break
    return sweep


def timed_build(build: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu_started = time.process_time()
    started = time.perf_counter()
    index = build()
    return index, time.perf_counter() - started, time.process_time() - cpu_started


def build_hnswlib(base: np.ndarray, say: Callable[[str], None]) -> tuple[Build, SearchFunction]:
    import hnswlib

    def build() -> Any:
        index = hnswlib.Index(space="ip", dim=base.shape[1])
        index.init_index(
            max_elements=len(base), ef_construction=EF_CONSTRUCTION, M=M, random_seed=100
        )
        index.add_items(base, np.arange(len(base)), num_threads=BUILD_THREADS)
        return index

    index, seconds, cpu_seconds = timed_build(build)
    say(f"  hnswlib: built in {seconds:.1f} s ({cpu_seconds:.1f} CPU s)")

    def search(rows: np.ndarray, ef: int) -> np.ndarray:
        index.set_ef(max(ef, K))
        labels, _ = index.knn_query(rows, k=K, num_threads=1)
        return labels.astype(np.int64)

    return Build("hnswlib", "hnswlib", None, False, seconds, cpu_seconds), search


def build_matry(
    base: np.ndarray, prefix_dim: int | None, rotation: bool, say: Callable[[str], None]
) -> tuple[Build, Any]:
    """(Build record without sweeps, the matry.Index)."""
    import matry

    def build() -> matry.Index:
        index = matry.Index(
            base.shape[1],
            metric="ip",
            M=M,
            ef_construction=EF_CONSTRUCTION,
            prefix_dim=prefix_dim,
            rotation="pca" if rotation else None,
        )
        index.add(base, num_threads=BUILD_THREADS)
        return index

    index, seconds, cpu_seconds = timed_build(build)
    label = "matry full" if prefix_dim is None else f"matry p={prefix_dim}"
    if rotation:
        label += " + PCA"
    say(f"  {label}: built in {seconds:.1f} s ({cpu_seconds:.1f} CPU s)")
    return Build(label, "matry", prefix_dim, rotation, seconds, cpu_seconds), index


def matry_search(index: Any, prefix_dim: int | None, rerank: int | None) -> SearchFunction:
    """One-thread batched search; ``prefix_dim`` None = the index's own width."""

    def search(rows: np.ndarray, ef: int) -> np.ndarray:
        ids, _ = index.search(rows, k=K, ef=ef, prefix_dim=prefix_dim, rerank=rerank, num_threads=1)
        return np.asarray(ids)

    return search


def sweep_reranks(
    build: Build,
    index: Any,
    data: Data,
    say: Callable[[str], None],
    search_prefix_dim: int | None = None,
) -> None:
    """Sweeps ef; prefix searches also with rerank = factor * k (besides the default).

    ``search_prefix_dim``: the per-query override (traverse a full-width graph on a prefix).
    """
    prefix_dim = search_prefix_dim
    reranks: list[int | None] = [None]
    if build.prefix_dim is not None:
        reranks += [factor * K for factor in RERANK_FACTORS]
    for rerank in reranks:
        ef_values = [ef for ef in EF_VALUES if rerank is None or ef >= rerank]
        search = matry_search(index, prefix_dim, rerank)
        build.sweeps.append(sweep_ef(search, data.queries, data.truth, ef_values, rerank, say))


# ---------------------------------------------------------------- data


@dataclass
class Data:
    name: str
    base: np.ndarray
    queries: np.ndarray
    truth: np.ndarray  # int [n_queries, K], exact top-k by inner product over `base`
    subset: bool  # base is a prefix of the data set's base
    info: dict[str, Any]


def load_data(name: str, cache_dir: Path, base_count: int, query_count: int, prepare: bool) -> Data:
    directory = cache_dir / name
    if not datasets.is_complete(directory):
        if not prepare:
            raise SystemExit(
                f"data set {name!r} is not prepared in {cache_dir}; run "
                f"`python -m bench prepare --dataset {name}` or pass --prepare"
            )
        datasets.prepare(name, cache_dir)
    dataset = datasets.load(directory, mmap=True)
    count = min(base_count, dataset.n_base)
    base = np.ascontiguousarray(dataset.base[:count], dtype=np.float32)
    queries = np.ascontiguousarray(dataset.queries[:query_count], dtype=np.float32)
    subset = count < dataset.n_base
    if subset:
        truth, _ = datasets.exact_top_k(base, queries, K, progress=False)
    else:
        truth = np.asarray(dataset.gt_ids[: len(queries), :K])
    return Data(name, base, queries, truth.astype(np.int64), subset, dict(dataset.info))


# ---------------------------------------------------------------- report


def _qps(value: float) -> str:
    return f"{value:,.0f}"


def _rerank_name(rerank: int | None) -> str:
    return "default" if rerank is None else str(rerank)


@dataclass
class DataSummary:
    """What the report says about the data (kept in sweeps.json for --report-only)."""

    name: str
    n_base: int
    n_total: int  # base vectors in the data set; n_base < n_total for a subset
    n_queries: int
    dim: int
    source: str

    @classmethod
    def of(cls, data: Data) -> DataSummary:
        return cls(
            data.name,
            len(data.base),
            int(data.info.get("n_base", len(data.base))),
            len(data.queries),
            int(data.base.shape[1]),
            str(data.info.get("source", "?")),
        )


def render(data: DataSummary, builds: Sequence[Build], meta: dict[str, Any]) -> str:
    by_label = {build.label: build for build in builds}
    full = by_label.get("matry full")
    hnsw = by_label.get("hnswlib")

    def baseline(build: Build | None, timer: str) -> float | None:
        found = build.best(TARGET_RECALL, timer) if build else None
        return found[0] if found else None

    full_cpu, hnsw_cpu = baseline(full, "cpu"), baseline(hnsw, "cpu")
    full_wall = baseline(full, "wall")

    def ratio(value: float, reference: float | None) -> str:
        return f"{value / reference:.2f}x" if reference else "-"

    subset = (
        f"the first {data.n_base:,} of {data.n_total:,} base vectors "
        "(ground truth recomputed over them)"
        if data.n_base < data.n_total
        else f"all {data.n_base:,} base vectors"
    )
    lines = [
        f"# Matryoshka prefix search on {data.name}",
        "",
        f"{data.name}: {subset}, {data.n_queries:,} held-out queries, dim "
        f"{data.dim}, inner product on unit vectors, k={K}. Source: "
        f"{data.source}. All indexes: M={M}, ef_construction={EF_CONSTRUCTION}, "
        f"{BUILD_THREADS} build threads; queries: one batched call on 1 thread "
        f"(BLAS threads: {meta['blas_threads']}). "
        f"matry {meta['matry']} ({meta['simd_level']}), hnswlib {meta['hnswlib']}; "
        f"{meta['cpu']} ({meta['cpu_count']} cores), load average at start {meta['load_start']}, "
        f"at end {meta['load_end']}; total run {meta['run_minutes']:.1f} min.",
        "",
        f"## QPS at recall@10 = {TARGET_RECALL:.2f}",
        "",
        "| index | build s | build CPU s | QPS (CPU time) | vs matry full | vs hnswlib "
        "| QPS (wall) | wall vs matry full | operating point | best recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for build in builds:
        cpu = build.best(TARGET_RECALL, "cpu")
        wall = build.best(TARGET_RECALL, "wall")
        shared = " (same graph)" if build.shared_build else ""
        build_cells = [f"{build.build_seconds:.1f}{shared}", f"{build.build_cpu_seconds:.1f}"]
        if cpu is None or wall is None:
            cells = [build.label, *build_cells, "not reached", "-", "-", "not reached", "-", "-"]
        else:
            qps, where, sweep = cpu
            point = (
                where
                if build.prefix_dim is None
                else (f"{where}, rerank {_rerank_name(sweep.rerank)}")
            )
            cells = [
                build.label,
                *build_cells,
                _qps(qps),
                ratio(qps, full_cpu),
                ratio(qps, hnsw_cpu),
                _qps(wall[0]),
                ratio(wall[0], full_wall),
                point,
            ]
        cells.append(f"{build.max_recall():.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    rerank_columns = [None] + [factor * K for factor in RERANK_FACTORS]
    lines += [
        "",
        f"## Prefix indexes: QPS (CPU time) at recall@10 = {TARGET_RECALL:.2f} by rerank",
        "",
        "| index | " + " | ".join(f"rerank {_rerank_name(r)}" for r in rerank_columns) + " |",
        "|---" * (len(rerank_columns) + 1) + "|",
    ]
    for build in builds:
        if build.prefix_dim is None:
            continue
        cells = [build.label]
        for rerank in rerank_columns:
            sweep = next((s for s in build.sweeps if s.rerank == rerank), None)
            found = sweep.qps_at(TARGET_RECALL, "cpu") if sweep else None
            if sweep is None:
                cells.append("-")
            elif found is None:
                best = max((p.recall for p in sweep.points), default=0.0)
                cells.append(f"not reached (max {best:.3f})")
            else:
                cells.append(f"{_qps(found[0])} ({ratio(found[0], full_cpu)}, {found[1]})")
        lines.append("| " + " | ".join(cells) + " |")
    reranks = ", ".join(str(factor * K) for factor in RERANK_FACTORS)
    lines += [
        "",
        "QPS is interpolated along each ef sweep: log(QPS) linear in recall between the two "
        "points that bracket the target; `ef<=N` means the first point (ef=N) already exceeded "
        "it (a lower bound). 'QPS (CPU time)' divides by the CPU time of the query thread, "
        "'QPS (wall)' by the wall clock; the machine is shared, so the CPU-time figures are "
        "the fairer ones. A prefix index's best QPS is taken over its rerank settings "
        f"(default = the whole beam, max(ef, k); or rerank = {reranks}"
        " with ef >= rerank). hnswlib and matry full are swept twice (start and end of the "
        "run) and keep the better sweep. 'search prefix_dim=p' rows traverse the full-width "
        "graph of the PCA-rotated vectors on the first p dims (per-query override) and rerank "
        "on all dims. Build seconds: wall clock and CPU time of the process (2 build threads; "
        "PCA fit included, on 1 BLAS thread). "
        "Every sweep point is in sweeps.json.",
        "",
    ]
    return "\n".join(lines)


def load_average() -> str:
    try:
        return ", ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "?"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_matryoshka", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--dataset", default=datasets.MINILM_NAME)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--base-count",
        type=int,
        default=DEFAULT_BASE_COUNT,
        help="use the first N base vectors (default %(default)s)",
    )
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERY_COUNT)
    parser.add_argument("--prefix-dims", default=",".join(map(str, PREFIX_DIMS)))
    parser.add_argument("--no-hnswlib", action="store_true")
    parser.add_argument(
        "--no-full-graph",
        action="store_true",
        help="skip the rows that search a full-width PCA-rotated graph on a prefix",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="make (and cache) the data set if it is not there yet",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite table.md from OUT/sweeps.json"
    )
    return parser.parse_args(argv)


def builds_from_record(record: dict[str, Any]) -> list[Build]:
    builds = []
    for entry in record["builds"]:
        fields = {key: value for key, value in entry.items() if key != "sweeps"}
        build = Build(**fields)
        for sweep in entry["sweeps"]:
            points = [SweepPoint(**point) for point in sweep["points"]]
            build.sweeps.append(Sweep(rerank=sweep["rerank"], points=points))
        builds.append(build)
    return builds


def report_only(out: Path) -> int:
    """Rewrites table.md from the sweeps.json of an earlier run."""
    record = json.loads((out / "sweeps.json").read_text())
    table = render(DataSummary(**record["data"]), builds_from_record(record), record["meta"])
    (out / "table.md").write_text(table)
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only(args.out)
    started = time.perf_counter()
    load_start = load_average()
    cache_dir = args.cache_dir or datasets.default_cache_dir()
    prefix_dims = [int(value) for value in args.prefix_dims.split(",") if value.strip()]

    def say(message: str) -> None:
        print(message, flush=True)

    data = load_data(args.dataset, cache_dir, args.base_count, args.queries, args.prepare)
    dim = data.base.shape[1]
    if any(not 1 <= p < dim for p in prefix_dims):
        raise SystemExit(f"--prefix-dims: each must be in [1, {dim - 1}], got {prefix_dims}")
    say(f"{data.name}: {len(data.base):,} x {dim} base, {len(data.queries):,} queries")

    import matry

    builds: list[Build] = []
    baselines: list[tuple[Build, SearchFunction]] = []
    if not args.no_hnswlib:
        hnsw, hnsw_search = build_hnswlib(data.base, say)
        hnsw.sweeps.append(sweep_ef(hnsw_search, data.queries, data.truth, EF_VALUES, None, say))
        builds.append(hnsw)
        baselines.append((hnsw, hnsw_search))
    full, full_index = build_matry(data.base, None, False, say)
    sweep_reranks(full, full_index, data, say)
    builds.append(full)
    baselines.append((full, matry_search(full_index, None, None)))
    traversals: list[Build] = []
    if not args.no_full_graph:
        # One full-width graph of the rotated vectors, searched on prefixes (per-query override).
        rotated, rotated_index = build_matry(data.base, None, True, say)
        sweep_reranks(rotated, rotated_index, data, say)
        builds.append(rotated)
        for prefix_dim in prefix_dims:
            traversal = Build(
                f"matry full + PCA, search prefix_dim={prefix_dim}",
                "matry",
                prefix_dim,
                True,
                rotated.build_seconds,
                rotated.build_cpu_seconds,
                shared_build=True,
            )
            say(f"  {traversal.label}")
            sweep_reranks(traversal, rotated_index, data, say, search_prefix_dim=prefix_dim)
            traversals.append(traversal)
        del rotated_index
    for prefix_dim in prefix_dims:
        for rotation in (False, True):
            build, index = build_matry(data.base, prefix_dim, rotation, say)
            sweep_reranks(build, index, data, say)
            builds.append(build)
            del index
    builds += traversals
    # The machine is shared: sweep the baselines again at the end; each keeps its best sweep.
    say("  baselines again")
    for build, search in baselines:
        build.sweeps.append(sweep_ef(search, data.queries, data.truth, EF_VALUES, None, say))

    try:
        hnswlib_version = version("hnswlib")
    except PackageNotFoundError:
        hnswlib_version = "?"
    meta = {
        "matry": matry.__version__,
        "simd_level": matry.simd_level(),
        "hnswlib": hnswlib_version,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_start": load_start,
        "load_end": load_average(),
        "run_minutes": (time.perf_counter() - started) / 60,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "?"),
    }
    table = render(DataSummary.of(data), builds, meta)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)
    record = {
        "data": asdict(DataSummary.of(data)),
        "k": K,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "build_threads": BUILD_THREADS,
        "target_recall": TARGET_RECALL,
        "meta": meta,
        "builds": [asdict(build) for build in builds],
    }
    (args.out / "sweeps.json").write_text(json.dumps(record, indent=1) + "\n")
    say(f"wrote {args.out / 'table.md'} and {args.out / 'sweeps.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
