"""Peak resident memory that save and load add, against the file size (issue: streaming IO).

Each step runs in a fresh child process; the peak is reset before it (Linux
/proc/self/clear_refs) and read after it (VmHWM), so a figure is what that step alone added.
"load from bytes" reads the whole file into a bytes object and loads that: what the load
before streaming did (file + index), shown for comparison.

    python bench/checks/stream_rss.py [--datasets glove-50,minilm-glove-vocab]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CACHE = Path.home() / ".cache" / "matry-bench"

CHILD = textwrap.dedent(
    """
    import io, sys, numpy as np, matry

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    def step(name, run):
        open("/proc/self/clear_refs", "w").write("5")
        base = hwm()
        result = run()
        print(name, hwm() - base, flush=True)
        return result

    mode, data, path = sys.argv[1:4]
    if mode == "build":
        base = np.load(data)
        index = matry.Index(base.shape[1], "ip", M=16, ef_construction=40)
        index.add(base, num_threads=2)
        del base
        step("save to a path", lambda: index.save(path))
        step("save to a file object", lambda: index.save(open(path + ".s", "wb")))
    elif mode == "path":
        step("load from a path", lambda: matry.Index.load(path))
    elif mode == "stream":
        step("load from a file object", lambda: matry.Index.load(open(path, "rb")))
    elif mode == "bytes":
        step("load from bytes (file read whole first)",
             lambda: matry.Index.from_bytes(open(path, "rb").read()))
    elif mode == "mmap":
        step("load with mmap=True", lambda: matry.Index.load(path, mmap=True))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="glove-50,minilm-glove-vocab")
    args = parser.parse_args()
    print("| data set | step | peak RSS added | file size | ratio |")
    print("|---|---|---|---|---|")
    for name in args.datasets.split(","):
        data = CACHE / name / "base.npy"
        with tempfile.TemporaryDirectory() as scratch:
            path = str(Path(scratch) / "index.matry")
            results: list[tuple[str, int]] = []
            for mode in ("build", "path", "stream", "bytes", "mmap"):
                output = subprocess.run(
                    [sys.executable, "-c", CHILD, mode, str(data), path],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                for line in output.strip().split("\n"):
                    step, added = line.rsplit(" ", 1)
                    results.append((step, int(added)))
            size = Path(path).stat().st_size
            import numpy as np

            shape = np.load(data, mmap_mode="r").shape
            for step, added in results:
                print(
                    f"| {name} {shape[0]:,} x {shape[1]} | {step} | {added / 2**20:,.1f} MiB | "
                    f"{size / 2**20:,.1f} MiB | {added / size:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
