"""WAN benchmark: cold reads from S3 over an emulated WAN, edgecache against plain s3fs and fsspec.

Three processes, so that no two of them share an interpreter lock: moto's S3 server
(``python -m moto.server``, with ranged GETs patched to read only their range, as S3 does: see
``_wan._MOTO_RANGED_GETS``; ``--moto-stock`` for moto as shipped), the WAN emulator
(:mod:`edgecache_testservers.wan`, a TCP proxy with a delay line and a token bucket) in front of it,
and this script as the client. The data is put into moto directly (boto3, not through the WAN):
one large object (256 MiB) and 1,000 x 64 KiB objects under one prefix. For each link profile
(30 ms RTT / 100 Mbit/s and 80 ms / 20 Mbit/s), every measurement starts cold (a fresh cache
directory, fresh filesystem objects and connections) and is reported as absolute time, as a
ratio of the link capacity (payload bytes / (link rate x time)) and with the bytes the emulated
link carried:

1. sequential read of the large object in 8 MiB reads: edgecache, plain s3fs, fsspec
   ``simplecache::s3://`` (target: edgecache >= 0.9x link);
2. a training loop opening and reading the small files one after another in name order:
   edgecache vs plain s3fs, ms per file (target: >= 3x plain s3fs);
3. ``fs.cat(list_of_paths)`` of the small files: edgecache vs s3fs (target: >= 0.85x link);
4. prefetch (:func:`edgecache.fs.prefetch.run_prefetch`) of the large object and of the small
   files vs ``S3FileSystem.get`` of the same prefix to a local directory (target: >= 0.85x link);
5. sparse reads of a 64 MiB object: 20 ranges of 4 KiB at random offsets (a Parquet footer, zarr
   or HDF5 index, random sampling), one ``cat_file`` each (``sparse_cat``) and all in one
   ``cat_ranges`` (``sparse_ranges``), vs plain s3fs (target: >= 1x s3fs);
6. metadata walks over a zarr-like tree of 400 objects in nested directories: ``fs.find`` of the
   tree and ``fs.glob`` of ``tree/**/.zarray``, vs plain s3fs (target: >= 1x s3fs).

Peers are timed interleaved; the CPU seconds of the three processes are recorded for every run,
and the small files are also fetched straight from moto (no WAN, no cache) as the ceiling this
machine allows. Run: ``.venv/bin/python bench/wan_bench.py`` (both profiles, median of 3 on
the fast profile and 1 run on the slow one; about 31 minutes, most of it the 20 Mbit/s link moving
256 MiB objects and plain s3fs's file loop), or ``--quick`` (small sizes, one repeat, under 3
minutes). Results: ``bench/results/wan.json``. ``--wan-in-process`` runs the emulator on a
thread of this process instead, to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsspec
import fsspec.asyn
import s3fs
from _common import MiB, compare, print_table, ratio, scratch_dir, write_results
from _wan import KEY, SECRET, Link, RandomReader, cpu_seconds, moto_server, s3_client
from edgecache_testservers.wan import WANProfile

from edgecache.fs import EdgeCacheFileSystem
from edgecache.fs.prefetch import run_prefetch

BUCKET = "wan-bench"
LARGE_KEY = "large/object.bin"
SMALL_PREFIX = "small"
SPARSE_KEY = "sparse/object.bin"
SPARSE_RANGES = 20
SPARSE_RANGE_BYTES = 4096
TREE_PREFIX = "tree"
READ_BYTES = 8 * MiB
"""Size of each ``read()`` call in the sequential read (the brief: an 8 MiB loop)."""

PROFILES = {
    "30ms-100mbit": WANProfile(rtt_ms=30, mbit=100),
    "80ms-20mbit": WANProfile(rtt_ms=80, mbit=20),
    "120ms-25mbit": WANProfile(rtt_ms=120, mbit=25),
}
"""``120ms-25mbit`` is not in ``all``: the round trips per byte of ``30ms-100mbit`` (a 64 KiB
object takes as many round trips' worth of requests in flight to fill it) at a quarter of its
rate, so the three processes need a quarter of the CPU per second. When the machine is shared
and moto alone cannot serve 100 Mbit/s of small objects (``direct to moto``, printed first),
it still shows what requests in flight do for small objects."""
ALL_PROFILES = ("30ms-100mbit", "80ms-20mbit")


def tree_names(count: int) -> list[str]:
    """Keys of a zarr-like store of ``count`` objects: a group of arrays, each with its metadata
    and chunks nested two levels deep (``tree/a0/.zarray``, ``tree/a0/3/7``...)."""
    names = [f"{TREE_PREFIX}/.zgroup"]
    arrays = max(1, count // 100)
    for a in range(arrays):
        names += [f"{TREE_PREFIX}/a{a}/.zarray", f"{TREE_PREFIX}/a{a}/.zattrs"]
    i = 0
    while len(names) < count:
        a, rest = i % arrays, i // arrays
        names.append(f"{TREE_PREFIX}/a{a}/{rest // 10}/{rest % 10}")
        i += 1
    return names


def seed(
    endpoint: str,
    *,
    large_bytes: int,
    small_count: int,
    small_bytes: int,
    sparse_bytes: int,
    tree_count: int,
) -> list[str]:
    """Create the bucket and objects straight in moto; returns the small files' paths, sorted."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.upload_fileobj(RandomReader(large_bytes), BUCKET, LARGE_KEY)
    client.upload_fileobj(RandomReader(sparse_bytes), BUCKET, SPARSE_KEY)
    names = [f"{SMALL_PREFIX}/file-{i:05d}.bin" for i in range(small_count)]
    sizes = {name: small_bytes for name in names}
    sizes.update({name: 1024 for name in tree_names(tree_count)})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda name: client.put_object(
                    Bucket=BUCKET, Key=name, Body=os.urandom(sizes[name])
                ),
                sizes,
            )
        )
    return [f"{BUCKET}/{name}" for name in names]


# --- the clients ---
@dataclass
class Clients:
    """Builds fresh (cold) filesystems pointed at the emulated link."""

    endpoint: str
    scratch: str
    moto_pid: int
    cache_options: dict[str, str] = field(default_factory=dict)
    """Storage options of every edgecache filesystem (``--set``: A/B runs of one setting)."""
    made: list[Any] = field(default_factory=list)

    @property
    def s3_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET}

    def s3fs(self) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(**self.s3_options, skip_instance_cache=True)

    def simplecache(self) -> Any:
        return fsspec.filesystem(
            "simplecache",
            target_protocol="s3",
            target_options={**self.s3_options, "skip_instance_cache": True},
            cache_storage=tempfile.mkdtemp(dir=self.scratch),
            skip_instance_cache=True,
        )

    def edgecache(self) -> EdgeCacheFileSystem:
        # The backend builds its S3FileSystem through fsspec's instance cache: clear it so
        # every run opens new connections, as the s3fs runs do.
        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem(
            "edgecache",
            target_protocol="s3",
            target_options=self.s3_options,
            cache_dir=tempfile.mkdtemp(dir=self.scratch),
            skip_instance_cache=True,
            **self.cache_options,
        )
        self.made.append(fs)
        return fs  # type: ignore[no-any-return]

    def release(self) -> None:
        """Close the cache objects of edgecache filesystems made so far and free the disk."""
        for fs in self.made:
            fs.engine.close()
        self.made.clear()
        for entry in os.listdir(self.scratch):
            shutil.rmtree(os.path.join(self.scratch, entry), ignore_errors=True)


# --- measurements ---
@dataclass
class Result:
    benchmark: str
    client: str
    payload_bytes: int
    files: int
    seconds: float
    all_seconds: list[float]
    wan_bytes_down: int
    wan_bytes_up: int
    connections: int
    link_bytes_per_second: float
    cpu_seconds: dict[str, float]
    """CPU time each process spent during the run: where a CPU-bound run's time went."""

    @property
    def link_ratio(self) -> float:
        return self.payload_bytes / (self.link_bytes_per_second * self.seconds)

    @property
    def ms_per_file(self) -> float:
        return 1000 * self.seconds / self.files

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "client": self.client,
            "payload_bytes": self.payload_bytes,
            "files": self.files,
            "seconds_median": round(self.seconds, 4),
            "seconds_best": round(min(self.all_seconds), 4),
            "seconds_all": [round(s, 4) for s in self.all_seconds],
            "link_ratio": round(self.link_ratio, 4),
            "ms_per_file": round(self.ms_per_file, 3),
            "wan_bytes_down": self.wan_bytes_down,
            "wan_bytes_up": self.wan_bytes_up,
            "wan_bytes_over_payload": round(
                (self.wan_bytes_down + self.wan_bytes_up) / self.payload_bytes, 4
            ),
            "connections": self.connections,
            "cpu_seconds": {k: round(v, 2) for k, v in self.cpu_seconds.items()},
        }


def measure(
    link: Link,
    clients: Clients,
    benchmark: str,
    runs: Mapping[str, Callable[[], int]],
    *,
    files: int,
    rounds: int,
) -> list[Result]:
    """Median of ``rounds`` cold runs of each client's ``run`` (which returns the payload bytes
    it read), clients interleaved round by round (:func:`_common.compare`).

    Before each run, untimed: the previous run's cache directories are removed. Building the
    cold filesystem happens inside ``run`` but costs no WAN traffic. The emulator's byte
    counters and every process's CPU time are read around each run; the median run's are kept
    (the lower middle one of an even number of runs, so that it is a run that happened).
    """
    processes = {"client": None, "moto": clients.moto_pid, "wan": link.pid}
    if link.pid is None:
        del processes["wan"]  # its CPU is the client's
    records: dict[str, list[tuple[int, dict[str, int], dict[str, float]]]] = {c: [] for c in runs}

    def timed(client: str, run: Callable[[], int]) -> Callable[[], None]:
        def once() -> None:
            link.reset()
            connections = link.counters()["connections"]
            cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            payload = run()
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
            after = link.counters()
            records[client].append(
                (payload, {**after, "connections": after["connections"] - connections}, cpu)
            )

        return once

    timings = compare(
        {client: timed(client, run) for client, run in runs.items()},
        rounds=rounds,
        setup={client: clients.release for client in runs},
    )
    clients.release()
    results = []
    for client, (_, times) in timings.items():
        seconds = statistics.median_low(times)
        payload, counters, cpu = records[client][times.index(seconds)]
        result = Result(
            benchmark,
            client,
            payload,
            files,
            seconds,
            times,
            counters["down"],
            counters["up"],
            counters["connections"],
            link.profile.down_bytes_per_second,
            cpu,
        )
        print(
            f"  {benchmark:<14} {client:<12} median {result.seconds:7.2f} s of "
            f"{[round(t, 2) for t in times]}  {result.link_ratio:.3f}x link  "
            f"WAN {result.wan_bytes_down / MiB:.1f} MiB down  CPU s "
            + " ".join(f"{k} {v:.1f}" for k, v in result.cpu_seconds.items()),
            flush=True,
        )
        results.append(result)
    return results


def sequential_read(fs: Any, path: str) -> int:
    total = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            total += len(chunk)
    return total


def file_loop(fs: Any, paths: list[str]) -> int:
    total = 0
    for path in paths:
        with fs.open(path, "rb") as f:
            total += len(f.read())
    return total


def cat_many(fs: Any, paths: list[str]) -> int:
    return sum(len(v) for v in fs.cat(paths).values())


def sparse_ranges(size: int) -> list[tuple[int, int]]:
    """The same ``SPARSE_RANGES`` random 4 KiB ranges of an object of ``size`` bytes every run."""
    rng = random.Random(9)
    starts = [rng.randrange(0, size - SPARSE_RANGE_BYTES) for _ in range(SPARSE_RANGES)]
    return [(s, s + SPARSE_RANGE_BYTES) for s in starts]


def sparse_cat(fs: Any, path: str, ranges: list[tuple[int, int]]) -> int:
    # Keywords: s3fs takes a version id as its second positional argument.
    return sum(len(fs.cat_file(path, start=start, end=end)) for start, end in ranges)


def sparse_cat_ranges(fs: Any, path: str, ranges: list[tuple[int, int]]) -> int:
    data = fs.cat_ranges([path] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges])
    return sum(len(d) for d in data)


def listed(names: list[str], expected: list[str]) -> int:
    """The count of ``names`` (the payload of a metadata walk), after checking them."""
    if sorted(n.removeprefix("s3://") for n in names) != expected:
        raise RuntimeError(f"listing differs from the seeded tree: {sorted(names)[:5]}...")
    return len(names)


def direct_capacity(
    endpoint: str, moto_pid: int, paths: list[str], *, in_flight: int = 16
) -> dict[str, float]:
    """How fast this machine's moto and botocore serve the small files with no WAN at all.

    Ranged GETs (as edgecache sends them) straight to moto, ``in_flight`` at a time (edgecache's
    default ``fetch_concurrency``), no cache. This is the ceiling any client of this test setup
    can reach on small files, whatever the link: when it is below a link's rate, small-file
    benchmarks over that link measure the machine's CPU, not the link.
    """
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        key=KEY,
        secret=SECRET,
        skip_instance_cache=True,
        config_kwargs={"max_pool_connections": 32},
    )

    async def fetch_all() -> int:
        await fs.set_session()
        gate = asyncio.Semaphore(in_flight)

        async def one(path: str) -> int:
            bucket, key, _ = fs.split_path(path)
            async with gate:
                response = await fs._call_s3(
                    "get_object", Bucket=bucket, Key=key, Range="bytes=0-65535"
                )
                body = response["Body"]
                try:
                    return len(await body.read())
                finally:
                    body.close()

        return sum(await asyncio.gather(*(one(p) for p in paths)))

    client_before, moto_before = cpu_seconds(None), cpu_seconds(moto_pid)
    started = time.perf_counter()
    payload = fsspec.asyn.sync(fs.loop, fetch_all)
    seconds = time.perf_counter() - started
    result = {
        "files": len(paths),
        "payload_bytes": payload,
        "seconds": round(seconds, 3),
        "files_per_second": round(len(paths) / seconds, 1),
        "mbit_per_second": round(payload * 8 / seconds / 1e6, 1),
        "client_cpu_ms_per_file": round(1000 * (cpu_seconds(None) - client_before) / len(paths), 2),
        "moto_cpu_ms_per_file": round(1000 * (cpu_seconds(moto_pid) - moto_before) / len(paths), 2),
    }
    print(
        f"direct to moto (no WAN, no cache), {len(paths)} small files {in_flight} at a time: "
        f"{result['files_per_second']:.0f} files/s = {result['mbit_per_second']:.0f} Mbit/s; "
        f"CPU per file: client {result['client_cpu_ms_per_file']} ms, "
        f"moto {result['moto_cpu_ms_per_file']} ms",
        flush=True,
    )
    return result


def local_bytes(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    )


def run_profile(
    name: str,
    link: Link,
    clients: Clients,
    small_paths: list[str],
    *,
    sparse_bytes: int,
    tree_count: int,
    repeat: int,
    loop_repeat: int,
    only: set[str],
    failures: dict[str, str],
) -> list[Result]:
    """Every benchmark of one link; one that raises is recorded in ``failures`` (a benchmark
    that exposes a bug must not cost the numbers of the others)."""
    large = f"s3://{BUCKET}/{LARGE_KEY}"
    small = [f"s3://{p}" for p in small_paths]
    prefix = f"s3://{BUCKET}/{SMALL_PREFIX}/"
    n = len(small)
    print(f"\nprofile {name}: {link.profile.rtt_ms:g} ms RTT, {link.profile.mbit:g} Mbit/s")
    results: list[Result] = []

    def add(benchmark: str, runs: dict[str, Callable[[], int]], files: int, rounds: int) -> None:
        if only and benchmark not in only:
            return
        try:
            results.extend(measure(link, clients, benchmark, runs, files=files, rounds=rounds))
        except Exception as exc:
            failures[benchmark] = f"{type(exc).__name__}: {exc}"[:1000]
            print(f"  {benchmark:<14} FAILED: {failures[benchmark]}", flush=True)
            clients.release()

    def prefetch(target: str) -> int:
        report = run_prefetch(clients.edgecache(), [target])
        if not report.ok:
            raise RuntimeError(f"prefetch of {target} failed: {report.failed}")
        return report.bytes_loaded

    def get(target: str, recursive: bool) -> int:
        destination = tempfile.mkdtemp(dir=clients.scratch)
        clients.s3fs().get(target, destination + "/", recursive=recursive)
        return local_bytes(destination)

    # 1. sequential read of the large object.
    add(
        "large_read",
        {
            "edgecache": lambda: sequential_read(clients.edgecache(), large),
            "s3fs": lambda: sequential_read(clients.s3fs(), large),
            "simplecache": lambda: sequential_read(clients.simplecache(), large),
        },
        1,
        repeat,
    )
    # 2. training loop over the small files, in name order (plain s3fs: see --loop-repeat).
    add("small_loop", {"edgecache": lambda: file_loop(clients.edgecache(), small)}, n, repeat)
    add("small_loop", {"s3fs": lambda: file_loop(clients.s3fs(), small)}, n, loop_repeat)
    # 3. cat of the list of small files.
    add(
        "small_cat",
        {
            "edgecache": lambda: cat_many(clients.edgecache(), small),
            "s3fs": lambda: cat_many(clients.s3fs(), small),
        },
        n,
        repeat,
    )
    # 4. prefetch vs s3fs.get of the same prefix.
    add(
        "prefetch_large",
        {"edgecache": lambda: prefetch(large), "s3fs.get": lambda: get(large, False)},
        1,
        repeat,
    )
    add(
        "prefetch_small",
        {"edgecache": lambda: prefetch(prefix), "s3fs.get": lambda: get(prefix, True)},
        n,
        repeat,
    )
    # 5. sparse reads: small ranges at random offsets, one call each, then one cat_ranges.
    sparse = f"s3://{BUCKET}/{SPARSE_KEY}"
    ranges = sparse_ranges(sparse_bytes)
    add(
        "sparse_cat",
        {
            "edgecache": lambda: sparse_cat(clients.edgecache(), sparse, ranges),
            "s3fs": lambda: sparse_cat(clients.s3fs(), sparse, ranges),
        },
        len(ranges),
        repeat,
    )
    add(
        "sparse_ranges",
        {
            "edgecache": lambda: sparse_cat_ranges(clients.edgecache(), sparse, ranges),
            "s3fs": lambda: sparse_cat_ranges(clients.s3fs(), sparse, ranges),
        },
        len(ranges),
        repeat,
    )
    # 6. metadata walks over a nested tree (payload: the number of names, checked).
    tree = f"s3://{BUCKET}/{TREE_PREFIX}"
    names = [f"{BUCKET}/{name}" for name in tree_names(tree_count)]
    zarrays = sorted(n for n in names if n.endswith("/.zarray"))
    # A URL, as users write it (through edgecache a URL pattern once matched nothing).
    pattern = f"s3://{BUCKET}/{TREE_PREFIX}/**/.zarray"
    add(
        "find",
        {
            "edgecache": lambda: listed(clients.edgecache().find(tree), sorted(names)),
            "s3fs": lambda: listed(clients.s3fs().find(tree), sorted(names)),
        },
        tree_count,
        repeat,
    )
    add(
        "glob",
        {
            "edgecache": lambda: listed(clients.edgecache().glob(pattern), zarrays),
            "s3fs": lambda: listed(clients.s3fs().glob(pattern), zarrays),
        },
        tree_count,
        repeat,
    )
    return results


# --- report ---
TARGETS = {
    "large_read": ("link", 0.9),
    "small_loop": ("vs_s3fs", 3.0),
    "small_cat": ("link", 0.85),
    "prefetch_large": ("link", 0.85),
    "prefetch_small": ("link", 0.85),
    "sparse_cat": ("vs_s3fs", 1.0),
    "sparse_ranges": ("vs_s3fs", 1.0),
    "find": ("vs_s3fs", 1.0),
    "glob": ("vs_s3fs", 1.0),
}


def report(name: str, results: list[Result]) -> list[dict[str, Any]]:
    rows = []
    verdicts: list[dict[str, Any]] = []
    by = {(r.benchmark, r.client): r for r in results}
    for r in results:
        baseline = by.get((r.benchmark, "s3fs")) or by.get((r.benchmark, "s3fs.get"))
        speedup = ratio(baseline.seconds, r.seconds) if baseline else None
        rows.append(
            [
                f"{r.benchmark} / {r.client}",
                r.payload_bytes / MiB,
                r.seconds,
                r.ms_per_file if r.files > 1 else None,
                r.payload_bytes / r.seconds / 1e6 * 8,
                r.link_ratio,
                speedup if r.client == "edgecache" else None,
                (r.wan_bytes_down + r.wan_bytes_up) / r.payload_bytes,
                r.connections,
            ]
        )
        if r.client == "edgecache":
            kind, goal = TARGETS[r.benchmark]
            value = r.link_ratio if kind == "link" else speedup
            verdicts.append(
                {
                    "profile": name,
                    "benchmark": r.benchmark,
                    "measure": "edgecache x link" if kind == "link" else "edgecache / s3fs speed",
                    "target": goal,
                    "value": round(value, 3) if value is not None else None,
                    "met": value is not None and value >= goal,
                }
            )
    print_table(
        f"{name}: cold, median of runs (ratio of link = payload / (link rate x time))",
        [
            "benchmark / client",
            "MiB",
            "s",
            "ms/file",
            "Mbit/s",
            "x link",
            "x s3fs",
            "WAN/payload",
            "conns",
        ],
        rows,
    )
    print_table(
        f"{name}: targets",
        ["benchmark", "measure", "target", "value", "met"],
        [
            [v["benchmark"], v["measure"], v["target"], v["value"], "yes" if v["met"] else "NO"]
            for v in verdicts
        ],
    )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--small-count", type=int, default=1000)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--sparse-mib", type=int, default=64, help="object of the sparse reads")
    parser.add_argument("--tree-objects", type=int, default=400, help="objects of find/glob")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="cold runs per measurement, the median reported "
        "(default: 3 on 30ms-100mbit, 1 on the slow 80ms-20mbit link)",
    )
    parser.add_argument(
        "--loop-repeat",
        type=int,
        default=None,
        help="runs of the plain-s3fs file loop, the slowest baseline (default: 1; 1,000 files "
        "already average out, and three runs would take 4-13 minutes)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated benchmarks to run (of {', '.join(TARGETS)}; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="32 MiB, 200 files, one run")
    parser.add_argument(
        "--wan-in-process",
        action="store_true",
        help="run the emulator on a thread of this process (shares the GIL with the client)",
    )
    parser.add_argument(
        "--moto-stock",
        action="store_true",
        help="moto as shipped: every ranged GET reads the whole object "
        "(see _wan._MOTO_RANGED_GETS)",
    )
    parser.add_argument("--output", default="wan", help="results name under bench/results/")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a storage option of every edgecache filesystem (repeatable), e.g. "
        "background_lead=0 to compare a setting with its default",
    )
    args = parser.parse_args()
    cache_options = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(cache_options) != len(args.set):
        parser.error("--set takes OPTION=VALUE")
    if args.quick:
        args.large_mib, args.small_count = min(args.large_mib, 32), min(args.small_count, 200)
        args.repeat = args.repeat or 1
    unknown = {b for b in args.only.split(",") if b} - set(TARGETS)
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))}")
    profiles = list(ALL_PROFILES) if args.profile == "all" else [args.profile]

    started = time.monotonic()
    all_results: dict[str, Any] = {}
    verdicts: list[dict[str, Any]] = []
    with moto_server(stock=args.moto_stock) as (endpoint, moto_pid), scratch_dir("wan") as scratch:
        print(
            f"moto at {endpoint}; seeding {args.large_mib} MiB + "
            f"{args.small_count} x {args.small_kib} KiB",
            flush=True,
        )
        small_paths = seed(
            endpoint,
            large_bytes=args.large_mib * MiB,
            small_count=args.small_count,
            small_bytes=args.small_kib * 1024,
            sparse_bytes=args.sparse_mib * MiB,
            tree_count=args.tree_objects,
        )
        capacity = max(
            (direct_capacity(endpoint, moto_pid, small_paths) for _ in range(2)),
            key=lambda r: r["files_per_second"],
        )
        for name in profiles:
            profile = PROFILES[name]
            repeat = args.repeat or (3 if profile.mbit >= 100 else 1)
            load_before = os.getloadavg()[0]
            link = Link(endpoint, profile, in_process=args.wan_in_process)
            clients = Clients(link.endpoint, scratch, moto_pid, cache_options)
            failures: dict[str, str] = {}
            try:
                results = run_profile(
                    name,
                    link,
                    clients,
                    small_paths,
                    sparse_bytes=args.sparse_mib * MiB,
                    tree_count=args.tree_objects,
                    repeat=repeat,
                    loop_repeat=args.loop_repeat or 1,
                    only={b for b in args.only.split(",") if b},
                    failures=failures,
                )
            finally:
                clients.release()
                link.close()
            verdicts += report(name, results)
            for benchmark, error in failures.items():
                print(f"{benchmark}: FAILED, no numbers: {error}")
                verdicts.append(
                    {"profile": name, "benchmark": benchmark, "met": False, "error": error}
                )
            ceiling = capacity["mbit_per_second"] / profile.mbit
            print(
                f"small files served straight from moto (no WAN, no cache): {ceiling:.2f}x of "
                "this link: the ceiling of the small-file benchmarks on this machine"
            )
            all_results[name] = {
                "rtt_ms": profile.rtt_ms,
                "mbit": profile.mbit,
                "repeat": repeat,
                "direct_to_moto_x_link": round(ceiling, 3),
                "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                "results": [r.as_dict() for r in results],
                "failures": failures,
            }
    elapsed = time.monotonic() - started
    print(f"\ntotal {elapsed:.0f} s")
    write_results(
        args.output,
        {
            "command": "python bench/wan_bench.py " + " ".join(sys.argv[1:]),
            "config": {
                "large_bytes": args.large_mib * MiB,
                "small_count": args.small_count,
                "cache_options": cache_options,
                "small_bytes": args.small_kib * 1024,
                "sparse_bytes": args.sparse_mib * MiB,
                "sparse_ranges": f"{SPARSE_RANGES} x {SPARSE_RANGE_BYTES} B",
                "tree_objects": args.tree_objects,
                "read_bytes": READ_BYTES,
                "wan_emulator": "thread in client process"
                if args.wan_in_process
                else "separate process",
                "moto": "separate process, "
                + ("stock" if args.moto_stock else "ranged GETs read only their range"),
            },
            "direct_to_moto_small_files": capacity,
            "profiles": all_results,
            "targets": verdicts,
            "elapsed_seconds": round(elapsed, 1),
        },
    )


if __name__ == "__main__":
    main()
