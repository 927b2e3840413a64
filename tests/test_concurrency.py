"""Searches from several Python threads, add racing with searches, Ctrl-C during a long add."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matry
import numpy as np
import pytest
from conftest import (
    clustered_vectors,
    exact_distances,
    exact_top_k,
    normalize_rows,
    recall_at_k,
)

DIM = 32


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(31)
    vectors, centers = clustered_vectors(rng, 8000, DIM, 80, spread=0.5)
    queries, _ = clustered_vectors(rng, 200, DIM, 80, spread=0.5, centers=centers)
    return vectors, queries


def test_threads_searching_one_index_match_sequential_search(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    ix = matry.Index(dim=DIM, metric="cosine", seed=0)
    ix.add(vectors[:5000], num_threads=2)
    expected = [ix.search(q, k=10, ef=80, num_threads=1) for q in queries]
    n_threads = 6
    barrier = threading.Barrier(n_threads)

    def search_all(worker: int) -> list[tuple[np.ndarray, np.ndarray]]:
        barrier.wait()
        order = np.random.default_rng(worker).permutation(len(queries))
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(queries)
        for _ in range(3):
            for i in order:
                results[i] = ix.search(queries[i], k=10, ef=80, num_threads=1)
        return results  # type: ignore[return-value]

    with ThreadPoolExecutor(n_threads) as pool:
        per_thread = list(pool.map(search_all, range(n_threads)))
    for results in per_thread:
        for (got_ids, got_distances), (want_ids, want_distances) in zip(results, expected):
            np.testing.assert_array_equal(got_ids, want_ids)
            np.testing.assert_array_equal(got_distances, want_distances)


def test_multithreaded_batch_search_matches_single_thread(
    clustered: tuple[np.ndarray, np.ndarray],
) -> None:
    vectors, queries = clustered
    ix = matry.Index(dim=DIM, metric="l2", seed=0)
    ix.add(vectors[:4000], num_threads=2)
    single = ix.search(queries, k=10, ef=64, num_threads=1)
    for n_threads in (0, 2, 4):
        multi = ix.search(queries, k=10, ef=64, num_threads=n_threads)
        np.testing.assert_array_equal(multi[0], single[0])
        np.testing.assert_array_equal(multi[1], single[1])
    exact_single = ix.exact_search(queries, k=10, num_threads=1)
    exact_multi = ix.exact_search(queries, k=10, num_threads=3)
    np.testing.assert_array_equal(exact_multi[0], exact_single[0])
    np.testing.assert_array_equal(exact_multi[1], exact_single[1])


def count_unreachable(ix: matry.Index, dim: int) -> int:
    """Live nodes that an exhaustive search (ef = k = len) cannot reach from the entry point."""
    n = len(ix)
    found, _ = ix.search(np.zeros((1, dim), dtype=np.float32), k=n, ef=n, num_threads=1)
    return n - int((found[0] >= 0).sum())


@pytest.mark.parametrize("add_threads", [1, 4])
def test_multithreaded_build_leaves_every_node_reachable(add_threads: int) -> None:
    """A parallel build must link every node in, like a single-threaded one (and hnswlib's).

    With ef = k = the number of nodes, HNSW's beam search visits every node reachable from the
    entry point, so any missing id is a node that no link leads to.
    """
    dim = 6
    unreachable = {}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ix = matry.Index(dim=dim, metric="l2", seed=0)
        ix.add(rng.standard_normal((2000, dim)).astype(np.float32), num_threads=add_threads)
        unreachable[seed] = count_unreachable(ix, dim)
    assert sum(unreachable.values()) == 0, f"unreachable nodes per build seed: {unreachable}"


@pytest.mark.parametrize("add_threads", [1, 2])
def test_add_racing_with_searches(
    clustered: tuple[np.ndarray, np.ndarray], add_threads: int
) -> None:
    vectors, queries = clustered
    base_count = 3000
    ix = matry.Index(dim=DIM, metric="cosine", seed=0)
    ix.add(vectors[:base_count], num_threads=2)
    stored = normalize_rows(vectors)
    adding_done = threading.Event()
    start = threading.Barrier(4)
    records: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in range(3)]

    def add_rest() -> None:
        start.wait()
        try:
            for begin in range(base_count, len(vectors), 250):
                batch = vectors[begin : begin + 250]
                ix.add(batch, ids=np.arange(begin, begin + len(batch)), num_threads=add_threads)
        finally:
            adding_done.set()

    def search_loop(reader: int) -> None:
        start.wait()
        rng = np.random.default_rng(reader)
        while True:
            finished = adding_done.is_set()
            chosen = rng.choice(len(queries), size=8, replace=False)
            found, distances = ix.search(queries[chosen], k=10, ef=64, num_threads=1)
            records[reader].extend(zip(chosen.tolist(), found, distances))
            if finished:
                break

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(add_rest)] + [pool.submit(search_loop, r) for r in range(3)]
        for future in futures:
            future.result(timeout=600)

    assert len(ix) == len(vectors)
    np.testing.assert_array_equal(ix.ids(), np.arange(len(vectors)))
    seen = [record for reader_records in records for record in reader_records]
    assert len(seen) >= 3 * 8
    for query_index, found, distances in seen:
        assert np.all((found >= 0) & (found < len(vectors))), found
        assert len(set(found.tolist())) == 10, found
        assert np.all(np.diff(distances) >= 0), distances
        expected = exact_distances("cosine", queries[query_index], stored[found])[0]
        np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-5)
    true_ids, _ = exact_top_k("cosine", queries, vectors, np.arange(len(vectors)), 10)
    found, _ = ix.search(queries, k=10, ef=100, num_threads=2)
    assert recall_at_k(found, true_ids) >= 0.95
    np.testing.assert_allclose(ix.get(np.arange(len(vectors))), stored, atol=1e-6)


SIGINT_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import signal
    import threading

    import numpy as np
    import matry

    # Python ignores SIGINT in a child started from a background job (inherited SIG_IGN):
    # restore Ctrl-C's KeyboardInterrupt, as a terminal's foreground process has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    NUM_THREADS = {num_threads}
    rng = np.random.default_rng(0)
    dim = 16
    base = rng.standard_normal((1000, dim)).astype(np.float32)
    big = rng.standard_normal((150_000, dim)).astype(np.float32)
    everything = np.concatenate([base, big])
    ix = matry.Index(dim=dim, metric="l2", seed=0)
    ix.add(base, num_threads=NUM_THREADS)

    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    interrupted = False
    try:
        ix.add(big, num_threads=NUM_THREADS)
    except KeyboardInterrupt:
        interrupted = True
    timer.cancel()

    live = ix.ids()
    queries = rng.standard_normal((50, dim)).astype(np.float32)
    found, dist = ix.search(queries, k=10, ef=200)
    live_set = set(live.tolist())
    stored_ok = bool(np.array_equal(ix.get(live), everything[live]))
    x = everything[live].astype(np.float64)
    q = queries.astype(np.float64)
    full = (q * q).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * q @ x.T
    truth = live[np.argsort(full, axis=1)[:, :10]]
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
    returned = ((queries[:, None, :].astype(np.float64) - everything[found]) ** 2).sum(-1)
    after = ix.add(rng.standard_normal((5, dim)).astype(np.float32))
    print(json.dumps({{
        "interrupted": interrupted,
        "len": len(ix) - 5,
        "n_ids": int(live.size),
        "ids_in_range": bool(live.size == 0 or (live.min() >= 0 and live.max() < 151_000)),
        "search_ids_live": all(i in live_set for i in found.ravel().tolist()),
        "stored_ok": stored_ok,
        "recall": hits / truth.size,
        "max_distance_error": float(np.abs(returned - dist).max()),
        "ids_after": after.tolist(),
        "max_live": int(live.max()),
    }}))
    """
)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_ctrl_c_stops_a_long_add_cleanly(num_threads: int, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT.format(num_threads=num_threads)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["interrupted"], report
    assert report["len"] < 151_000, f"the add ran to completion instead of stopping: {report}"
    assert report["len"] >= 1000, report
    assert report["len"] == report["n_ids"], report
    assert report["ids_in_range"], report
    assert report["search_ids_live"], report
    assert report["stored_ok"], report
    assert report["recall"] >= 0.9, report
    assert report["max_distance_error"] <= 1e-3, report
    assert report["ids_after"][0] > report["max_live"], report
