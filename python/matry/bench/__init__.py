"""``matry bench``: compare matry with other ANN libraries on your own vectors.

From the shell (``pip install "matry[bench]"`` adds the peer libraries; without them only matry
runs and the others are listed with the pip command that adds them)::

    matry bench --data vectors.npy [--queries q.npy] [--metric cosine] [--k 10] \\
        [--libs matry,hnswlib,faiss] [--out DIR]

From Python, the same steps::

    from pathlib import Path
    from matry import bench
    out = Path("results")
    data = bench.prepare_files("vectors.npy", out / "work", out / "ground-truth", k=10)
    bench.run_benchmark(data, bench.RunConfig(libs=["matry", "hnswlib"]), out)

Each library is built and swept in its own subprocess (``python -m matry.bench worker``); the
results go to ``results.jsonl``, ``table.md`` and ``plot.png`` (with matplotlib) in the output
folder. Exact neighbours are computed with matry's SIMD kernels and cached there. The peer
libraries are imported only inside the worker that runs them.
"""

from __future__ import annotations

from ._adapters import (
    ADAPTERS,
    ALIASES,
    DEFAULT_NAMES,
    LIBRARY_NAMES,
    USER_NAMES,
    LibraryAdapter,
    make_adapter,
    resolve_libraries,
)
from ._cli import main
from ._prepare import (
    Inputs,
    PreparedData,
    exact_neighbours,
    load_inputs,
    prepare_files,
    write_prepared,
)
from ._runner import RunConfig, run_benchmark

__all__ = [
    "ADAPTERS",
    "ALIASES",
    "DEFAULT_NAMES",
    "Inputs",
    "LIBRARY_NAMES",
    "USER_NAMES",
    "LibraryAdapter",
    "PreparedData",
    "RunConfig",
    "exact_neighbours",
    "load_inputs",
    "main",
    "make_adapter",
    "prepare_files",
    "resolve_libraries",
    "run_benchmark",
    "write_prepared",
]
