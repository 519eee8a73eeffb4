"""Warm reads through edgecache vs a raw local read and fsspec's simplecache/filecache/blockcache.

Command::

    .venv/bin/python bench/cache_bench.py                  # 256 MiB file + 10,000 x 16 KiB files
    .venv/bin/python bench/cache_bench.py --size 64 --files 2000 --runs 3    # a quicker run

Everything reads local files (the ``file`` backend), so what is measured is each cache's own
cost on a warm read, which is what design section 5 sets targets for:

1. **Large file** (default 256 MiB of random bytes, so LZ4 ``auto`` stores blocks raw): read
   whole with one ``f.read()`` and in 1 MiB ``f.read(1 MiB)`` calls, best of ``--runs``, MB/s:

   * ``raw``: ``open(path, "rb")`` on the source file (in the OS page cache);
   * ``simplecache::``, ``filecache::``, ``blockcache::`` over ``file://`` (fsspec);
   * edgecache, SSD tier: ``mem_quota=0``, every block is read from its block file and its
     checksum verified on each read;
   * edgecache, SSD tier into an empty MEM tier: MEM emptied before each run (a fresh process),
     so each block comes from its SSD file once and is promoted to MEM;
   * edgecache, MEM tier: ``mem_quota=512MiB``, blocks already in MEM.

   Each peer reads the file once before timing (warm), and its bytes are checked once against
   the source. Peers are timed interleaved (one run of each, ``--runs`` times over), so load
   from other processes falls on all of them alike.

2. **Small files** (default 10,000 x 16 KiB): ``open`` + ``read()`` of each file in turn, µs per
   file, through raw ``open``, ``simplecache``, ``filecache`` (warmed with one batched ``cat``,
   then read once one by one), and edgecache (MEM tier; SSD tier with ``mem_quota=0``;
   ``fs.cat_file`` on the MEM tier).

Targets (design section 5, issue #9): SSD warm >= 0.85x raw and >= simplecache in every read
size; small files >= 3x filecache, with the MEM tier and from the SSD tier alone.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

import fsspec
from _common import MiB, compare, print_table, ratio, scratch_dir, write_results

Reader = Callable[[], object]
READ_SIZES = {"4MiB": 4 * MiB, "1MiB": MiB, "64KiB": 64 * 1024}
"""The ``f.read(n)`` sizes measured besides one whole-file ``f.read()``."""
MODES = ("whole", *READ_SIZES)


# --- large file --------------------------------------------------------------------------------
def read_whole(open_file: Callable[[], Any]) -> Callable[[], bytes]:
    def run() -> bytes:
        with open_file() as f:
            data: bytes = f.read()
        return data

    return run


def read_chunks(open_file: Callable[[], Any], chunk: int) -> Callable[[], int]:
    def run() -> int:
        total = 0
        with open_file() as f:
            while data := f.read(chunk):
                total += len(data)
        return total

    return run


def write_random(path: str, size: int) -> str:
    """A file of ``size`` random bytes; returns its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def edgecache_fs(cache_dir: str, **options: Any) -> Any:
    return fsspec.filesystem(
        "edgecache",
        target_protocol="file",
        target_options={},
        cache_dir=cache_dir,
        skip_instance_cache=True,
        **options,
    )


def wanted(name: str, words: list[str]) -> bool:
    """Whether ``--readers`` keeps reader ``name`` (the references of the ratios always stay)."""
    always = ("raw", "simplecache", "filecache")
    return not words or any(w in name for w in (*words, *always))


def large_file_bench(work: str, size: int, runs: int, words: list[str]) -> dict[str, Any]:
    from edgecache.cache import TieredCache

    src = os.path.join(work, "large.bin")
    expected = write_random(src, size)
    cache_dir = os.path.join(work, "edgecache")
    simple = fsspec.filesystem(
        "simplecache", target_protocol="file", cache_storage=os.path.join(work, "simplecache")
    )
    whole = fsspec.filesystem(
        "filecache", target_protocol="file", cache_storage=os.path.join(work, "filecache")
    )
    block = fsspec.filesystem(
        "blockcache", target_protocol="file", cache_storage=os.path.join(work, "blockcache")
    )
    ec_ssd = edgecache_fs(cache_dir, mem_quota="0")
    ec_mem = edgecache_fs(cache_dir, mem_quota="512MiB")
    # What a fresh process gets: its own TieredCache on the same (warm) directory, MEM empty.
    ec_fresh = edgecache_fs(cache_dir, mem_quota="512MiB")
    ec_fresh.cache = TieredCache(ec_fresh.settings)

    peers: dict[str, Callable[[], Any]] = {
        "raw local read": lambda: open(src, "rb"),  # noqa: SIM115 (opened in a with)
        "fsspec simplecache": lambda: simple.open(src, "rb"),
        "fsspec filecache": lambda: whole.open(src, "rb"),
        "fsspec blockcache": lambda: block.open(src, "rb"),
        "edgecache SSD (mem_quota=0)": lambda: ec_ssd.open(src, "rb"),
        "edgecache SSD -> empty MEM": lambda: ec_fresh.open(src, "rb"),
        "edgecache MEM": lambda: ec_mem.open(src, "rb"),
    }
    peers = {name: open_file for name, open_file in peers.items() if wanted(name, words)}
    setup = {"edgecache SSD -> empty MEM": ec_fresh.cache.mem.clear}
    for name, open_file in peers.items():
        # Warm: fills each cache and pulls its files into the OS page cache; checks the bytes.
        data = read_whole(open_file)()
        ok = hashlib.sha256(data).hexdigest() == expected
        del data
        if not ok:
            raise SystemExit(f"{name}: bytes differ from the source file")
    results: dict[str, Any] = {name: {} for name in peers}
    for mode in MODES:
        chunk = READ_SIZES.get(mode)
        timed = compare(
            {
                name: read_whole(open_file) if chunk is None else read_chunks(open_file, chunk)
                for name, open_file in peers.items()
            },
            rounds=runs,
            setup=setup,
        )
        for name, (best, times) in timed.items():
            results[name][mode] = {
                "seconds_best": best,
                "seconds_all": times,
                "MB_s": size / best / 1e6,
            }
    for fs in (ec_ssd, ec_mem, ec_fresh):
        fs.cache.flush()
    ec_fresh.cache.close()
    return results


# --- small files -------------------------------------------------------------------------------
def small_files_bench(
    work: str, count: int, file_size: int, runs: int, words: list[str]
) -> dict[str, Any]:
    src_dir = os.path.join(work, "small")
    os.makedirs(src_dir)
    paths = [os.path.join(src_dir, f"{i:06d}.bin") for i in range(count)]
    for p in paths:
        with open(p, "wb") as f:
            f.write(os.urandom(file_size))
    cache_dir = os.path.join(work, "edgecache-small")
    simple = fsspec.filesystem(
        "simplecache", target_protocol="file", cache_storage=os.path.join(work, "sc-small")
    )
    whole = fsspec.filesystem(
        "filecache", target_protocol="file", cache_storage=os.path.join(work, "fc-small")
    )
    ec_mem = edgecache_fs(cache_dir)
    ec_ssd = edgecache_fs(cache_dir, mem_quota="0")

    def loop(open_file: Callable[[str], Any]) -> Callable[[], int]:
        def run() -> int:
            total = 0
            for p in paths:
                with open_file(p) as f:
                    total += len(f.read())
            return total

        return run

    def cat_loop() -> int:
        return sum(len(ec_mem.cat_file(p)) for p in paths)

    # filecache rewrites its whole JSON metadata on every miss (O(n^2) to fill one by one):
    # warm it with one batched cat, as a patient user would.
    whole.cat(paths)
    readers: dict[str, Reader] = {
        "raw open+read": loop(lambda p: open(p, "rb")),  # noqa: SIM115
        "fsspec simplecache": loop(lambda p: simple.open(p, "rb")),
        "fsspec filecache": loop(lambda p: whole.open(p, "rb")),
        "edgecache MEM": loop(lambda p: ec_mem.open(p, "rb")),
        "edgecache SSD (mem_quota=0)": loop(lambda p: ec_ssd.open(p, "rb")),
        "edgecache MEM, fs.cat_file": cat_loop,
    }
    readers = {name: run for name, run in readers.items() if wanted(name, words)}
    for name, run in readers.items():
        total = run()  # warm: every peer has read every file once
        if total != count * file_size:
            raise SystemExit(f"{name}: read {total} bytes, expected {count * file_size}")
    results: dict[str, Any] = {}
    for name, (best, times) in compare(readers, rounds=runs).items():
        results[name] = {
            "seconds_best": best,
            "seconds_all": times,
            "us_per_file": 1e6 * best / count,
            "files_per_s": count / best,
        }
    for fs in (ec_ssd, ec_mem):
        fs.cache.flush()
    return results


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="large file size in MiB")
    parser.add_argument("--files", type=int, default=10_000, help="number of small files")
    parser.add_argument("--file-size", type=int, default=16 * 1024, help="small file bytes")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per peer (best kept)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument(
        "--readers",
        default="",
        help="comma-separated words: time only readers whose name contains one of them "
        "(raw and simplecache always run: the ratios need them)",
    )
    args = parser.parse_args(argv)

    words = [w for w in args.readers.split(",") if w]
    out: dict[str, Any] = {"runs": args.runs, "load_average_1min_before": os.getloadavg()[0]}
    verdicts: list[str] = []
    if not args.skip_large:
        size = args.size * MiB
        print(f"Large file: {args.size} MiB, best of {args.runs}")
        with scratch_dir("large") as work:
            large = large_file_bench(work, size, args.runs, words)
        raw, simple = large["raw local read"], large["fsspec simplecache"]
        rows = []
        for name, entry in large.items():
            row: list[Any] = [name]
            for mode in MODES:
                entry[mode]["vs_raw"] = ratio(entry[mode]["MB_s"], raw[mode]["MB_s"])
                entry[mode]["vs_simplecache"] = ratio(entry[mode]["MB_s"], simple[mode]["MB_s"])
                row += [entry[mode]["MB_s"], entry[mode]["vs_raw"], entry[mode]["vs_simplecache"]]
            rows.append(row)
        print_table(
            f"Warm sequential read of {args.size} MiB (MB/s, x raw, x simplecache; best of "
            f"{args.runs})",
            ["reader", *(h for mode in MODES for h in (f"{mode} MB/s", "x raw", "x simple"))],
            rows,
        )
        ssd: dict[str, Any] = large.get("edgecache SSD (mem_quota=0)") or {}
        for mode in MODES if ssd else ():
            vr, vs = ssd[mode]["vs_raw"], ssd[mode]["vs_simplecache"]
            met = vr >= 0.85 and vs >= 1.0
            verdicts.append(
                f"SSD warm, {mode}: {vr:.2f}x raw, {vs:.2f}x simplecache "
                f"(target >= 0.85x raw and >= 1x simplecache: {'met' if met else 'NOT met'})"
            )
        out["large_file"] = {"size_bytes": size, "read_sizes": READ_SIZES, "readers": large}

    if not args.skip_small:
        print(f"\nSmall files: {args.files:,} x {args.file_size:,} B, best of {args.runs}")
        with scratch_dir("small") as work:
            small = small_files_bench(work, args.files, args.file_size, args.runs, words)
        fc = small["fsspec filecache"]["us_per_file"]
        raw_us = small["raw open+read"]["us_per_file"]
        rows = []
        for name, entry in small.items():
            entry["speedup_vs_filecache"] = ratio(fc, entry["us_per_file"])
            entry["speedup_vs_raw"] = ratio(raw_us, entry["us_per_file"])
            entry["overhead_us_vs_raw"] = entry["us_per_file"] - raw_us
            rows.append(
                [
                    name,
                    entry["us_per_file"],
                    entry["files_per_s"],
                    entry["overhead_us_vs_raw"],
                    entry["speedup_vs_filecache"],
                    entry["speedup_vs_raw"],
                ]
            )
        print_table(
            f"Warm open+read of {args.files:,} files of {args.file_size:,} B (best of {args.runs})",
            ["reader", "µs/file", "files/s", "µs over raw", "x filecache", "x raw"],
            rows,
        )
        for name in ("edgecache MEM", "edgecache SSD (mem_quota=0)"):
            if name not in small:
                continue
            speedup = small[name]["speedup_vs_filecache"]
            verdicts.append(
                f"small files, {name}: {speedup:.2f}x filecache "
                f"(target >= 3x: {'met' if speedup >= 3 else 'NOT met'})"
            )
        out["small_files"] = {"count": args.files, "file_bytes": args.file_size, "readers": small}

    print("\nTargets (design section 5):")
    for line in verdicts:
        print(f"  {line}")
    out["verdicts"] = verdicts
    write_results("cache_bench", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
