"""Markdown tables and the recall / QPS plot from the JSON lines of a run.

Recall is recall@k of the run (``k``, 10 by default). QPS at a recall target is read along each
sweep (points in increasing ef or search_k): between the first pair of neighbouring points
whose recall brackets the target, log(QPS) is
interpolated linearly in recall. If the first point of a sweep already reaches the target its
QPS is used as is (marked with ``*``: the true value at the target is at least that). A sweep
that never reaches the target gives "not reached" ("—" in the summary). For Annoy the best of
its n_trees builds is reported, naming the build.

The summary (first in table.md, and what ``matry bench`` prints) has one row per library: QPS of
the batched search at recall 0.90 / 0.95 / 0.99, the ratio to hnswlib at 0.95, build seconds and
bytes per vector (resident memory of the loaded index where measured).

The build table gives, per library: build seconds and threads, and bytes per vector four ways:
the library's own memory count (matry ``Index.memory_bytes``, usearch ``memory_usage``), the
resident memory of the saved index in a fresh process after load and warm queries
(bench/resident.py; matry also with ``mmap=True`` where it has it), the file size on disk, and
the peak RSS growth during the build.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RECALL_TARGETS = (0.90, 0.95, 0.99)
SUMMARY_RATIO_TARGET = 0.95
NOT_REACHED = "—"
PLOT_MIN_RECALL = 0.5
BASELINE = "hnswlib"
QPS_KINDS = (
    ("qps_batch", "one batched call"),
    ("qps_single", "one query per call"),
)
TIMERS = {"wall": "wall clock", "cpu": "CPU time of the worker process"}
LIBRARY_ORDER = (
    "matry",
    "matry-int8",
    "matry-int8-p128-pca",
    "hnswlib",
    "faiss",
    "faiss-hnsw-sq8",
    "usearch",
    "usearch-i8",
    "voyager",
    "annoy",
    "glass-sq8u",
    "glass-sq4u",
    "svs-lvq",
    "vsag-sq8",
    "scann",
)
LIBRARY_COLOURS = {
    "matry": "#d62728",
    "matry-int8": "#ff6f61",
    "matry-int8-p128-pca": "#b5002a",
    "hnswlib": "#1f77b4",
    "faiss": "#2ca02c",
    "faiss-hnsw-sq8": "#98df8a",
    "usearch": "#9467bd",
    "usearch-i8": "#c5b0d5",
    "voyager": "#ff7f0e",
    "annoy": "#8c564b",
    "glass-sq8u": "#17becf",
    "glass-sq4u": "#9edae5",
    "svs-lvq": "#bcbd22",
    "vsag-sq8": "#e377c2",
    "scann": "#7f7f7f",
}
SKIPPED_FILE = "skipped.json"

Point = dict[str, Any]


def recall_key(points: Sequence[Point]) -> str:
    """The recall the tables use: recall@k of the run (recall@10 in runs that predate k)."""
    return f"recall_at_{points[0].get('k', 10)}" if points else "recall_at_10"


def recall_name(points: Sequence[Point]) -> str:
    return f"recall@{points[0].get('k', 10)}" if points else "recall@10"


def load_points(path: Path) -> list[Point]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_skipped(results_dir: Path) -> dict[str, str]:
    """{library: reason} of the run's skipped libraries (empty if the run wrote none)."""
    path = Path(results_dir) / SKIPPED_FILE
    if not path.exists():
        return {}
    return {str(name): str(reason) for name, reason in json.loads(path.read_text()).items()}


def build_label(point: Point) -> str:
    """Library-specific build parameters that tell builds of one library apart."""
    extra = {
        key: value
        for key, value in point.get("build_config", {}).items()
        if key not in ("M", "ef_construction", "simd_level")
    }
    return ", ".join(f"{key}={value}" for key, value in sorted(extra.items()))


def libraries_in(points: Iterable[Point]) -> list[str]:
    present = {point["library"] for point in points}
    ordered = [name for name in LIBRARY_ORDER if name in present]
    return ordered + sorted(present - set(ordered))


def sweeps(points: Iterable[Point], library: str) -> dict[str, list[Point]]:
    """The library's points grouped by build, each sorted by the search parameter."""
    grouped: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        if point["library"] == library:
            grouped[build_label(point)].append(point)
    return {
        label: sorted(group, key=lambda point: point["search_param"])
        for label, group in grouped.items()
    }


def qps_at_recall(sweep: Sequence[Point], target: float, qps_key: str) -> tuple[float, bool] | None:
    """(QPS at ``target`` recall, exact?) along one sweep; None if never reached.

    exact is False when the first point already exceeds the target (its QPS is a lower bound).
    """
    key = recall_key(sweep)
    usable = [point for point in sweep if key in point and point.get(qps_key, 0) > 0]
    if not usable:
        return None
    if usable[0][key] >= target:
        return float(usable[0][qps_key]), usable[0][key] == target
    for lower, upper in zip(usable, usable[1:]):
        if lower[key] < target <= upper[key]:
            return (
                interpolate_log(lower[key], lower[qps_key], upper[key], upper[qps_key], target),
                True,
            )
    return None


def interpolate_log(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    """Value at x on the line through (x0, log y0) and (x1, log y1)."""
    if x1 == x0:
        return max(y0, y1)
    fraction = (x - x0) / (x1 - x0)
    return math.exp(math.log(y0) + fraction * (math.log(y1) - math.log(y0)))


def best_qps_at_recall(
    points: Sequence[Point], library: str, target: float, qps_key: str
) -> tuple[float, bool, str] | None:
    """Best (QPS, exact, build label) over the library's builds at the target recall."""
    best: tuple[float, bool, str] | None = None
    for label, sweep in sweeps(points, library).items():
        found = qps_at_recall(sweep, target, qps_key)
        if found and (best is None or found[0] > best[0]):
            best = (found[0], found[1], label)
    return best


def _format_qps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(value: float, baseline: float | None) -> str:
    return f" ({value / baseline:.2f}x)" if baseline else ""


def qps_table(points: Sequence[Point], qps_key: str) -> str:
    libraries = libraries_in(points)
    name, key = recall_name(points), recall_key(points)
    header = "| library | " + " | ".join(f"{name} = {t:.2f}" for t in RECALL_TARGETS)
    header += f" | best {name} |"
    lines = [header, "|---" * (len(RECALL_TARGETS) + 2) + "|"]
    baselines: dict[float, float | None] = {}
    for target in RECALL_TARGETS:
        found = best_qps_at_recall(points, BASELINE, target, qps_key)
        baselines[target] = found[0] if found else None
    for library in libraries:
        cells = []
        for target in RECALL_TARGETS:
            found = best_qps_at_recall(points, library, target, qps_key)
            if found is None:
                cells.append("not reached")
                continue
            qps, exact, label = found
            cell = _format_qps(qps) + ("" if exact else "*") + _ratio(qps, baselines[target])
            if label:
                cell += f" [{label}]"
            cells.append(cell)
        best_recall = max(point.get(key, 0.0) for point in points if point["library"] == library)
        lines.append(f"| {library} | " + " | ".join(cells) + f" | {best_recall:.4f} |")
    return "\n".join(lines)


def _parameters_text(point: Point) -> str:
    parameters = point.get("library_parameters") or {}
    return ", ".join(f"{key}={value}" for key, value in parameters.items())


def _bytes_cell(point: Point, key: str, baseline: Point | None) -> str:
    value = point.get(key)
    if value is None:
        return "-"
    reference = baseline.get(key) if baseline else None
    return f"{float(value):.0f}" + _ratio(float(value), reference)


BUILD_TABLE_BYTES = (
    ("memory_bytes_per_vector", "memory"),
    ("resident_bytes_per_vector", "resident"),
    ("resident_mmap_bytes_per_vector", "resident (mmap)"),
    ("index_bytes_per_vector", "disk"),
    ("rss_build_peak_bytes_per_vector", "peak RSS growth in build"),
)


def build_table(points: Sequence[Point]) -> str:
    builds: dict[tuple[str, str], Point] = {}
    for point in points:
        builds.setdefault((point["library"], build_label(point)), point)
    baseline = next((point for (library, _), point in builds.items() if library == BASELINE), None)
    header = "| library | build | build s | threads | build CPU s | "
    header += " | ".join(f"{title} B/vector" for _, title in BUILD_TABLE_BYTES) + " |"
    lines = [header, "|---" * (5 + len(BUILD_TABLE_BYTES)) + "|"]
    order = {name: position for position, name in enumerate(libraries_in(points))}
    for (library, label), point in sorted(
        builds.items(), key=lambda item: (order[item[0][0]], item[0][1])
    ):
        config = point.get("build_config", {})
        if library == "annoy":
            description = label
        else:
            description = f"M={config.get('M')}, ef_construction={config.get('ef_construction')}"
            if "simd_level" in config:
                description += f", {config['simd_level']}"
        parameters = _parameters_text(point)
        if parameters:
            description += f"; {parameters}"
        cells = [library, description]
        if "build_seconds" in point:
            seconds = float(point["build_seconds"])
            reference = baseline.get("build_seconds") if baseline else None
            cells.append(f"{seconds:.1f}" + _ratio(seconds, reference))
        else:
            cells.append("-")
        cells.append(str(point.get("build_threads_used") or point.get("build_threads", "-")))
        cpu = point.get("build_cpu_seconds")
        cells.append("-" if cpu is None else f"{float(cpu):.1f}")
        cells += [_bytes_cell(point, key, baseline) for key, _ in BUILD_TABLE_BYTES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_text(point: Point) -> str:
    """How the run compared vectors (runs before the metric field were all cosine)."""
    metric = point.get("metric", "cosine")
    if metric == "l2":
        return "squared L2 distance"
    if metric == "ip":
        return "inner product on unit vectors"
    return "cosine (inner product on normalized vectors)"


def _bytes_per_vector(point: Point) -> str:
    """Resident bytes per vector of the loaded index, else the library's count, else disk."""
    for key, suffix in (
        ("resident_bytes_per_vector", ""),
        ("memory_bytes_per_vector", " (memory)"),
        ("index_bytes_per_vector", " (disk)"),
    ):
        value = point.get(key)
        if value is not None:
            return f"{float(value):,.0f}{suffix}"
    return "-"


def summary_table(points: Sequence[Point], timer: str = "wall") -> str:
    """One row per library: QPS at the recall targets, ratio to hnswlib, build s, bytes."""
    qps_key = _qps_key("qps_batch", timer)
    name = recall_name(points)
    header = (
        "| library | "
        + " | ".join(f"QPS @ {name} {target:.2f}" for target in RECALL_TARGETS)
        + f" | vs {BASELINE} @ {SUMMARY_RATIO_TARGET:.2f} | build s | bytes/vector |"
    )
    lines = [header, "|---" * (len(RECALL_TARGETS) + 4) + "|"]
    baseline = best_qps_at_recall(points, BASELINE, SUMMARY_RATIO_TARGET, qps_key)
    for library in libraries_in(points):
        cells = [library]
        for target in RECALL_TARGETS:
            found = best_qps_at_recall(points, library, target, qps_key)
            cells.append(
                NOT_REACHED if found is None else _format_qps(found[0]) + ("" if found[1] else "*")
            )
        at_ratio = best_qps_at_recall(points, library, SUMMARY_RATIO_TARGET, qps_key)
        if at_ratio is None or baseline is None:
            cells.append(NOT_REACHED)
        else:
            cells.append(f"{at_ratio[0] / baseline[0]:.2f}x")
        # Annoy: the build whose QPS is reported at the ratio target (else the first build).
        label = at_ratio[2] if at_ratio else None
        builds = sweeps(points, library)
        build = builds.get(label, []) if label is not None else []
        first = (build or next(iter(builds.values())))[0]
        cells.append(f"{float(first.get('build_seconds', float('nan'))):.1f}")
        cells.append(_bytes_per_vector(first))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_notes(points: Sequence[Point], timer: str = "wall") -> str:
    first = points[0]
    threads = first["query_threads"]
    return (
        f"QPS: one batched call over all queries on {threads} thread{'s' if threads > 1 else ''}, "
        f"{TIMERS[timer]}, interpolated along the sweep ({NOT_REACHED} = not reached; * = the "
        "first point already passed the target, a lower bound). bytes/vector: resident memory "
        "of the saved index loaded in a fresh process (else the library's own count, or the file "
        f"size). Ratio: QPS over {BASELINE}'s at {SUMMARY_RATIO_TARGET:.2f}."
    )


def skipped_text(skipped: dict[str, str]) -> str:
    return "\n".join(f"- {name}: {reason}" for name, reason in sorted(skipped.items()))


def summary_text(
    points: Sequence[Point], timer: str = "wall", skipped: dict[str, str] | None = None
) -> str:
    """What ``matry bench`` prints at the end: context, the summary table, notes, skipped."""
    parts = [
        context_line(points),
        "",
        summary_table(points, timer),
        "",
        summary_notes(points, timer),
    ]
    if skipped:
        parts += ["", "Skipped:", skipped_text(skipped)]
    return "\n".join(parts) + "\n"


def context_line(points: Sequence[Point]) -> str:
    first = points[0]
    quick = " (--quick subset)" if first.get("quick") else ""
    return (
        f"{first['dataset']}{quick}: {first['n_base']:,} base vectors, {first['n_queries']:,} "
        f"queries, dim {first['dim']}, {metric_text(first)}, k={first['k']}; "
        f"M={first['M']}, ef_construction={first['ef_construction']}, "
        f"{first['build_threads']} build threads, {first['query_threads']} query thread(s); "
        f"single-query numbers over {first['single_query_count']:,} queries on one thread; "
        f"{first.get('cpu', '?')} ({first.get('cpu_count', '?')} cores)."
    )


def _qps_key(kind: str, timer: str) -> str:
    return kind if timer == "wall" else f"{kind}_cpu"


def _threads_text(points: Sequence[Point], kind: str) -> str:
    threads = points[0]["query_threads"] if kind == "qps_batch" else 1
    return f"{threads} thread{'s' if threads > 1 else ''}"


def _loop_libraries(points: Sequence[Point]) -> list[str]:
    """Libraries whose batch is a Python loop over single queries (no batched call)."""
    return sorted(
        {p["library"] for p in points if p.get("batch_is_loop") or p["library"] == "annoy"}
    )


def markdown_report(
    points: Sequence[Point], timer: str = "wall", skipped: dict[str, str] | None = None
) -> str:
    """table.md: QPS tables by the chosen timer first, then by the other one, then builds."""
    skipped_lines = [f"- {name}: {reason}" for name, reason in sorted((skipped or {}).items())]
    if skipped_lines:
        skipped_lines = ["", "Skipped:", "", *skipped_lines]
    if not points:
        return "No results.\n" + "\n".join(skipped_lines) + "\n"
    if timer not in TIMERS:
        raise ValueError(f"timer: expected one of {sorted(TIMERS)}, got {timer!r}")
    versions = sorted({f"{point['library']} {point['library_version']}" for point in points})
    parts = [
        f"# {points[0]['dataset']}{' (quick)' if points[0].get('quick') else ''}",
        "",
        context_line(points),
        "",
        "Versions: " + ", ".join(versions) + ".",
        *skipped_lines,
        "",
        "## Summary",
        "",
        summary_table(points, timer),
        "",
        summary_notes(points, timer),
    ]
    timers = [timer] + [other for other in TIMERS if other != timer]
    for position, current in enumerate(timers):
        if not all(_qps_key("qps_batch", current) in point for point in points):
            continue
        if position > 0:
            parts += [
                "",
                f"## The same by {TIMERS[current]}",
                "",
                "CPU time leaves out time spent waiting for a core, so on a shared machine it is "
                "the steadier measure; with one query thread it matches the wall clock on a "
                "quiet machine (with several, batch figures are per core)."
                if current == "cpu"
                else "Wall-clock figures include any time the process waited for a core.",
            ]
        for kind, description in QPS_KINDS:
            parts += [
                "",
                f"{'##' if position == 0 else '###'} QPS at recall@10, {description} "
                f"({_threads_text(points, kind)}, {TIMERS[current]})",
                "",
                qps_table(points, _qps_key(kind, current)),
            ]
        if position == 0:
            parts += [
                "",
                f"Ratios in parentheses are to {BASELINE}. QPS is interpolated along the ef "
                "sweep (Annoy: search_k; best n_trees build named) with log-linear interpolation "
                "between the two points that bracket the target; * = the first point of the "
                "sweep already exceeded the target, so the value is a lower bound. "
                + _loop_note(points),
            ]
    parts += [
        "",
        "## Build and memory",
        "",
        build_table(points),
        "",
        "build s = wall clock (with the build threads); build CPU s = CPU seconds of all build "
        "threads. Bytes per vector: memory = the library's own count of its index memory "
        "(matry Index.memory_bytes, usearch memory_usage; '-' where a library has none); "
        "resident = RSS growth of a fresh process after loading the saved index and one warm "
        "batched search of the single-query subset at the middle of the sweep, over the RSS of "
        "a bare interpreter that imported the library; resident (mmap) = the same with "
        "matry's Index.load(path, mmap=True), counting the file pages the queries touched "
        "(Annoy always maps its file); disk = saved size / n; peak RSS growth = peak resident "
        "memory during the build minus resident memory before it, in a fresh process per "
        f"library (data set already loaded), so it counts build scratch too. Ratios are to "
        f"{BASELINE}.",
        "",
    ]
    return "\n".join(parts)


def _loop_note(points: Sequence[Point]) -> str:
    looped = _loop_libraries(points)
    if not looped:
        return ""
    return (
        f"{', '.join(looped)} {'has' if len(looped) == 1 else 'have'} no batched query call: "
        "the batch is a Python loop of single queries."
    )


def pareto_front(
    points: Iterable[Point], qps_key: str, key: str = "recall_at_10"
) -> list[tuple[float, float]]:
    """(recall, QPS) points not beaten on both axes by another point, by recall."""
    pairs = sorted(
        ((point[key], point[qps_key]) for point in points if key in point),
        key=lambda pair: (-pair[0], -pair[1]),
    )
    front: list[tuple[float, float]] = []
    best_qps = -1.0
    for recall, qps in pairs:
        if qps > best_qps:
            front.append((recall, qps))
            best_qps = qps
    return sorted(front)


def plot(points: Sequence[Point], path: Path, timer: str = "wall") -> None:
    """recall@k (x) against QPS (log y), one line per library: batched and single-query."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharex=True)
    key, name = recall_key(points), recall_name(points)
    recalls_seen = [point[key] for point in points if key in point]
    # The interesting region starts near 0.5 (ann-benchmarks' plots too); show all if lower.
    left = PLOT_MIN_RECALL if any(r >= PLOT_MIN_RECALL for r in recalls_seen) else 0.0
    for axis, (kind, description) in zip(axes, QPS_KINDS):
        qps_key = _qps_key(kind, timer)
        for library in libraries_in(points):
            front = pareto_front((p for p in points if p["library"] == library), qps_key, key)
            front = [(recall, qps) for recall, qps in front if recall >= left]
            if not front:
                continue
            recalls = [recall for recall, _ in front]
            axis.plot(
                recalls,
                [qps for _, qps in front],
                marker="o",
                markersize=4,
                linewidth=1.6,
                label=library,
                color=LIBRARY_COLOURS.get(library),
            )
        axis.set_title(f"{description} ({_threads_text(points, kind)}, {TIMERS[timer]})")
        axis.set_yscale("log")
        axis.set_xlabel(name)
        axis.set_ylabel("queries per second (log)")
        axis.grid(True, which="both", alpha=0.3)
        for target in RECALL_TARGETS:
            axis.axvline(target, color="grey", linewidth=0.7, linestyle=":")
        axis.legend(loc="lower left")
    axes[0].set_xlim(left, 1.0)
    first = points[0]
    figure.suptitle(
        f"{first['dataset']}{' (quick)' if first.get('quick') else ''}: "
        f"{first['n_base']:,} x {first['dim']}d, k={first['k']}, M={first['M']}, "
        f"ef_construction={first['ef_construction']}, {first['build_threads']} build threads "
        "(up and to the right is better)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


PLOT_MISSING = "plot.png not written: matplotlib is not installed (pip install 'matry[plot]')"


def write_report(
    results_dir: Path,
    points: Sequence[Point],
    timer: str = "wall",
    skipped: dict[str, str] | None = None,
) -> list[Path]:
    """Write table.md, and plot.png when matplotlib is installed, beside results.jsonl;
    returns the paths written (it says so when the plot is skipped)."""
    results_dir = Path(results_dir)
    table_path = results_dir / "table.md"
    table_path.write_text(markdown_report(points, timer, skipped))
    written = [table_path]
    if points:
        if plot_available():
            plot_path = results_dir / "plot.png"
            plot(points, plot_path, timer)
            written.append(plot_path)
        else:
            print(PLOT_MISSING, flush=True)
    return written
