"""The tuning report of the closing note: ``matry.tune.grid`` on glove-50 for recall@10 >= 0.95.

    python -m bench.tune_glove [--Ms 8,16,32] [--ef-constructions 100,200] [--out DIR]

Uses the cached glove-50 data set of ``python -m bench`` (390,000 base vectors, 10,000 held-out
queries) and writes report.md, report.json and plot.png to ``bench/results/tune-glove-50/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import matry
from matry import tune

from . import datasets


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tune_glove", description=__doc__)
    parser.add_argument("--Ms", type=_ints, default=(8, 16, 32))
    parser.add_argument("--ef-constructions", type=_ints, default=(100, 200))
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cache-dir", type=Path, default=datasets.default_cache_dir())
    parser.add_argument("--out", type=Path, default=Path("bench/results/tune-glove-50"))
    args = parser.parse_args(argv)

    data = datasets.load(datasets.prepare("glove-50", args.cache_dir))
    started = time.perf_counter()
    report = tune.grid(
        data.base,
        data.queries,
        Ms=args.Ms,
        ef_constructions=args.ef_constructions,
        k=args.k,
        target=args.target,
    )
    minutes = (time.perf_counter() - started) / 60
    args.out.mkdir(parents=True, exist_ok=True)
    report.to_json(args.out / "report.json")
    markdown = report.to_markdown()
    context = (
        f"\n\nmatry {matry.__version__} ({matry.simd_level()}), {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores; load average at the end "
        f"{', '.join(f'{value:.1f}' for value in os.getloadavg())}; "
        f"total {minutes:.1f} min.\n"
    )
    (args.out / "report.md").write_text(markdown + context)
    report.plot(args.out / "plot.png")
    print(markdown + context)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
