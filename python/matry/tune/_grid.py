"""Grid over (M, ef_construction): build, measure, Pareto frontier, recommendation, plot."""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ._recall import (
    CAREFUL,
    EfPoint,
    Measurement,
    RecallReport,
    TargetUnreachableError,
    Timing,
    Workload,
    as_query_matrix,
    check_confidence,
    check_num_threads,
    check_positive_int,
    check_target,
    make_workload,
    point_evaluator,
    tune_ef,
)
from ._stats import pareto_indices

if TYPE_CHECKING:
    from matry import Index

PathLike = Union[str, "os.PathLike[str]"]

# The PNG written by GridReport.plot is exactly PLOT_SIZE_INCHES * PLOT_DPI pixels.
PLOT_SIZE_INCHES = (9.0, 6.0)
PLOT_DPI = 100


@dataclass(frozen=True)
class GridPoint:
    """One (M, ef_construction, ef) operating point.

    ``recall`` is the mean recall@k over the queries and [``ci_low``, ``ci_high``] its interval;
    ``meets_target`` means ``ci_low`` reaches the target; ``tuned`` marks the configuration's
    smallest ef that meets it. ``qps`` is batched search of all queries, the fastest of at least
    two batches and ``qps_min_seconds`` of ``grid``. ``bytes_per_vector`` is the saved file size
    over the vector count.
    """

    M: int
    ef_construction: int
    ef: int
    recall: float
    ci_low: float
    ci_high: float
    qps: float
    bytes_per_vector: float
    build_seconds: float
    meets_target: bool
    tuned: bool


@dataclass(frozen=True)
class ConfigResult:
    """Everything measured for one (M, ef_construction).

    ``tuned`` is the recall report at the smallest ef that meets the target (with latency
    percentiles), or None when no ef up to the live count does; ``points`` the whole recall/QPS
    curve over ef, ascending.
    """

    M: int
    ef_construction: int
    build_seconds: float
    bytes_per_vector: float
    tuned: RecallReport | None
    points: tuple[GridPoint, ...]

    @property
    def tuned_ef(self) -> int | None:
        return None if self.tuned is None else self.tuned.ef

    def to_dict(self) -> dict[str, Any]:
        return {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "build_seconds": self.build_seconds,
            "bytes_per_vector": self.bytes_per_vector,
            "tuned_ef": self.tuned_ef,
            "tuned": None if self.tuned is None else self.tuned.to_dict(),
            "points": [asdict(point) for point in self.points],
        }


def _objectives(point: GridPoint) -> tuple[float, float, float, float]:
    """Pareto objectives, all maximised: recall, QPS, -bytes per vector, -build seconds."""
    return (point.recall, point.qps, -point.bytes_per_vector, -point.build_seconds)


def pareto_frontier(points: Sequence[GridPoint]) -> tuple[GridPoint, ...]:
    """Points not dominated in (recall, QPS, bytes per vector, build seconds)."""
    keep = pareto_indices([_objectives(point) for point in points])
    return tuple(points[i] for i in keep)


def recommend(configs: Iterable[ConfigResult], memory_budget: float | None) -> GridPoint | None:
    """The fastest configuration's tuned point that meets the target within the budget.

    Within one configuration the smallest ef that meets the target is the fastest one that
    does (QPS falls with ef), so only tuned points compete; across configurations the highest
    QPS wins, ties going to fewer bytes per vector.
    """
    candidates = [
        point
        for config in configs
        for point in config.points
        if point.tuned
        and point.meets_target
        and (memory_budget is None or point.bytes_per_vector <= memory_budget)
    ]
    if not candidates:
        return None
    return max(candidates, key=_speed_key)


def _speed_key(point: GridPoint) -> tuple[float, float]:
    return (point.qps, -point.bytes_per_vector)


@dataclass(frozen=True)
class GridReport:
    """Result of ``grid``: per-configuration curves, the Pareto frontier, the recommendation."""

    k: int
    target: float
    confidence: float
    metric: str
    dim: int
    n_vectors: int
    n_queries: int
    held_out: bool
    num_threads: int
    memory_budget: float | None
    configs: tuple[ConfigResult, ...]
    points: tuple[GridPoint, ...]
    frontier: tuple[GridPoint, ...]
    recommended: GridPoint | None
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "target": self.target,
            "confidence": self.confidence,
            "metric": self.metric,
            "dim": self.dim,
            "n_vectors": self.n_vectors,
            "n_queries": self.n_queries,
            "held_out": self.held_out,
            "num_threads": self.num_threads,
            "memory_budget": self.memory_budget,
            "wall_seconds": self.wall_seconds,
            "recommended": None if self.recommended is None else asdict(self.recommended),
            "frontier": [asdict(point) for point in self.frontier],
            "configs": [config.to_dict() for config in self.configs],
        }

    def to_json(self, path: PathLike | None = None) -> str:
        """The report as JSON (NaN written as null); also written to ``path`` if given."""
        text = json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _threads_label(self) -> str:
        return "all cores" if self.num_threads == 0 else f"{self.num_threads} threads"

    def to_markdown(self, path: PathLike | None = None) -> str:
        """The report as a Markdown document; also written to ``path`` if given."""
        level = f"{self.confidence:.0%}"
        queries = (
            f"{self.n_queries:,} held-out queries"
            if self.held_out
            else f"{self.n_queries:,} stored vectors as queries (each excluding itself)"
        )
        lines = [
            f"# matry tune: recall@{self.k} >= {self.target}",
            "",
            f"Target: the lower end of the {level} interval of recall@{self.k} reaches"
            f" {self.target}. Metric {self.metric}, {self.n_vectors:,} vectors x {self.dim}"
            f" dims, {queries}, QPS from batched search ({self._threads_label()}), latency from"
            f" single-query calls (one thread). Total tuning time {self.wall_seconds:.1f} s.",
            "",
        ]
        if self.memory_budget is not None:
            lines += [f"Memory budget: {self.memory_budget:g} bytes per vector.", ""]
        rec = self.recommended
        if rec is None:
            lines += ["**Recommended:** none: no configuration meets the target.", ""]
        else:
            tuned = self._config(rec.M, rec.ef_construction).tuned
            latency = (
                ""
                if tuned is None
                else f", p50 {tuned.latency_p50_ms:.3f} ms, p99 {tuned.latency_p99_ms:.3f} ms"
            )
            lines += [
                f"**Recommended:** M={rec.M}, ef_construction={rec.ef_construction},"
                f" ef={rec.ef}: recall@{self.k} {rec.recall:.4f}"
                f" [{rec.ci_low:.4f}, {rec.ci_high:.4f}], {rec.qps:,.0f} QPS{latency},"
                f" {rec.bytes_per_vector:.1f} bytes/vector, build {rec.build_seconds:.1f} s.",
                "",
            ]
        lines += [
            "## Configurations at their tuned ef",
            "",
            f"| M | ef_construction | build s | bytes/vector | tuned ef | recall@{self.k} |"
            f" {level} CI | QPS | p50 ms | p99 ms |",
            "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for config in self.configs:
            head = (
                f"| {config.M} | {config.ef_construction} | {config.build_seconds:.1f} |"
                f" {config.bytes_per_vector:.1f} |"
            )
            tuned = config.tuned
            if tuned is None:
                best = max(config.points, key=lambda point: point.ci_low)
                lines.append(
                    f"{head} not reached | {best.recall:.4f} (best, ef={best.ef}) |"
                    f" [{best.ci_low:.4f}, {best.ci_high:.4f}] | {best.qps:,.0f} | - | - |"
                )
                continue
            qps = next(p.qps for p in config.points if p.tuned)
            lines.append(
                f"{head} {tuned.ef} | {tuned.recall:.4f} | [{tuned.ci_low:.4f},"
                f" {tuned.ci_high:.4f}] | {qps:,.0f} | {tuned.latency_p50_ms:.3f} |"
                f" {tuned.latency_p99_ms:.3f} |"
            )
        lines += [
            "",
            "## Pareto frontier over (recall, QPS, bytes/vector, build s)",
            "",
            f"| M | ef_construction | ef | recall@{self.k} | QPS | bytes/vector | build s |"
            " meets target |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for point in sorted(self.frontier, key=lambda p: (p.M, p.ef_construction, p.ef)):
            lines.append(
                f"| {point.M} | {point.ef_construction} | {point.ef} | {point.recall:.4f} |"
                f" {point.qps:,.0f} | {point.bytes_per_vector:.1f} | {point.build_seconds:.1f} |"
                f" {'yes' if point.meets_target else 'no'} |"
            )
        text = "\n".join(lines) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def _config(self, M: int, ef_construction: int) -> ConfigResult:
        return next(c for c in self.configs if c.M == M and c.ef_construction == ef_construction)

    def plot(self, path: PathLike) -> None:
        """Write a PNG (PLOT_SIZE_INCHES at PLOT_DPI): recall@k against QPS per configuration,
        the Pareto frontier highlighted, the target as a vertical line, the recommendation
        starred."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot(1, 1, 1)
        colours = [f"C{i % 10}" for i in range(len(self.configs))]
        line_styles = ["-", "--", ":", "-."]
        for number, config in enumerate(self.configs):
            ordered = sorted(config.points, key=lambda point: point.ef)
            axes.plot(
                [point.recall for point in ordered],
                [point.qps for point in ordered],
                marker="o",
                markersize=3,
                linewidth=1.2,
                linestyle=line_styles[(number // 10) % len(line_styles)],
                color=colours[number],
                label=f"M={config.M}, efc={config.ef_construction}",
            )
        two_d = pareto_indices([(point.recall, point.qps) for point in self.points])
        envelope = sorted((self.points[i] for i in two_d), key=lambda point: point.recall)
        axes.plot(
            [point.recall for point in envelope],
            [point.qps for point in envelope],
            color="black",
            linewidth=2.5,
            alpha=0.35,
            label="recall/QPS frontier",
        )
        axes.scatter(
            [point.recall for point in self.frontier],
            [point.qps for point in self.frontier],
            s=70,
            facecolors="none",
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
            label="Pareto frontier (recall, QPS, bytes, build s)",
        )
        axes.axvline(
            self.target,
            color="red",
            linestyle="--",
            linewidth=1.5,
            label=f"target recall@{self.k} = {self.target}",
        )
        if self.recommended is not None:
            rec = self.recommended
            axes.scatter(
                [rec.recall],
                [rec.qps],
                marker="*",
                s=260,
                color="gold",
                edgecolors="black",
                zorder=4,
                label=f"recommended: M={rec.M}, efc={rec.ef_construction}, ef={rec.ef}",
            )
        positive_qps = [point.qps for point in self.points if point.qps > 0]
        if positive_qps:
            axes.set_yscale("log")
        recalls = [point.recall for point in self.points] + [self.target]
        axes.set_xlim(max(0.0, min(recalls) - 0.02), 1.005)
        axes.set_xlabel(f"recall@{self.k} (mean over {self.n_queries:,} queries)")
        axes.set_ylabel(f"queries per second (batch, {self._threads_label()})")
        axes.set_title(
            f"matry tune: {self.metric}, {self.n_vectors:,} x {self.dim}, target"
            f" recall@{self.k} >= {self.target}",
            fontsize=11,
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7, loc="lower left", ncol=2)
        figure.savefig(os.fspath(path), format="png", dpi=PLOT_DPI)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _positive_int_list(name: str, values: Any) -> tuple[int, ...]:
    if values is None or isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: must be a non-empty sequence of positive integers")
    items = tuple(values)
    if not items:
        raise ValueError(f"{name}: is empty; give at least one positive integer")
    checked = []
    for item in items:
        try:
            checked.append(check_positive_int(name, item))
        except ValueError:
            raise ValueError(
                f"{name}: every value must be a positive integer, got {item!r}"
            ) from None
    return tuple(dict.fromkeys(checked))


def _default_curve(k: int, tuned_ef: int | None, ef_max: int) -> list[int]:
    """ef values for the curve: k times powers of sqrt(2), up to 4x the tuned ef (or 8k)."""
    stop = min(ef_max, max(8 * k, 4 * (tuned_ef or 0)))
    values = []
    step = 0
    while True:
        ef = int(round(k * 2.0 ** (step / 2.0)))
        if ef > stop:
            break
        values.append(ef)
        step += 1
    return sorted(set(values) | {stop})


def _measure_config(
    index: Index,
    workload: Workload,
    M: int,
    ef_construction: int,
    build_seconds: float,
    bytes_per_vector: float,
    target: float,
    confidence: float,
    num_threads: int,
    efs: tuple[int, ...] | None,
    latency_queries: int,
    timing: Timing,
) -> ConfigResult:
    try:
        ef_report = tune_ef(
            index, workload, target, confidence, num_threads, latency_queries, timing
        )
        tuned: RecallReport | None = ef_report.recall
        points_by_ef: dict[int, EfPoint] = {point.ef: point for point in ef_report.points}
        ef_max = ef_report.ef_max
    except TargetUnreachableError as unreachable:
        tuned = None
        points_by_ef = {point.ef: point for point in unreachable.report.points}
        ef_max = unreachable.report.ef_max
    evaluate = point_evaluator(index, workload, target, confidence, num_threads, timing)
    curve = (
        efs
        if efs is not None
        else _default_curve(workload.k, None if tuned is None else tuned.ef, ef_max)
    )
    for ef in curve:
        if ef not in points_by_ef:
            measurement: Measurement
            measurement, points_by_ef[ef] = evaluate(ef)
            if efs is None and measurement.per_query.mean() >= 0.999:
                break
    points = []
    for ef in sorted(points_by_ef):
        point = points_by_ef[ef]
        is_tuned = tuned is not None and ef == tuned.ef
        points.append(
            GridPoint(
                M=M,
                ef_construction=ef_construction,
                ef=ef,
                recall=point.recall,
                ci_low=point.ci_low,
                ci_high=point.ci_high,
                qps=point.qps,
                bytes_per_vector=bytes_per_vector,
                build_seconds=build_seconds,
                meets_target=point.meets_target,
                tuned=is_tuned,
            )
        )
    return ConfigResult(M, ef_construction, build_seconds, bytes_per_vector, tuned, tuple(points))


def grid(
    vectors: Any,
    queries: Any = None,
    Ms: Sequence[int] = (8, 12, 16, 24, 32, 48),
    ef_constructions: Sequence[int] = (100, 200, 400),
    k: int = 10,
    target: float = 0.95,
    metric: str = "cosine",
    memory_budget: float | None = None,
    num_threads: int = 0,
    progress: bool = True,
    efs: Sequence[int] | None = None,
    sample: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    save_index: PathLike | None = None,
    latency_queries: int = 200,
    qps_min_seconds: float = CAREFUL.min_seconds,
) -> GridReport:
    """Build every (M, ef_construction), measure it, and recommend one for a recall target.

    For each configuration: build seconds (``Index.add`` with ``num_threads``), bytes per
    vector (saved file size / n), the smallest ef that meets ``target`` (as ``ef_for_recall``)
    with its latency, and the recall/QPS curve over ``efs`` (default: k times powers of sqrt(2)
    up to 4x the tuned ef, stopping at recall 0.999). Queries are ``queries`` (held out) or
    ``sample`` of the vectors excluding themselves; the exact answers are computed once.
    Every point's QPS is the fastest of at least two batches of all queries, repeated until
    ``qps_min_seconds`` have passed; single-query latency is timed on ``latency_queries``.

    Returns the Pareto frontier over (recall, QPS, bytes per vector, build seconds) of all
    points and the recommended configuration: the fastest tuned point within
    ``memory_budget`` bytes per vector, or None if none meets the target. ``save_index``
    writes that configuration's index (the graph that was measured) with ``ef`` set to the
    recommended ef. Raises ValueError naming the argument for bad input.
    """
    started = time.perf_counter()
    target = check_target(target)
    confidence = check_confidence(confidence)
    num_threads = check_num_threads(num_threads)
    k = check_positive_int("k", k)
    M_values = _positive_int_list("Ms", Ms)
    ef_construction_values = _positive_int_list("ef_constructions", ef_constructions)
    ef_values = None if efs is None else tuple(sorted(_positive_int_list("efs", efs)))
    if memory_budget is not None and not (
        isinstance(memory_budget, (int, float, np.integer, np.floating))
        and not isinstance(memory_budget, bool)
        and math.isfinite(memory_budget)
        and memory_budget > 0
    ):
        raise ValueError(
            f"memory_budget: must be a positive number of bytes, got {memory_budget!r}"
        )
    if not (isinstance(qps_min_seconds, (int, float)) and 0 <= qps_min_seconds < math.inf):
        raise ValueError(f"qps_min_seconds: must be >= 0, got {qps_min_seconds!r}")
    timing = Timing(CAREFUL.min_batches, float(qps_min_seconds))
    vector_matrix = _vector_matrix(vectors)
    n_vectors, dim = vector_matrix.shape
    if queries is not None:
        queries = as_query_matrix(queries, dim)
        if k > n_vectors:
            raise ValueError(f"k: {k} is larger than the number of vectors {n_vectors}")
    elif k >= n_vectors:
        raise ValueError(
            f"k: {k} must be smaller than the number of vectors {n_vectors} when the queries"
            " are sampled from them (each query excludes itself)"
        )

    from matry import Index  # imported here: matry imports its submodules lazily

    ids = np.arange(n_vectors, dtype=np.int64)
    configs: list[ConfigResult] = []
    workload: Workload | None = None
    recommended_so_far: GridPoint | None = None
    combinations = list(itertools.product(M_values, ef_construction_values))
    from tqdm.auto import tqdm

    with (
        tempfile.TemporaryDirectory(prefix="matry-tune-") as scratch,
        tqdm(
            total=len(combinations), desc="matry tune", unit="config", disable=not progress
        ) as bar,
    ):
        kept_file: Path | None = None
        for M, ef_construction in combinations:
            bar.set_postfix_str(f"M={M} efc={ef_construction}: building")
            index = Index(dim, metric=metric, M=M, ef_construction=ef_construction, seed=seed)
            build_started = time.perf_counter()
            index.add(vector_matrix, ids=ids, num_threads=num_threads)
            build_seconds = time.perf_counter() - build_started
            index_file = Path(scratch) / f"M{M}-efc{ef_construction}.matry"
            index.save(index_file)
            bytes_per_vector = index_file.stat().st_size / n_vectors
            bar.set_postfix_str(f"M={M} efc={ef_construction}: measuring")
            if workload is None:
                workload = make_workload(index, queries, k, sample, seed, num_threads)
            config = _measure_config(
                index,
                workload,
                M,
                ef_construction,
                build_seconds,
                bytes_per_vector,
                target,
                confidence,
                num_threads,
                ef_values,
                latency_queries,
                timing,
            )
            del index
            configs.append(config)
            best = recommend([config], memory_budget)
            if best is not None and (
                recommended_so_far is None or _speed_key(best) > _speed_key(recommended_so_far)
            ):
                recommended_so_far = best
                if kept_file is not None:
                    kept_file.unlink()
                kept_file = index_file
            else:
                index_file.unlink()
            bar.update(1)
        recommended = recommend(configs, memory_budget)
        if save_index is not None and recommended is not None and kept_file is not None:
            chosen = Index.load(kept_file)
            chosen.ef = recommended.ef
            chosen.save(save_index)
    if workload is None:  # pragma: no cover - combinations is never empty
        raise RuntimeError("no configuration was measured")
    points = tuple(point for config in configs for point in config.points)
    return GridReport(
        k=k,
        target=target,
        confidence=confidence,
        metric=metric,
        dim=dim,
        n_vectors=n_vectors,
        n_queries=workload.n_queries,
        held_out=workload.held_out,
        num_threads=num_threads,
        memory_budget=None if memory_budget is None else float(memory_budget),
        configs=tuple(configs),
        points=points,
        frontier=pareto_frontier(points),
        recommended=recommended,
        wall_seconds=time.perf_counter() - started,
    )


def _vector_matrix(vectors: Any) -> np.ndarray:
    try:
        array = np.asarray(vectors)
    except Exception as error:
        raise ValueError(f"vectors: cannot be read as an array ({error})") from error
    if array.ndim != 2:
        raise ValueError(f"vectors: must be 2-D [n, dim], got {array.ndim}-D")
    if array.shape[0] == 0:
        raise ValueError("vectors: is empty (0 rows)")
    if array.shape[1] == 0:
        raise ValueError("vectors: has dimension 0")
    return as_query_matrix(array, array.shape[1], name="vectors")
