"""The README's main job: the edge demo (demo/run.py, the shorter ``test`` profile) end to end,
as its own process, the way ``scripts/demo`` runs it; and its promise to leave no process behind
when interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "demo" / "run.py"
EDGE_DEMO = ROOT / "demo" / "edge_demo.py"


def _has_agent_and_pool() -> bool:
    """The demo's every phase needs the agent (issue #12) and its pool flags (issue #13)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgecache", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode == 0 and "--peer-listen" in proc.stdout


def _work(tmp_path: Path) -> list[str]:
    """The demo's work directory (caches, views, logs) inside the test's own directory."""
    return ["--work", str(tmp_path / "work")]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (children first found by their parent)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_edge_demo_runs_every_phase_and_writes_its_report(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not _has_agent_and_pool():
        request.applymarker(
            pytest.mark.xfail(
                reason="the agent (#12) or its pool sharing (#13) is not in this build: the "
                "demo says which phases did not run or went over the WAN limit, and exits 1",
                strict=True,
            )
        )
    proc = subprocess.run(
        [sys.executable, str(RUN), "--profile", "test", "--out", str(tmp_path), *_work(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for expected in (
        "get datasets,dataloads",
        "all 3 hubs switched to offline",
        "edgecache hub is offline",
        "every phase behaved",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    numbers = json.loads((tmp_path / "edge-demo.json").read_text())
    phases = {p["name"]: p for p in numbers["phases"]}
    assert set(phases) == {"baseline", "warm-up", "node-1", "node-2", "offline", "resync"}
    assert all(p["ok"] and not p["missing"] for p in phases.values())
    dataset = numbers["facts"]["dataset_bytes"]
    assert phases["warm-up"]["wan_data_bytes"] <= 1.1 * dataset
    assert phases["offline"]["wan_data_bytes"] == 0
    # Numbers, not speed (speed is measured in bench/): every reading phase read every image.
    for name in ("baseline", "node-1", "node-2", "offline"):
        assert phases[name]["images"] == 40 and phases[name]["bytes_read"] > 0
    assert (tmp_path / "edge-demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, str(RUN), "--profile", "test", "--out", str(tmp_path), *_work(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the test's own process group never receives the signal
    )
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if "all edge processes up" in line:
                break
        else:
            pytest.fail("the demo ended before its site was up:\n" + "".join(seen))
        children = _descendants(demo.pid)
        # The cloud's controller and three hubs at least (agents too, when they exist).
        assert len(children) >= 4, "".join(seen)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert demo.returncode == 128 + signal.SIGINT, "".join(seen) + rest
    assert "stopped by SIGINT" in rest
    deadline = time.monotonic() + 10
    while (survivors := {p for p in children if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors, f"still running after the demo ended: {survivors}"
    assert not (tmp_path / "work").exists(), "an interrupted demo leaves its caches behind"


def test_small_edge_demo_over_the_fsspec_layer_runs() -> None:
    """demo/edge_demo.py: cold, warm and offline reads through the CLI alone (no cluster)."""
    proc = subprocess.run(
        [sys.executable, str(EDGE_DEMO)], capture_output=True, text=True, timeout=300
    )
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
