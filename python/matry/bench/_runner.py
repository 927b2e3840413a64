"""Run the benchmark: one fresh subprocess per (library, build configuration).

The parent has a :class:`~matry.bench._prepare.PreparedData` (base rows, queries and their exact
neighbours in .npy files) and starts ``python -m matry.bench worker SPEC.json`` for each
library (Annoy: once per n_trees). The worker loads the arrays, resets the kernel's peak-RSS
counter (``/proc/self/clear_refs``), builds the index, reads the peak (``VmHWM``) so the growth
is attributable to that library's build alone, saves the index to measure its file size,
measures the resident memory of the saved index in a fresh subprocess (``_resident``: RSS
growth after loading it and running warm queries, for each load mode the library has), then
sweeps its search parameter (ef; Annoy: search_k; ScaNN: leaves to search) and appends one JSON
line per point to a results file. The parent gathers the lines into ``results.jsonl`` and writes
``table.md`` and ``plot.png``. Libraries run one after another in the order given, each in its
own worker, all with one query thread by default.

Per point the worker measures:

* recall@1 and recall@k of the timed batched search against the exact neighbours (a returned
  id counts when it is one of them, or when its score ties the last of them: duplicate rows),
* QPS of one batched call over all queries on ``query_threads`` threads (best of up to three
  runs while the runs add up to less than a second),
* QPS and p50 / p99 latency of one query per call on one thread, over the first
  ``single_query_count`` queries (held-out queries are in random order),
* recall@100 from an untimed k=100 search over the same query subset, when the exact
  neighbours go that deep.

Every QPS figure is recorded twice: by the wall clock (``qps_batch``, ``qps_single``) and by the
CPU time of the worker process (``qps_batch_cpu``, ``qps_single_cpu``). On a quiet machine with
one query thread they agree; on a shared machine the CPU-time figures are the ones that other
processes do not distort (time spent waiting for a core is not counted). Build time is recorded
both ways too (``build_seconds``, ``build_cpu_seconds``: CPU seconds of all build threads).

A sweep stops early once recall@k reaches ``stop_recall`` or when the next point is predicted
(from the CPU time of the current one, scaled by the parameter ratio) to take longer than
``point_time_cap`` CPU seconds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _report, _resident
from ._adapters import ADAPTERS, LIBRARY_NAMES, MMAP, LibraryAdapter, make_adapter
from ._prepare import PreparedData

DEFAULT_EF_VALUES = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
DEFAULT_ANNOY_TREES = (10, 50, 100)
DEFAULT_ANNOY_SEARCH_K = (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
# ScaNN leaves to search; with num_leaves = sqrt(n) (624 for glove-50) this spans recall@10
# from below 0.8 to above 0.99. Values above num_leaves search every leaf.
DEFAULT_SCANN_LEAVES = (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
DEFAULT_SINGLE_QUERY_COUNT = 2_000
DEFAULT_POINT_TIME_CAP = 40.0
QUICK_POINT_TIME_CAP = 8.0
QUICK_SINGLE_QUERY_COUNT = 500
RECALL_DEPTHS = (1, 10, 100)
MIN_BATCH_SECONDS = 1.0
MAX_BATCH_REPEATS = 3
# A returned neighbour whose score is within this (relative) of the last exact one is a tie.
TIE_TOLERANCE = 1e-6


@dataclass
class RunConfig:
    """How to build and sweep; the fields mirror the command-line options."""

    libs: list[str]
    M: int = 16
    ef_construction: int = 200
    build_threads: int = 2
    query_threads: int = 1
    k: int = 10
    quick: bool = False
    ef_values: list[int] = field(default_factory=lambda: list(DEFAULT_EF_VALUES))
    annoy_trees: list[int] = field(default_factory=lambda: list(DEFAULT_ANNOY_TREES))
    annoy_search_k: list[int] = field(default_factory=lambda: list(DEFAULT_ANNOY_SEARCH_K))
    scann_leaves: list[int] = field(default_factory=lambda: list(DEFAULT_SCANN_LEAVES))
    single_query_count: int | None = None
    point_time_cap: float | None = None
    stop_recall: float = 0.999
    timer: str = "wall"
    progress: bool = True
    resident: bool = True
    # Skipped libraries known before the run (e.g. not installed), listed with the others.
    skipped: dict[str, str] = field(default_factory=dict)

    def sweep_values(self, sweep: str) -> list[int]:
        """The search parameter values of a sweep kind (LibraryAdapter.sweep)."""
        return {
            "ef": self.ef_values,
            "annoy_search_k": self.annoy_search_k,
            "scann_leaves": self.scann_leaves,
        }[sweep]


@dataclass
class WorkerSpec:
    """What one worker subprocess builds and measures (written to a JSON file)."""

    data: dict[str, Any]
    library: str
    options: dict[str, Any]
    M: int
    ef_construction: int
    build_threads: int
    query_threads: int
    k: int
    search_values: list[int]
    single_query_count: int
    point_time_cap: float
    stop_recall: float
    results_path: str
    progress: bool
    resident: bool = True


def run_benchmark(data: PreparedData, config: RunConfig, out_dir: Path) -> int:
    """Run every library of ``config`` on ``data`` and write results.jsonl, skipped.json,
    table.md and plot.png to ``out_dir``; returns 0 if every library that could run did."""
    unknown = [name for name in config.libs if name not in ADAPTERS]
    if unknown:
        raise ValueError(f"libs: unknown {unknown}; known: {', '.join(LIBRARY_NAMES)}")
    if config.timer not in _report.TIMERS:
        raise ValueError(f"timer: expected one of {sorted(_report.TIMERS)}, got {config.timer!r}")
    started = time.perf_counter()
    single_count = config.single_query_count
    if single_count is None:
        single_count = QUICK_SINGLE_QUERY_COUNT if config.quick else DEFAULT_SINGLE_QUERY_COUNT
    single_count = min(single_count, data.n_queries)
    point_time_cap = config.point_time_cap
    if point_time_cap is None:
        point_time_cap = QUICK_POINT_TIME_CAP if config.quick else DEFAULT_POINT_TIME_CAP
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    points: list[dict[str, Any]] = []
    failures: list[str] = []
    skipped: dict[str, str] = dict(config.skipped)
    worker_number = 0
    with tempfile.TemporaryDirectory(prefix=".matry-bench-", dir=out_dir) as scratch:
        for library in config.libs:
            adapter_class = ADAPTERS[library]
            reason = adapter_class.skip_reason(data.dim, data.index_metric)
            if reason:
                skipped[library] = reason
                print(f"skipping {library}: {reason}", flush=True)
                continue
            values = config.sweep_values(adapter_class.sweep)
            if library == "annoy":
                builds = [({"n_trees": trees}, values) for trees in config.annoy_trees]
            else:
                builds = [({}, values)]
            for options, values in builds:
                worker_number += 1
                spec = WorkerSpec(
                    data=data.to_dict(),
                    library=library,
                    options=options,
                    M=config.M,
                    ef_construction=config.ef_construction,
                    build_threads=config.build_threads,
                    query_threads=config.query_threads,
                    k=config.k,
                    search_values=sorted(values),
                    single_query_count=single_count,
                    point_time_cap=point_time_cap,
                    stop_recall=config.stop_recall,
                    results_path=str(Path(scratch) / f"points-{worker_number}.jsonl"),
                    progress=config.progress,
                    resident=config.resident,
                )
                label = library + "".join(f" {key}={value}" for key, value in options.items())
                new_points, error = _run_worker(spec, config)
                points.extend(new_points)
                if error:
                    failures.append(f"{label}: {error}")
                    print(f"{label} failed: {error}", flush=True)

    results_path = out_dir / "results.jsonl"
    with open(results_path, "w") as handle:
        for point in points:
            handle.write(json.dumps(point, sort_keys=True) + "\n")
    (out_dir / _report.SKIPPED_FILE).write_text(json.dumps(skipped, indent=1, sort_keys=True))
    written = _report.write_report(out_dir, points, config.timer, skipped)
    print(f"\nwrote {results_path}", flush=True)
    for path in written:
        print(f"wrote {path}", flush=True)
    if points:
        print("\n" + _report.summary_text(points, config.timer, skipped), flush=True)
    elif skipped:
        print("\nno library ran:\n" + _report.skipped_text(skipped), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if failures:
        print("failed: " + "; ".join(failures), flush=True)
        return 1
    return 0


def worker_environment(threads: int) -> dict[str, str]:
    """The environment of a worker: this one, the BLAS / OpenMP pools at ``threads``, and the
    folder this matry was imported from on PYTHONPATH when it is not a site-packages folder
    (a checkout used through PYTHONPATH or the current directory), so the worker runs the same
    matry."""
    environment = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    installed = {str(Path(path).resolve()) for path in site.getsitepackages()}
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        installed.add(str(Path(user_site).resolve()))
    if package_root not in installed:
        entries = [entry for entry in environment.get("PYTHONPATH", "").split(os.pathsep) if entry]
        environment["PYTHONPATH"] = os.pathsep.join([package_root, *entries])
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[variable] = str(threads)
    return environment


def _run_worker(spec: WorkerSpec, config: RunConfig) -> tuple[list[dict[str, Any]], str | None]:
    spec_path = Path(spec.results_path).with_suffix(".spec.json")
    spec_path.write_text(json.dumps(asdict(spec)))
    completed = subprocess.run(
        [sys.executable, "-m", "matry.bench", "worker", str(spec_path)],
        env=worker_environment(max(config.build_threads, config.query_threads)),
        check=False,
    )
    points: list[dict[str, Any]] = []
    results_path = Path(spec.results_path)
    if results_path.exists():
        points = [json.loads(line) for line in results_path.read_text().splitlines() if line]
    if completed.returncode != 0:
        return points, f"worker exited with code {completed.returncode}"
    if not points:
        return points, "worker produced no points"
    return points, None


# --------------------------------------------------------------------------- worker side


@dataclass
class _Arrays:
    base: np.ndarray
    queries: np.ndarray
    gt_ids: np.ndarray
    gt_scores: np.ndarray
    index_metric: str


def run_worker(spec_path: Path) -> int:
    """Entry point of ``python -m matry.bench worker SPEC.json``."""
    from tqdm import tqdm

    spec = WorkerSpec(**json.loads(Path(spec_path).read_text()))
    data = PreparedData(**spec.data)
    arrays = _Arrays(
        base=np.ascontiguousarray(np.load(data.base_path), dtype=np.float32),
        queries=np.ascontiguousarray(np.load(data.queries_path), dtype=np.float32),
        gt_ids=np.asarray(np.load(data.gt_ids_path, mmap_mode="r"), dtype=np.int64),
        gt_scores=np.asarray(np.load(data.gt_scores_path, mmap_mode="r"), dtype=np.float64),
        index_metric=data.index_metric,
    )
    queries = arrays.queries
    adapter = make_adapter(spec.library, data.dim, data.index_metric, **spec.options)
    label = spec.library + "".join(f" {key}={value}" for key, value in spec.options.items())

    with tempfile.TemporaryDirectory(prefix="matry-bench-index-") as directory:
        index_path = Path(directory) / f"{spec.library}.index"
        build = _build(adapter, arrays.base, spec, label, index_path)
        if spec.resident:
            build.update(_resident_fields(adapter, spec, data, index_path, label))
    adapter.set_query_threads(spec.query_threads)
    adapter.set_search_param(spec.search_values[0])
    adapter.search_batch(queries[: min(200, len(queries))], spec.k)  # warm up caches

    common = {
        "dataset": data.name,
        "source": data.source,
        "metric": data.metric,
        "index_metric": data.index_metric,
        "quick": data.quick,
        "n_base": data.n_base,
        "n_queries": data.n_queries,
        "dim": data.dim,
        "library": spec.library,
        "library_version": adapter.version(),
        "build_config": {
            "M": spec.M,
            "ef_construction": spec.ef_construction,
            **spec.options,
            **adapter.build_config(),
        },
        "M": spec.M,
        "ef_construction": spec.ef_construction,
        "build_threads": spec.build_threads,
        "query_threads": spec.query_threads,
        "k": spec.k,
        "search_param_name": adapter.search_param_name,
        "library_parameters": adapter.parameters(),
        "batch_is_loop": adapter.batch_is_loop,
        **build,
        **machine_info(),
    }
    sweep_bar = tqdm(
        total=len(spec.search_values),
        desc=f"sweep {label}",
        unit="point",
        disable=not spec.progress,
        file=sys.stderr,
    )
    with sweep_bar, open(spec.results_path, "a") as results:
        for position, value in enumerate(spec.search_values):
            point_started = time.perf_counter()
            point_cpu_started = time.process_time()
            point = measure_point(adapter, arrays, value, spec)
            point.update(common)
            point["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            results.write(json.dumps(point, sort_keys=True) + "\n")
            results.flush()
            sweep_bar.update(1)
            point_seconds = time.perf_counter() - point_started
            # The cap works on CPU time, so a busy machine does not cut sweeps short.
            point_cpu_seconds = time.process_time() - point_cpu_started
            recall_key = f"recall_at_{spec.k}"
            sweep_bar.write(
                f"  {label:<16} {adapter.search_param_name}={value:<6} "
                f"recall@{spec.k}={point.get(recall_key, float('nan')):.4f} "
                f"batch {point['qps_batch']:>9,.0f} q/s  single {point['qps_single']:>9,.0f} q/s "
                f"p99 {point['latency_p99_us']:,.0f} us  ({point_seconds:.1f} s, "
                f"{point_cpu_seconds:.1f} CPU s)",
                file=sys.stdout,
            )
            sys.stdout.flush()
            if point.get(recall_key, 0.0) >= spec.stop_recall:
                break
            if position + 1 < len(spec.search_values):
                next_value = spec.search_values[position + 1]
                predicted = point_cpu_seconds * next_value / max(value, 1)
                if predicted > spec.point_time_cap:
                    sweep_bar.write(
                        f"  {label}: stopping the sweep, {adapter.search_param_name}={next_value} "
                        f"would take about {predicted:.0f} CPU s "
                        f"(> {spec.point_time_cap:.0f} s cap)",
                        file=sys.stdout,
                    )
                    break
    return 0


def _build(
    adapter: LibraryAdapter, base: np.ndarray, spec: WorkerSpec, label: str, index_path: Path
) -> dict[str, Any]:
    """Build (timed, with the RSS counters), then save to ``index_path`` for its size."""
    from tqdm import tqdm

    peak_reset = reset_peak_rss()
    rss_before = current_rss_bytes()
    peak_before = peak_rss_bytes()
    with tqdm(
        total=len(base),
        desc=f"build {label}",
        unit="vec",
        unit_scale=True,
        disable=not spec.progress,
        file=sys.stderr,
    ) as bar:

        def advance(rows: int) -> None:
            bar.update(rows)

        cpu_started = time.process_time()
        started = time.perf_counter()
        adapter.build(base, spec.M, spec.ef_construction, spec.build_threads, progress=advance)
        build_seconds = time.perf_counter() - started
        build_cpu_seconds = time.process_time() - cpu_started
    rss_after = current_rss_bytes()
    peak_after = peak_rss_bytes()
    if peak_reset:
        peak_growth = peak_after - rss_before
        rss_method = "VmHWM after build - VmRSS before (peak reset via /proc/self/clear_refs)"
    else:
        peak_growth = peak_after - max(rss_before, peak_before)
        rss_method = "ru_maxrss growth during build (peak could not be reset)"
    memory_bytes = adapter.memory_bytes()
    index_bytes = adapter.save(index_path)
    count = len(base)
    print(
        f"  {label:<16} built in {build_seconds:.1f} s ({build_cpu_seconds:.1f} CPU s, "
        f"{adapter.build_threads_used} threads), index {index_bytes / count:.0f} B/vector on "
        f"disk, peak RSS growth {peak_growth / count:.0f} B/vector",
        flush=True,
    )
    return {
        "build_seconds": build_seconds,
        "build_cpu_seconds": build_cpu_seconds,
        "build_threads_used": adapter.build_threads_used,
        "memory_bytes_per_vector": None if memory_bytes is None else memory_bytes / count,
        "index_bytes": index_bytes,
        "index_bytes_per_vector": index_bytes / count,
        "rss_build_peak_bytes": peak_growth,
        "rss_build_peak_bytes_per_vector": peak_growth / count,
        "rss_after_build_bytes": rss_after - rss_before,
        "rss_after_build_bytes_per_vector": (rss_after - rss_before) / count,
        "rss_method": rss_method,
    }


def _resident_fields(
    adapter: LibraryAdapter,
    spec: WorkerSpec,
    data: PreparedData,
    index_path: Path,
    label: str,
) -> dict[str, Any]:
    """Resident bytes per vector of the saved index, per load mode, from fresh subprocesses.

    The warm pass searches the single-query subset at the middle value of the sweep.
    """
    fields: dict[str, Any] = {
        "resident_method": "VmRSS after load + one warm batched search minus VmRSS of a fresh "
        "interpreter that imported the library (matry.bench._resident)"
    }
    values = spec.search_values
    for mode in adapter.load_modes():
        resident_spec = _resident.ResidentSpec(
            library=spec.library,
            options=spec.options,
            metric=data.index_metric,
            dim=data.dim,
            count=data.n_base,
            index_path=str(index_path),
            mode=mode,
            queries_path=data.queries_path,
            query_count=spec.single_query_count,
            search_value=values[len(values) // 2],
            k=spec.k,
            result_path=str(index_path.parent / f"resident-{mode}.json"),
        )
        result = _resident.measure(resident_spec)
        key = "resident_mmap" if mode == MMAP else "resident"
        if "error" in result:
            fields[f"{key}_error"] = result["error"]
            print(f"  {label:<16} resident memory ({mode}) failed: {result['error']}", flush=True)
            continue
        growth = result.get("VmRSS_growth_bytes")
        if growth is None:
            continue
        fields[f"{key}_bytes_per_vector"] = growth / data.n_base
        anonymous = result.get("RssAnon_growth_bytes")
        if anonymous is not None:
            fields[f"{key}_anon_bytes_per_vector"] = anonymous / data.n_base
        fields[f"{key}_load_seconds"] = result.get("load_seconds")
        print(
            f"  {label:<16} resident after {mode} + warm queries: "
            f"{growth / data.n_base:.0f} B/vector",
            flush=True,
        )
    return fields


def measure_point(
    adapter: LibraryAdapter, arrays: _Arrays, value: int, spec: WorkerSpec
) -> dict[str, Any]:
    """Recall, batch QPS, single-query QPS and latency at one search parameter value."""
    k = spec.k
    queries = arrays.queries
    adapter.set_search_param(value)
    adapter.set_query_threads(spec.query_threads)
    batch_times: list[float] = []
    batch_cpu_times: list[float] = []
    found: np.ndarray | None = None
    while True:
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = adapter.search_batch(queries, k)
        batch_times.append(time.perf_counter() - started)
        batch_cpu_times.append(time.process_time() - cpu_started)
        if found is None:
            found = result
        if sum(batch_times) >= MIN_BATCH_SECONDS or len(batch_times) >= MAX_BATCH_REPEATS:
            break
    if found is None:  # the loop runs at least once
        raise RuntimeError("no batch was timed")
    point: dict[str, Any] = {
        "search_param": int(value),
        "qps_batch": len(queries) / min(batch_times),
        "qps_batch_cpu": len(queries) / max(min(batch_cpu_times), 1e-9),
        "batch_seconds": min(batch_times),
        "batch_cpu_seconds": min(batch_cpu_times),
        "batch_repeats": len(batch_times),
    }
    depth_available = arrays.gt_ids.shape[1]
    depths = sorted({depth for depth in (*RECALL_DEPTHS, k) if depth <= depth_available})
    for depth in depths:
        if depth <= k:
            point[f"recall_at_{depth}"] = recall_at(found, arrays, depth)

    subset = spec.single_query_count
    rows = [queries[row] for row in range(subset)]
    latencies = np.empty(subset, dtype=np.float64)
    loop_cpu_started = time.process_time()
    loop_started = time.perf_counter()
    for position, row in enumerate(rows):
        started = time.perf_counter_ns()
        adapter.search_one(row, k)
        latencies[position] = time.perf_counter_ns() - started
    loop_seconds = time.perf_counter() - loop_started
    loop_cpu_seconds = time.process_time() - loop_cpu_started
    point.update(
        {
            "qps_single": subset / loop_seconds,
            "qps_single_cpu": subset / max(loop_cpu_seconds, 1e-9),
            "single_query_count": subset,
            "latency_p50_us": float(np.percentile(latencies, 50)) / 1e3,
            "latency_p99_us": float(np.percentile(latencies, 99)) / 1e3,
            "latency_mean_us": float(latencies.mean()) / 1e3,
        }
    )

    deeper = [depth for depth in depths if depth > k]
    if deeper:
        # Untimed, on the single-query subset, with all build threads.
        adapter.set_query_threads(max(spec.build_threads, spec.query_threads))
        deep_found = adapter.search_batch(queries[:subset], max(deeper))
        adapter.set_query_threads(spec.query_threads)
        for depth in deeper:
            point[f"recall_at_{depth}"] = recall_at(deep_found, arrays, depth)
            point[f"recall_at_{depth}_queries"] = subset
    return point


def recall_at(found: np.ndarray, arrays: _Arrays, depth: int) -> float:
    """Mean over queries of |first ``depth`` found ∩ exact top ``depth``| / depth.

    A found id that is not among the exact ids still counts when its score ties the
    ``depth``-th exact score (to a relative ``TIE_TOLERANCE``): a duplicate of a true
    neighbour, which exact search happened not to list. Hits are capped at ``depth``.
    """
    rows = min(len(found), len(arrays.gt_ids))
    hits = 0
    for start in range(0, rows, 1000):
        stop = min(start + 1000, rows)
        truth = arrays.gt_ids[start:stop, :depth]
        got = np.asarray(found[start:stop, :depth], dtype=np.int64)
        valid = (got >= 0) & (got < len(arrays.base))
        in_truth = (truth[:, :, None] == got[:, None, :]).any(axis=1)
        threshold = arrays.gt_scores[start:stop, depth - 1]
        tolerance = TIE_TOLERANCE * np.maximum(1.0, np.abs(threshold))
        scores = _scores(arrays, np.where(valid, got, 0), start, stop)
        tied = scores >= (threshold - tolerance)[:, None]
        per_query = ((in_truth | tied) & valid).sum(axis=1)
        hits += int(np.minimum(per_query, depth).sum())
    return hits / (rows * depth)


def _scores(arrays: _Arrays, ids: np.ndarray, start: int, stop: int) -> np.ndarray:
    """float64 scores (higher is better) of base rows ``ids`` [q, d] for queries start:stop."""
    rows = arrays.base[ids].astype(np.float64)
    queries = arrays.queries[start:stop].astype(np.float64)[:, None, :]
    if arrays.index_metric == "ip":
        return np.asarray((rows * queries).sum(axis=2))
    return np.asarray(-np.square(rows - queries).sum(axis=2))


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def current_rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib //= 1024
    return kib * 1024


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def parse_int_list(text: str) -> list[int]:
    """Comma-separated positive integers; ValueError otherwise."""
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or any(value < 1 for value in values):
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values
