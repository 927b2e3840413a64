"""matry.distributed on GloVe-50 (390k x 50): build seconds, QPS at recall@10 = 0.95 with full
fan-out and with k-means routing, and the per-batch overhead of each engine.

    python -m bench.distributed [--shards 1,2,4] [--engines local,ray,dask] [--queries 1000]
                                [--out bench/results/distributed]

Two workers everywhere: the local engine's pool has 2 threads, Ray runs with num_cpus=2 (one
CPU per shard actor and per build task), Dask with LocalCluster(n_workers=2,
threads_per_worker=1); every shard builds and searches on one thread. All engines build the
same files (one thread per shard, fixed seed), so recall depends on the shard count only; the
smallest ef reaching the target is found once per shard count and every engine is timed at it.
Timings are wall-clock (the work runs in other processes under Ray and Dask) on a shared
machine: compare the ratios within one run, not the absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import datasets

EF_GRID = (10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 512)
PROBES = (1, 2, 3)
TARGET = 0.95
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / truth.shape[1])


def best_batch_seconds(search: Any, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        search()
        best = min(best, time.perf_counter() - started)
    return best


def smallest_ef(
    sidx: Any, queries: np.ndarray, truth: np.ndarray, probe: int | None
) -> tuple[int, float] | None:
    for ef in EF_GRID:
        value = recall(sidx.search(queries, k=K, ef=ef, probe=probe)[0], truth)
        if value >= TARGET:
            return ef, value
    return None


def one_query_latency_ms(
    sidx: Any, queries: np.ndarray, ef: int, probe: int | None = None, calls: int = 40
) -> float:
    timings = []
    for row in range(calls):
        started = time.perf_counter()
        sidx.search(queries[row : row + 1], k=K, ef=ef, probe=probe)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e3


def start_engines(engines: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"local": {}}
    if "ray" in engines:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        options["ray"] = {}
    if "dask" in engines:
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        )
        options["dask"] = {"client": distributed.Client(cluster)}
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--engines", default="local,ray,dask")
    parser.add_argument("--phase", choices=("all", "build", "search"), default="all")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--out", default="bench/results/distributed")
    parser.add_argument("--workdir", default=None, help="shard files (kept when given)")
    args = parser.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",")]
    engines = args.engines.split(",")

    folder = datasets.prepare("glove-50", datasets.default_cache_dir(), progress=False)
    data = datasets.load(folder, mmap=True)
    queries = np.ascontiguousarray(data.queries[: args.queries])
    truth = np.asarray(data.gt_ids[: args.queries, :K], dtype=np.int64)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="matry-dist-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        log.append(line)

    say(f"glove-50: {data.n_base} x {data.dim}, {queries.shape[0]} held-out queries, k={K}")
    say(f"M={args.M}, ef_construction={args.ef_construction}, threads_per_shard=1, 2 workers")
    say(f"load average at start: {os.getloadavg()}")
    options = start_engines(engines)
    params = {"metric": "ip", "M": args.M, "ef_construction": args.ef_construction}
    results: dict[str, Any] = {"builds": [], "search": []}
    if args.phase in ("all", "build"):
        results["builds"] = build_phase(
            data.base, shard_counts, engines, options, params, workdir, say
        )
    if args.phase in ("all", "search"):
        results["search"] = search_phase(
            data.base,
            queries,
            truth,
            shard_counts,
            engines,
            options,
            params,
            workdir,
            args.rounds,
            say,
        )
    say(f"load average at end: {os.getloadavg()}")
    suffix = "" if args.phase == "all" else f"-{args.phase}"
    (out / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"run{suffix}.log").write_text("\n".join(log) + "\n")
    text = table(results)
    (out / f"table{suffix}.md").write_text(text)
    print(text)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def build_phase(
    base: np.ndarray,
    shard_counts: list[int],
    engines: list[str],
    options: dict[str, Any],
    params: dict[str, Any],
    workdir: Path,
    say: Any,
) -> list[dict[str, Any]]:
    """Build seconds of every (shard count, engine), hash partition; k-means on local."""
    from matry.distributed import build

    rows = []
    jobs = [(s, e, "hash") for s in shard_counts for e in engines]
    jobs += [(s, "local", "kmeans") for s in shard_counts if s > 1]
    for shards, engine, partition in jobs:
        path = workdir / f"{partition}-{shards}-{engine}"
        started = time.perf_counter()
        sidx = build(
            base,
            shards=shards,
            engine=engine,
            path=path,
            overwrite=True,
            partition=partition,
            **params,
            **options[engine],
        )
        row = {
            "engine": engine,
            "partition": partition,
            "shards": shards,
            "build_s": round(time.perf_counter() - started, 2),
            "sizes": sidx.shard_sizes,
        }
        sidx.close()
        rows.append(row)
        say(json.dumps(row))
    return rows


def search_phase(
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    shard_counts: list[int],
    engines: list[str],
    options: dict[str, Any],
    params: dict[str, Any],
    workdir: Path,
    rounds: int,
    say: Any,
) -> list[dict[str, Any]]:
    """The same files opened on every engine; the smallest ef reaching the target found once
    (results are identical across engines); timings interleaved engine by engine."""
    from matry.distributed import ShardedIndex, build

    rows = []
    cases = [("hash", s, None) for s in shard_counts]
    for shards in [s for s in shard_counts if s > 1]:
        cases += [("kmeans", shards, None)] + [("kmeans", shards, p) for p in PROBES if p < shards]
    for partition, shards, probe in cases:
        path = workdir / f"{partition}-{shards}-local"
        if not (path / "manifest.json").exists():
            build(base, shards=shards, path=path, partition=partition, **params).close()
        opened = {e: ShardedIndex.open(path, engine=e, **options[e]) for e in engines}
        found = smallest_ef(opened["local"], queries, truth, probe)
        if found is None:
            say(f"{partition} S={shards} probe={probe}: {TARGET} not reached up to ef 512")
            for sidx in opened.values():
                sidx.close()
            continue
        ef, reached = found
        for sidx in opened.values():  # every engine returns the same ids
            np.testing.assert_array_equal(
                sidx.search(queries[:50], k=K, ef=ef, probe=probe)[0],
                opened["local"].search(queries[:50], k=K, ef=ef, probe=probe)[0],
            )
        batch = {e: float("inf") for e in engines}
        single: dict[str, list[float]] = {e: [] for e in engines}
        for _ in range(rounds):
            for engine, sidx in opened.items():
                batch[engine] = min(
                    batch[engine],
                    best_batch_seconds(
                        functools.partial(sidx.search, queries, k=K, ef=ef, probe=probe), 1
                    ),
                )
                single[engine].append(one_query_latency_ms(sidx, queries, ef, probe, 20))
        for engine, sidx in opened.items():
            row = {
                "engine": engine,
                "partition": partition,
                "shards": shards,
                "probe": probe,
                "ef": ef,
                "recall": round(reached, 4),
                "qps": round(queries.shape[0] / batch[engine], 1),
                "one_query_ms": round(statistics.median(single[engine]), 3),
            }
            rows.append(row)
            say(json.dumps(row))
            sidx.close()
    return rows


def table(results: dict[str, Any]) -> str:
    lines = []
    if results["builds"]:
        lines += [
            "| engine | partition | shards | build s (wall, 2 workers) | shard sizes |",
            "|---|---|---|---|---|",
        ]
        for r in results["builds"]:
            lines.append(
                f"| {r['engine']} | {r['partition']} | {r['shards']} | {r['build_s']} | "
                f"{', '.join(str(n) for n in r['sizes'])} |"
            )
        lines.append("")
    if results["search"]:
        lines += [
            "| engine | partition | shards | probe | ef @0.95 | recall@10 | QPS (batch) "
            "| 1-query call ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results["search"]:
            lines.append(
                f"| {r['engine']} | {r['partition']} | {r['shards']} | {r['probe'] or 'all'} | "
                f"{r['ef']} | {r['recall']} | {r['qps']} | {r['one_query_ms']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
