"""What matry.tune.RecallMonitor costs a service, and how fast it notices a degraded index.

    python bench/monitor_overhead.py [--base 100000] [--queries 4000] [--rounds 5]

Data: the first ``--base`` vectors of GloVe 6B 50d (the bench cache's glove-50, prepared with
``python -m bench prepare --dataset glove-50``; random unit vectors of the same shape when it is
missing, said so in the output) and held-out queries. Index: cosine, M=16, ef_construction=100,
ef=64, k=10.

Overhead: the same queries searched plain and through a monitor (``--rates``, default 0.01 and
0.001; default settings otherwise: window 1000, max_delay 0.1 s, one thread), one query
per call and in batches of 100 (num_threads=1), in ``--rounds`` rounds with the order of the
two alternating; the medians are printed. "caller" is the wall time of the search loop alone
(what the serving path sees); "cpu" is the process CPU time of the loop plus the monitor
draining its queue afterwards (flush), so it includes the background exact searches.

Detection: a monitor sampling every query (sample_rate 1, so that counts are in samples; at
rate r they take 1/r times as many queries) with target 0.9 sees queries at ef=256 until its
window is full, then at ef=10; printed is the number of degraded samples until the at_risk and
the violated alerts fire, for windows of 200 and 1,000.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matry  # noqa: E402
from matry import tune  # noqa: E402

K = 10


def load_vectors(base_count: int, query_count: int) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from bench import datasets

        directory = datasets.default_cache_dir() / datasets.dataset_key("glove-50", False)
        data = datasets.load(directory, mmap=True)
        base = np.ascontiguousarray(data.base[:base_count], dtype=np.float32)
        queries = np.ascontiguousarray(data.queries[:query_count], dtype=np.float32)
        return base, queries, f"glove-50 (first {base_count:,} base vectors)"
    except (FileNotFoundError, ImportError):
        rng = np.random.default_rng(0)
        base = rng.normal(size=(base_count, 50)).astype(np.float32)
        queries = rng.normal(size=(query_count, 50)).astype(np.float32)
        return base, queries, "RANDOM gaussian 50-d (glove-50 not in the bench cache)"


def run_single(index: matry.Index, queries: np.ndarray, monitor: tune.RecallMonitor | None):
    search = index.search if monitor is None else monitor.search
    cpu, wall = time.process_time(), time.perf_counter()
    for query in queries:
        search(query, k=K)
    caller = time.perf_counter() - wall
    if monitor is not None:
        monitor.flush()
    return caller, time.process_time() - cpu


def run_batches(index: matry.Index, queries: np.ndarray, monitor: tune.RecallMonitor | None):
    search = index.search if monitor is None else monitor.search
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(queries), 100):
        search(queries[start : start + 100], k=K, num_threads=1)
    caller = time.perf_counter() - wall
    if monitor is not None:
        monitor.flush()
    return caller, time.process_time() - cpu


def overhead(index: matry.Index, queries: np.ndarray, rounds: int, rate: float) -> None:
    n = len(queries)
    for name, runner in (("single", run_single), ("batch100", run_batches)):
        plain_wall, plain_cpu, mon_wall, mon_cpu, sampled = [], [], [], [], []
        for round_number in range(rounds):
            monitor = tune.RecallMonitor(
                index, k=K, sample_rate=rate, window=100_000, seed=round_number
            )
            order = ("plain", "monitor") if round_number % 2 == 0 else ("monitor", "plain")
            for which in order:
                if which == "plain":
                    wall, cpu = runner(index, queries, None)
                    plain_wall.append(wall)
                    plain_cpu.append(cpu)
                else:
                    wall, cpu = runner(index, queries, monitor)
                    mon_wall.append(wall)
                    mon_cpu.append(cpu)
            status = monitor.status()
            sampled.append(status.total_samples + status.dropped)
            monitor.close()
        pw, pc = statistics.median(plain_wall), statistics.median(plain_cpu)
        mw, mc = statistics.median(mon_wall), statistics.median(mon_cpu)
        print(
            f"{name:9s} plain {n / pw:9.0f} q/s  monitored {n / mw:9.0f} q/s  "
            f"caller x{mw / pw:.3f}   cpu/query plain {pc / n * 1e6:6.1f} us  "
            f"monitored {mc / n * 1e6:6.1f} us  cpu x{mc / pc:.3f}   "
            f"sampled {statistics.median(sampled):.0f}/{n} per round"
        )


def exact_cost(index: matry.Index, queries: np.ndarray) -> None:
    rows = queries[:200]
    cpu = time.process_time()
    for row in rows:
        index.exact_search(row, k=K, num_threads=1)
    one = (time.process_time() - cpu) / len(rows)
    cpu = time.process_time()
    index.search(rows, k=K, num_threads=1)
    approx = (time.process_time() - cpu) / len(rows)
    print(
        f"one exact search (what a sample costs the background thread): {one * 1e3:.2f} ms CPU; "
        f"one HNSW search at ef={index.ef}: {approx * 1e6:.0f} us "
        f"(ratio {one / approx:.0f}: expected cpu factor at rate r is about 1 + r x ratio)"
    )


def detection(index: matry.Index, queries: np.ndarray) -> None:
    for window in (200, 1000):
        good = queries[:window]
        bad = queries[window : window + window]
        fired: dict[str, int] = {}
        monitors = {}
        for level in ("at_risk", "violated"):
            monitors[level] = tune.RecallMonitor(
                index, target=0.9, k=K, sample_rate=1.0, window=window, alert_on=level
            )
            monitors[level].search(good, ef=256)
            monitors[level].flush()
        before = monitors["at_risk"].status().recall
        for count, row in enumerate(bad, start=1):
            for level, monitor in monitors.items():
                if level in fired:
                    continue
                monitor.search(row, ef=10)
                monitor.flush()
                if monitor.status().alerting:
                    fired[level] = count
            if len(fired) == 2:
                break
        for monitor in monitors.values():
            monitor.close()
        after = tune.recall(index, bad, k=K, ef=10, latency_queries=0).recall
        print(
            f"window {window:5d}: recall {before:.3f} (ef=256) -> {after:.3f} (ef=10), target 0.9: "
            f"at_risk after {fired.get('at_risk', 'no alert')} samples, "
            f"violated after {fired.get('violated', 'no alert')} samples "
            f"(rule of thumb window*(before-target)/(before-after) = "
            f"{window * (before - 0.9) / (before - after):.0f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rates", default="0.01,0.001", help="comma-separated sample rates")
    args = parser.parse_args()
    base, queries, source = load_vectors(args.base, args.queries + 2000)
    index = matry.Index(base.shape[1], metric="cosine", M=16, ef_construction=100, seed=0)
    started = time.perf_counter()
    index.add(base)
    print(
        f"data: {source}, dim {base.shape[1]}; build {time.perf_counter() - started:.1f} s; "
        f"simd {matry.simd_level()}; ef {index.ef}; {args.queries} queries x {args.rounds} rounds"
    )
    exact_cost(index, queries)
    for rate in (float(r) for r in args.rates.split(",")):
        print(f"sample_rate {rate}:")
        overhead(index, queries[: args.queries], args.rounds, rate)
    detection(index, queries[args.queries :])


if __name__ == "__main__":
    main()
