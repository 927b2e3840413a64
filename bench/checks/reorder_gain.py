"""Queries per CPU second of an int8 index before and after Index.reorder() (bench data cache)."""

from __future__ import annotations

import time
from pathlib import Path

import matry
import numpy as np

CACHE = Path.home() / ".cache" / "matry-bench"


def queries_per_cpu_second(index: matry.Index, queries: np.ndarray, ef: int) -> float:
    best = 0.0
    for _ in range(5):
        start = time.process_time()
        index.search(queries, k=10, ef=ef, num_threads=1)
        best = max(best, len(queries) / (time.process_time() - start))
    return best


for name, rows, dim, ef in (
    ("minilm-glove-vocab", 100_000, 384, 64),
    ("glove-50", 390_000, 50, 96),
):
    base = np.ascontiguousarray(np.load(CACHE / name / "base.npy", mmap_mode="r")[:rows])
    queries = np.ascontiguousarray(np.load(CACHE / name / "queries.npy")[:2000])
    index = matry.Index(dim, "ip", M=16, ef_construction=100, quantization="int8")
    index.add(base, num_threads=2)
    before = queries_per_cpu_second(index, queries, ef)
    index.reorder()
    after = queries_per_cpu_second(index, queries, ef)
    print(
        f"{name} ef={ef}: before {before:,.0f} q/s, after reorder {after:,.0f} q/s "
        f"({after / before:.2f}x)",
        flush=True,
    )
