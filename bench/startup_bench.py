"""Start-up and lookup time of the SSD tier with 10k, 100k and 1M blocks in its index.

Command::

    .venv/bin/python bench/startup_bench.py                    # 10k, 100k, 1M blocks
    .venv/bin/python bench/startup_bench.py --blocks 10000     # one size

For each size, a cache directory is populated: a few hundred real blocks stored through
:meth:`TieredCache.put` (files + index rows), then index rows for the rest inserted straight into
the ``blocks`` table with one ``executemany`` in one transaction, using the schema of
:mod:`edgecache.cache._index` and digests of real :class:`BlockKey`\\ s (the other block files
need not exist: nothing on the start-up or hit path reads rows it did not ask for). The WAL is
checkpointed, as sqlite's auto-checkpoint keeps it in steady state.

Then fresh Python processes each measure, after importing edgecache:

* start-up: ``TieredCache(settings)`` construction until the first hit (a real block) is served,
  with the index file in the OS page cache, and with it dropped from the page cache first
  (``posix_fadvise(DONTNEED)`` on the index files only, no global cache drop);
* hit: ``get_cached`` of an existing block (MEM quota 0, so the SSD tier serves it: open, read,
  verify the checksum);
* index lookup: ``BlockIndex.contains`` of random existing digests among all N rows, cold
  (first touch of those pages) and again warm;
* miss: ``get_cached`` of a block that is not cached.

Target (design section 5): start-up <= 2 s and O(1) lookup at 1M blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time

from _common import print_table, ratio, scratch_dir, write_results

REAL_BLOCKS = 256
"""Blocks stored for real (files on disk); the first hit and the hit timing read these."""
REAL_BLOCK_BYTES = 64 * 1024
"""Each real block is a whole 64 KiB object (one short block under the 4 MiB block size)."""
BLOCK_SIZE = 4 * 1024 * 1024
SSD_QUOTA = 64 * 1024**4
"""64 TiB: room for 1M 4 MiB blocks, so nothing is evicted while populating."""
BACKEND = "file"


def block_key(i: int) -> object:
    """The i-th block of the synthetic dataset: 1,000 objects per directory, 4 blocks each."""
    from edgecache.cache import BlockKey

    if i < REAL_BLOCKS:
        return BlockKey(BACKEND, f"/data/small/{i:06d}.bin", "v1", 0, BLOCK_SIZE)
    obj, index = divmod(i, 4)
    return BlockKey(
        BACKEND, f"/data/shard{obj // 1000:04d}/{obj % 1000:04d}.bin", "v1", index, BLOCK_SIZE
    )


def settings_for(cache_dir: str) -> object:
    from edgecache.config import CacheSettings

    return CacheSettings(
        cache_dir=cache_dir, block_size=BLOCK_SIZE, mem_quota=0, ssd_quota=SSD_QUOTA
    )


def payload(i: int) -> bytes:
    return random.Random(i).randbytes(REAL_BLOCK_BYTES)


# --- populating --------------------------------------------------------------------------------
def populate(cache_dir: str, blocks: int) -> dict[str, float]:
    """Fill ``cache_dir`` with ``blocks`` index rows (REAL_BLOCKS of them with real files)."""
    from edgecache.cache import TieredCache
    from edgecache.cache._blockfile import uncompressed_file_bytes
    from edgecache.cache.ssd import INDEX_NAME

    started = time.perf_counter()
    cache = TieredCache(settings_for(cache_dir))  # type: ignore[arg-type]
    for i in range(REAL_BLOCKS):
        cache.put(block_key(i), payload(i))  # type: ignore[arg-type]
    cache.close()
    real_seconds = time.perf_counter() - started

    started = time.perf_counter()
    stored = uncompressed_file_bytes(BLOCK_SIZE)
    db = sqlite3.connect(os.path.join(cache_dir, INDEX_NAME), isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    (seq,) = db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()

    from edgecache.cache._index import row_sum  # rows written here must verify as ours do

    def rows() -> object:
        for n, i in enumerate(range(REAL_BLOCKS, blocks), start=1):
            key = block_key(i)
            # queue 0/1 alternating in runs: both S3-FIFO queues are populated, as in use.
            queue = 1 if (i // 64) % 10 else 0
            fields = (key.digest, 0, stored, BLOCK_SIZE, queue, 0, BACKEND, key.path, "")  # type: ignore[attr-defined]
            yield (*fields, row_sum(*fields), 0, seq + n)

    extra = max(blocks - REAL_BLOCKS, 0)
    main_blocks = sum(1 for i in range(REAL_BLOCKS, blocks) if (i // 64) % 10)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO blocks(digest, dir, size, raw, queue, pinned, backend, path, writing, "
        "check_sum, freq, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),  # type: ignore[arg-type]
    )  # type: ignore[arg-type]
    db.execute(
        "UPDATE dirs SET used=used+?, blocks=blocks+?, small=small+?, main=main+? WHERE dir=0",
        (extra * stored, extra, (extra - main_blocks) * stored, main_blocks * stored),
    )
    db.execute("UPDATE meta SET value=? WHERE key='seq'", (seq + extra,))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (count,) = db.execute("SELECT count(*) FROM blocks").fetchone()
    db.close()
    assert count == blocks, (count, blocks)
    index_bytes = sum(
        os.path.getsize(os.path.join(cache_dir, INDEX_NAME + s))
        for s in ("", "-wal")
        if os.path.exists(os.path.join(cache_dir, INDEX_NAME + s))
    )
    return {
        "real_blocks_seconds": real_seconds,
        "bulk_rows_seconds": time.perf_counter() - started,
        "index_bytes": index_bytes,
    }


def drop_index_from_page_cache(cache_dir: str) -> None:
    """Evict the index files' pages from the OS page cache (this file only, not the system's)."""
    from edgecache.cache.ssd import INDEX_NAME

    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(cache_dir, INDEX_NAME + suffix)
        if not os.path.exists(path):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            # Dirty pages cannot be dropped: write them back first.
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# --- the measuring child process ---------------------------------------------------------------
def child(cache_dir: str, blocks: int) -> None:
    """Runs in a fresh interpreter; prints one JSON line of timings."""
    t0 = time.perf_counter()
    from edgecache.cache import TieredCache

    import_seconds = time.perf_counter() - t0
    settings = settings_for(cache_dir)
    first = block_key(0)

    t1 = time.perf_counter()
    cache = TieredCache(settings)  # type: ignore[arg-type]
    data = cache.get_cached(first)  # type: ignore[arg-type]
    startup_seconds = time.perf_counter() - t1
    assert data == payload(0), "first hit returned wrong bytes"

    rng = random.Random(blocks)
    # Hits: every real block, 4 passes (SSD tier each time: MEM quota 0).
    real = [block_key(i) for i in range(REAL_BLOCKS)]
    t = time.perf_counter()
    for _ in range(4):
        for key in real:
            cache.get_cached(key)  # type: ignore[arg-type]
    hit_us = 1e6 * (time.perf_counter() - t) / (4 * REAL_BLOCKS)

    # Index lookups of random existing rows among all of them.
    index = cache.ssd._index
    assert index is not None
    sample = [block_key(rng.randrange(blocks)).digest for _ in range(2000)]  # type: ignore[attr-defined]
    t = time.perf_counter()
    found = sum(index.contains(d) for d in sample)
    lookup_cold_us = 1e6 * (time.perf_counter() - t) / len(sample)
    t = time.perf_counter()
    for d in sample:
        index.contains(d)
    lookup_warm_us = 1e6 * (time.perf_counter() - t) / len(sample)
    assert found == len(sample), (found, len(sample))

    # Misses: blocks that were never cached.
    from edgecache.cache import BlockKey

    absent = [BlockKey(BACKEND, f"/absent/{i}", "v1", 0, BLOCK_SIZE) for i in range(500)]
    t = time.perf_counter()
    for key in absent:
        cache.get_cached(key)
    miss_us = 1e6 * (time.perf_counter() - t) / len(absent)
    cache.close()
    print(
        json.dumps(
            {
                "import_seconds": import_seconds,
                "startup_seconds": startup_seconds,
                "hit_us": hit_us,
                "lookup_cold_us": lookup_cold_us,
                "lookup_warm_us": lookup_warm_us,
                "miss_us": miss_us,
            }
        )
    )


def run_child(cache_dir: str, blocks: int) -> tuple[dict[str, float], float]:
    """(child's timings, wall seconds of the whole process)."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", cache_dir, str(blocks)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--blocks",
        type=int,
        action="append",
        help="index size (repeatable); default 10,000, 100,000 and 1,000,000",
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per measurement")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "BLOCKS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    sizes = args.blocks or [10_000, 100_000, 1_000_000]

    results: list[dict[str, object]] = []
    for blocks in sizes:
        with scratch_dir(f"startup-{blocks}") as cache_dir:
            built = populate(cache_dir, blocks)
            print(
                f"{blocks:>9,} blocks: index {built['index_bytes'] / 2**20:.0f} MiB, "
                f"populated in {built['real_blocks_seconds'] + built['bulk_rows_seconds']:.1f} s",
                flush=True,
            )
            warm: list[dict[str, float]] = []
            walls: list[float] = []
            for _ in range(args.runs):
                timings, wall = run_child(cache_dir, blocks)
                warm.append(timings)
                walls.append(wall)
            cold: list[dict[str, float]] = []
            for _ in range(args.runs):
                drop_index_from_page_cache(cache_dir)
                cold.append(run_child(cache_dir, blocks)[0])

        def best(runs: list[dict[str, float]], name: str) -> float:
            return min(r[name] for r in runs)

        def median(runs: list[dict[str, float]], name: str) -> float:
            return statistics.median(r[name] for r in runs)

        results.append(
            {
                "blocks": blocks,
                "populate": built,
                "startup_seconds_best": best(warm, "startup_seconds"),
                "startup_seconds_median": median(warm, "startup_seconds"),
                "startup_seconds_index_not_in_page_cache_best": best(cold, "startup_seconds"),
                "startup_seconds_index_not_in_page_cache_median": median(cold, "startup_seconds"),
                "import_seconds_median": median(warm, "import_seconds"),
                "process_wall_seconds_median": statistics.median(walls),
                "hit_us_median": median(warm, "hit_us"),
                "index_lookup_us_first_touch_median": median(warm, "lookup_cold_us"),
                "index_lookup_us_first_touch_no_page_cache_median": median(cold, "lookup_cold_us"),
                "index_lookup_us_warm_median": median(warm, "lookup_warm_us"),
                "miss_us_median": median(warm, "miss_us"),
                "runs_page_cache_warm": warm,
                "runs_index_not_in_page_cache": cold,
            }
        )

    base = results[0]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['blocks']:,}",
                f"{r['populate']['index_bytes'] / 2**20:.0f}",  # type: ignore[index]
                1e3 * r["startup_seconds_median"],  # type: ignore[operator]
                1e3 * r["startup_seconds_index_not_in_page_cache_median"],  # type: ignore[operator]
                ratio(r["startup_seconds_median"], base["startup_seconds_median"]),  # type: ignore[arg-type]
                1e3 * r["import_seconds_median"],  # type: ignore[operator]
                r["hit_us_median"],
                r["index_lookup_us_first_touch_no_page_cache_median"],
                r["index_lookup_us_warm_median"],
                ratio(r["index_lookup_us_warm_median"], base["index_lookup_us_warm_median"]),  # type: ignore[arg-type]
                r["miss_us_median"],
            ]
        )
    print_table(
        f"SSD tier start-up and lookup (median of {args.runs} fresh processes each)",
        [
            "blocks",
            "index MiB",
            "start-up ms",
            "start-up ms, no pg cache",
            f"vs {sizes[0]:,}",
            "import ms",
            "hit µs",
            "lookup µs, no pg cache",
            "lookup µs warm",
            f"vs {sizes[0]:,}",
            "miss µs",
        ],
        rows,
    )
    worst = max(
        max(r["startup_seconds_median"], r["startup_seconds_index_not_in_page_cache_median"])  # type: ignore[type-var]
        for r in results
    )
    print(
        f"\nstart-up (construction to first hit), worst median: {1e3 * worst:.1f} ms "  # type: ignore[operator]
        f"(target <= 2000 ms: {'met' if worst <= 2.0 else 'NOT met'})"  # type: ignore[operator]
    )
    write_results("startup_bench", {"runs_per_measurement": args.runs, "sizes": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
