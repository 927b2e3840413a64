"""Parallel builds: graph quality equal to a single-threaded build, and threads that fail safely.

The self-recall check is the one hnswlib's own suite asserts (bindings_test_resize.py): every
stored row, queried with k=1 at a small ef, must find itself. A parallel insert that let a
node route through a neighbour whose rows were still empty linked it to that neighbour alone;
once the heuristic pruned the single back link the node was unreachable, and searches missed
it even at ef=1000 (4 of 80,000 rows with 2 threads, 9 with 4). Reachability tests did not see
it because they ran with ef = the node count, which reaches nodes an ordinary search cannot.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import matry
import numpy as np
import pytest
from conftest import clustered_vectors, exact_top_k, recall_at_k

# hnswlib's test data: 10,000 x 16 uniform float32, l2, M=16, ef_construction=100.
SELF_RECALL_ROWS = 10_000
SELF_RECALL_DIM = 16


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_row_finds_itself_after_a_parallel_build(threads: int) -> None:
    misses = {}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        data = rng.random((SELF_RECALL_ROWS, SELF_RECALL_DIM), dtype=np.float32)
        ix = matry.Index(SELF_RECALL_DIM, "l2", M=16, ef_construction=100, seed=seed)
        ix.add(data, num_threads=threads)
        found, _ = ix.search(data, k=1, ef=20)
        misses[seed] = int((found[:, 0] != np.arange(SELF_RECALL_ROWS)).sum())
    assert sum(misses.values()) == 0, f"rows that did not find themselves, per seed: {misses}"


def test_parallel_build_recall_matches_single_threaded() -> None:
    rng = np.random.default_rng(5)
    dim = 32
    vectors, centers = clustered_vectors(rng, 20_000, dim, 100, spread=0.6)
    queries, _ = clustered_vectors(rng, 500, dim, 100, spread=0.6, centers=centers)
    truth, _ = exact_top_k("cosine", queries, vectors, np.arange(len(vectors)), 10)
    recalls = {}
    for threads in (1, 4):
        ix = matry.Index(dim, "cosine", M=16, ef_construction=100, seed=1)
        ix.add(vectors, num_threads=threads)
        found, _ = ix.search(queries, k=10, ef=40)
        recalls[threads] = recall_at_k(found, truth)
    assert recalls[4] >= recalls[1] - 0.002, recalls


def _thread_count() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_num_threads_is_capped_and_threads_are_reused() -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3000, 8)).astype(np.float32)
    ix = matry.Index(8, "l2")
    # Native threads other libraries already run (Ray's and Dask's outlive their shutdown).
    before = max(_thread_count(), threading_baseline())
    ix.add(data, num_threads=10**6)
    ix.search(data, k=5, num_threads=10**6)
    after_first = _thread_count()
    for _ in range(5):
        ix.search(data, k=5, num_threads=10**6)
        ix.exact_search(data[:50], k=5, num_threads=10**6)
    # The pool started at most max_threads() - 1 workers once, and reused them since.
    assert _thread_count() == after_first
    assert after_first <= before + matry._core.max_threads()
    found, _ = ix.search(data, k=1)
    assert (found[:, 0] == np.arange(3000)).mean() > 0.99


def threading_baseline() -> int:
    import threading

    return threading.active_count() + 8  # interpreter and library helper threads (BLAS, ...)


THREAD_LIMIT_SCRIPT = textwrap.dedent(
    """
    import resource
    import numpy as np
    import matry
    from matry.compat import hnswlib

    rng = np.random.default_rng(0)
    data = rng.standard_normal((3000, 16)).astype(np.float32)
    ix = matry.Index(16, "l2")
    ix.add(data[:1500], num_threads=1)
    shim = hnswlib.Index("l2", 16)
    shim.init_index(3000)
    shim.add_items(data, num_threads=1)
    # Address space for the data already mapped and a little more, not for 8 MB thread stacks:
    # creating pool threads now fails, and every call must still complete on fewer threads.
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (6 << 20), resource.RLIM_INFINITY))
    ids, _ = ix.search(data[:1500], k=1, num_threads=10**6)
    added = ix.add(data[1500:], num_threads=10**6)
    labels, _ = shim.knn_query(data, k=1, num_threads=10**6)
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    ok_search = float((ids[:, 0] == np.arange(1500)).mean())
    ok_shim = float((labels[:, 0] == np.arange(3000)).mean())
    print(ok_search, len(ix), ok_shim)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics")
def test_thread_creation_failure_falls_back_instead_of_aborting() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", THREAD_LIMIT_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    ok_search, count, ok_shim = completed.stdout.split()
    assert float(ok_search) > 0.99
    assert int(count) == 3000
    assert float(ok_shim) > 0.99


def test_ef_beyond_the_index_is_capped_at_its_size() -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_normal((4000, 12)).astype(np.float32)
    ix = matry.Index(12, "l2", M=8, ef_construction=40)
    ix.add(data)
    at_size = ix.search(data[:20], k=10, ef=len(ix))
    huge = ix.search(data[:20], k=10, ef=10**9)  # no 10**9-entry beam, same search as ef=len
    np.testing.assert_array_equal(huge[0], at_size[0])
    np.testing.assert_array_equal(huge[1], at_size[1])
