"""The cache under faults at volume (issue #15): prefetches and readers SIGKILLed at random
points, again and again, on one cache directory; several processes reading while every object
is replaced upstream. Afterwards: no read returned wrong bytes, every object reads back whole,
and the index's usage accounting matches the block files on disk.

Component tests of the same faults, one at a time, stay where they are (tests/cache,
tests/prefetch: corrupt blocks, full/read-only/vanished disks, a locked index); this suite
runs them together and counts (docs/reliability.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cachetestlib import audit
from versions import parse_version, version_bytes

from edgecache.config import CacheSettings

READER = str(Path(__file__).with_name("readers.py"))
BLOCK = "64KiB"
BLOCK_BYTES = 64 * 1024


def edgecache(*args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECACHE_CACHE_DIR"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgecache", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def count_reads(out: bytes) -> tuple[int, int]:
    """(reads checked, wrong ones) from a reader's output (a killed one's last line may be cut)."""
    lines = [
        line for line in out.decode(errors="replace").splitlines() if line[:3] in ("OK ", "BAD")
    ]
    return len(lines), sum(line.startswith("BAD") for line in lines)


def test_prefetch_and_readers_killed_at_random_points(tmp_path: Path, reliability: Any) -> None:
    rng = random.Random(15)
    data = tmp_path / "data"
    data.mkdir()
    expected = {}
    for i in range(reliability.scale(ci=16, long=120)):
        content = os.urandom(rng.randint(1, 3 * BLOCK_BYTES))
        (data / f"f{i:04d}.bin").write_bytes(content)
        expected[f"file://{data}/f{i:04d}.bin"] = hashlib.sha256(content).hexdigest()
    expect_file = tmp_path / "expected.json"
    expect_file.write_text(json.dumps(expected))
    cache = tmp_path / "cache"
    common = ("--cache-dir", str(cache), "--set", f"block_size={BLOCK}")

    kills = 0
    for _ in range(reliability.scale(ci=2, long=25)):
        prefetch = edgecache("prefetch", f"file://{data}", "--parallel", "4", *common)
        reader = subprocess.Popen(
            [sys.executable, READER, str(cache), BLOCK, "--expect", str(expect_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.5, 4.0))  # a random point of the run, not a synchronisation
        for proc in (prefetch, reader):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        out, _ = reader.communicate(timeout=30)
        prefetch.communicate(timeout=30)
        checked, wrong = count_reads(out)
        reliability.reads_checked += checked
        reliability.wrong_bytes += wrong
        reliability.iterations += 1
    reliability.faults_injected = kills

    # The last prefetch resumes and completes; every object then reads back whole.
    final = edgecache("prefetch", f"file://{data}", *common)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    reader = subprocess.run(
        [sys.executable, READER, str(cache), BLOCK, "--expect", str(expect_file)],
        capture_output=True,
        timeout=120,
    )
    checked, wrong = count_reads(reader.stdout)
    reliability.reads_checked += checked
    reliability.wrong_bytes += wrong
    reliability.data_lost = len(expected) - checked
    assert reliability.wrong_bytes == 0
    assert checked == len(expected), reader.stderr.decode()

    state = audit(CacheSettings(cache_dir=str(cache), block_size=BLOCK_BYTES))
    # Rows whose file a killed writer never renamed in are allowed (a counted miss); a file
    # the index does not account for, or sums that disagree with the rows, are not.
    state.assert_consistent(allow_orphan_rows=True)
    reliability.notes["orphan_rows"] = len(state.orphan_rows)
    assert sum(state.file_sum.values()) <= sum(state.used.values())


def test_processes_on_one_cache_while_objects_are_replaced(
    tmp_path: Path, reliability: Any
) -> None:
    rng = random.Random(7)
    data = tmp_path / "data"
    data.mkdir()
    names = [f"obj{i:02d}" for i in range(6)]
    urls = [f"file://{data}/{name}" for name in names]
    version = dict.fromkeys(names, 0)

    def replace(name: str) -> None:
        version[name] += 1
        size = rng.randint(64, 5 * 4096)  # sizes change too (and always hold the header)
        tmp = data / f".{name}.tmp"
        tmp.write_bytes(version_bytes(name, version[name], size))
        os.replace(tmp, data / name)

    for name in names:
        replace(name)
    seconds = reliability.scale(ci=3, long=60)
    cache = tmp_path / "cache"
    readers = [
        subprocess.Popen(
            [sys.executable, READER, str(cache), "4KiB", str(seconds), *urls],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(reliability.scale(ci=2, long=4))
    ]
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            replace(rng.choice(names))
            reliability.faults_injected += 1
            stop.wait(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    outputs = []
    try:
        for proc in readers:
            outputs.append(proc.communicate(timeout=seconds + 120))
    finally:
        stop.set()
        thread.join()
    errors = 0
    for out, err in outputs:
        assert "Traceback" not in err.decode(), err.decode()
        checked, wrong = count_reads(out)
        reliability.reads_checked += checked
        reliability.wrong_bytes += wrong
        errors += out.count(b"\nERR ")
    reliability.iterations = reliability.reads_checked
    reliability.notes["clear_errors_while_replaced"] = errors
    assert reliability.wrong_bytes == 0
    assert reliability.reads_checked > 0

    # Once replacements stop, every process sees each object's last version, whole.
    out = subprocess.run(
        [sys.executable, READER, str(cache), "4KiB", "0.5", *urls], capture_output=True, timeout=60
    ).stdout
    last = {line.split()[1] for line in out.decode().splitlines() if line.startswith("OK ")}
    assert last == set(urls), out.decode()
    for name in names:
        assert parse_version(name, (data / name).read_bytes()) == version[name]
