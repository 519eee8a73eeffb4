"""WAN QoS: a reader's block latency with and without a concurrent DataLoad, with and without QoS.

Not a test: numbers for bench/README.md. moto's S3 server and the WAN emulator each run in a
process of their own (bench/_wan.py); the reader is this process, reading one cold object block
by block through ``fsspec.open("edgecache::s3://...")`` (``readahead_blocks=0``: each read is one
block's latency); the DataLoad is ``edgecache prefetch`` in another process on the same cache
directory (as the agent's DataLoad runs next to a pod's reader). Each case starts from an empty
cache directory, so every read is cold.

    .venv/bin/python bench/qos_bench.py [--runs 3] [--rtt-ms 30 --mbit 100] [--json FILE]

Cases: idle (no DataLoad) and loaded (the reader starts once the DataLoad has moved 16 MiB, and
only its reads made while the DataLoad still runs count), each with QoS (the default) and
without (``qos_enabled=false`` for both processes). Reported: p50 and p99 of the block latency
per case, the median over the runs. Target (design section 5): p50 while loading <= idle p50
plus one block time (block size / link rate).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec
from _wan import KEY, SECRET, Link, RandomReader, moto_server, s3_client
from edgecache_testservers.wan import WANProfile

BUCKET = "qos-bench"
MiB = 1024 * 1024
BLOCK = 4 * MiB
READER_BLOCKS = 12
LOAD_FILES, LOAD_FILE_BYTES = 16, 16 * MiB
"""256 MiB: about 21 s of a 100 Mbit/s link, longer than the reader's loaded phase."""
LOADING_AFTER_BYTES = 16 * MiB


def seed(endpoint: str) -> None:
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.upload_fileobj(RandomReader(READER_BLOCKS * BLOCK), BUCKET, "reader.bin")
    for i in range(LOAD_FILES):
        client.upload_fileobj(RandomReader(LOAD_FILE_BYTES), BUCKET, f"data/part{i:02d}.bin")


def read_blocks(link: Link, cache_dir: str, qos: bool, still_loading: Any = None) -> list[float]:
    """Block latencies of a cold read of reader.bin (while ``still_loading()``, if given)."""
    options = {
        "cache_dir": cache_dir,
        "block_size": BLOCK,
        "readahead_blocks": 0,
        "qos_enabled": qos,
    }
    s3 = {"endpoint_url": link.endpoint, "key": KEY, "secret": SECRET}
    latencies = []
    with fsspec.open(f"edgecache::s3://{BUCKET}/reader.bin", "rb", edgecache=options, s3=s3) as f:
        for _ in range(READER_BLOCKS):
            started = time.perf_counter()
            f.read(BLOCK)
            elapsed = time.perf_counter() - started
            if still_loading is not None and not still_loading():
                break  # the DataLoad ended during this read: it no longer counts
            latencies.append(elapsed)
    return latencies


def dataload(link: Link, cache_dir: str, qos: bool, settings: list[str]) -> subprocess.Popen[bytes]:
    extra = [arg for setting in settings for arg in ("--set", setting)]
    return subprocess.Popen(
        [
            sys.executable, "-m", "edgecache", "prefetch", f"s3://{BUCKET}/data",
            "--cache-dir", cache_dir, "--set", f"block_size={BLOCK}",
            "--set", f"qos_enabled={'true' if qos else 'false'}", *extra,
            "-o", f"endpoint_url={link.endpoint}", "-o", f"key={KEY}", "-o", f"secret={SECRET}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def one_case(link: Link, *, qos: bool, loaded: bool, settings: list[str]) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="qos-bench-") as cache_dir:
        if not loaded:
            return read_blocks(link, cache_dir, qos)
        link.reset()
        load = dataload(link, cache_dir, qos, settings)
        try:
            while link.counters()["down"] < LOADING_AFTER_BYTES:  # the DataLoad is on the link
                if load.poll() is not None:
                    raise RuntimeError("the DataLoad ended before it loaded anything")
                time.sleep(0.05)
            latencies = read_blocks(link, cache_dir, qos, lambda: load.poll() is None)
        finally:
            load.terminate()
            load.wait()
        return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": statistics.median(ordered), "p99": p99, "blocks": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--mbit", type=float, default=100.0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--dataload-set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="a cache option of the DataLoad process (repeatable), e.g. background_lead=0",
    )
    parser.add_argument(
        "--qos-only", action="store_true", help="only the cases with QoS (the target's)"
    )
    args = parser.parse_args()
    profile = WANProfile(rtt_ms=args.rtt_ms, mbit=args.mbit)
    block_seconds = BLOCK / profile.down_bytes_per_second
    cases = [("idle", True, False), ("loaded", True, True)]
    if not args.qos_only:
        cases += [("idle", False, False), ("loaded", False, True)]
    runs: dict[str, list[dict[str, float]]] = {}
    load_before = os.getloadavg()
    with moto_server() as (endpoint, _):
        seed(endpoint)
        link = Link(endpoint, profile)
        try:
            for run in range(args.runs):
                for name, qos, loaded in cases:
                    key = f"{name} {'with' if qos else 'without'} QoS"
                    result = summary(
                        one_case(link, qos=qos, loaded=loaded, settings=args.dataload_set)
                    )
                    runs.setdefault(key, []).append(result)
                    print(
                        f"run {run + 1} {key:22s} p50 {result['p50']:.3f} s  "
                        f"p99 {result['p99']:.3f} s  ({result['blocks']:.0f} blocks)",
                        flush=True,
                    )
        finally:
            link.close()
    medians = {
        key: {m: statistics.median(r[m] for r in results) for m in ("p50", "p99", "blocks")}
        for key, results in runs.items()
    }
    print(f"\nmedian of {args.runs} runs; one block ({BLOCK // MiB} MiB) = {block_seconds:.3f} s")
    for key, m in medians.items():
        print(f"  {key:22s} p50 {m['p50']:.3f} s  p99 {m['p99']:.3f} s")
    for qos in ("with", "without") if not args.qos_only else ("with",):
        idle, loaded = medians[f"idle {qos} QoS"], medians[f"loaded {qos} QoS"]
        verdict = "meets" if loaded["p50"] <= idle["p50"] + block_seconds else "misses"
        print(
            f"  {qos} QoS: loaded p50 - idle p50 = {loaded['p50'] - idle['p50']:.3f} s "
            f"({verdict} the target <= {block_seconds:.3f} s)"
        )
    load_after = os.getloadavg()
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "link": {"rtt_ms": args.rtt_ms, "mbit": args.mbit},
                    "block_bytes": BLOCK,
                    "block_seconds": block_seconds,
                    "dataload_settings": args.dataload_set,
                    "runs": runs,
                    "medians": medians,
                    "load_average_before": load_before,
                    "load_average_after": load_after,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
