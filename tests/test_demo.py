"""The README's main job runs as written: demo/edge_demo.py end to end (OSS test server, WAN
emulator, cold/warm/offline reads through the real CLI; it asserts exact bytes itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parents[1] / "demo" / "edge_demo.py"


def test_edge_demo_runs_and_shows_each_step() -> None:
    proc = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "cold read of the images and the shard",
        "warm read, a new process",
        "ls of images/ still answers: 200 entries",
        "cat of the shard still works: 32 MiB",
        "the info of factory-data/never-read.bin is not cached: backend oss|",
        "hit ratio",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
