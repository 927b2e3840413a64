"""Deletion that does not rot: glove-50 with 50% and 90% of the ids removed at random.

Recall@10 (against the exact top 10 of the survivors) and QPS at several ef values: with the
tombstones still in the graph, after compact(mode="repair") ("compacted"), after
compact(mode="rebuild") ("rebuilt"), and for a fresh build of the survivors. The
same index is loaded from one saved build for each fraction, so "before" and "after" start
from identical graphs. Queries run on one thread, QPS by CPU time, the three interleaved per
ef (the machine is shared). hnswlib with mark_deleted is measured beside, for reference.

    python bench/compaction.py [--base N] [--queries N] [--out bench/results/compaction]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import matry

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from filter import at_recall  # noqa: E402 - bench/filter.py, beside this script

CACHE = Path.home() / ".cache" / "matry-bench" / "glove-50"
EF_VALUES = (32, 64, 128, 256)
K = 10
REPEATS = 3  # each timing is the best of this many passes


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])
    )


def matry_search(index: matry.Index, queries: np.ndarray, ef: int) -> np.ndarray:
    return index.search(queries, k=K, ef=ef, num_threads=1)[0]


def hnswlib_search(peer: Any, queries: np.ndarray, ef: int) -> np.ndarray:
    peer.set_ef(ef)
    return peer.knn_query(queries, k=K, num_threads=1)[0].astype(np.int64)


def best_cpu_seconds(run: Any) -> tuple[np.ndarray, float]:
    best = float("inf")
    found = None
    for _ in range(REPEATS):
        started = time.process_time()
        found = run()
        best = min(best, time.process_time() - started)
    assert found is not None
    return found, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=int, default=0)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--quantization", default=None, choices=[None, "int8"])
    parser.add_argument("--fractions", default="0.5,0.9", help="shares of ids removed")
    parser.add_argument("--out", type=Path, default=Path("bench/results/compaction"))
    args = parser.parse_args()
    import hnswlib

    base = np.load(CACHE / "base.npy")
    if args.base:
        base = base[: args.base]
    queries = np.ascontiguousarray(np.load(CACHE / "queries.npy")[: args.queries])
    n, dim = base.shape
    params = {"M": 16, "ef_construction": 200, "quantization": args.quantization}
    print(f"glove-50 {n} x {dim}, {len(queries)} queries, {params}", flush=True)
    started = time.time()
    original = matry.Index(dim, "ip", **params)  # type: ignore[arg-type]
    original.add(base, num_threads=2)
    build_seconds = time.time() - started
    saved = Path(tempfile.mkdtemp()) / "original.matry"
    original.save(saved)
    del original

    rows: list[dict[str, Any]] = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        removed = np.random.default_rng(int(fraction * 100)).choice(
            n, int(fraction * n), replace=False
        )
        survivors = np.setdiff1d(np.arange(n), removed)
        tombstoned = matry.Index.load(saved)
        tombstoned.remove(removed)
        compacted = matry.Index.load(saved)
        compacted.remove(removed)
        started = time.time()
        dropped = compacted.compact(num_threads=2, mode="repair")
        compact_seconds = time.time() - started
        rebuilt = matry.Index.load(saved)
        rebuilt.remove(removed)
        started = time.time()
        rebuilt.compact(num_threads=2, mode="rebuild")
        rebuild_seconds = time.time() - started
        started = time.time()
        fresh = matry.Index(dim, "ip", **params)  # type: ignore[arg-type]
        fresh.add(base[survivors], survivors, num_threads=2)
        fresh_seconds = time.time() - started
        peer = hnswlib.Index(space="ip", dim=dim)
        peer.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        peer.add_items(base, np.arange(n), num_threads=2)
        for label in removed:
            peer.mark_deleted(int(label))
        truth, _ = fresh.exact_search(queries, k=K, num_threads=2)
        print(
            f"removed {fraction:.0%}: compact {compact_seconds:.1f} s (dropped {dropped}), "
            f"fresh build {fresh_seconds:.1f} s",
            flush=True,
        )
        for ef in EF_VALUES:
            point: dict[str, Any] = {"fraction": fraction, "ef": ef}
            for name, index in (
                ("tombstones", tombstoned),
                ("compacted", compacted),
                ("rebuilt", rebuilt),
                ("fresh", fresh),
            ):
                found, seconds = best_cpu_seconds(partial(matry_search, index, queries, ef))
                point[name] = {"recall": recall(found, truth), "qps": len(queries) / seconds}
            found, seconds = best_cpu_seconds(partial(hnswlib_search, peer, queries, ef))
            point["hnswlib-tombstones"] = {
                "recall": recall(found, truth),
                "qps": len(queries) / seconds,
            }
            rows.append(point)
            print(point, flush=True)
        rows.append(
            {
                "fraction": fraction,
                "compact_s": compact_seconds,
                "rebuild_s": rebuild_seconds,
                "fresh_build_s": fresh_seconds,
                "dropped": dropped,
            }
        )

    meta = {
        "n": n,
        "dim": dim,
        "queries": len(queries),
        "build_s": build_seconds,
        **params,
        "timer": f"process CPU time, best of {REPEATS}, 1 query thread",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = table(rows, meta)
    (args.out / "table.md").write_text(text)
    print(text)


def table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    names = ("tombstones", "compacted", "rebuilt", "fresh", "hnswlib-tombstones")
    out = [
        f"# Compaction, glove-50 ({meta['n']:,} x {meta['dim']}), "
        f"quantization={meta['quantization']}",
        "",
        f"{meta['queries']} queries, QPS by {meta['timer']}; M=16, ef_construction=200. "
        "Cells are recall@10 / QPS; recall against the exact top 10 of the survivors.",
        "",
        "| removed | ef | " + " | ".join(names) + " | repair vs fresh: recall, QPS |",
        "|" + "---|" * (len(names) + 3),
    ]
    for r in rows:
        if "ef" not in r:
            out.append(
                f"| {r['fraction']:.0%} | — | compact(mode='repair') {r['compact_s']:.1f} s, "
                f"compact(mode='rebuild') {r['rebuild_s']:.1f} s, fresh build "
                f"{r['fresh_build_s']:.1f} s (2 threads) | | | | | |"
            )
            continue
        cells = [f"{r[name]['recall']:.4f} / {r[name]['qps']:,.0f}" for name in names]
        delta = r["compacted"]["recall"] - r["fresh"]["recall"]
        speed = r["compacted"]["qps"] / r["fresh"]["qps"]
        out.append(
            f"| {r['fraction']:.0%} | {r['ef']} | "
            + " | ".join(cells)
            + f" | {delta:+.4f}, {speed:.2f}x |"
        )
    out += [
        "",
        "QPS at equal recall (interpolated over the ef sweep):",
        "",
        "| removed | recall | repair | rebuild | fresh | repair / fresh | rebuild / fresh |",
        "|---|---|---|---|---|---|---|",
    ]
    for fraction in sorted({r["fraction"] for r in rows}):
        sweep = [r for r in rows if r["fraction"] == fraction and "ef" in r]
        for target in (0.95, 0.99):
            q = {
                name: at_recall([(r[name]["recall"], r[name]["qps"]) for r in sweep], target)
                for name in ("compacted", "rebuilt", "fresh")
            }
            shown = {k: "—" if v is None else f"{v:,.0f}" for k, v in q.items()}
            ratios = [
                "—" if q[name] is None or q["fresh"] is None else f"{q[name] / q['fresh']:.2f}x"
                for name in ("compacted", "rebuilt")
            ]
            out.append(
                f"| {fraction:.0%} | {target} | {shown['compacted']} | {shown['rebuilt']} | "
                f"{shown['fresh']} | {ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
