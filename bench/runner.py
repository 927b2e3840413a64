"""Run the benchmark: one fresh subprocess per (library, build configuration).

The parent prepares the data set, then starts ``python -m bench worker SPEC.json`` for each
library (Annoy: once per n_trees). The worker loads the cached arrays, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``), builds the index, reads the peak (``VmHWM``) so the
growth is attributable to that library's build alone, saves the index to measure its file size,
measures the resident memory of the saved index in a fresh subprocess (bench/resident.py:
RSS growth after loading it and running warm queries, for each load mode the library has),
then sweeps its search parameter (ef; Annoy: search_k; ScaNN: leaves to search) and appends one
JSON line per point to a results file. The parent gathers the lines into ``results.jsonl`` and
writes ``table.md`` and ``plot.png``. Libraries run one after another in the order given, each
in its own worker, all with one query thread by default.

Per point the worker measures:

* recall@1 and recall@10 of the timed batched search (k = ``--k``) against exact top-100,
* QPS of one batched call over all queries on ``query_threads`` threads (best of up to three
  runs while the runs add up to less than a second),
* QPS and p50 / p99 latency of one query per call on one thread, over the first
  ``single_query_count`` queries (queries are stored in random order),
* recall@100 from an untimed k=100 search over the same query subset.

Every QPS figure is recorded twice: by the wall clock (``qps_batch``, ``qps_single``) and by the
CPU time of the worker process (``qps_batch_cpu``, ``qps_single_cpu``). On a quiet machine with
one query thread they agree; on a shared machine the CPU-time figures are the ones that other
processes do not distort (time spent waiting for a core is not counted). Build time is recorded
both ways too (``build_seconds``, ``build_cpu_seconds``: CPU seconds of all build threads).

A sweep stops early once recall@10 reaches ``stop_recall`` or when the next point is predicted
(from the CPU time of the current one, scaled by the parameter ratio) to take longer than
``point_time_cap`` CPU seconds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import datasets, report, resident
from bench.libs import ADAPTERS, LIBRARY_NAMES, MMAP, LibraryAdapter, make_adapter

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
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunConfig:
    """Everything a run needs; the fields mirror the command-line options."""

    dataset: str
    libs: list[str]
    M: int = 16
    ef_construction: int = 200
    build_threads: int = 2
    query_threads: int = 1
    k: int = 10
    quick: bool = False
    cache_dir: Path = field(default_factory=datasets.default_cache_dir)
    out: Path = REPO_ROOT / "bench" / "results"
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

    dataset_dir: str
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


def run(config: RunConfig) -> int:
    """Run the comparison; returns 0 if every available library ran, else 1."""
    datasets.validate_name(config.dataset)
    unknown = [name for name in config.libs if name not in ADAPTERS]
    if unknown:
        raise ValueError(f"libs: unknown {unknown}; known: {', '.join(LIBRARY_NAMES)}")
    started = time.perf_counter()
    print(f"preparing data set {config.dataset} (cache: {config.cache_dir})", flush=True)
    dataset_dir = datasets.prepare(
        config.dataset, config.cache_dir, quick=config.quick, progress=config.progress
    )
    dataset = datasets.load(dataset_dir, mmap=True)
    print(
        f"{dataset.name}: {dataset.n_base:,} base vectors, {dataset.n_queries:,} queries, "
        f"dim {dataset.dim} (ready in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    single_count = config.single_query_count
    if single_count is None:
        single_count = QUICK_SINGLE_QUERY_COUNT if config.quick else DEFAULT_SINGLE_QUERY_COUNT
    single_count = min(single_count, dataset.n_queries)
    point_time_cap = config.point_time_cap
    if point_time_cap is None:
        point_time_cap = QUICK_POINT_TIME_CAP if config.quick else DEFAULT_POINT_TIME_CAP
    results_dir = Path(config.out) / datasets.dataset_key(config.dataset, config.quick)
    results_dir.mkdir(parents=True, exist_ok=True)

    points: list[dict[str, Any]] = []
    failures: list[str] = []
    skipped: dict[str, str] = {}
    worker_number = 0
    with tempfile.TemporaryDirectory(prefix="matry-bench-") as scratch:
        for library in config.libs:
            adapter_class = ADAPTERS[library]
            reason = adapter_class.skip_reason(dataset.dim)
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
                    dataset_dir=str(dataset_dir),
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
                new_points, error = _run_worker(spec, scratch, config)
                points.extend(new_points)
                if error:
                    failures.append(f"{label}: {error}")
                    print(f"{label} failed: {error}", flush=True)

    results_path = results_dir / "results.jsonl"
    with open(results_path, "w") as handle:
        for point in points:
            handle.write(json.dumps(point, sort_keys=True) + "\n")
    (results_dir / report.SKIPPED_FILE).write_text(json.dumps(skipped, indent=1, sort_keys=True))
    written = report.write_report(results_dir, points, config.timer, skipped)
    print(f"\nwrote {results_path}", flush=True)
    for path in written:
        print(f"wrote {path}", flush=True)
    if points:
        print("\n" + (results_dir / "table.md").read_text(), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    if failures:
        print("failed: " + "; ".join(failures), flush=True)
        return 1
    return 0


def _run_worker(
    spec: WorkerSpec, scratch: str, config: RunConfig
) -> tuple[list[dict[str, Any]], str | None]:
    spec_path = Path(spec.results_path).with_suffix(".spec.json")
    spec_path.write_text(json.dumps(asdict(spec)))
    environment = dict(os.environ)
    python_path = [str(REPO_ROOT)] + [
        entry for entry in environment.get("PYTHONPATH", "").split(os.pathsep) if entry
    ]
    environment["PYTHONPATH"] = os.pathsep.join(python_path)
    threads = str(max(config.build_threads, config.query_threads))
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[variable] = threads
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "worker", str(spec_path)],
        env=environment,
        cwd=str(REPO_ROOT),
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


def run_worker(spec_path: Path) -> int:
    """Entry point of ``python -m bench worker SPEC.json``."""
    spec = WorkerSpec(**json.loads(Path(spec_path).read_text()))
    dataset = datasets.load(Path(spec.dataset_dir), mmap=False)
    base = np.ascontiguousarray(dataset.base, dtype=np.float32)
    queries = np.ascontiguousarray(dataset.queries, dtype=np.float32)
    gt_ids = np.asarray(dataset.gt_ids)
    adapter = make_adapter(spec.library, dataset.dim, **spec.options)
    label = spec.library + "".join(f" {key}={value}" for key, value in spec.options.items())

    with tempfile.TemporaryDirectory(prefix="matry-bench-index-") as directory:
        index_path = Path(directory) / f"{spec.library}.index"
        build = _build(adapter, base, spec, label, index_path)
        if spec.resident:
            build.update(_resident(adapter, spec, dataset, index_path, label))
    adapter.set_query_threads(spec.query_threads)
    adapter.set_search_param(spec.search_values[0])
    adapter.search_batch(queries[: min(200, len(queries))], spec.k)  # warm up caches

    common = {
        "dataset": dataset.name,
        "quick": bool(dataset.info.get("quick", False)),
        "n_base": dataset.n_base,
        "n_queries": dataset.n_queries,
        "dim": dataset.dim,
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
    with open(spec.results_path, "a") as results:
        for position, value in enumerate(spec.search_values):
            point_started = time.perf_counter()
            point_cpu_started = time.process_time()
            point = measure_point(adapter, queries, gt_ids, value, spec)
            point.update(common)
            point["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            results.write(json.dumps(point, sort_keys=True) + "\n")
            results.flush()
            point_seconds = time.perf_counter() - point_started
            # The cap works on CPU time, so a busy machine does not cut sweeps short.
            point_cpu_seconds = time.process_time() - point_cpu_started
            print(
                f"  {label:<16} {adapter.search_param_name}={value:<6} "
                f"recall@10={point.get('recall_at_10', float('nan')):.4f} "
                f"batch {point['qps_batch']:>9,.0f} q/s  single {point['qps_single']:>9,.0f} q/s "
                f"p99 {point['latency_p99_us']:,.0f} us  ({point_seconds:.1f} s, "
                f"{point_cpu_seconds:.1f} CPU s)",
                flush=True,
            )
            if point.get("recall_at_10", 0.0) >= spec.stop_recall:
                break
            if position + 1 < len(spec.search_values):
                next_value = spec.search_values[position + 1]
                predicted = point_cpu_seconds * next_value / max(value, 1)
                if predicted > spec.point_time_cap:
                    print(
                        f"  {label}: stopping the sweep, {adapter.search_param_name}={next_value} "
                        f"would take about {predicted:.0f} CPU s "
                        f"(> {spec.point_time_cap:.0f} s cap)",
                        flush=True,
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


def _resident(
    adapter: LibraryAdapter,
    spec: WorkerSpec,
    dataset: datasets.Dataset,
    index_path: Path,
    label: str,
) -> dict[str, Any]:
    """Resident bytes per vector of the saved index, per load mode, from fresh subprocesses.

    The warm pass searches the single-query subset at the middle value of the sweep.
    """
    fields: dict[str, Any] = {
        "resident_method": "VmRSS after load + one warm batched search minus VmRSS of a fresh "
        "interpreter that imported the library (bench/resident.py)"
    }
    values = spec.search_values
    for mode in adapter.load_modes():
        resident_spec = resident.ResidentSpec(
            library=spec.library,
            options=spec.options,
            dim=dataset.dim,
            count=dataset.n_base,
            index_path=str(index_path),
            mode=mode,
            queries_path=str(dataset.directory / "queries.npy"),
            query_count=spec.single_query_count,
            search_value=values[len(values) // 2],
            k=spec.k,
            result_path=str(index_path.parent / f"resident-{mode}.json"),
        )
        result = resident.measure(resident_spec)
        key = "resident_mmap" if mode == MMAP else "resident"
        if "error" in result:
            fields[f"{key}_error"] = result["error"]
            print(f"  {label:<16} resident memory ({mode}) failed: {result['error']}", flush=True)
            continue
        growth = result.get("VmRSS_growth_bytes")
        if growth is None:
            continue
        fields[f"{key}_bytes_per_vector"] = growth / dataset.n_base
        anonymous = result.get("RssAnon_growth_bytes")
        if anonymous is not None:
            fields[f"{key}_anon_bytes_per_vector"] = anonymous / dataset.n_base
        fields[f"{key}_load_seconds"] = result.get("load_seconds")
        print(
            f"  {label:<16} resident after {mode} + warm queries: "
            f"{growth / dataset.n_base:.0f} B/vector",
            flush=True,
        )
    return fields


def measure_point(
    adapter: LibraryAdapter,
    queries: np.ndarray,
    gt_ids: np.ndarray,
    value: int,
    spec: WorkerSpec,
) -> dict[str, Any]:
    """Recall, batch QPS, single-query QPS and latency at one search parameter value."""
    k = spec.k
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
    assert found is not None
    point: dict[str, Any] = {
        "search_param": int(value),
        "qps_batch": len(queries) / min(batch_times),
        "qps_batch_cpu": len(queries) / max(min(batch_cpu_times), 1e-9),
        "batch_seconds": min(batch_times),
        "batch_cpu_seconds": min(batch_cpu_times),
        "batch_repeats": len(batch_times),
    }
    depth_available = gt_ids.shape[1]
    for depth in RECALL_DEPTHS:
        if depth <= min(k, depth_available):
            point[f"recall_at_{depth}"] = recall_at(found, gt_ids, depth)

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

    deeper = [depth for depth in RECALL_DEPTHS if k < depth <= depth_available]
    if deeper:
        # Untimed, on the single-query subset, with all build threads.
        adapter.set_query_threads(max(spec.build_threads, spec.query_threads))
        deep_found = adapter.search_batch(queries[:subset], max(deeper))
        adapter.set_query_threads(spec.query_threads)
        for depth in deeper:
            point[f"recall_at_{depth}"] = recall_at(deep_found, gt_ids[:subset], depth)
            point[f"recall_at_{depth}_queries"] = subset
    return point


def recall_at(found: np.ndarray, gt_ids: np.ndarray, depth: int) -> float:
    """Mean over queries of |first ``depth`` found ∩ exact top ``depth``| / depth."""
    rows = min(len(found), len(gt_ids))
    hits = 0
    for start in range(0, rows, 1000):
        truth = np.asarray(gt_ids[start : start + 1000, :depth], dtype=np.int64)
        got = np.asarray(found[start : start + 1000, :depth], dtype=np.int64)
        hits += int((truth[:, :, None] == got[:, None, :]).any(axis=2).sum())
    return hits / (rows * depth)


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
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or any(value < 1 for value in values):
        raise ValueError(f"expected a comma-separated list of positive integers, got {text!r}")
    return values
