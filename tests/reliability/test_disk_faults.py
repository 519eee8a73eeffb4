"""The cache's disk under faults at volume (issue #15), counted: reader threads read through
``fsspec.open("edgecache::file://...")`` without pause while the test fills the cache disk
(a size-limited tmpfs, as root), remounts it read-only, removes the cache directory, and
corrupts SSD blocks, the cache index and the metadata cache (flipped bytes, truncation,
zeroed pages), one fault after another. Every read returns the object's bytes (the backend
is local, so a read the cache cannot serve passes through to it: never an error), the tier
comes back when the fault is removed, and a warning says what happened.

Each fault alone has its component test (tests/cache/test_cache_failures.py,
test_cache_index_health.py, tests/fs/test_fs_metadata_integrity.py); this runs them in a row
under load and counts (docs/reliability.md)."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from agent.conftest import wait_for
from cachetestlib import metric

KiB = 1024
BLOCK = 16 * KiB
RETRY_SECONDS = 0.3
"""How soon the SSD tier tries its directory again after a failure (the storage option
``ssd_retry_seconds``, 30 s by default: a CI-sized run cannot wait that long per fault)."""


class Readers:
    """Threads reading random objects through ``fsspec.open`` and checking every byte."""

    def __init__(
        self,
        objects: dict[str, bytes],
        options: dict[str, Any],
        threads: int,
        *,
        others: dict[str, bytes] | None = None,
    ) -> None:
        """The threads read ``objects``; :meth:`read` checks ``others`` too."""
        self.urls = sorted(objects)
        self.objects = {**objects, **(others or {})}
        self.options = options
        self.reads = 0
        self.wrong: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(i),), name=f"reader-{i}")
            for i in range(threads)
        ]

    def read(self, url: str) -> None:
        try:
            with fsspec.open("edgecache::" + url, edgecache=self.options) as f:
                data = f.read()
        except Exception as exc:  # pass-through reads must not fail at all: count it
            self.errors.append(f"{url}: {type(exc).__name__}: {exc}")
            return
        self.reads += 1
        if data != self.objects[url]:
            self.wrong.append(f"{url}: {len(data)} bytes, not the object's")

    def _run(self, rng: random.Random) -> None:
        while not self._stop.is_set():
            self.read(rng.choice(self.urls))

    def __enter__(self) -> Readers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def make_objects(root: Path, rng: random.Random, count: int, prefix: str) -> dict[str, bytes]:
    """``count`` objects of 1 byte to 4 blocks under ``root/prefix``: URL -> bytes."""
    (root / prefix).mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        data = rng.randbytes(rng.randint(1, 4 * BLOCK))
        path = root / prefix / f"o{i:03d}.bin"
        path.write_bytes(data)
        out[f"file://{path}"] = data
    return out


def warnings_since(caplog: pytest.LogCaptureFixture, start: int) -> str:
    return "\n".join(r.getMessage() for r in caplog.records[start:] if r.levelno >= logging.WARNING)


BYPASS_REASONS = ("disk_full", "read_only", "permission", "directory_missing", "index_error")


def bypassed() -> float:
    """Reads and writes that went around the SSD tier so far, whatever the reason."""
    return sum(metric("edgecache_cache_bypass_total", {"reason": r}) for r in BYPASS_REASONS)


def noticed(
    options: dict[str, Any], fresh: Iterator[str], readers: Readers, reason: str, before: float
) -> bool:
    url = next(fresh)
    readers.read(url)
    fsspec.open("edgecache::" + url, edgecache=options).fs.cache.flush()
    return metric("edgecache_cache_bypass_total", {"reason": reason}) > before


def recovered(options: dict[str, Any], fresh: Iterator[str], readers: Readers) -> bool:
    """The tier is back: available, and a file no one read yet is stored without a bypass."""
    url = next(fresh)
    cache = fsspec.open("edgecache::" + url, edgecache=options).fs.cache
    if not cache.stats()["ssd_available"]:
        return False
    before = bypassed()
    readers.read(url)
    cache.flush()  # its blocks are written (or not) now, not later
    return bypassed() == before and bool(cache.stats()["ssd_available"])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root only; skipped otherwise), unmounted at the end."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def make_read_only(directory: Path, staging: Path) -> Callable[[], None]:
    """A read-only mount over ``directory``; returns what removes it.

    A remount of the disk itself is refused while the cache holds files open for writing, and
    so is one of a bind mount a reader thread has just opened a file through: the read-only
    bind mount is made at ``staging``, which no one uses, and moved into place."""
    staging.mkdir(exist_ok=True)
    mount("--bind", str(directory), str(staging))
    mount("-o", "remount,bind,ro", str(staging))
    mount("--move", str(staging), str(directory))
    return lambda: subprocess.run(["umount", "-l", str(directory)], check=True)


def remove_directory(directory: Path) -> Callable[[], None]:
    """The directory gone at once (renamed away, then deleted: a removal in place races the
    cache creating its lock files); nothing removes this fault but the cache itself."""
    gone = directory.with_name(f"gone-{time.monotonic_ns()}")
    directory.rename(gone)
    shutil.rmtree(gone)
    return lambda: None


def fill(mnt: Path) -> Path:
    """Fill the file system with one file of ours (removed to end the fault)."""
    filler = mnt / "filler"
    try:
        with open(filler, "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 64 * KiB)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return filler


def disk_usage(mnt: Path) -> str:
    """What takes the room on the disk (for a failure's message)."""
    free = shutil.disk_usage(mnt).free
    sizes = {str(p.relative_to(mnt)): p.stat().st_size for p in mnt.rglob("*") if p.is_file()}
    big = sorted(sizes.items(), key=lambda kv: -kv[1])[:6]
    return f"{free} bytes free; largest files {big}"


def test_full_read_only_and_vanished_cache_disk_while_readers_read(
    small_disk: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    reliability: Any,
) -> None:
    rng = random.Random(31)
    rounds = reliability.scale(ci=1, long=10)
    objects = make_objects(tmp_path / "data", rng, 24, "hot")
    fresh_objects = make_objects(tmp_path / "data", rng, 3 * 60 * rounds, "fresh")
    fresh = iter(sorted(fresh_objects))
    cache = small_disk / "cache"
    options = {
        "cache_dir": str(cache),
        "block_size": BLOCK,
        "mem_quota": 2 * BLOCK,  # hits come from the SSD tier, which the faults hit
        "ssd_retry_seconds": RETRY_SECONDS,
        # Under the disk's 16 MiB with room for the index's and metadata's sqlite write-ahead
        # logs (up to 4 MiB each, not charged to the quota): only the fault fills the disk.
        "ssd_quota": "2MiB",
    }
    faults: dict[str, Callable[[], Callable[[], None]]] = {
        "disk_full": lambda: fill(small_disk).unlink,
        "read_only": lambda: make_read_only(cache, tmp_path / "read-only"),
        "directory_missing": lambda: remove_directory(cache),
    }
    seen: dict[str, str] = {}
    caplog.set_level(logging.WARNING)
    with Readers(objects, options, threads=3, others=fresh_objects) as readers:
        wait_for(lambda: readers.reads > 20, what="the readers under way")
        for _ in range(rounds):
            for reason, inject in faults.items():
                start = len(caplog.records)
                before = metric("edgecache_cache_bypass_total", {"reason": reason})
                remove = inject()
                reliability.faults_injected += 1
                # The tier notices at its next write (a miss: a file no one read yet) or at
                # its check of the index file (every 2 s) ...
                wait_for(
                    lambda r=reason, b=before: noticed(options, fresh, readers, r, b),
                    what=f"{reason} noticed",
                    timeout_seconds=10,
                )
                # The bypass counter moves before the reader's thread logs its warning: wait
                # for the warning rather than take the log at that instant.
                seen[reason] = wait_for(
                    lambda s=start, r=reason: r in (t := warnings_since(caplog, s)) and t,
                    what=f"the {reason} warning",
                    timeout_seconds=5,
                )
                remove()
                # ... and comes back once the fault is gone.
                wait_for(
                    lambda: recovered(options, fresh, readers),
                    what=f"the SSD tier back after {reason} ({disk_usage(small_disk)})",
                    timeout_seconds=10,
                )
                reliability.iterations += 1
    final = Readers(objects, options, threads=0)
    for url in objects:
        final.read(url)
    reliability.reads_checked = readers.reads + final.reads
    reliability.wrong_bytes = len(readers.wrong) + len(final.wrong)
    reliability.data_lost = len(final.errors) + len(final.wrong)
    reliability.notes["failed_reads"] = len(readers.errors)
    assert readers.wrong == [] and final.wrong == []
    assert readers.errors == [] and final.errors == [], (readers.errors[:3], final.errors[:3])
    for reason, text in seen.items():
        assert "unusable" in text and reason in text, (reason, text)


def flip(path: Path, rng: random.Random) -> None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        offset = rng.randrange(size)
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path, rng: random.Random) -> None:
    os.truncate(path, rng.randrange(max(1, path.stat().st_size)))


def zero_page(path: Path, rng: random.Random) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(rng.randrange(max(1, size // 4096)) * 4096)
        f.write(b"\0" * 4096)


def checkpoint(database: Path) -> None:
    db = sqlite3.connect(database, timeout=30)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


DAMAGE = {"flipped": flip, "truncated": truncate, "zeroed": zero_page}


def test_corrupted_blocks_index_and_metadata_while_readers_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, reliability: Any
) -> None:
    rng = random.Random(32)
    objects = make_objects(tmp_path / "data", rng, 40, "data")
    cache = tmp_path / "cache"
    options = {"cache_dir": str(cache), "block_size": BLOCK, "mem_quota": 2 * BLOCK}
    any_url = next(iter(objects))
    fs = fsspec.open("edgecache::" + any_url, edgecache=options).fs

    def targets(kind: str) -> list[Path]:
        if kind == "block":
            return sorted(p for p in (cache / "blocks").rglob("*") if p.is_file())
        return [cache / ("index.sqlite" if kind == "index" else "metadata.sqlite")]

    detected: dict[str, int] = {}
    caplog.set_level(logging.WARNING)
    with Readers(objects, options, threads=3) as readers:
        for url in objects:  # everything cached once: the faults hit data the readers use
            readers.read(url)
        for _ in range(reliability.scale(ci=1, long=10)):
            for kind in ("block", "index", "metadata"):
                for damage_name, damage in DAMAGE.items():
                    start = len(caplog.records)
                    if kind != "block":
                        # Everything into the database file itself, where the damage goes
                        # (left in the write-ahead log, it would only hit superseded pages).
                        checkpoint(targets(kind)[0])
                    for target in rng.sample(targets(kind), min(3, len(targets(kind)))):
                        damage(target, rng)
                    reliability.faults_injected += 1
                    # Readers meet it; then every object is read, and the index checked, so
                    # damage in a place no read goes is found too.
                    time.sleep(0.2)  # a random point of the readers' work, not a synchronisation
                    for url in objects:
                        readers.read(url)
                    fs.cache.verify()
                    fs.metadata.verify()
                    text = warnings_since(caplog, start)
                    found = {"block": "corrupt", "index": "index", "metadata": "metadata cache"}
                    if found[kind] in text:
                        name = f"{kind} {damage_name}"
                        detected[name] = detected.get(name, 0) + 1
                    reliability.iterations += 1
    reliability.reads_checked = readers.reads
    reliability.wrong_bytes = len(readers.wrong)
    reliability.notes.update(failed_reads=len(readers.errors), detected_with_a_warning=detected)
    final = Readers(objects, options, threads=0)
    for url in objects:
        final.read(url)
    reliability.data_lost = len(final.errors) + len(final.wrong)
    assert readers.wrong == [] and final.wrong == []
    assert readers.errors == [] and final.errors == [], (readers.errors[:3], final.errors[:3])
    # Each kind of damage was found and said so (a flipped byte in a page no one reads may
    # rightly go unseen, so not every single fault).
    for kind in ("block", "index", "metadata"):
        assert any(k.startswith(kind) for k in detected), (kind, detected)
