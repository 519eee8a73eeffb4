"""Helpers shared by the cache tests and the worker processes they start.

Everything here works on real files: a :class:`Source` stands in for a backend (objects generated
from a seed, so a worker process regenerates the same bytes), counts its fetches in memory and,
optionally, in an ``O_APPEND`` log file that several processes share; :func:`audit` compares the
sqlite index with the block files on disk.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edgecache.cache import BlockKey, TieredCache
from edgecache.config import CacheSettings, SSDDirectory
from edgecache.metrics import REGISTRY

BS = 4096
"""Block size of most tests: the smallest the settings accept, so quotas stay tiny."""

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cacheworker.py")


def payload(seed: str, size: int, *, compressible: bool) -> bytes:
    """Deterministic bytes: LZ4-friendly text, or incompressible random bytes."""
    if compressible:
        unit = f"{seed}:edgecache block payload, quite repetitive;".encode()
        return (unit * (size // len(unit) + 1))[:size]
    return random.Random(seed).randbytes(size)


@dataclass(frozen=True)
class ObjectSpec:
    path: str
    size: int
    compressible: bool

    def data(self) -> bytes:
        return payload(self.path, self.size, compressible=self.compressible)


def make_objects(
    count: int, *, blocks: int, seed: int = 0, prefix: str = "obj"
) -> list[ObjectSpec]:
    """``count`` objects of 1..``blocks`` blocks, mixed sizes (odd tails) and kinds."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        nblocks = rng.randint(1, blocks)
        size = (nblocks - 1) * BS + rng.randint(1, BS)
        out.append(ObjectSpec(f"{prefix}/{i:03d}", size, compressible=i % 2 == 0))
    return out


def settings(cache_dir: str, **options: Any) -> CacheSettings:
    """Test settings: 4 KiB blocks, small quotas unless given."""
    base: dict[str, Any] = {
        "cache_dir": cache_dir,
        "block_size": BS,
        "mem_quota": 16 * BS,
        "ssd_quota": 64 * BS,
    }
    base.update(options)
    if "ssd_dirs" in base:
        base["ssd_dirs"] = tuple(
            d if isinstance(d, SSDDirectory) else SSDDirectory(*d) for d in base["ssd_dirs"]
        )
    return CacheSettings(**base)


@dataclass
class Source:
    """A backend stand-in: objects by path, one fetch per call, every fetch counted."""

    objects: dict[str, bytes]
    block_size: int = BS
    backend: str = "mem|test"
    version: str = "v1"
    log_path: str | None = None
    """If set, every fetch appends ``<digest> <pid>\\n`` here with O_APPEND (several processes)."""
    delay_seconds: float = 0.0
    fetches: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, specs: list[ObjectSpec], **kw: Any) -> Source:
        return cls({s.path: s.data() for s in specs}, **kw)

    def keys(self, path: str) -> list[BlockKey]:
        n = max(1, -(-len(self.objects[path]) // self.block_size))
        return [BlockKey(self.backend, path, self.version, i, self.block_size) for i in range(n)]

    def all_keys(self) -> list[BlockKey]:
        return [k for p in self.objects for k in self.keys(p)]

    def block(self, key: BlockKey) -> bytes:
        return self.objects[key.path][key.start : key.start + self.block_size]

    def fetcher(self, key: BlockKey) -> Callable[[], Awaitable[bytes]]:
        async def fetch() -> bytes:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            self.record(key)
            return self.block(key)

        return fetch

    def record(self, key: BlockKey) -> None:
        with self._lock:
            self.fetches[key.digest] += 1
        if self.log_path is not None:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{key.digest} {os.getpid()}\n".encode())
            finally:
                os.close(fd)

    @property
    def total_fetches(self) -> int:
        return sum(self.fetches.values())


async def read_object(cache: TieredCache, source: Source, path: str) -> bytes:
    """Read a whole object block by block through ``cache.get``."""
    parts = []
    for key in source.keys(path):
        expected = len(source.block(key))
        parts.append(await cache.get(key, source.fetcher(key), expected_size=expected))
    return b"".join(parts)


def read_object_sync(cache: TieredCache, source: Source, path: str) -> bytes:
    """Hits through ``get_cached`` (no event loop), misses through ``asyncio.run``."""
    parts = []
    for key in source.keys(path):
        data = cache.get_cached(key)
        if data is None:
            expected = len(source.block(key))
            data = asyncio.run(cache.get(key, source.fetcher(key), expected_size=expected))
        parts.append(data)
    return b"".join(parts)


def fetch_log(path: str) -> collections.Counter[str]:
    """Digest -> number of fetches recorded in a shared fetch log."""
    if not os.path.exists(path):
        return collections.Counter()
    with open(path) as f:
        return collections.Counter(line.split()[0] for line in f if line.strip())


def fetching_pids(path: str) -> set[int]:
    """The processes that fetched at least one block, from a shared fetch log."""
    with open(path) as f:
        return {int(line.split()[1]) for line in f if line.strip()}


def block_files(directory: str) -> dict[str, int]:
    """Digest -> file size of every block file under ``<directory>/blocks``."""
    out = {}
    for root, _dirs, files in os.walk(os.path.join(directory, "blocks")):
        for name in files:
            out[name] = os.path.getsize(os.path.join(root, name))
    return out


@dataclass
class Audit:
    """What the index says against what the disk holds."""

    used: dict[int, int]
    """Per directory: ``dirs.used`` from the index."""
    row_sum: dict[int, int]
    """Per directory: sum of block row sizes."""
    pinned: dict[int, int]
    pinned_row_sum: dict[int, int]
    file_sum: dict[int, int]
    """Per directory: bytes of block files on disk."""
    orphan_files: list[str]
    """Files on disk without a row (bytes the quota does not see)."""
    orphan_rows: list[str]
    """Rows without a file (a crashed writer; harmless, a read re-fetches)."""
    size_mismatch: list[str]
    """Files whose size differs from their row."""
    rows: dict[str, tuple[int, int, int]]
    """Digest -> (dir, size, pinned)."""
    queues: dict[int, tuple[int, int, int]]
    """Per directory: (``dirs.small``, ``dirs.main``, ``dirs.blocks``) from the index."""
    queue_row_sums: dict[int, tuple[int, int, int]]
    """Per directory: the same sums computed from the rows."""

    def assert_consistent(self, *, allow_orphan_rows: bool = False) -> None:
        assert self.used == self.row_sum, (self.used, self.row_sum)
        assert self.pinned == self.pinned_row_sum, (self.pinned, self.pinned_row_sum)
        assert self.queues == self.queue_row_sums, (self.queues, self.queue_row_sums)
        assert not self.orphan_files, f"files the index does not account for: {self.orphan_files}"
        assert not self.size_mismatch, self.size_mismatch
        if not allow_orphan_rows:
            assert not self.orphan_rows, f"rows without files: {self.orphan_rows}"


def audit(s: CacheSettings) -> Audit:
    """Read the index directly (a second sqlite connection) and walk the block directories."""
    dirs = [d.path for d in s.ssd_directories]
    db = sqlite3.connect(os.path.join(dirs[0], "index.sqlite"), timeout=30)
    try:
        raw_rows = db.execute("SELECT digest, dir, size, pinned, queue FROM blocks").fetchall()
        rows = {d: (dir_id, size, pinned) for d, dir_id, size, pinned, _ in raw_rows}
        used, pinned, queues = {}, {}, {}
        for dir_id, u, p, small, main, blocks in db.execute(
            "SELECT dir, used, pinned, small, main, blocks FROM dirs"
        ):
            used[dir_id], pinned[dir_id], queues[dir_id] = u, p, (small, main, blocks)
    finally:
        db.close()
    row_sum = {i: 0 for i in used}
    sums = {i: [0, 0, 0] for i in used}
    for _, dir_id, size, _, queue in raw_rows:
        sums[dir_id][queue] += size
        sums[dir_id][2] += 1
    queue_row_sums = {i: (v[0], v[1], v[2]) for i, v in sums.items()}
    pinned_row_sum = {i: 0 for i in used}
    for dir_id, size, is_pinned in rows.values():
        row_sum[dir_id] += size
        if is_pinned:
            pinned_row_sum[dir_id] += size
    file_sum = {}
    orphan_files, size_mismatch = [], []
    on_disk: set[str] = set()
    for i, d in enumerate(dirs):
        files = block_files(d)
        file_sum[i] = sum(files.values())
        for digest, size in files.items():
            on_disk.add(digest)
            row = rows.get(digest)
            if row is None or row[0] != i:
                orphan_files.append(digest)
            elif row[1] != size:
                size_mismatch.append(f"{digest}: file {size} row {row[1]}")
    orphan_rows = [d for d in rows if d not in on_disk]
    return Audit(
        used,
        row_sum,
        pinned,
        pinned_row_sum,
        file_sum,
        orphan_files,
        orphan_rows,
        size_mismatch,
        rows,
        queues,
        queue_row_sums,
    )


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of a prometheus sample in edgecache's registry (0 if never set)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
