"""Every public call makes progress while an add runs, and a concurrent first add under
rotation="pca" stores every batch under the one rotation that was fitted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import matry
import numpy as np

CALLS_DURING_ADD = textwrap.dedent(
    """
    import io, pickle, sys, threading, time
    import numpy as np
    import matry

    rng = np.random.default_rng(0)
    dim = 32
    data = rng.standard_normal((120_000, dim)).astype(np.float32)
    ix = matry.Index(dim, "cosine", M=8, ef_construction=40, rotation="pca")
    ix.add(data[:2000])
    started = threading.Event()

    def long_add():
        started.set()
        ix.add(data[2000:], num_threads=1)

    writer = threading.Thread(target=long_add)
    writer.start()
    started.wait()
    time.sleep(0.2)
    calls = {
        "len": lambda: len(ix),
        "contains": lambda: 5 in ix,
        "get": lambda: ix.get([1, 2]),
        "ids": lambda: ix.ids(),
        "search": lambda: ix.search(data[:3], k=5),
        "exact_search": lambda: ix.exact_search(data[:2], k=5),
        "ef": lambda: setattr(ix, "ef", 50),
        "set_rotation": lambda: ix._core.set_rotation(ix.rotation),
        "capacity": lambda: ix.capacity,
        "memory_bytes": lambda: ix.memory_bytes,
        "rotation": lambda: ix.rotation,
        "remove": lambda: ix.remove([7]),
        "to_bytes": lambda: pickle.dumps(ix),
        "save": lambda: ix.save(sys.argv[1]),
        "repr": lambda: repr(ix),
    }
    # Calls that take the writer lock (set_rotation, remove, save, pickling) wait for the add
    # to finish; the ones before them must not. None may hold the GIL while it waits.
    for name, call in calls.items():
        call()
        print(name, "ok", writer.is_alive(), flush=True)
    writer.join()
    print("done", len(ix))
    """
)


def test_each_public_call_completes_while_an_add_runs(tmp_path: object) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", CALLS_DURING_ADD, str(tmp_path) + "/during.matry"],
        capture_output=True,
        text=True,
        timeout=300,  # a deadlock (GIL held while waiting for the writer lock) hangs here
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "done 119999", lines
    names = [line.split()[0] for line in lines[:-1]]
    assert len(names) == 15, lines
    # The add was still running for the first calls: they interleaved with it, not after it.
    assert lines[0].split()[2] == "True", lines


def test_concurrent_first_adds_share_one_pca_rotation() -> None:
    dim = 24
    for trial in range(10):
        rng = np.random.default_rng(trial)
        scales = np.linspace(5.0, 0.1, dim)
        # Two batches with different principal directions, so the two rotations they would
        # fit differ: a batch stored under the other one reads back wrong.
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        batches = [
            (rng.standard_normal((8000, dim)) * scales).astype(np.float32),
            ((rng.standard_normal((8000, dim)) * scales) @ basis.T).astype(np.float32),
        ]
        ix = matry.Index(dim, "l2", M=8, ef_construction=60, rotation="pca")
        barrier = threading.Barrier(2)
        assigned: list[np.ndarray] = [np.empty(0)] * 2

        def add(
            which: int,
            ix: matry.Index,
            barrier: threading.Barrier,
            batches: list[np.ndarray],
            assigned: list[np.ndarray],
        ) -> None:
            barrier.wait()
            assigned[which] = ix.add(batches[which], num_threads=1)

        writers = [
            threading.Thread(target=add, args=(which, ix, barrier, batches, assigned))
            for which in range(2)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        for which in range(2):
            stored = ix.get(assigned[which])
            np.testing.assert_allclose(stored, batches[which], atol=1e-3)
            found, _ = ix.exact_search(batches[which][:200], k=1)
            np.testing.assert_array_equal(found[:, 0], assigned[which][:200])
