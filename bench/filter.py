"""Filtered search on glove-50: matry's in-C++ filter vs hnswlib's callback vs faiss IDSelector.

For each selectivity (50%, 10%, 1%, 0.1% of the ids allowed) and each kind of filter (random
ids, or one k-means cluster: allowed ids that sit together, usually away from the query), every
library sweeps ef; recall@10 is against the exact filtered top 10. Libraries are interleaved
per (filter, ef) point, queries run on one thread, QPS is by CPU time (the machine is shared).
Also measured: matry with its path forced (graph traversal / exact scan of the allowed ids),
which is what the cost model (Index.prefers_brute_force) chooses between.

    python bench/filter.py [--base N] [--queries N] [--out bench/results/filter]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import matry
import numpy as np

CACHE = Path.home() / ".cache" / "matry-bench" / "glove-50"
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
EF_VALUES = (16, 32, 64, 128, 256, 512)
K = 10


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth))
    total = sum(int((t >= 0).sum()) for t in truth)
    return hits / max(total, 1)


def timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    started = time.process_time()
    found = run()
    return found, time.process_time() - started


def kmeans_cluster(base: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Ids of the k-means cluster whose size is closest to fraction * n."""
    import faiss

    clusters = max(2, int(round(1 / fraction)))
    sample = base[
        np.random.default_rng(seed).choice(
            len(base), min(len(base), 50 * clusters + 20_000), replace=False
        )
    ]
    kmeans = faiss.Kmeans(
        base.shape[1], clusters, niter=12, seed=seed, spherical=True, verbose=False
    )
    kmeans.train(np.ascontiguousarray(sample))
    _, assignment = kmeans.index.search(np.ascontiguousarray(base), 1)
    sizes = np.bincount(assignment[:, 0], minlength=clusters)
    chosen = int(np.argmin(np.abs(sizes - fraction * len(base))))
    return np.flatnonzero(assignment[:, 0] == chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=0, help="first N base vectors (0: all)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--hnswlib-queries",
        type=int,
        default=200,
        help="hnswlib calls Python per candidate: fewer queries keep it short",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/filter"))
    args = parser.parse_args()

    import faiss
    import hnswlib

    faiss.omp_set_num_threads(1)
    base = np.load(CACHE / "base.npy")
    if args.base:
        base = base[: args.base]
    queries = np.ascontiguousarray(np.load(CACHE / "queries.npy")[: args.queries])
    n, dim = base.shape
    print(f"glove-50: {n} x {dim}, {len(queries)} queries, k={K}", flush=True)

    started = time.time()
    index = matry.Index(dim, "ip", M=16, ef_construction=200)
    index.add(base, num_threads=2)
    matry_build = time.time() - started
    started = time.time()
    peer = hnswlib.Index(space="ip", dim=dim)
    peer.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
    peer.add_items(base, np.arange(n), num_threads=2)
    hnswlib_build = time.time() - started
    started = time.time()
    flat = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    flat.hnsw.efConstruction = 200
    faiss.omp_set_num_threads(2)
    flat.add(base)
    faiss.omp_set_num_threads(1)
    faiss_build = time.time() - started
    builds = f"matry {matry_build:.0f} s, hnswlib {hnswlib_build:.0f} s, faiss {faiss_build:.0f} s"
    print("builds:", builds, flush=True)

    rows: list[dict[str, Any]] = []
    for kind in ("random", "cluster"):
        for fraction in SELECTIVITIES:
            if kind == "random":
                allowed = np.flatnonzero(
                    np.random.default_rng(int(fraction * 1e4)).random(n) < fraction
                )
            else:
                allowed = kmeans_cluster(base, fraction, seed=int(fraction * 1e4))
            mask = np.zeros(n, dtype=bool)
            mask[allowed] = True
            idset = matry.IdSet(allowed)
            truth, _ = index.exact_search(queries, k=K, filter=idset, num_threads=2)
            allowed_set = set(allowed.tolist())
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
            # hnswlib calls Python for every candidate: fewer queries where that is most of them.
            hq = queries[: args.hnswlib_queries if fraction >= 0.01 else args.hnswlib_queries // 2]
            label = f"{kind} {fraction:.1%} ({len(allowed)} ids)"
            for ef in EF_VALUES:
                point: dict[str, Any] = {
                    "filter": kind,
                    "fraction": fraction,
                    "allowed": len(allowed),
                    "ef": ef,
                }
                runs: dict[str, tuple[Callable[[], np.ndarray], int]] = {
                    "matry": (
                        partial(matry_search, index, queries, ef, idset, "auto"),
                        len(queries),
                    ),
                    "matry-graph": (
                        partial(matry_search, index, queries, ef, idset, "graph"),
                        len(queries),
                    ),
                    "faiss": (partial(faiss_search, flat, queries, ef, selector), len(queries)),
                    "hnswlib": (partial(hnswlib_search, peer, hq, ef, allowed_set), len(hq)),
                }
                for name, (run, count) in runs.items():
                    found, seconds = timed(run)
                    point[name] = {
                        "recall": recall(found, truth[:count]),
                        "qps": count / max(seconds, 1e-9),
                    }
                _, _, stats = index.search(queries, k=K, ef=ef, filter=idset, stats=True)
                point["matry_brute_force_share"] = float(stats.brute_force.mean())
                point["matry_distances"] = float(stats.distances.mean())
                rows.append(point)
                shown = {name: point[name] for name in runs}
                print(
                    label,
                    f"ef={ef}",
                    shown,
                    f"scan share {point['matry_brute_force_share']:.2f}",
                    flush=True,
                )
            found, seconds = timed(partial(matry_search, index, queries, 64, idset, "brute_force"))
            rows.append(
                {
                    "filter": kind,
                    "fraction": fraction,
                    "allowed": len(allowed),
                    "ef": None,
                    "matry-scan": {
                        "recall": recall(found, truth),
                        "qps": len(queries) / max(seconds, 1e-9),
                    },
                }
            )
            print(label, "forced scan", rows[-1]["matry-scan"], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "n": n,
        "dim": dim,
        "queries": len(queries),
        "hnswlib_queries": args.hnswlib_queries,
        "builds_s": {"matry": matry_build, "hnswlib": hnswlib_build, "faiss": faiss_build},
        "timer": "process CPU time, 1 query thread",
        "M": 16,
        "ef_construction": 200,
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(table(rows, meta))
    print(table(rows, meta))


def matry_search(
    index: matry.Index, queries: np.ndarray, ef: int, idset: matry.IdSet, path: str
) -> np.ndarray:
    return index.search(queries, k=K, ef=ef, filter=idset, filter_path=path, num_threads=1)[0]  # type: ignore[arg-type]


def faiss_search(flat: Any, queries: np.ndarray, ef: int, selector: Any) -> np.ndarray:
    import faiss

    params = faiss.SearchParametersHNSW()
    params.efSearch = ef
    params.sel = selector
    _, ids = flat.search(queries, K, params=params)
    return ids


def hnswlib_search(peer: Any, queries: np.ndarray, ef: int, allowed: set[int]) -> np.ndarray:
    peer.set_ef(ef)
    out = np.full((len(queries), K), -1, dtype=np.int64)
    for i, query in enumerate(queries):
        try:
            labels, _ = peer.knn_query(
                query, k=K, num_threads=1, filter=lambda label: label in allowed
            )
            out[i] = labels[0].astype(np.int64)
        except RuntimeError:  # fewer than k found: hnswlib refuses the whole query
            pass
    return out


def at_recall(points: list[tuple[float, float]], target: float) -> float | None:
    """QPS at `target` recall, interpolated between the sweep's points (None: not reached)."""
    points = sorted(points, key=lambda p: p[0])
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= target <= r1 and r1 > r0:
            return q0 + (q1 - q0) * (target - r0) / (r1 - r0)
    if points and points[0][0] >= target:
        return max(q for r, q in points if r >= target)
    return None


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def cell(result: dict[str, float]) -> str:
    return f"{result['recall']:.4f} / {result['qps']:,.0f}"


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    def name(row: dict[str, Any]) -> str:
        return f"{row['filter']} {row['fraction']:.1%}"

    out = [
        f"# Filtered search, glove-50 ({meta['n']:,} x {meta['dim']})",
        "",
        f"recall@10 against the exact filtered top 10; {meta['queries']} queries "
        f"({meta['hnswlib_queries']} for hnswlib's Python callback, half that below 1%), one "
        f"thread, QPS by {meta['timer']}; M=16, ef_construction=200. matry: the cost model "
        "picks the path; matry-graph: traversal forced; matry-scan: exact scan forced. Cells "
        "are recall / QPS.",
        "",
        "## At ef=64 (matry's default)",
        "",
        md_row(
            ["filter", "allowed", "matry", "scan share", "matry-graph", "matry-scan"]
            + ["faiss", "hnswlib"]
        ),
        md_row(["---"] * 8),
    ]
    scans = {(r["filter"], r["fraction"]): r["matry-scan"] for r in rows if r["ef"] is None}
    for r in rows:
        if r["ef"] != 64:
            continue
        scan = scans[(r["filter"], r["fraction"])]
        out.append(
            md_row(
                [
                    name(r),
                    f"{r['allowed']:,}",
                    cell(r["matry"]),
                    f"{r['matry_brute_force_share']:.2f}",
                    cell(r["matry-graph"]),
                    cell(scan),
                    cell(r["faiss"]),
                    cell(r["hnswlib"]),
                ]
            )
        )
    out += [
        "",
        "## QPS at equal recall (interpolated over the ef sweep; — not reached)",
        "",
        md_row(["filter", "recall", "matry", "faiss", "hnswlib", "matry/hnswlib", "matry/faiss"]),
        md_row(["---"] * 7),
    ]

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "—" if a is None or b is None else f"{a / b:.1f}x"

    keys = sorted({(r["filter"], r["fraction"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    for key in keys:
        sweep = [r for r in rows if (r["filter"], r["fraction"]) == key and r["ef"] is not None]
        for target in (0.95, 0.99):
            q = {
                lib: at_recall([(r[lib]["recall"], r[lib]["qps"]) for r in sweep], target)
                for lib in ("matry", "faiss", "hnswlib")
            }
            out.append(
                md_row(
                    [
                        f"{key[0]} {key[1]:.1%}",
                        str(target),
                        fmt(q["matry"]),
                        fmt(q["faiss"]),
                        fmt(q["hnswlib"]),
                        ratio(q["matry"], q["hnswlib"]),
                        ratio(q["matry"], q["faiss"]),
                    ]
                )
            )
    out += [
        "",
        "## Full sweep (recall / QPS)",
        "",
        md_row(["filter", "ef", "matry", "matry-graph", "faiss", "hnswlib", "scan share"]),
        md_row(["---"] * 7),
    ]
    for r in rows:
        if r["ef"] is None:
            continue
        out.append(
            md_row(
                [
                    name(r),
                    str(r["ef"]),
                    cell(r["matry"]),
                    cell(r["matry-graph"]),
                    cell(r["faiss"]),
                    cell(r["hnswlib"]),
                    f"{r['matry_brute_force_share']:.2f}",
                ]
            )
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
