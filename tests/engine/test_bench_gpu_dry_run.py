"""tests/bench/bench_gpu.py is the one prepared script a session with a lent GPU runs: it
must work before anyone gets there. Its ``--dry-run`` goes through every step on the CPU
at toy sizes, here as on a GPU machine where Loupe is not installed (the script then
imports the engine straight from this checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run the script as on a machine without Loupe installed: drop the editable install's
# import hook, so ``import loupe.engine`` must go through the script's own fallback.
RUNNER = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", "")]
for name in [n for n in sys.modules if n == "loupe" or n.startswith("loupe.")]:
    del sys.modules[name]
sys.argv = [{script!r}, "--dry-run"]
runpy.run_path({script!r}, run_name="__main__")
"""


def test_the_gpu_benchmark_runs_end_to_end_on_the_cpu(tmp_path):
    script = str(REPO / "tests" / "bench" / "bench_gpu.py")
    env = {**os.environ, "LOUPE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER.format(script=script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "loupe-shim-" in out  # the engine came from this checkout, not an install
    for row in ("| train resnet18 (img/s, epochs 2+) |", "| JPEG decode (img/s) |",
                "| prediction latency, file → result (ms) |"):
        assert row in out, out
    assert "dry run" in out
