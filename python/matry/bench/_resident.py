"""Resident memory of a saved index: RSS growth in a fresh process after load and warm queries.

``python -m matry.bench resident SPEC.json`` imports the library (through its adapter) and loads the
query rows it will use, then reads its resident set (``VmRSS``, with its anonymous and
file-backed parts ``RssAnon`` / ``RssFile`` from /proc/self/status). That is the baseline: a
bare interpreter that has imported the library. It then loads the saved index (``load`` or,
where the library supports it, ``mmap``), runs one warm batched search over the query rows
on one thread, and reads the resident set again. The growth is what serving that index costs
in memory; with ``mmap`` it counts the file pages the queries touched (``RssFile``), which the
kernel may share or drop, and only the rest as private (``RssAnon``).

The benchmark worker (``_runner``) calls :func:`measure` right after saving the index it built.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._adapters import make_adapter

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")
TIMEOUT_SECONDS = 1800.0


@dataclass
class ResidentSpec:
    """What one resident-memory subprocess loads and queries (written to a JSON file)."""

    library: str
    options: dict[str, Any]
    metric: str
    dim: int
    count: int
    index_path: str
    mode: str
    queries_path: str
    query_count: int
    search_value: int
    k: int
    result_path: str


def memory_status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process in bytes (fields missing off Linux)."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in STATUS_FIELDS:
                    found[name] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return found


def run_spec(spec_path: Path) -> int:
    """Entry point of ``python -m matry.bench resident SPEC.json`` (the measuring process)."""
    spec = ResidentSpec(**json.loads(Path(spec_path).read_text()))
    # A writable copy: some bindings (voyager, pyvsag) refuse read-only arrays.
    queries = np.array(np.load(spec.queries_path, mmap_mode="r")[: spec.query_count], np.float32)
    adapter = make_adapter(spec.library, spec.dim, spec.metric, **spec.options)
    adapter.import_library()
    gc.collect()
    before = memory_status()
    started = time.perf_counter()
    adapter.load(Path(spec.index_path), spec.count, spec.mode)
    load_seconds = time.perf_counter() - started
    adapter.set_query_threads(1)
    adapter.set_search_param(spec.search_value)
    adapter.search_batch(queries, spec.k)
    gc.collect()
    after = memory_status()
    result: dict[str, Any] = {"mode": spec.mode, "load_seconds": load_seconds}
    for name in STATUS_FIELDS:
        if name in before and name in after:
            result[f"{name}_growth_bytes"] = after[name] - before[name]
    Path(spec.result_path).write_text(json.dumps(result))
    return 0


def measure(spec: ResidentSpec, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one resident-memory subprocess; its result, or {"error": ...} if it failed."""
    spec_path = Path(spec.result_path).with_suffix(".spec.json")
    spec_path.write_text(json.dumps(asdict(spec)))
    result_path = Path(spec.result_path)
    result_path.unlink(missing_ok=True)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "matry.bench", "resident", str(spec_path)],
            env=environment if environment is not None else dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_SECONDS:.0f} s"}
    if completed.returncode != 0 or not result_path.exists():
        tail = completed.stdout.strip().splitlines()[-3:]
        return {"error": f"exit code {completed.returncode}: {' | '.join(tail)}"}
    return dict(json.loads(result_path.read_text()))
