"""``python -m matry.bench``: the same as ``matry bench``; plus the internal ``worker`` and
``resident`` entry points the runner starts in fresh subprocesses."""

from __future__ import annotations

import sys
from pathlib import Path


def _entry(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "worker":
        from ._runner import run_worker

        return run_worker(Path(argv[1]))
    if len(argv) == 2 and argv[0] == "resident":
        from ._resident import run_spec

        return run_spec(Path(argv[1]))
    from ._cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(_entry(sys.argv[1:]))
