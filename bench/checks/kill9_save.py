"""kill -9 during save, 20 times: the old file must load every time, and the next save must
leave no temporary files behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import matry
import numpy as np

KILLS = 20
CHILD = """
import numpy as np, matry, sys
ix = matry.Index(64, "l2")
ix.add(np.random.default_rng(1).standard_normal((60000, 64)).astype(np.float32), num_threads=1)
print("ready", flush=True)
while True:
    ix.save(sys.argv[1])
"""

directory = tempfile.mkdtemp(prefix="matry-kill9-")
path = os.path.join(directory, "index.matry")
base = matry.Index(64, "l2")
base.add(np.random.default_rng(0).standard_normal((5000, 64)).astype(np.float32))
base.save(path)
loads = 0
for trial in range(KILLS):
    child = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child.stdout.readline()
    time.sleep(0.05 + 0.03 * (trial % 5))  # land at different points of a save
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    try:
        matry.Index.load(path)
        loads += 1
    except Exception as error:  # report, keep counting
        print("load failed:", error)
left_by_kills = [name for name in os.listdir(directory) if "matry-tmp" in name]
matry.Index.load(path).save(path)
left_after = [name for name in os.listdir(directory) if "matry-tmp" in name]
print(
    f"kills {KILLS}, old file loaded after {loads}/{KILLS}, temp files left by the kills "
    f"{len(left_by_kills)}, after the next save {len(left_after)}"
)
