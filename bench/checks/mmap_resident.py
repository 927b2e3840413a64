"""Resident bytes per vector of a 100k MiniLM int8 index after load and after 1,000 queries.

Usage: python bench/checks/mmap_resident.py build | load | mmap   (needs the bench data cache)
"""

from __future__ import annotations

import sys
from pathlib import Path

import matry
import numpy as np

DATA = Path.home() / ".cache" / "matry-bench" / "minilm-glove-vocab"
INDEX = Path("/tmp/matry-mmap-resident.matry")
FIELDS = ("VmRSS", "RssAnon", "RssFile")


def status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as lines:
        for line in lines:
            key, _, value = line.partition(":")
            if key in FIELDS:
                values[key] = int(value.split()[0]) * 1024
    return values


mode = sys.argv[1]
if mode == "build":
    base = np.ascontiguousarray(np.load(DATA / "base.npy", mmap_mode="r")[:100_000])
    index = matry.Index(384, "ip", M=16, ef_construction=100, quantization="int8")
    index.add(base)
    index.save(INDEX)
    sys.exit()
queries = np.ascontiguousarray(np.load(DATA / "queries.npy")[:1000])
before = status()
index = matry.Index.load(INDEX, mmap=mode == "mmap")
loaded = status()
index.search(queries, k=10, ef=64, num_threads=1)
searched = status()
n = len(index)
print(
    mode,
    {key: (loaded[key] - before[key]) // n for key in FIELDS},
    "after queries",
    {key: (searched[key] - before[key]) // n for key in FIELDS},
)
