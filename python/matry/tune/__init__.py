"""Recall-target tuning: measure recall@k with a confidence interval, find the smallest ef that
certifies a recall target, and grid-search M / ef_construction for the fastest configuration
that meets it.

    from matry import tune
    report = tune.recall(index, queries, k=10)           # recall, 95% CI, QPS, p50/p99 latency
    ef_report = tune.ef_for_recall(index, target=0.95, set=True)
    grid_report = tune.grid(vectors, queries, Ms=(8, 16, 32), target=0.95)
    grid_report.plot("tune.png"); print(grid_report.to_markdown())
    monitor = tune.RecallMonitor(index, target=0.95, k=10, sample_rate=0.01)  # in production
    ids, distances = monitor.search(queries, k=10); monitor.status()

The interval is a Student-t interval over per-query recall widened to the Wilson interval on
the total hits (see ``matry.tune._stats``); a target is met when the interval's lower end
reaches it.
"""

from __future__ import annotations

from .._data import read_vectors
from ._cli import cli_main
from ._grid import ConfigResult, GridPoint, GridReport, grid, pareto_frontier
from ._monitor import RecallMonitor, RecallStatus
from ._recall import (
    EfPoint,
    EfReport,
    RecallReport,
    TargetUnreachableError,
    ef_for_recall,
    recall,
)
from ._stats import recall_interval

__all__ = [
    "ConfigResult",
    "EfPoint",
    "EfReport",
    "GridPoint",
    "GridReport",
    "RecallMonitor",
    "RecallReport",
    "RecallStatus",
    "TargetUnreachableError",
    "cli_main",
    "ef_for_recall",
    "grid",
    "pareto_frontier",
    "read_vectors",
    "recall",
    "recall_interval",
]
