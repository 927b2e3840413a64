"""The tables and the plot of a run are the package's (``matry.bench._report``); this module
re-exports them for ``python -m bench report`` and the scripts here, and keeps the kernel
micro-benchmark table of ``python -m bench kernels``."""

from __future__ import annotations

import json
from pathlib import Path

from matry.bench._report import (
    BASELINE,
    LIBRARY_COLOURS,
    LIBRARY_ORDER,
    RECALL_TARGETS,
    SKIPPED_FILE,
    TIMERS,
    best_qps_at_recall,
    build_table,
    interpolate_log,
    load_points,
    load_skipped,
    markdown_report,
    pareto_front,
    plot,
    qps_at_recall,
    qps_table,
    summary_table,
    summary_text,
    write_report,
)

__all__ = [
    "BASELINE",
    "LIBRARY_COLOURS",
    "LIBRARY_ORDER",
    "RECALL_TARGETS",
    "SKIPPED_FILE",
    "TIMERS",
    "best_qps_at_recall",
    "build_table",
    "interpolate_log",
    "kernel_table",
    "load_points",
    "load_skipped",
    "markdown_report",
    "pareto_front",
    "plot",
    "qps_at_recall",
    "qps_table",
    "summary_table",
    "summary_text",
    "write_report",
]


def kernel_table(benchmark_json: Path) -> str:
    """Markdown table of nanoseconds per dot product from a pytest-benchmark JSON file.

    Rows are dimensions, columns the kernels (ISA levels and numpy): the median time of one
    call divided by the rows it computes (``extra_info["rows"]``).
    """
    data = json.loads(Path(benchmark_json).read_text())
    per_dot: dict[tuple[int, str], float] = {}
    for entry in data["benchmarks"]:
        params = entry.get("params") or {}
        rows = int(entry.get("extra_info", {}).get("rows", 1))
        per_dot[(int(params["dim"]), str(params["kernel"]))] = entry["stats"]["median"] * 1e9 / rows
    kernels = sorted({kernel for _, kernel in per_dot}, key=_kernel_order)
    dims = sorted({dim for dim, _ in per_dot})
    lines = ["| dim | " + " | ".join(kernels) + " |", "|---" * (len(kernels) + 1) + "|"]
    for dim in dims:
        cells = [
            f"{per_dot[(dim, kernel)]:,.1f}" if (dim, kernel) in per_dot else "-"
            for kernel in kernels
        ]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor", "")
    return (
        "pytest-benchmark: median nanoseconds per float32 dot product, `rows @ query` over a "
        "1 MiB block of rows per call (matry: `_core.dot_rows` with the level forced; numpy: "
        "BLAS sgemv, one thread)" + (f"; {cpu}" if cpu else "") + ".\n\n" + "\n".join(lines) + "\n"
    )


def _kernel_order(kernel: str) -> tuple[int, str]:
    order = {"scalar": 0, "neon": 1, "avx2": 2, "avx512": 3, "numpy": 4}
    return order.get(kernel, 5), kernel
