"""Warm reads through edgecache vs a raw local read and fsspec's simplecache/filecache/blockcache.

Command::

    .venv/bin/python bench/cache_bench.py                  # 256 MiB file + 10,000 x 16 KiB files
    .venv/bin/python bench/cache_bench.py --size 64 --files 2000 --runs 3    # a quicker run

Everything reads local files (the ``file`` backend), so what is measured is each cache's own
cost on a warm read, which is what design section 5 sets targets for:

1. **Large file** (default 256 MiB of random bytes, so LZ4 ``auto`` stores blocks raw): read
   whole with one ``f.read()`` and in ``f.read(n)`` calls of n = 4 MiB, 1 MiB and 64 KiB (the
   pieces pyarrow, h5py and shard readers ask for), median of ``--runs``, MB/s:

   * ``raw``: ``open(path, "rb")`` on the source file (in the OS page cache);
   * ``simplecache::``, ``filecache::``, ``blockcache::`` over ``file://`` (fsspec);
   * edgecache, SSD tier: ``mem_quota=0``, every block is read from its block file and its
     checksum verified on each read;
   * edgecache, SSD tier into an empty MEM tier: MEM emptied before each run (a fresh process),
     so each block comes from its SSD file once and is promoted to MEM;
   * edgecache, MEM tier: ``mem_quota=512MiB``, blocks already in MEM;
   * as users call them: ``fsspec.open("simplecache::file://...")`` and
     ``fsspec.open("edgecache::file://...", edgecache={"cache_dir": ..., "mem_quota": "1MiB"})``
     (the SSD tier with a MEM tier too small to hold a block: issue #9's case).

   Each peer reads the file once before timing (warm), and its bytes are checked once against
   the source. Peers are timed interleaved (one run of each, ``--runs`` times over), so load
   from other processes falls on all of them alike.

2. **Small files** (default 10,000 x 16 KiB): ``open`` + ``read()`` of each file in turn, µs per
   file, through raw ``open``, ``simplecache``, ``filecache`` (warmed with one batched ``cat``,
   then read once one by one), and edgecache (MEM tier; SSD tier with ``mem_quota=0``;
   ``fs.cat_file`` on the MEM tier), each on one filesystem object; and as a training loop calls
   them, ``fsspec.open(url)`` per file (filecache, edgecache default, edgecache ``mem_quota=0``),
   and the floor of that way: a chained filesystem that only opens the local file, so its
   ``x filecache`` is the most any cache can reach through ``fsspec.open`` per file. Then the
   same files in a *fresh process* (``bench/_fresh_pass.py``, one per run: a new epoch's
   DataLoader workers, a script run again): raw, filecache and edgecache's default, on one
   object and through ``fsspec.open``, timed from before the filesystem is made (its start-up
   counts) to the last file.

Readers opened with ``fsspec.open`` are compared with their fsspec peer opened the same way.
Targets (design section 5, issue #9): SSD warm >= 0.85x raw and >= simplecache in every read
size; small files >= 3x filecache, with the MEM tier and from the SSD tier alone.
``--skip-large``/``--skip-small`` run one part, ``--readers`` a subset of readers.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import fsspec
from _common import MiB, compare, interleave, print_table, ratio, scratch_dir, write_results
from fsspec.implementations.chained import ChainedFileSystem

Reader = Callable[[], object]
READ_SIZES = {"4MiB": 4 * MiB, "1MiB": MiB, "64KiB": 64 * 1024}
"""The ``f.read(n)`` sizes measured besides one whole-file ``f.read()``."""
MODES = ("whole", *READ_SIZES)
USER_PATH = ", fsspec.open"
"""Suffix of the readers opened the way users call them; their ratios are against the fsspec
peer opened the same way (``fsspec.open`` per call costs 0.1-0.3 ms whichever cache is behind)."""
TARGET_SSD = "edgecache SSD (mem_quota=1MiB)" + USER_PATH


def timings(best: float, times: list[float]) -> dict[str, Any]:
    """What is kept of one reader's runs: the median (reported), the best and every run."""
    return {"seconds_median": statistics.median(times), "seconds_best": best, "seconds_all": times}


def peer_of(name: str, reference: str, readers: dict[str, Any]) -> dict[str, Any]:
    """The reference reader for ``name``: its ``fsspec.open`` form when ``name`` is one."""
    user = reference + USER_PATH
    chosen: dict[str, Any] = readers[user if name.endswith(USER_PATH) else reference]
    return chosen


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
    """An edgecache filesystem over ``file://``. Give each store setting (``mem_quota``) a cache
    directory of its own: a process opens a directory once, with its first opener's quotas."""
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
    always = ("raw", "simplecache", "filecache", "floor")
    return not words or any(w in name for w in (*words, *always))


def large_file_bench(work: str, size: int, runs: int, words: list[str]) -> dict[str, Any]:
    src = os.path.join(work, "large.bin")
    expected = write_random(src, size)
    cache_dir = os.path.join(work, "edgecache-{}")
    simple = fsspec.filesystem(
        "simplecache", target_protocol="file", cache_storage=os.path.join(work, "simplecache")
    )
    whole = fsspec.filesystem(
        "filecache", target_protocol="file", cache_storage=os.path.join(work, "filecache")
    )
    block = fsspec.filesystem(
        "blockcache", target_protocol="file", cache_storage=os.path.join(work, "blockcache")
    )
    ec_ssd = edgecache_fs(cache_dir.format("ssd"), mem_quota="0")
    ec_mem = edgecache_fs(cache_dir.format("mem"), mem_quota="512MiB")
    # What a fresh process gets: a warm directory, MEM emptied before each run.
    ec_fresh = edgecache_fs(cache_dir.format("fresh"), mem_quota="512MiB")
    ec_options = {"cache_dir": cache_dir.format("user"), "mem_quota": "1MiB"}
    simple_options = {"cache_storage": os.path.join(work, "simplecache-user")}

    peers: dict[str, Callable[[], Any]] = {
        "raw local read": lambda: open(src, "rb"),  # noqa: SIM115 (opened in a with)
        "fsspec simplecache": lambda: simple.open(src, "rb"),
        "fsspec filecache": lambda: whole.open(src, "rb"),
        "fsspec blockcache": lambda: block.open(src, "rb"),
        "edgecache SSD (mem_quota=0)": lambda: ec_ssd.open(src, "rb"),
        "edgecache SSD -> empty MEM": lambda: ec_fresh.open(src, "rb"),
        "edgecache MEM": lambda: ec_mem.open(src, "rb"),
        "fsspec simplecache" + USER_PATH: lambda: fsspec.open(
            f"simplecache::file://{src}", "rb", simplecache=simple_options
        ).open(),
        TARGET_SSD: lambda: fsspec.open(
            f"edgecache::file://{src}", "rb", edgecache=ec_options
        ).open(),
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
            entry = results[name][mode] = timings(best, times)
            entry["MB_s"] = size / entry["seconds_median"] / 1e6
    for fs in (ec_ssd, ec_mem, ec_fresh):
        fs.cache.flush()
    return results


# --- small files -------------------------------------------------------------------------------
class LocalBehindOpen(ChainedFileSystem):  # type: ignore[misc]
    """The least a filesystem reached by ``fsspec.open("PROTOCOL::file://...")`` can cost: a
    chained filesystem whose files are the local files themselves (fsspec's own per-call work,
    then a plain ``open``)."""

    protocol = "benchfloor"
    _strip_tokenize_options = ("fo",)

    def __init__(self, target_protocol: Any = None, target_options: Any = None, **kwargs: Any):
        super().__init__()

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        return open(path, mode)


FLOOR = "floor: the local file itself"
"""The reader that shows how far ``fsspec.open`` per file lets any cache go."""


def small_files_bench(
    work: str, count: int, file_size: int, runs: int, words: list[str]
) -> dict[str, Any]:
    src_dir = os.path.join(work, "small")
    os.makedirs(src_dir)
    paths = [os.path.join(src_dir, f"{i:06d}.bin") for i in range(count)]
    for p in paths:
        with open(p, "wb") as f:
            f.write(os.urandom(file_size))
    cache_dir = os.path.join(work, "edgecache-small-{}")
    simple = fsspec.filesystem(
        "simplecache", target_protocol="file", cache_storage=os.path.join(work, "sc-small")
    )
    whole = fsspec.filesystem(
        "filecache", target_protocol="file", cache_storage=os.path.join(work, "fc-small")
    )
    ec_mem = edgecache_fs(cache_dir.format("default"))
    ec_ssd = edgecache_fs(cache_dir.format("ssd"), mem_quota="0")

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

    def user_loop(protocol: str, **options: Any) -> Callable[[], int]:
        """A training loop's ``Dataset.__getitem__``: ``fsspec.open(url)`` per file."""
        return loop(
            lambda p: fsspec.open(f"{protocol}::file://{p}", "rb", **{protocol: options}).open()
        )

    fsspec.register_implementation(LocalBehindOpen.protocol, LocalBehindOpen, clobber=True)
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
        "fsspec filecache" + USER_PATH: user_loop(
            "filecache", cache_storage=os.path.join(work, "fc-small")
        ),
        FLOOR + USER_PATH: user_loop("benchfloor"),
        "edgecache default" + USER_PATH: user_loop(
            "edgecache", cache_dir=cache_dir.format("user-default")
        ),
        "edgecache SSD (mem_quota=0)" + USER_PATH: user_loop(
            "edgecache", cache_dir=cache_dir.format("user-ssd"), mem_quota="0"
        ),
    }
    readers = {name: run for name, run in readers.items() if wanted(name, words)}
    for name, run in readers.items():
        total = run()  # warm: every peer has read every file once
        if total != count * file_size:
            raise SystemExit(f"{name}: read {total} bytes, expected {count * file_size}")
    results: dict[str, Any] = {}
    for name, (best, times) in compare(readers, rounds=runs).items():
        entry = results[name] = timings(best, times)
        entry["us_per_file"] = 1e6 * entry["seconds_median"] / count
        entry["files_per_s"] = count / entry["seconds_median"]
    for fs in (ec_ssd, ec_mem):
        fs.cache.flush()
    # A process's first pass over files its caches hold (a new epoch's DataLoader workers, a
    # script run again): what the cache costs before anything of it is in the process.
    fresh_readers = {
        "raw open+read": ("raw", ""),
        "fsspec filecache": ("filecache", os.path.join(work, "fc-small")),
        "edgecache default": ("edgecache", cache_dir.format("default")),
        "fsspec filecache" + USER_PATH: ("filecache-open", os.path.join(work, "fc-small")),
        "edgecache default" + USER_PATH: ("edgecache-open", cache_dir.format("user-default")),
    }
    fresh = interleave(
        {
            FRESH + name: functools.partial(fresh_pass, reader, cache, src_dir, count * file_size)
            for name, (reader, cache) in fresh_readers.items()
            if wanted(name, words)
        },
        rounds=runs,
    )
    for name, times in fresh.items():
        entry = results[name] = timings(min(times), times)
        entry["us_per_file"] = 1e6 * entry["seconds_median"] / count
        entry["files_per_s"] = count / entry["seconds_median"]
    return results


FRESH = "fresh process: "
"""Prefix of the readers timed on their first pass in a process of their own."""


def fresh_pass(reader: str, cache: str, files_dir: str, expected: int) -> float:
    """Seconds of one pass by ``reader`` in a new process (``bench/_fresh_pass.py``)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fresh_pass.py")
    done = subprocess.run(
        [sys.executable, script, reader, cache, files_dir], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"fresh {reader}: exit {done.returncode}\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["bytes"] != expected:
        raise SystemExit(f"fresh {reader}: read {report['bytes']} bytes, expected {expected}")
    seconds: float = report["seconds"]
    return seconds


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="large file size in MiB")
    parser.add_argument("--files", type=int, default=10_000, help="number of small files")
    parser.add_argument("--file-size", type=int, default=16 * 1024, help="small file bytes")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per peer (median shown)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument(
        "--readers",
        default="",
        help="comma-separated words: time only readers whose name contains one of them "
        "(raw and simplecache always run: the ratios need them)",
    )
    parser.add_argument("--output", default="cache_bench", help="results name under bench/results")
    args = parser.parse_args(argv)

    words = [w for w in args.readers.split(",") if w]
    out: dict[str, Any] = {
        "runs": args.runs,
        "statistic": "median",
        "command": "python bench/cache_bench.py " + " ".join(sys.argv[1:]),
        "load_average_1min_before": os.getloadavg()[0],
    }
    verdicts: list[str] = []
    if not args.skip_large:
        size = args.size * MiB
        print(f"Large file: {args.size} MiB, median of {args.runs}", flush=True)
        with scratch_dir("large") as work:
            large = large_file_bench(work, size, args.runs, words)
        raw = large["raw local read"]
        rows = []
        for name, entry in large.items():
            simple = peer_of(name, "fsspec simplecache", large)
            row: list[Any] = [name]
            for mode in MODES:
                entry[mode]["vs_raw"] = ratio(entry[mode]["MB_s"], raw[mode]["MB_s"])
                entry[mode]["vs_simplecache"] = ratio(entry[mode]["MB_s"], simple[mode]["MB_s"])
                row += [entry[mode]["MB_s"], entry[mode]["vs_raw"], entry[mode]["vs_simplecache"]]
            rows.append(row)
        print_table(
            f"Warm sequential read of {args.size} MiB (MB/s, x raw, x simplecache opened the same "
            f"way; median of {args.runs})",
            ["reader", *(h for mode in MODES for h in (f"{mode} MB/s", "x raw", "x simple"))],
            rows,
        )
        for reader in ("edgecache SSD (mem_quota=0)", TARGET_SSD):
            ssd: dict[str, Any] = large.get(reader) or {}
            for mode in MODES if ssd else ():
                vr, vs = ssd[mode]["vs_raw"], ssd[mode]["vs_simplecache"]
                met = vr >= 0.85 and vs >= 1.0
                verdicts.append(
                    f"{reader}, {mode}: {vr:.2f}x raw, {vs:.2f}x simplecache "
                    f"(target >= 0.85x raw and >= 1x simplecache: {'met' if met else 'NOT met'})"
                )
        out["large_file"] = {"size_bytes": size, "read_sizes": READ_SIZES, "readers": large}

    if not args.skip_small:
        print(f"\nSmall files: {args.files:,} x {args.file_size:,} B, median of {args.runs}")
        with scratch_dir("small") as work:
            small = small_files_bench(work, args.files, args.file_size, args.runs, words)
        rows = []
        for name, entry in small.items():
            same_way = FRESH if name.startswith(FRESH) else ""  # its peers ran as it did
            raw_us = small[same_way + "raw open+read"]["us_per_file"]
            fc = peer_of(name, same_way + "fsspec filecache", small)["us_per_file"]
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
            f"Warm open+read of {args.files:,} files of {args.file_size:,} B (median of "
            f"{args.runs}; x filecache: filecache opened the same way)",
            ["reader", "µs/file", "files/s", "µs over raw", "x filecache", "x raw"],
            rows,
        )
        for name in (
            "edgecache MEM",
            "edgecache SSD (mem_quota=0)",
            "edgecache default" + USER_PATH,
            "edgecache SSD (mem_quota=0)" + USER_PATH,
            FRESH + "edgecache default",
            FRESH + "edgecache default" + USER_PATH,
        ):
            if name not in small:
                continue
            speedup = small[name]["speedup_vs_filecache"]
            verdicts.append(
                f"small files, {name}: {speedup:.2f}x filecache "
                f"(target >= 3x: {'met' if speedup >= 3 else 'NOT met'})"
            )
        if FLOOR + USER_PATH in small:
            verdicts.append(
                f"small files, {FLOOR + USER_PATH}: "
                f"{small[FLOOR + USER_PATH]['speedup_vs_filecache']:.2f}x filecache "
                "(no cache behind it: the most fsspec.open per file allows)"
            )
        out["small_files"] = {"count": args.files, "file_bytes": args.file_size, "readers": small}

    out["load_average_1min_after"] = os.getloadavg()[0]
    print(f"\nTargets (design section 5, issue #9); load average {os.getloadavg()}:")
    for line in verdicts:
        print(f"  {line}")
    out["verdicts"] = verdicts
    write_results(args.output, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
