"""Rows that do not find themselves (k=1) after builds with 1, 2 and 4 threads.

hnswlib's test data: 10,000 x 16 uniform float32, l2, M=16, ef_construction=100, 8 seeds.
Usage: python bench/checks/self_misses.py [threads ...]
"""

from __future__ import annotations

import sys

import matry
import numpy as np

ROWS, DIM, SEEDS = 10_000, 16, 8


def misses(seed: int, threads: int) -> tuple[int, int]:
    data = np.random.default_rng(seed).random((ROWS, DIM), dtype=np.float32)
    ix = matry.Index(DIM, "l2", M=16, ef_construction=100, seed=seed)
    ix.add(data, num_threads=threads)
    counts = []
    for ef in (20, 1000):
        found, _ = ix.search(data, k=1, ef=ef)
        counts.append(int((found[:, 0] != np.arange(ROWS)).sum()))
    return counts[0], counts[1]


for threads in [int(arg) for arg in sys.argv[1:]] or [1, 2, 4]:
    results = [misses(seed, threads) for seed in range(SEEDS)]
    at_20 = sum(r[0] for r in results)
    at_1000 = sum(r[1] for r in results)
    print(threads, "threads: misses@ef20", at_20, "misses@ef1000", at_1000)
