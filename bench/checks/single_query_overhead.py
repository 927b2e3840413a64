"""Per-query time: one batched call, one Index.search per row, and the bare core call per row.

100,000 x 50 random vectors, 2,000 queries, best of 5; "overhead" = single - batched.
"""

from __future__ import annotations

import time

import matry
import numpy as np

DIM = 50
rng = np.random.default_rng(0)
data = rng.standard_normal((100_000, DIM)).astype(np.float32)
queries = rng.standard_normal((2000, DIM)).astype(np.float32)
for quantization in (None, "int8"):
    index = matry.Index(DIM, "cosine", M=16, ef_construction=100, quantization=quantization)
    index.add(data)
    core = index._core
    rows = queries.reshape(len(queries), 1, DIM)
    for ef in (16, 64):
        batched = single = bare = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            index.search(queries, k=10, ef=ef, num_threads=1)
            batched = min(batched, (time.perf_counter() - start) / len(queries))
            start = time.perf_counter()
            for query in queries:
                index.search(query, k=10, ef=ef)
            single = min(single, (time.perf_counter() - start) / len(queries))
            start = time.perf_counter()
            for row in rows:
                core.search(row, 10, ef, 0, 0, 1)
            bare = min(bare, (time.perf_counter() - start) / len(queries))
        print(
            f"{quantization} {ef} batched {batched * 1e6:.1f}us  single {single * 1e6:.1f}us  "
            f"core-single {bare * 1e6:.1f}us  overhead {(single - batched) * 1e6:.1f}us "
            f"(python {(single - bare) * 1e6:.1f})"
        )
