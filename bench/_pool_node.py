"""One pool node of ``pool_bench.py``, as its own process: reads the dataset through
``fsspec.open`` per file and serves its blocks to its peers (edgecache.pool), driven by JSON
lines on stdin (the benchmark's twin of the pool tests' peer process; benchmarks never import
from tests/).

    python bench/_pool_node.py '{"name": .., "cache_dir": .., "token_file": .., "s3": {..}}'

Prints ``{"address": ...}`` once serving, then answers ``peers`` (its view of the pool),
``list`` (the dataset's directory: metadata, and the engine its peers ask), ``read`` (every
file in order; replies the seconds to its last byte and the files' sha256, hashed in a
thread beside the reads, with the process's CPU seconds over the read and each file's end)
and ``quit``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import fsspec
from fsspec.asyn import get_loop

from edgecache.metrics import PEER_REQUESTS, WAN_BYTES
from edgecache.pool import PoolNode, PoolSettings, parse_member


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _counts() -> dict[str, float]:
    """This process's peer requests by side and result, and its WAN bytes by priority."""
    counts: dict[str, float] = {}
    for metric, labels in ((PEER_REQUESTS, ("side", "result")), (WAN_BYTES, ("priority",))):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    name = family.name + ":" + "/".join(sample.labels[k] for k in labels)
                    counts[name] = counts.get(name, 0.0) + sample.value
    return counts


def main() -> None:
    config = json.loads(sys.argv[1])
    node = PoolNode(
        PoolSettings(
            node_name=config["name"], listen="127.0.0.1:0", token_file=config["token_file"]
        )
    )
    loop = get_loop()
    asyncio.run_coroutine_threadsafe(node.start(), loop).result()
    print(json.dumps({"address": node.me.address}), flush=True)
    options = {"s3": config["s3"], "edgecache": {"cache_dir": config["cache_dir"]}}
    for line in sys.stdin:
        command = json.loads(line)
        reply: dict[str, object] = {}
        if command["cmd"] == "peers":
            node.membership.set_members(parse_member(p) for p in command["peers"])
        elif command["cmd"] == "list":
            of = fsspec.open(command["urls"][0], "rb", **options)
            of.fs.ls(of.path.rsplit("/", 1)[0])
        elif command["cmd"] == "read":
            # The check (sha256 of every file) runs in a thread beside the reads, and the time
            # ends at the last byte: hashing a file is not part of reading the next one.
            started, cpu_started, counted = time.perf_counter(), _cpu_seconds(), _counts()
            with ThreadPoolExecutor(1) as checker:
                digests, file_ends = {}, []
                for url in command["urls"]:
                    with fsspec.open(url, "rb", **options) as f:
                        digests[url] = checker.submit(_sha256, f.read())
                    file_ends.append(round(time.perf_counter() - started, 3))
                seconds = time.perf_counter() - started
                cpu_seconds = _cpu_seconds() - cpu_started  # the check's thread included
                reply = {
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "file_ends": file_ends,
                    # What a WAN count above the dataset comes from: an owner skipped after
                    # a timeout is fetched directly (asked/timeout, then WAN bytes here).
                    "counts": {
                        name: value - counted.get(name, 0.0)
                        for name, value in _counts().items()
                        if value != counted.get(name, 0.0)
                    },
                    "sha256": {url: d.result() for url, d in digests.items()},
                }
        elif command["cmd"] == "quit":
            break
        print(json.dumps(reply), flush=True)
    asyncio.run_coroutine_threadsafe(node.stop(), loop).result()


if __name__ == "__main__":
    main()
