"""recall@k of an index against its own exact search, and the smallest ef for a recall target."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from ._stats import recall_interval


class SearchableIndex(Protocol):
    """What recall measurement and ef tuning use of an index: a ``matry.Index`` or a
    ``matry.distributed.ShardedIndex`` (whose exact search covers all shards)."""

    @property
    def dim(self) -> int: ...

    @property
    def ef(self) -> int: ...

    @ef.setter
    def ef(self, value: int) -> None: ...

    def __len__(self) -> int: ...

    def search(
        self, queries: Any, *, k: int = ..., ef: int | None = ..., num_threads: int = ...
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def exact_search(
        self, queries: Any, *, k: int = ..., num_threads: int = ...
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def ids(self) -> np.ndarray: ...

    def get(self, ids: Any) -> np.ndarray: ...


# Relative/absolute slack under which an approximate neighbour counts as tied with the k-th
# exact neighbour (duplicate vectors, equal distances): such a result is a correct answer even
# when exact search happened to return the other id of the tie.
_TIE_RTOL = 1e-6
_TIE_ATOL = 1e-7
# Single-query latency is measured on at most this many queries.
_LATENCY_QUERIES = 200


def check_target(target: float) -> float:
    target = float(target)
    if not (0.0 < target <= 1.0) or math.isnan(target):
        raise ValueError(f"target: must be in (0, 1], got {target}")
    return target


def check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not (0.0 < confidence < 1.0) or math.isnan(confidence):
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    return confidence


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: must be a positive integer, got {value}")
    return int(value)


def check_num_threads(num_threads: Any) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise ValueError(f"num_threads: must be an integer >= 0, got {num_threads!r}")
    if num_threads < 0:
        raise ValueError(f"num_threads: must be >= 0 (0 = all cores), got {num_threads}")
    return int(num_threads)


def as_query_matrix(queries: Any, dim: int, name: str = "queries") -> np.ndarray:
    """Validate a query batch: float32 [n, dim], n >= 1, finite."""
    try:
        array = np.asarray(queries)
    except Exception as error:
        raise ValueError(f"{name}: cannot be read as an array ({error})") from error
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"{name}: must be numeric, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name}: must be 2-D [n, dim], got {array.ndim}-D")
    if array.shape[0] == 0:
        raise ValueError(f"{name}: is empty (0 rows)")
    if array.shape[1] != dim:
        raise ValueError(f"{name}: has dimension {array.shape[1]}, the index has {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{name}: row {row} contains NaN or inf")
    return array


@dataclass(frozen=True)
class Workload:
    """Queries and their exact neighbours, computed once and reused at every ef.

    ``self_ids`` is set when the queries are stored vectors: each query is then searched for
    k + 1 neighbours (at ef + 1, since the query itself occupies one slot of the candidate
    list) and its own id is dropped from both the approximate and the exact result.
    """

    queries: np.ndarray
    k: int
    exact_ids: np.ndarray  # int64 [n, k]
    kth_distance: np.ndarray  # float32 [n]: distance of the k-th exact neighbour
    self_ids: np.ndarray | None  # int64 [n] or None for held-out queries

    @property
    def held_out(self) -> bool:
        return self.self_ids is None

    @property
    def n_queries(self) -> int:
        return int(self.queries.shape[0])


def _drop_self(
    ids: np.ndarray, distances: np.ndarray, self_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """From k + 1 results per row drop the query's own id (or the last one if it is absent)."""
    is_self = ids == self_ids[:, None]
    has_self = is_self.any(axis=1)
    drop = np.where(has_self, is_self.argmax(axis=1), ids.shape[1] - 1)
    keep = np.ones(ids.shape, dtype=bool)
    keep[np.arange(ids.shape[0]), drop] = False
    return ids[keep].reshape(-1, k), distances[keep].reshape(-1, k)


def live_count(index: SearchableIndex) -> int:
    count = len(index)
    if count == 0:
        raise ValueError("index: is empty (no live vectors)")
    return count


def make_workload(
    index: SearchableIndex,
    queries: Any,
    k: int,
    sample: int,
    seed: int,
    num_threads: int,
) -> Workload:
    """Prepare queries (held-out, or a seeded sample of stored vectors) and their exact answers."""
    k = check_positive_int("k", k)
    count = live_count(index)
    if queries is not None:
        if k > count:
            raise ValueError(f"k: {k} is larger than the index's live count {count}")
        query_matrix = as_query_matrix(queries, index.dim)
        exact_ids, exact_distances = index.exact_search(query_matrix, k=k, num_threads=num_threads)
        self_ids = None
    else:
        sample = check_positive_int("sample", sample)
        if k >= count:
            raise ValueError(
                f"k: {k} must be smaller than the index's live count {count} when the queries are"
                " sampled from the index (each query excludes itself)"
            )
        rng = np.random.default_rng(seed)
        stored = np.asarray(index.ids(), dtype=np.int64)
        self_ids = np.sort(rng.choice(stored, size=min(sample, stored.size), replace=False))
        query_matrix = np.ascontiguousarray(index.get(self_ids), dtype=np.float32)
        exact_ids, exact_distances = index.exact_search(
            query_matrix, k=k + 1, num_threads=num_threads
        )
        exact_ids, exact_distances = _drop_self(
            np.asarray(exact_ids), np.asarray(exact_distances), self_ids, k
        )
    exact_ids = np.ascontiguousarray(exact_ids, dtype=np.int64)
    kth_distance = np.asarray(exact_distances, dtype=np.float32)[:, k - 1].copy()
    return Workload(query_matrix, k, exact_ids, kth_distance, self_ids)


def per_query_recall(
    workload: Workload, approx_ids: np.ndarray, approx_distances: np.ndarray
) -> np.ndarray:
    """recall@k of each query: |approximate ∩ exact| / k, ties with the k-th neighbour counted.

    An approximate neighbour counts as a hit when its id is among the exact k, or when its
    distance is no larger than the k-th exact distance (a tie: duplicate vectors or equal
    distances, where exact search picked the other id). Hits are capped at k.
    """
    k = workload.k
    n = workload.n_queries
    hits = np.empty(n, dtype=np.int64)
    threshold = workload.kth_distance + (_TIE_ATOL + _TIE_RTOL * np.abs(workload.kth_distance))
    rows_per_chunk = max(1, 4_000_000 // (k * k))
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        approx = approx_ids[start:stop]
        in_exact = (approx[:, :, None] == workload.exact_ids[start:stop, None, :]).any(axis=2)
        tied = approx_distances[start:stop] <= threshold[start:stop, None]
        valid = approx >= 0
        hits[start:stop] = np.minimum(((in_exact | tied) & valid).sum(axis=1), k)
    return hits / float(k)


@dataclass(frozen=True)
class Measurement:
    """Batch search at one ef: per-query recall and the fastest batch's wall time."""

    ef: int
    per_query: np.ndarray
    seconds: float
    batches: int = 1

    @property
    def qps(self) -> float:
        return self.per_query.size / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Timing:
    """How batch QPS is timed: the whole query batch is searched at least ``min_batches`` times
    and until ``min_seconds`` have passed (at most ``max_batches``); QPS comes from the fastest
    batch, the one least disturbed by other work on the machine."""

    min_batches: int = 1
    min_seconds: float = 0.0
    max_batches: int = 20


SCORE_ONLY = Timing(1, 0.0)  # one batch: enough to score recall while searching over ef
CAREFUL = Timing(2, 0.2)  # reported QPS: best of >= 2 batches and >= 0.2 s


def measure(
    index: SearchableIndex,
    workload: Workload,
    ef: int,
    num_threads: int,
    timing: Timing = SCORE_ONLY,
) -> Measurement:
    """Search every query at ``ef`` in timed batches and score it against the exact answers."""
    k = workload.k
    self_excluded = workload.self_ids is not None
    search_k, search_ef = (k + 1, ef + 1) if self_excluded else (k, ef)

    def run() -> tuple[np.ndarray, np.ndarray, float]:
        started = time.perf_counter()
        ids, distances = index.search(
            workload.queries, k=search_k, ef=search_ef, num_threads=num_threads
        )
        return np.asarray(ids), np.asarray(distances), time.perf_counter() - started

    ids, distances, fastest = run()
    total, batches = fastest, 1
    while batches < timing.max_batches and (
        batches < timing.min_batches or total < timing.min_seconds
    ):
        seconds = run()[2]
        fastest, total, batches = min(fastest, seconds), total + seconds, batches + 1
    if workload.self_ids is not None:
        ids, distances = _drop_self(ids, distances, workload.self_ids, k)
    recalls = per_query_recall(workload, ids, distances)
    recalls.setflags(write=False)
    return Measurement(ef, recalls, fastest, batches)


def measure_latency(
    index: SearchableIndex, workload: Workload, ef: int, n_queries: int = _LATENCY_QUERIES
) -> tuple[float, float]:
    """p50 and p99 of single-query search latency in milliseconds, one thread, Python call
    overhead included (that is what a caller sees)."""
    k = workload.k + (0 if workload.self_ids is None else 1)
    search_ef = ef + (0 if workload.self_ids is None else 1)
    count = min(n_queries, workload.n_queries)
    timings = np.empty(count, dtype=np.float64)
    for row in range(count):
        query = workload.queries[row : row + 1]
        started = time.perf_counter()
        index.search(query, k=k, ef=search_ef, num_threads=1)
        timings[row] = time.perf_counter() - started
    p50, p99 = np.percentile(timings * 1e3, [50.0, 99.0])
    return float(p50), float(p99)


@dataclass(frozen=True)
class RecallReport:
    """recall@k of an index at one ef, with a confidence interval over queries.

    ``ci_low``/``ci_high`` bound the mean recall of the query population at level
    ``confidence`` (Student-t over per-query recall, widened to the Wilson interval on the
    total hits; see ``matry.tune._stats``). ``qps`` is one batched search of all queries with
    ``num_threads`` threads; latency percentiles come from a single-threaded loop of
    one-query searches over the first ``latency_queries`` queries. ``held_out`` is False
    when the queries were a sample of the stored vectors, each excluding itself.
    """

    recall: float
    ci_low: float
    ci_high: float
    confidence: float
    k: int
    ef: int
    n_queries: int
    held_out: bool
    qps: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_queries: int
    num_threads: int
    per_query: np.ndarray = field(repr=False, compare=False)

    @property
    def interval(self) -> tuple[float, float]:
        return self.ci_low, self.ci_high

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["per_query"]
        return data


def report_from(
    index: SearchableIndex,
    workload: Workload,
    measurement: Measurement,
    confidence: float,
    num_threads: int,
    latency_queries: int = _LATENCY_QUERIES,
) -> RecallReport:
    low, high = recall_interval(measurement.per_query, workload.k, confidence)
    if latency_queries > 0:
        p50, p99 = measure_latency(index, workload, measurement.ef, latency_queries)
    else:
        p50 = p99 = float("nan")
    return RecallReport(
        recall=float(measurement.per_query.mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        k=workload.k,
        ef=measurement.ef,
        n_queries=workload.n_queries,
        held_out=workload.held_out,
        qps=measurement.qps,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        latency_queries=min(latency_queries, workload.n_queries),
        num_threads=num_threads,
        per_query=measurement.per_query,
    )


def recall(
    index: SearchableIndex,
    queries: Any = None,
    k: int = 10,
    ef: int | None = None,
    sample: int = 1000,
    num_threads: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
    latency_queries: int = _LATENCY_QUERIES,
) -> RecallReport:
    """recall@k of ``index`` at ``ef`` (default ``index.ef``) against its exact search.

    With ``queries`` (held-out vectors, [n, dim]) each query's approximate top-k is compared
    with ``index.exact_search``. Without, ``sample`` stored vectors are drawn (seeded) and each
    is searched for k + 1 neighbours at ef + 1 with its own id dropped on both sides, so a
    stored query answers like a held-out one at ``ef``. Raises ValueError naming the argument
    for an empty index, k larger than the live count, a bad confidence or bad queries.
    """
    confidence = check_confidence(confidence)
    num_threads = check_num_threads(num_threads)
    if latency_queries < 0:
        raise ValueError(f"latency_queries: must be >= 0, got {latency_queries}")
    ef = int(index.ef) if ef is None else check_positive_int("ef", ef)
    workload = make_workload(index, queries, k, sample, seed, num_threads)
    measurement = measure(index, workload, ef, num_threads, CAREFUL)
    return report_from(index, workload, measurement, confidence, num_threads, latency_queries)


@dataclass(frozen=True)
class EfPoint:
    """One evaluated ef of a tuning search."""

    ef: int
    recall: float
    ci_low: float
    ci_high: float
    qps: float
    meets_target: bool


@dataclass(frozen=True)
class EfReport:
    """Result of ``ef_for_recall``.

    ``ef`` is the smallest ef whose lower confidence bound reaches ``target`` (``reached``),
    ``recall`` the full measurement there, ``points`` every ef evaluated (ascending ef), and
    ``ef_max`` the largest ef the search would try (the live count, at least k). When the target
    cannot be reached, ``ef_for_recall`` raises ``TargetUnreachableError`` carrying a report with
    ``reached=False`` and ``ef``/``recall`` at the best ef seen.
    """

    ef: int
    target: float
    k: int
    confidence: float
    reached: bool
    recall: RecallReport
    points: tuple[EfPoint, ...]
    ef_max: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "ef": self.ef,
            "target": self.target,
            "k": self.k,
            "confidence": self.confidence,
            "reached": self.reached,
            "ef_max": self.ef_max,
            "recall": self.recall.to_dict(),
            "points": [asdict(point) for point in self.points],
        }


class TargetUnreachableError(ValueError):
    """No ef up to the live count certifies the recall target; ``.report`` has the evidence."""

    def __init__(self, message: str, report: EfReport) -> None:
        super().__init__(message)
        self.report = report


def meets(per_query: np.ndarray, low: float, target: float) -> bool:
    """The certification rule: the interval's lower end reaches the target.

    A lower bound can never reach 1.0, so ``target == 1.0`` means every query was perfect.
    """
    if target >= 1.0:
        return bool(np.all(per_query >= 1.0))
    return low >= target


def best_certifiable_low(n_queries: int, k: int, confidence: float) -> float:
    """The lower bound a perfect run (every query at recall 1) would get with this sample."""
    return recall_interval(np.ones(n_queries), k, confidence)[0]


def search_ef(
    evaluate: Callable[[int], tuple[Measurement, EfPoint]],
    k: int,
    ef_max: int,
) -> tuple[int | None, dict[int, tuple[Measurement, EfPoint]]]:
    """Smallest ef whose point meets the target: exponential search from k, then binary search.

    Recall is near-monotone in ef; every ef is scored on the same queries, so the remaining
    non-monotonicity is the graph search itself. The answer must pass and so must ef + 1 (or ef
    is ``ef_max``): a pass followed by a failure is treated as noise, and the search continues
    above the failure. Returns (ef or None, all evaluations by ef).
    """
    evaluated: dict[int, tuple[Measurement, EfPoint]] = {}

    def passes(ef: int) -> bool:
        if ef not in evaluated:
            evaluated[ef] = evaluate(ef)
        return evaluated[ef][1].meets_target

    low_fail = k - 1  # largest ef known (or assumed, below k) to fail
    ef = k
    while not passes(ef):
        low_fail = ef
        if ef >= ef_max:
            return None, evaluated
        ef = min(ef * 2, ef_max)
    high_pass = ef
    while True:
        while high_pass - low_fail > 1:
            middle = (low_fail + high_pass) // 2
            if passes(middle):
                high_pass = middle
            else:
                low_fail = middle
        if high_pass >= ef_max or passes(high_pass + 1):
            return high_pass, evaluated
        # high_pass + 1 failed: a lucky pass. Continue above it, up to the next known pass.
        low_fail = high_pass + 1
        above = sorted(e for e, (_, p) in evaluated.items() if e > low_fail and p.meets_target)
        high_pass = above[0] if above else ef_max
        while not passes(high_pass):
            if high_pass >= ef_max:
                return None, evaluated
            low_fail = high_pass
            high_pass = min(high_pass * 2, ef_max)


def point_evaluator(
    index: SearchableIndex,
    workload: Workload,
    target: float,
    confidence: float,
    num_threads: int,
    timing: Timing = SCORE_ONLY,
) -> Callable[[int], tuple[Measurement, EfPoint]]:
    def evaluate(ef: int) -> tuple[Measurement, EfPoint]:
        measurement = measure(index, workload, ef, num_threads, timing)
        low, high = recall_interval(measurement.per_query, workload.k, confidence)
        point = EfPoint(
            ef=ef,
            recall=float(measurement.per_query.mean()),
            ci_low=low,
            ci_high=high,
            qps=measurement.qps,
            meets_target=meets(measurement.per_query, low, target),
        )
        return measurement, point

    return evaluate


def check_certifiable(target: float, workload: Workload, confidence: float) -> None:
    best_low = best_certifiable_low(workload.n_queries, workload.k, confidence)
    if target < 1.0 and best_low < target:
        raise ValueError(
            f"target: {target} cannot be certified with {workload.n_queries} queries at"
            f" k={workload.k}: even perfect recall on every query gives a lower"
            f" {confidence:.0%} bound of {best_low:.4f}; use more queries (queries= or sample=)"
            " or a lower target or confidence"
        )


def tune_ef(
    index: SearchableIndex,
    workload: Workload,
    target: float,
    confidence: float,
    num_threads: int,
    latency_queries: int = _LATENCY_QUERIES,
    timing: Timing = SCORE_ONLY,
) -> EfReport:
    """ef search on a prepared workload (shared by ef_for_recall and grid).

    Points are timed with ``timing``; the reported ef is re-timed with ``CAREFUL`` timing if
    that is more careful.
    """
    check_certifiable(target, workload, confidence)
    ef_max = max(workload.k, live_count(index))
    evaluate = point_evaluator(index, workload, target, confidence, num_threads, timing)
    found, evaluated = search_ef(evaluate, workload.k, ef_max)
    points = tuple(evaluated[ef][1] for ef in sorted(evaluated))
    if found is None:
        best = max(evaluated.values(), key=lambda item: (item[1].ci_low, -item[1].ef))
        report = EfReport(
            ef=best[1].ef,
            target=target,
            k=workload.k,
            confidence=confidence,
            reached=False,
            recall=report_from(index, workload, best[0], confidence, num_threads, 0),
            points=points,
            ef_max=ef_max,
        )
        raise TargetUnreachableError(
            f"target: recall@{workload.k} >= {target} (lower {confidence:.0%} bound) is not"
            f" reached even at ef={ef_max} (the live count); the best lower bound was"
            f" {best[1].ci_low:.4f} at ef={best[1].ef}. Rebuild with a larger M or"
            " ef_construction, or lower the target",
            report,
        )
    chosen = evaluated[found][0]
    if timing.min_batches < CAREFUL.min_batches or timing.min_seconds < CAREFUL.min_seconds:
        chosen = measure(index, workload, found, num_threads, CAREFUL)
        evaluated[found] = (chosen, replace(evaluated[found][1], qps=chosen.qps))
        points = tuple(evaluated[ef][1] for ef in sorted(evaluated))
    recall_report = report_from(index, workload, chosen, confidence, num_threads, latency_queries)
    return EfReport(
        ef=found,
        target=target,
        k=workload.k,
        confidence=confidence,
        reached=True,
        recall=recall_report,
        points=points,
        ef_max=ef_max,
    )


def ef_for_recall(
    index: SearchableIndex,
    target: float = 0.95,
    k: int = 10,
    queries: Any = None,
    confidence: float = 0.95,
    set: bool = False,
    sample: int = 1000,
    num_threads: int = 0,
    seed: int = 0,
) -> EfReport:
    """The smallest ef whose lower confidence bound on recall@k reaches ``target``.

    The bound is the lower end of the two-sided ``confidence`` interval of ``recall`` (so
    0.95 means a one-sided 97.5% guarantee over the query population). Queries are held-out
    ``queries`` or, when None, ``sample`` stored vectors excluding themselves. The search is
    exponential from ef = k then binary over integers, up to the live count; ``target == 1.0``
    requires every query to be perfect. ``set=True`` writes the result to ``index.ef`` (saved
    with the index, so a loaded index searches at it by default).

    Raises ValueError naming the argument for bad input, ValueError (target) when the sample is
    too small to certify the target at all, and ``TargetUnreachableError`` (a ValueError with a
    ``.report``) when no ef up to the live count reaches it.
    """
    target = check_target(target)
    confidence = check_confidence(confidence)
    num_threads = check_num_threads(num_threads)
    workload = make_workload(index, queries, k, sample, seed, num_threads)
    report = tune_ef(index, workload, target, confidence, num_threads)
    if set:
        index.ef = report.ef
    return report
