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


def one_query_latency_ms(sidx: Any, queries: np.ndarray, ef: int, calls: int = 40) -> float:
    timings = []
    for row in range(calls):
        started = time.perf_counter()
        sidx.search(queries[row : row + 1], k=K, ef=ef)
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
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--M", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--out", default="bench/results/distributed")
    parser.add_argument("--workdir", default=None, help="where the shard files go (temporary)")
    args = parser.parse_args()
    shard_counts = [int(s) for s in args.shards.split(",")]
    engines = args.engines.split(",")

    from matry.distributed import ShardedIndex, build

    folder = datasets.prepare("glove-50", datasets.default_cache_dir(), progress=False)
    data = datasets.load(folder, mmap=True)
    queries = np.ascontiguousarray(data.queries[: args.queries])
    truth = np.asarray(data.gt_ids[: args.queries, :K], dtype=np.int64)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="matry-dist-bench-"))
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
    rows: list[dict[str, Any]] = []
    ef_for: dict[int, tuple[int, float]] = {}

    for shards in shard_counts:
        for engine in engines:
            path = workdir / f"hash-{shards}-{engine}"
            started = time.perf_counter()
            sidx = build(
                data.base,
                shards=shards,
                engine=engine,
                path=path,
                overwrite=True,
                **params,
                **options[engine],
            )
            build_seconds = time.perf_counter() - started
            if shards not in ef_for:
                found = smallest_ef(sidx, queries, truth, None)
                if found is None:
                    raise SystemExit(f"S={shards}: recall {TARGET} not reached up to ef 512")
                ef_for[shards] = found
            ef, _ = ef_for[shards]
            reached = recall(sidx.search(queries, k=K, ef=ef)[0], truth)
            seconds = best_batch_seconds(functools.partial(sidx.search, queries, k=K, ef=ef))
            latency = one_query_latency_ms(sidx, queries, ef)
            row = {
                "engine": engine,
                "partition": "hash",
                "shards": shards,
                "probe": None,
                "build_s": round(build_seconds, 2),
                "ef": ef,
                "recall": round(reached, 4),
                "qps": round(queries.shape[0] / seconds, 1),
                "one_query_ms": round(latency, 3),
            }
            rows.append(row)
            say(json.dumps(row))
            sidx.close()
            if engine != engines[0]:
                shutil.rmtree(path, ignore_errors=True)

    # k-means partition: full fan-out against routing each query to its `probe` nearest shards.
    for shards in [s for s in shard_counts if s > 1]:
        path = workdir / f"kmeans-{shards}"
        started = time.perf_counter()
        sidx = build(
            data.base, shards=shards, path=path, partition="kmeans", overwrite=True, **params
        )
        build_seconds = time.perf_counter() - started
        say(f"kmeans S={shards}: sizes {sidx.shard_sizes}, build {build_seconds:.1f} s (local)")
        sidx.close()
        for engine in engines:
            sidx = ShardedIndex.open(path, engine=engine, **options[engine])
            for probe in (None, *[p for p in PROBES if p < shards]):
                found = smallest_ef(sidx, queries, truth, probe)
                if found is None:
                    say(f"kmeans S={shards} probe={probe}: {TARGET} not reached")
                    continue
                ef, reached = found
                seconds = best_batch_seconds(
                    functools.partial(sidx.search, queries, k=K, ef=ef, probe=probe)
                )
                row = {
                    "engine": engine,
                    "partition": "kmeans",
                    "shards": shards,
                    "probe": probe,
                    "build_s": round(build_seconds, 2) if engine == "local" else None,
                    "ef": ef,
                    "recall": round(reached, 4),
                    "qps": round(queries.shape[0] / seconds, 1),
                    "one_query_ms": None,
                }
                rows.append(row)
                say(json.dumps(row))
            sidx.close()

    say(f"load average at end: {os.getloadavg()}")
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "run.log").write_text("\n".join(log) + "\n")
    (out / "table.md").write_text(table(rows))
    print(table(rows))
    shutil.rmtree(workdir, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | partition | shards | probe | build s | ef @0.95 | recall@10 | QPS (batch) "
        "| 1-query call ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['partition']} | {r['shards']} | {r['probe'] or 'all'} | "
            f"{r['build_s'] if r['build_s'] is not None else '-'} | {r['ef']} | {r['recall']} | "
            f"{r['qps']} | {r['one_query_ms'] if r['one_query_ms'] is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
