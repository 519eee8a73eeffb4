"""Prefetch onto a cache disk that cannot hold the data: a full disk, a read-only one.

Issue #10, case 8: on a full or read-only cache disk, prefetch printed "loaded 40 files
(60.1 MiB) ... failed 0", exit 0, and "pinned as ..." with ``--pin``, though nothing was cached.
Now what counts as loaded is what the SSD tier holds afterwards; the rest is a failure ("not
cached", with the tier's reason) and the command exits 1. Needs root (tmpfs and bind mounts);
skipped cleanly otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MiB = 1024 * 1024


def edgecache(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECACHE_CACHE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "edgecache", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    try:
        subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount here: {exc}")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points to unmount at teardown (innermost first)."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)


@pytest.fixture
def big_data(tmp_path: Path) -> Path:
    """10 files of 1 MiB (incompressible): more than a 4 MiB disk holds."""
    root = tmp_path / "big"
    root.mkdir()
    for i in range(10):
        (root / f"part{i}.bin").write_bytes(os.urandom(MiB))
    return root


def test_a_full_cache_disk_is_reported_not_cached_and_exits_1(
    tmp_path: Path, big_data: Path, mounts: list[Path]
) -> None:
    disk = tmp_path / "tiny"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    mounts.append(disk)
    cache = disk / "cache"
    proc = edgecache(
        "prefetch", f"file://{big_data}", "--json", "--cache-dir", str(cache), "--set",
        "block_size=1MiB",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert not report["ok"]
    assert report["bytes_loaded"] <= 4 * MiB, "more was reported loaded than the disk holds"
    assert report["files_loaded"] + report["files_failed"] == 10
    assert report["files_failed"] >= 6
    errors = [f["error"] for f in report["failed"]]
    assert all("not cached" in e for e in errors), errors
    assert any("disk_full" in e for e in errors), errors
    assert "Traceback" not in proc.stderr
    # What it says it loaded is there: a second run finds exactly those files cached.
    again = edgecache(
        "prefetch", f"file://{big_data}", "--json", "--dry-run", "--cache-dir", str(cache),
        "--set", "block_size=1MiB",
    )  # fmt: skip
    assert json.loads(again.stdout)["files_cached"] == report["files_loaded"]


def test_a_read_only_cache_disk_caches_nothing_and_says_so(
    tmp_path: Path, big_data: Path, mounts: list[Path]
) -> None:
    cache = tmp_path / "cache"
    small = tmp_path / "small"
    small.mkdir()
    (small / "x").write_bytes(b"x" * 1000)
    assert edgecache("cat", f"file://{small}/x", "--cache-dir", str(cache)).returncode == 0
    _mount("--bind", str(cache), str(cache))
    mounts.append(cache)
    _mount("-o", "remount,bind,ro", str(cache))

    proc = edgecache("prefetch", f"file://{big_data}", "--cache-dir", str(cache))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "loaded 0 files (0 B)" in proc.stdout, proc.stdout
    assert "failed 10" in proc.stdout
    assert "read_only" in proc.stderr and "corrupt" not in proc.stderr, proc.stderr
    assert "moved" not in proc.stderr
    assert "Traceback" not in proc.stderr

    pinned = edgecache("prefetch", f"file://{big_data}", "--pin", "--cache-dir", str(cache))
    assert pinned.returncode == 1, pinned.stdout + pinned.stderr
    assert "pinned as" not in pinned.stdout
    assert any(ln.startswith("edgecache: error: ") for ln in pinned.stderr.splitlines())
    assert "read_only" in pinned.stderr and "Traceback" not in pinned.stderr
