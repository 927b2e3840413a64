"""Writes the golden files of the current matry file format (run once per format version).

    python tests/data/make_golden.py

builds a small deterministic index (seed 0, 50 vectors of dimension 8 from a fixed RNG,
metric "cosine", user metadata {"golden": 1}, ids 3 and 17 removed, ef 80), saves it as
golden_v1.matry and stores the inputs and the query results in golden_v1_expected.npz.
tests/test_io.py loads the golden file with the current code and checks the results match:
every later version of matry must keep reading this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matry
import numpy as np

FORMAT_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent
GOLDEN_INDEX = DATA_DIR / f"golden_v{FORMAT_VERSION}.matry"
GOLDEN_EXPECTED = DATA_DIR / f"golden_v{FORMAT_VERSION}_expected.npz"
REMOVED_IDS = (3, 17)
GOLDEN_EF = 80
K = 5


def build_golden_index() -> tuple[matry.Index, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((10, 8)).astype(np.float32)
    ix = matry.Index(dim=8, metric="cosine", M=16, ef_construction=200, seed=0)
    ix.add(vectors, num_threads=1)
    ix.remove(list(REMOVED_IDS))
    ix.metadata = {"golden": 1}
    ix.ef = GOLDEN_EF
    found, distances = ix.search(queries, k=K)
    live_ids = ix.ids()
    expected = {
        "vectors": vectors,
        "queries": queries,
        "live_ids": live_ids,
        "stored_vectors": ix.get(live_ids),
        "found_ids": found,
        "found_distances": distances,
    }
    return ix, expected


def main() -> int:
    ix, expected = build_golden_index()
    ix.save(str(GOLDEN_INDEX))
    written_version = matry.read_metadata(str(GOLDEN_INDEX))["format_version"]
    if written_version != FORMAT_VERSION:
        GOLDEN_INDEX.unlink()
        print(
            f"matry writes format version {written_version}, not {FORMAT_VERSION}: "
            "update FORMAT_VERSION (and keep the old golden files)",
            file=sys.stderr,
        )
        return 1
    np.savez(GOLDEN_EXPECTED, **expected)
    print(
        f"wrote {GOLDEN_INDEX.name} ({GOLDEN_INDEX.stat().st_size} bytes), {GOLDEN_EXPECTED.name}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
