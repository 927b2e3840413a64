"""``python -m bench run``: the packaged runner (:mod:`matry.bench`) on the project's data sets.

This module only turns a named data set of :mod:`bench.datasets` (prepared and cached once,
with its exact top-100) into the runner's input, and writes the results under
``bench/results/<dataset>[-quick]/``. Building, sweeping, measuring and the tables are
``matry.bench``'s, the same code ``matry bench --data`` runs on a user's files; see the
docstring of ``matry.bench._runner`` for what each point measures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from matry.bench import PreparedData
from matry.bench import RunConfig as PackagedRunConfig
from matry.bench._runner import (
    DEFAULT_ANNOY_SEARCH_K,
    DEFAULT_ANNOY_TREES,
    DEFAULT_EF_VALUES,
    DEFAULT_POINT_TIME_CAP,
    DEFAULT_SCANN_LEAVES,
    DEFAULT_SINGLE_QUERY_COUNT,
    QUICK_POINT_TIME_CAP,
    QUICK_SINGLE_QUERY_COUNT,
    parse_int_list,
    run_benchmark,
)

from bench import datasets

__all__ = [
    "DEFAULT_ANNOY_SEARCH_K",
    "DEFAULT_ANNOY_TREES",
    "DEFAULT_EF_VALUES",
    "DEFAULT_POINT_TIME_CAP",
    "DEFAULT_SCANN_LEAVES",
    "DEFAULT_SINGLE_QUERY_COUNT",
    "QUICK_POINT_TIME_CAP",
    "QUICK_SINGLE_QUERY_COUNT",
    "REPO_ROOT",
    "RunConfig",
    "parse_int_list",
    "prepared_data",
    "run",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunConfig(PackagedRunConfig):
    """The packaged run configuration plus the data set, its cache and the results root."""

    dataset: str = ""
    cache_dir: Path = field(default_factory=datasets.default_cache_dir)
    out: Path = REPO_ROOT / "bench" / "results"
    build_threads: int = 2


def prepared_data(dataset: datasets.Dataset) -> PreparedData:
    """The runner's view of a cached data set folder (unit rows, exact top-100 by dot)."""
    directory = dataset.directory
    return PreparedData(
        name=dataset.name,
        base_path=str(directory / "base.npy"),
        queries_path=str(directory / "queries.npy"),
        gt_ids_path=str(directory / "gt_ids.npy"),
        gt_scores_path=str(directory / "gt_sims.npy"),
        metric="cosine",
        index_metric="ip",
        n_base=dataset.n_base,
        n_queries=dataset.n_queries,
        dim=dataset.dim,
        quick=bool(dataset.info.get("quick", False)),
        source=str(dataset.info.get("source", "")),
    )


def run(config: RunConfig) -> int:
    """Prepare the data set, run the comparison; returns 0 if every available library ran."""
    datasets.validate_name(config.dataset)
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
    results_dir = Path(config.out) / datasets.dataset_key(config.dataset, config.quick)
    return run_benchmark(prepared_data(dataset), config, results_dir)
