"""Pool benchmark: WAN bytes and completion time for N nodes of a nodepool reading one dataset,
with and without pool sharing (issue #13).

moto's S3 server and the WAN emulator (30 ms RTT, 100 Mbit/s by default) run as processes of
their own (``_wan.py``); each node is a process too (``_pool_node.py``: fsspec.open per file,
a PoolNode with a static member list, its own cache directory and peer port). For N = 1, 2, 4
and each mode, every run starts cold (fresh cache directories and processes): the nodes list
the dataset, the link's counters are reset, then all N read every file at once. Reported per
case: the WAN bytes (down) as a ratio of the dataset, the completion time (the slowest node,
to its last byte), and that time as a ratio of one node's. Every read is checked against the
data's sha256 (in a thread beside the node's reads, not in its timed path).
Targets (design section 5, issue #13): WAN bytes <= 1.05x the dataset for any N with sharing;
N nodes finish within 1.2x the time one node takes.

Run: ``.venv/bin/python bench/pool_bench.py`` (256 MiB in 8 objects, median of 3 runs, about
15 minutes; ``--dataset-mib 32 --rounds 1`` for a quick look). Results:
``bench/results/pool.json``; ``--no-alone`` runs the pool cases only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import uuid
from typing import Any

from _common import MiB, interleave, print_table, scratch_dir, write_results
from _wan import KEY, SECRET, Link, moto_server, s3_client
from edgecache_testservers.wan import WANProfile

NODE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pool_node.py")


class Node:
    """One ``_pool_node.py`` process."""

    def __init__(self, name: str, work: str, token_file: str, endpoint: str) -> None:
        config = {
            "name": name,
            "cache_dir": os.path.join(work, f"cache-{name}"),
            "token_file": token_file,
            "s3": {"endpoint_url": endpoint, "key": KEY, "secret": SECRET},
        }
        self.process = subprocess.Popen(
            [sys.executable, NODE_SCRIPT, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.name = name
        self.address = str(self.reply()["address"])

    def send(self, cmd: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"pool node {self.name} ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.send("quit")
            self.process.wait(timeout=30)


def seed(endpoint: str, total_mib: int, objects: int) -> tuple[list[str], dict[str, str], int]:
    bucket = f"pool-bench-{uuid.uuid4().hex[:8]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    size = total_mib * MiB // objects
    urls, digests = [], {}
    for i in range(objects):
        data = os.urandom(size)
        key = f"dataset/shard-{i:03d}.bin"
        client.put_object(Bucket=bucket, Key=key, Body=data)
        url = f"edgecache::s3://{bucket}/{key}"
        urls.append(url)
        digests[url] = hashlib.sha256(data).hexdigest()
    return urls, digests, size * objects


def run_case(
    n: int, shared: bool, *, link: Link, urls: list[str], digests: dict[str, str]
) -> dict[str, float]:
    with scratch_dir("pool") as work:
        token_file = os.path.join(work, "token")
        with open(token_file, "w") as f:
            f.write(uuid.uuid4().hex)
        nodes = [Node(f"node-{i}", work, token_file, link.endpoint) for i in range(n)]
        try:
            for node in nodes:
                view = nodes if shared else [node]
                node.send("peers", peers=[f"{p.name}={p.address}" for p in view])
                node.reply()
            for node in nodes:
                node.send("list", urls=urls)
                node.reply()
            link.reset()
            for node in nodes:
                node.send("read", urls=urls)
            replies = [node.reply() for node in nodes]
            wan = link.counters()["down"]
        finally:
            for node in nodes:
                node.close()
    for reply in replies:
        if reply["sha256"] != digests:
            raise AssertionError("a node read wrong bytes")
    seconds = max(r["seconds"] for r in replies)
    return {
        "seconds": seconds,
        "wan_bytes": float(wan),
        # The link's share of the time it carried bytes: 1.0 would be a link never idle.
        "link_busy": wan * 8 / (link.profile.mbit * 1e6 * seconds),
        "cpu_seconds_per_node": [round(r["cpu_seconds"], 2) for r in replies],
        "file_ends_per_node": [r["file_ends"] for r in replies],
        "counts_per_node": [r["counts"] for r in replies],
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-mib", type=int, default=256)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--nodes", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--mbit", type=float, default=100.0)
    parser.add_argument(
        "--no-alone", action="store_true", help="only the pool cases (the target's), not alone"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    profile = WANProfile(rtt_ms=args.rtt_ms, mbit=args.mbit)
    with moto_server() as (endpoint, _pid):
        link = Link(endpoint, profile)
        try:
            urls, digests, size = seed(endpoint, args.dataset_mib, args.objects)
            cases = {
                f"N={n} {'pool' if shared else 'alone'}": (
                    lambda n=n, shared=shared: run_case(
                        n, shared, link=link, urls=urls, digests=digests
                    )
                )
                for n in counts
                for shared in ((True,) if n == 1 or args.no_alone else (True, False))
            }
            runs = interleave(cases, rounds=args.rounds)
        finally:
            link.close()
    medians = {
        name: {
            "seconds": statistics.median(r["seconds"] for r in results),
            "link_busy": statistics.median(r["link_busy"] for r in results),
            "cpu_seconds_per_node": statistics.median(
                statistics.mean(r["cpu_seconds_per_node"]) for r in results
            ),
            "wan_bytes": statistics.median(r["wan_bytes"] for r in results),
            "runs": results,
        }
        for name, results in runs.items()
    }
    one = medians[f"N={counts[0]} pool"]["seconds"]
    rows = [
        [
            name,
            m["wan_bytes"] / MiB,
            m["wan_bytes"] / size,
            m["seconds"],
            m["seconds"] / one,
            m["link_busy"],
            m["cpu_seconds_per_node"],
        ]
        for name, m in medians.items()
    ]
    print_table(
        f"{size // MiB} MiB dataset, {args.objects} objects, {args.rtt_ms:g} ms / "
        f"{args.mbit:g} Mbit/s, median of {args.rounds}",
        ["case", "WAN MiB", "WAN / dataset", "seconds", "time / 1 node", "link busy", "CPU s/node"],
        rows,
    )
    write_results(
        "pool",
        {
            "dataset_bytes": size,
            "objects": args.objects,
            "profile": {"rtt_ms": args.rtt_ms, "mbit": args.mbit},
            "rounds": args.rounds,
            "cases": medians,
        },
    )


if __name__ == "__main__":
    main()
